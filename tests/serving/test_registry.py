"""Model registry: versions, refs, stages and rollback, hash verification, atomicity, concurrency."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from celeris.errors import CelerisTypeError, ConfigError, DataError
from celeris.models.catalogue import build_model, get_model
from celeris.models.checkpoint import save_checkpoint
from celeris.models.data import StandardScaler
from celeris.models.predictor import Predictor
from celeris.serving.registry import (
    _PG_WRITER_LOCK,
    ArtifactTampered,
    IncompatibleVersion,
    ModelNotFound,
    ModelRegistry,
    RegistryError,
    RegistryUnavailable,
    parse_ref,
    tree_sha256,
)

L, H = 24, 4
REPO = Path(__file__).resolve().parents[2]


def _save_tiny_nhits(directory: Path, seed: int) -> Path:
    torch.manual_seed(seed)
    model = build_model("nhits", **get_model("nhits").tiny_config(L, H, 1)).eval()
    rng = np.random.default_rng(seed)
    scaler = StandardScaler().fit(100 + rng.standard_normal(300).cumsum())
    return save_checkpoint(
        model, directory, scaler=scaler, meta={"input_size": L, "horizon": H, "n_features": 1}
    )


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny NHITS checkpoints with different weights."""
    torch.set_num_threads(1)
    base = tmp_path_factory.mktemp("ckpts")
    return _save_tiny_nhits(base / "a", seed=0), _save_tiny_nhits(base / "b", seed=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def reg(request, tmp_path) -> ModelRegistry:
    """An empty registry on SQLite (the default) and on a real PostgreSQL server."""
    if request.param == "sqlite":
        return ModelRegistry(tmp_path / "registry")
    url = request.getfixturevalue("postgres_url")
    return ModelRegistry(tmp_path / "registry", url=url)


def _url(reg: ModelRegistry) -> str | None:
    """The database URL ``reg`` was opened with (None: SQLite in its root)."""
    return getattr(reg._db, "url", None)


def _rows(reg: ModelRegistry, query: str) -> list[tuple]:
    """Run ``query`` on the registry's database, outside the registry's own code."""
    url = _url(reg)
    if url is None:
        with contextlib.closing(sqlite3.connect(reg.root / "registry.db")) as conn:
            return conn.execute(query).fetchall()
    import psycopg

    with psycopg.connect(url) as conn:
        return conn.execute(query).fetchall()


def _histories(n: int) -> np.ndarray:
    rng = np.random.default_rng(7)
    return (100 + rng.standard_normal((n, L, 1)).cumsum(axis=1)).astype(np.float32)


# -- hashing ---------------------------------------------------------------------------------


def test_tree_sha256_small_tree_matches_hand_computed_digest(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "empty").mkdir()  # empty directories do not count
    (tmp_path / "b.txt").write_bytes(b"bee")
    (tmp_path / "sub" / "a.bin").write_bytes(b"\x00\x01")
    h = hashlib.sha256()
    for rel, data in (("b.txt", b"bee"), ("sub/a.bin", b"\x00\x01")):  # sorted relative paths
        h.update(rel.encode() + b"\0" + len(data).to_bytes(8, "little") + data)
    assert tree_sha256(tmp_path) == h.hexdigest()


def test_tree_sha256_rename_or_boundary_shift_changes_digest(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "x").write_bytes(b"12")
    (a / "y").write_bytes(b"3")
    (b / "x").write_bytes(b"1")  # same concatenated bytes, different file boundary
    (b / "y").write_bytes(b"23")
    assert tree_sha256(a) != tree_sha256(b)
    before = tree_sha256(a)
    os.replace(a / "y", a / "z")
    assert tree_sha256(a) != before


# -- register ---------------------------------------------------------------------------------


def test_register_first_version_copies_artifact_and_records_hash(reg, ckpts):
    rec = reg.register("btc-nhits", ckpts[0], metrics={"mae": 0.5, "n": 3})
    assert (rec.name, rec.version, rec.stage, rec.ref) == ("btc-nhits", 1, "staging", "btc-nhits@1")
    assert rec.path == reg.root / "artifacts" / "btc-nhits" / "1"
    assert rec.sha256 == tree_sha256(rec.path) == tree_sha256(ckpts[0])
    assert rec.metrics == {"mae": 0.5, "n": 3}
    created = dt.datetime.fromisoformat(rec.created_at)
    assert created.utcoffset() == dt.timedelta(0)
    assert abs((dt.datetime.now(dt.UTC) - created).total_seconds()) < 60
    for f in ckpts[0].iterdir():
        assert (rec.path / f.name).read_bytes() == f.read_bytes()
    # the registry stores the path relative to root (movable root); SQLite is in WAL mode
    assert _rows(reg, "SELECT path FROM models") == [("artifacts/btc-nhits/1",)]
    if _url(reg) is None:
        assert _rows(reg, "PRAGMA journal_mode") == [("wal",)]
    else:
        assert not (reg.root / "registry.db").exists()
    assert reg.get("btc-nhits@1") == rec


def test_register_versions_increment_per_name_and_survive_reopening(reg, ckpts):
    assert [reg.register("m", ckpts[i % 2]).version for i in range(3)] == [1, 2, 3]
    assert reg.register("other", ckpts[0]).version == 1
    again = ModelRegistry(reg.root, url=_url(reg))
    assert [(r.name, r.version) for r in again.list()] == [
        ("m", 1),
        ("m", 2),
        ("m", 3),
        ("other", 1),
    ]
    assert [r.version for r in again.list("m")] == [1, 2, 3]


def test_register_bad_input_raises_clear_errors(reg, ckpts, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"not a checkpoint \(config.json is missing\)"):
        reg.register("m", empty)
    with pytest.raises(DataError, match="not a directory"):
        reg.register("m", tmp_path / "nope")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    for f in ckpts[0].iterdir():
        (corrupt / f.name).write_bytes(f.read_bytes())
    weights = bytearray((corrupt / "model.safetensors").read_bytes())
    weights[-1] ^= 0xFF
    (corrupt / "model.safetensors").write_bytes(bytes(weights))
    with pytest.raises(DataError, match="does not match the checksum"):
        reg.register("m", corrupt)
    for bad in ("a@b", "../x", "", "a/b", ".hidden"):
        with pytest.raises(ConfigError, match="invalid model name"):
            reg.register(bad, ckpts[0])
    with pytest.raises(ConfigError, match="did you mean 'production'"):
        reg.register("m", ckpts[0], stage="prodution")
    with pytest.raises(ConfigError, match="finite"):
        reg.register("m", ckpts[0], metrics={"mae": float("nan")})
    with pytest.raises(ConfigError, match="export"):
        reg.register("m", ckpts[0], exports=("tensorrt",))
    assert reg.list() == []
    assert list((reg.root / "artifacts").iterdir()) == []


def test_register_failure_inside_transaction_leaves_no_visible_version(reg, ckpts, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(ModelRegistry, "_log_change", boom)
    with pytest.raises(OSError, match="simulated"):
        reg.register("m", ckpts[0])
    monkeypatch.undo()
    assert reg.list() == []
    assert list((reg.root / "artifacts" / "m").iterdir()) == []  # no version dir, no temp dir
    assert reg.register("m", ckpts[0]).version == 1


def test_register_orphan_directory_from_crash_is_replaced(reg, ckpts):
    # a process that died between its rename and its commit leaves an unreferenced directory
    orphan = reg.root / "artifacts" / "m" / "1"
    orphan.mkdir(parents=True)
    (orphan / "half-written").write_bytes(b"xx")
    rec = reg.register("m", ckpts[0])
    assert rec.version == 1
    assert not (rec.path / "half-written").exists()
    reg.verify(rec)


def test_register_concurrent_threads_get_distinct_versions(reg, ckpts):
    versions: list[int] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def work() -> None:
        try:
            start.wait()
            for _ in range(3):
                versions.append(reg.register("m", ckpts[0]).version)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(versions) == list(range(1, 13))
    assert sorted(p.name for p in (reg.root / "artifacts" / "m").iterdir()) == sorted(
        str(v) for v in range(1, 13)
    )


def test_register_concurrent_processes_get_distinct_versions(reg, ckpts, tmp_path):
    go = tmp_path / "go"
    script = textwrap.dedent(
        f"""
        import json, os, sys, time
        from celeris.serving.registry import ModelRegistry
        reg = ModelRegistry({str(reg.root)!r}, url={_url(reg)!r})
        while not os.path.exists({str(go)!r}):
            time.sleep(0.001)
        print(json.dumps([reg.register("m", {str(ckpts[0])!r}).version for _ in range(4)]))
        """
    )
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
        )
        for _ in range(3)
    ]
    go.touch()
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        results.extend(json.loads(out))
    assert sorted(results) == list(range(1, 13))
    for rec in reg.list("m"):
        reg.verify(rec)
    assert not [p for p in (reg.root / "artifacts" / "m").iterdir() if p.name.startswith(".")]


# -- refs --------------------------------------------------------------------------------------


def test_registry_file_names_match_checkpoint_module_and_import_no_torch():
    from celeris.models import checkpoint
    from celeris.serving import registry

    assert (registry.CONFIG_FILE, registry.WEIGHTS_FILE) == (
        checkpoint.CONFIG_FILE,
        checkpoint.WEIGHTS_FILE,
    )
    code = "import sys, celeris.serving.registry; print('torch' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"


def test_parse_ref_forms_and_errors():
    assert parse_ref("m@7") == ("m", 7)
    assert parse_ref("m@production") == ("m", "production")
    assert parse_ref(" m ") == ("m", "production")
    assert parse_ref("m@latest") == ("m", "latest")
    with pytest.raises(ConfigError, match="did you mean 'production'"):
        parse_ref("m@prodution")
    with pytest.raises(ConfigError, match="versions start at 1"):
        parse_ref("m@0")
    with pytest.raises(ConfigError, match="unknown selector"):
        parse_ref("m@")


def test_get_resolves_versions_stages_and_latest(reg, ckpts):
    reg.register("m", ckpts[0])
    reg.register("m", ckpts[1])
    reg.register("m", ckpts[0])
    reg.promote("m", 2)
    assert reg.get("m@1").version == 1
    assert reg.get("m@production").version == 2
    assert reg.get("m").version == 2
    assert reg.get("m@staging").version == 3  # the newest of the staging versions
    assert reg.get("m@latest").version == 3


def test_get_without_production_lists_versions_and_stages(reg, ckpts):
    reg.register("m", ckpts[0])
    reg.register("m", ckpts[1], stage="archived")
    with pytest.raises(
        ModelNotFound, match=r"m has no production version; versions: 1 \(staging\), 2 \(archived\)"
    ):
        reg.get("m")
    with pytest.raises(
        ModelNotFound, match=r"no version 9; versions: 1 \(staging\), 2 \(archived\)"
    ):
        reg.get("m@9")


def test_get_unknown_name_suggests_close_match(reg, ckpts):
    with pytest.raises(ModelNotFound, match="registry is empty"):
        reg.get("anything")
    reg.register("btc-nhits", ckpts[0])
    with pytest.raises(
        ModelNotFound, match=r"no model named 'btc-nhit' \(did you mean 'btc-nhits'\?\)"
    ):
        reg.get("btc-nhit@1")
    with pytest.raises(ModelNotFound, match="did you mean 'btc-nhits'"):
        reg.list("btc_nhits")


# -- stages and rollback -----------------------------------------------------------------------


def test_promote_archives_previous_production(reg, ckpts):
    for _ in range(3):
        reg.register("m", ckpts[0])
    assert reg.promote("m", 1).stage == "production"
    assert reg.promote("m", "2").stage == "production"
    stages = {r.version: r.stage for r in reg.list("m")}
    assert stages == {1: "archived", 2: "production", 3: "staging"}
    assert reg.promote("m", 2) == reg.get("m@2")  # already production: nothing changes
    reg.promote("m", 3, stage="archived")
    assert [(c.version, c.from_stage, c.to_stage, c.reason) for c in reg.history("m")] == [
        (1, None, "staging", "register"),
        (2, None, "staging", "register"),
        (3, None, "staging", "register"),
        (1, "staging", "production", "promote"),
        (1, "production", "archived", "superseded"),
        (2, "staging", "production", "promote"),
        (3, "staging", "archived", "promote"),
    ]
    with pytest.raises(ModelNotFound, match="no version 4"):
        reg.promote("m", 4)
    with pytest.raises(ConfigError, match="positive integer"):
        reg.promote("m", "two")


def test_register_as_production_replaces_current_production(reg, ckpts):
    reg.register("m", ckpts[0], stage="production")
    rec = reg.register("m", ckpts[1], stage="production")
    assert rec.stage == "production"
    assert {r.version: r.stage for r in reg.list("m")} == {1: "archived", 2: "production"}


def test_rollback_restores_previous_production_and_stacks(reg, ckpts):
    for v in (1, 2, 3):
        reg.register("m", ckpts[v % 2])
        reg.promote("m", v)
    reg.register("m", ckpts[0])  # a staging version is never a rollback target
    assert reg.rollback("m").version == 2
    assert {r.version: r.stage for r in reg.list("m")} == {
        1: "archived",
        2: "production",
        3: "archived",
        4: "staging",
    }
    assert reg.rollback("m").version == 1  # a second rollback goes further back, no toggling
    assert reg.get("m").version == 1
    with pytest.raises(RegistryError, match="m@1 is the first production version"):
        reg.rollback("m")
    assert reg.get("m").version == 1  # a refused rollback changes nothing


def test_rollback_after_repromotion_skips_the_current_version(reg, ckpts):
    for v in (1, 2):
        reg.register("m", ckpts[0])
        reg.promote("m", v)
    reg.promote("m", 2, stage="staging")
    reg.promote("m", 2)  # history of production: 1, 2, 2
    assert reg.rollback("m").version == 1


def test_rollback_without_production_raises(reg, ckpts):
    reg.register("m", ckpts[0])
    with pytest.raises(
        RegistryError, match=r"no production version to roll back from \(versions: 1 \(staging\)\)"
    ):
        reg.rollback("m")
    with pytest.raises(ModelNotFound):
        reg.rollback("nope")


# -- tampering ---------------------------------------------------------------------------------


def test_verify_modified_byte_raises_naming_tree_and_both_hashes(reg, ckpts):
    rec = reg.register("m", ckpts[0])
    reg.verify(rec)
    weights = rec.path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    actual = tree_sha256(rec.path)
    with pytest.raises(ArtifactTampered) as info:
        reg.verify(rec)
    message = str(info.value)
    assert str(rec.path) in message and rec.sha256 in message and actual in message
    assert "m@1" in message
    with pytest.raises(ArtifactTampered, match=actual):
        reg.load("m@1")


def test_verify_missing_or_added_file_or_directory_raises(reg, ckpts):
    rec = reg.register("m", ckpts[0])
    (rec.path / "config.json").unlink()
    with pytest.raises(ArtifactTampered, match=r"files now: model.safetensors\)"):
        reg.verify(rec)
    rec2 = reg.register("m", ckpts[0])
    (rec2.path / "extra.py").write_text("import os\n")
    with pytest.raises(ArtifactTampered, match="does not match the registry"):
        reg.load(rec2.ref)
    rec3 = reg.register("m", ckpts[0])
    import shutil

    shutil.rmtree(rec3.path)
    with pytest.raises(ArtifactTampered, match="is missing"):
        reg.load(rec3.ref)


def test_promote_tampered_artifact_to_production_is_refused(reg, ckpts):
    rec = reg.register("m", ckpts[0])
    (rec.path / "config.json").write_text((rec.path / "config.json").read_text() + " ")
    with pytest.raises(ArtifactTampered):
        reg.promote("m", 1)
    assert reg.get("m@1").stage == "staging"


# -- load -------------------------------------------------------------------------------------


def test_load_returns_predictor_matching_the_checkpoint(reg, ckpts):
    reg.register("m", ckpts[1], stage="production")
    rec, pred = reg.load("m", threads=1)
    assert rec.ref == "m@1" and pred.horizon == H and pred.input_size == L
    x = _histories(5)
    expected = Predictor.load(ckpts[1], threads=1).predict(x)
    np.testing.assert_array_equal(pred.predict(x), expected)


def test_load_onnx_never_writes_into_the_artifact(reg, ckpts):
    plain = reg.register("m", ckpts[0])
    _, pred = reg.load(plain.ref, backend="onnx", threads=1)  # exported into a private copy
    assert sorted(p.name for p in plain.path.iterdir()) == ["config.json", "model.safetensors"]
    reg.verify(plain)
    exported = reg.register("m", ckpts[0], exports=("onnx",))
    assert (exported.path / "model.onnx").is_file()
    assert exported.sha256 == tree_sha256(exported.path) != plain.sha256
    _, pred2 = reg.load(exported.ref, backend="onnx", threads=1)
    x = _histories(3)
    torch_out = Predictor.load(ckpts[0], threads=1).predict(x)
    scale = float(np.abs(torch_out).max())
    for p in (pred, pred2):
        assert p.backend == "onnx"
        assert float(np.abs(p.predict(x) - torch_out).max()) <= 1e-4 * scale


# -- storage URLs -----------------------------------------------------------------------------


def test_sqlite_url_places_database_where_told(tmp_path, ckpts):
    db = tmp_path / "elsewhere" / "models.db"
    reg = ModelRegistry(tmp_path / "root", url=f"sqlite:///{db}")
    reg.register("m", ckpts[0])
    assert db.is_file() and not (tmp_path / "root" / "registry.db").exists()
    assert ModelRegistry(tmp_path / "root", url=f"sqlite:///{db}").get("m@1").version == 1


def _with_password(url: str, password: str) -> str:
    return url.replace("postgresql://celeris@", f"postgresql://celeris:{password}@")


def test_postgres_password_never_shown_in_repr_or_errors(postgres_url, tmp_path, ckpts):
    # The test server trusts loopback, so any password connects; it must never be printed.
    url = _with_password(postgres_url, "s3cret")
    reg = ModelRegistry(tmp_path / "root", url=url)
    assert "s3cret" not in repr(reg) and "celeris:***@127.0.0.1" in repr(reg)
    assert reg.register("m", ckpts[0]).version == 1
    assert not (tmp_path / "root" / "registry.db").exists()
    dead = re.sub(r":\d+/", ":9/", url)  # nothing listens on port 9
    with pytest.raises(RegistryError, match=r"cannot open the registry database") as info:
        ModelRegistry(tmp_path / "root", url=dead)
    assert "s3cret" not in str(info.value) and "***" in str(info.value)


def test_postgres_writer_waits_for_the_writer_lock_then_times_out(postgres_url, tmp_path, ckpts):
    import psycopg

    reg = ModelRegistry(tmp_path / "root", url=postgres_url, busy_timeout_s=0.3)
    reg.register("m", ckpts[0])
    with psycopg.connect(postgres_url) as holder:  # another writer's open transaction
        holder.execute("SELECT pg_advisory_xact_lock(%s)", (_PG_WRITER_LOCK,))
        assert reg.get("m@1").version == 1  # readers are not blocked
        with pytest.raises(RegistryError, match="lock timeout"):
            reg.register("m", ckpts[1])
    assert reg.register("m", ckpts[1]).version == 2  # the lock is released at COMMIT/ROLLBACK
    assert [r.version for r in reg.list("m")] == [1, 2]
    assert sorted(p.name for p in (reg.root / "artifacts" / "m").iterdir()) == ["1", "2"]


def test_registry_url_unknown_scheme_or_missing_driver_raises(tmp_path):
    with pytest.raises(ConfigError, match="unsupported registry URL"):
        ModelRegistry(tmp_path, url="mysql://host/db")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        with pytest.raises(ConfigError, match=r"pip install 'psycopg\[binary\]'"):
            ModelRegistry(tmp_path, url="postgresql://user:secret@localhost/celeris")


# -- links and special files in a checkpoint ---------------------------------------------------


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_register_checkpoint_with_file_link_outside_is_refused(reg, ckpts, tmp_path):
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$secret-hash:19000:0:99999:7:::\n")
    ckpt = _copy_checkpoint(ckpts[0], tmp_path / "ckpt")
    (ckpt / "notes.txt").symlink_to(secret)
    with pytest.raises(DataError, match=r"notes\.txt is a symbolic link .*shadow"):
        reg.register("m", ckpt)
    assert reg.list() == []
    copied = [p for p in (reg.root / "artifacts").rglob("*") if p.is_file()]
    assert copied == []  # nothing of the secret (or anything else) was copied


def test_register_checkpoint_with_directory_link_is_refused(reg, ckpts, tmp_path):
    tree = tmp_path / "big-tree"
    (tree / "deep").mkdir(parents=True)
    (tree / "deep" / "data.bin").write_bytes(b"x" * 4096)
    ckpt = _copy_checkpoint(ckpts[0], tmp_path / "ckpt")
    (ckpt / "extra").symlink_to(tree, target_is_directory=True)
    with pytest.raises(DataError, match=r"extra is a symbolic link"):
        reg.register("m", ckpt)
    assert reg.list() == []


def test_register_checkpoint_with_link_inside_is_refused(reg, ckpts, tmp_path):
    ckpt = _copy_checkpoint(ckpts[0], tmp_path / "ckpt")
    (ckpt / "weights-alias").symlink_to(ckpt / "model.safetensors")
    with pytest.raises(DataError, match=r"weights-alias is a symbolic link"):
        reg.register("m", ckpt)


def test_register_checkpoint_with_fifo_is_refused_without_hanging(reg, ckpts, tmp_path):
    ckpt = _copy_checkpoint(ckpts[0], tmp_path / "ckpt")
    os.mkfifo(ckpt / "pipe")
    with pytest.raises(DataError, match=r"pipe is not a regular file"):
        reg.register("m", ckpt)  # copying used to block on the FIFO for ever


def test_register_checkpoint_dir_given_through_a_link_is_accepted(reg, ckpts, tmp_path):
    # the directory named by the user may itself be a link (runs/latest -> runs/2024-...)
    link = tmp_path / "latest"
    link.symlink_to(ckpts[0], target_is_directory=True)
    rec = reg.register("m", link)
    reg.verify(rec)


# -- leftovers of registrations that died ------------------------------------------------------


def test_registry_open_sweeps_staging_dirs_of_dead_processes(tmp_path, ckpts):
    from celeris.data import atomic

    reg = ModelRegistry(tmp_path / "registry")
    reg.register("m", ckpts[0])
    parent = reg.root / "artifacts" / "m"
    code = textwrap.dedent(
        f"""
        import os, shutil, time
        from pathlib import Path
        from celeris.data.atomic import temp_name
        staged = Path({str(parent)!r}) / temp_name()
        shutil.copytree({str(ckpts[0])!r}, staged)
        print(staged, flush=True)
        time.sleep(600)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    staged = Path(proc.stdout.readline().strip())
    live_stage = parent / atomic.temp_name()  # a registration of this process, under way
    live_stage.mkdir()
    try:
        assert staged.is_dir()
        ModelRegistry(tmp_path / "registry")  # the writer is alive: its copy stays
        assert staged.is_dir()
    finally:
        proc.kill()
        proc.wait(timeout=30)
        proc.stdout.close()
    ModelRegistry(tmp_path / "registry")  # killed: the next start removes its copy
    assert not staged.exists()
    assert live_stage.is_dir()
    assert sorted(p.name for p in parent.iterdir()) == sorted(["1", live_stage.name])


# -- compatibility of production versions ------------------------------------------------------


def _save_tiny_nhits_shaped(directory: Path, input_size: int, horizon: int) -> Path:
    torch.manual_seed(0)
    model = build_model("nhits", **get_model("nhits").tiny_config(input_size, horizon, 1)).eval()
    scaler = StandardScaler().fit(100 + np.random.default_rng(0).standard_normal(300).cumsum())
    meta = {"input_size": input_size, "horizon": horizon, "n_features": 1}
    return save_checkpoint(model, directory, scaler=scaler, meta=meta)


@pytest.fixture(scope="module")
def other_shapes(tmp_path_factory) -> dict[str, Path]:
    """Tiny NHITS checkpoints with another input size, and with another horizon."""
    base = tmp_path_factory.mktemp("shapes")
    return {
        "input_size": _save_tiny_nhits_shaped(base / "longer", 2 * L, H),
        "horizon": _save_tiny_nhits_shaped(base / "further", L, H + 2),
    }


@pytest.mark.parametrize("what", ["input_size", "horizon"])
def test_promote_incompatible_version_refused_production_unchanged(reg, ckpts, other_shapes, what):
    reg.register("m", ckpts[0], stage="production")
    reg.register("m", other_shapes[what])
    with pytest.raises(IncompatibleVersion, match=rf"m@2 cannot replace m@1 .*{what}") as err:
        reg.promote("m", 2)
    assert "\n" not in str(err.value) and "--allow-incompatible" in str(err.value)
    assert {r.version: r.stage for r in reg.list("m")} == {1: "production", 2: "staging"}
    assert reg.incompatibilities(reg.get("m@2"))[0].startswith(what)
    assert reg.incompatibilities(reg.get("m@1")) == []
    promoted = reg.promote("m", 2, allow_incompatible=True)
    assert promoted.stage == "production"
    assert {r.version: r.stage for r in reg.list("m")} == {1: "archived", 2: "production"}


def test_promote_compatible_version_and_first_production_need_no_flag(reg, ckpts, other_shapes):
    reg.register("m", other_shapes["input_size"])
    reg.register("m", ckpts[0])
    assert reg.promote("m", 2).stage == "production"  # nothing in production: no constraint
    reg.register("m", ckpts[1])
    assert reg.promote("m", 3).stage == "production"  # same interface, other weights


def test_register_as_production_incompatible_refused_nothing_registered(reg, ckpts, other_shapes):
    reg.register("m", ckpts[0], stage="production")
    with pytest.raises(IncompatibleVersion, match=r"m@2 cannot replace m@1 .*input_size 48"):
        reg.register("m", other_shapes["input_size"], stage="production")
    assert [(r.version, r.stage) for r in reg.list("m")] == [(1, "production")]
    assert sorted(p.name for p in (reg.root / "artifacts" / "m").iterdir()) == ["1"]
    rec = reg.register("m", other_shapes["input_size"], stage="production", allow_incompatible=True)
    assert rec.version == 2 and reg.get("m").version == 2


def test_rollback_to_incompatible_version_refused_unless_allowed(reg, ckpts, other_shapes):
    reg.register("m", ckpts[0], stage="production")
    reg.register("m", other_shapes["horizon"], stage="production", allow_incompatible=True)
    with pytest.raises(IncompatibleVersion, match=r"m@1 cannot replace m@2 .*horizon"):
        reg.rollback("m")
    assert reg.get("m").version == 2
    assert reg.rollback("m", allow_incompatible=True).version == 1


# -- an unreadable database ------------------------------------------------------------------------


def test_unreadable_database_raises_registry_unavailable(tmp_path, ckpts):
    reg = ModelRegistry(tmp_path / "registry")
    reg.register("m", ckpts[0])
    db = reg.root / "registry.db"
    db.write_bytes(b"this is not a database" * 100)
    with pytest.raises(RegistryUnavailable, match=r"registry\.db"):
        reg.list()


def test_load_sweeps_private_copies_left_by_killed_loaders(reg, ckpts, monkeypatch, tmp_path):
    import tempfile

    from celeris.data import atomic

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "scratch"))
    (tmp_path / "scratch").mkdir()
    rec = reg.register("m", ckpts[0])
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait(timeout=30)
    tag = f"tmp-{dead.pid}-{atomic._host_tag()}-abc123"
    # a copy of another model's load and one named the way earlier releases named them
    for left in (f".celeris-load.{tag}", f".celeris-load-m.{tag}"):
        (tmp_path / "scratch" / left / "artifact").mkdir(parents=True)
        (tmp_path / "scratch" / left / "artifact" / "model.safetensors").write_bytes(b"x" * 4096)
    loaded, _ = reg.load(rec.ref, backend="torch", threads=1)
    assert loaded == rec
    assert list((tmp_path / "scratch").iterdir()) == []  # the leftover and its own copy: gone


def test_registry_busy_timeout_wrong_type_or_value_raises_clear_error(tmp_path):
    # A string timeout escaped as a bare TypeError from the comparison; now the checks' rule.
    with pytest.raises(CelerisTypeError, match="busy_timeout_s must be a real number > 0"):
        ModelRegistry(tmp_path, busy_timeout_s="30")
    with pytest.raises(ConfigError, match="busy_timeout_s must be > 0, got 0"):
        ModelRegistry(tmp_path, busy_timeout_s=0)


# -- the default backend of a registered model -------------------------------------------------


def test_load_default_is_the_verified_backend_the_artifact_carries(tmp_path, trained_dir, ckpts):
    reg = ModelRegistry(tmp_path / "registry")
    rec = reg.register("m", trained_dir)
    assert {"exports.json", "model.onnx", "model.int8.onnx"} <= {p.name for p in rec.path.iterdir()}
    expected = Predictor.load(trained_dir).backend  # the checkpoint's own default
    _, pred = reg.load(rec.ref, threads=1)
    assert pred.backend == expected and expected.startswith("onnx"), pred.describe()
    assert reg.load(rec.ref, backend="torch", threads=1)[1].backend == "torch"  # asked: wins
    old = reg.register("old", ckpts[0])  # saved without exports: auto serves torch
    _, pred = reg.load(old.ref, threads=1)
    assert pred.backend == "torch" and "no verified ONNX export" in pred.describe()
    # the export record is part of the hashed artifact: a changed one is refused
    record = json.loads((rec.path / "exports.json").read_text())
    record["exports"]["onnx-int8"]["max_rel_error"] = 0.0
    (rec.path / "exports.json").write_text(json.dumps(record))
    with pytest.raises(ArtifactTampered, match="does not match the registry"):
        reg.load(rec.ref, threads=1)


def test_load_auto_artifact_with_onnx_but_no_record_serves_onnx_as_before(tmp_path, trained_dir):
    # An artifact registered before exports.json existed holds model.onnx and no record: it was
    # served with ONNX by default, and a serve-only install has no torch to fall back to.
    legacy = tmp_path / "legacy"
    shutil.copytree(trained_dir, legacy)
    (legacy / "exports.json").unlink()
    (legacy / "model.int8.onnx").unlink()
    reg = ModelRegistry(tmp_path / "registry")
    rec = reg.register("legacy", legacy)
    _, pred = reg.load(rec.ref, threads=1)
    assert pred.backend == "onnx", pred.describe()


def test_register_export_asked_for_an_unrecorded_onnx_file_records_it(tmp_path, trained_dir):
    legacy = tmp_path / "legacy"
    shutil.copytree(trained_dir, legacy)
    (legacy / "exports.json").unlink()
    reg = ModelRegistry(tmp_path / "registry")
    rec = reg.register("legacy", legacy, exports=("onnx",))
    record = json.loads((rec.path / "exports.json").read_text())
    assert record["exports"]["onnx"]["verified"] is True


def test_registering_leaves_a_user_dot_tmp_directory_alone(tmp_path, ckpts):
    reg = ModelRegistry(tmp_path / "registry")
    reg.register("m", ckpts[0])
    notes = reg.root / "artifacts" / "m" / ".tmp-notes"  # not a name temp_name() gives
    notes.mkdir()
    old = 1_000_000_000.0  # 2001: older than any staging directory is kept
    os.utime(notes, (old, old))
    reg.register("m", ckpts[1])
    assert notes.is_dir()


def _with_meta(src: Path, dst: Path, **meta: object) -> Path:
    """A copy of checkpoint ``src`` whose config.json meta has ``meta`` merged in."""
    shutil.copytree(src, dst)
    config = dst / "config.json"
    document = json.loads(config.read_text())
    document["meta"].update(meta)
    config.write_text(json.dumps(document))
    return dst


@pytest.mark.parametrize(
    ("meta", "error", "match"),
    [
        ({"feature_spec": {"version": 2, "features": ["close"]}}, ConfigError,
         r"feature spec version 2 is not one this Celeris .* computes"),
        ({"feature_spec": {"version": 1, "features": ["close_ratio"]}}, ConfigError,
         r"unknown feature 'close_ratio'"),
        ({"features": ["log_volume_7"]}, ConfigError, r"unknown feature 'log_volume_7'"),
        ({"features": ["close", "log_return"]}, DataError, r"lists 2 feature.*takes 1"),
    ],
)  # fmt: skip
def test_register_feature_spec_this_celeris_cannot_compute_is_refused(
    reg, ckpts, tmp_path, meta, error, match
):
    bad = _with_meta(ckpts[0], tmp_path / "bad", **meta)
    with pytest.raises(error, match=match) as info:
        reg.register("btc", bad)
    assert str(bad) in str(info.value)  # names the checkpoint too
    assert reg.list() == [] and not (reg.artifacts / "btc").exists()  # refused before copying


def test_register_computable_feature_spec_or_none_is_accepted(reg, ckpts, tmp_path):
    from celeris.models.features import FeatureSpec

    spec = FeatureSpec(("log_return",)).to_dict()
    good = _with_meta(ckpts[0], tmp_path / "good", feature_spec=spec, features=["log_return"])
    assert reg.register("btc", good).version == 1
    assert reg.register("btc", ckpts[0]).version == 2  # no features recorded: windows only


def test_load_refuses_a_version_whose_features_cannot_be_computed(
    reg, ckpts, tmp_path, monkeypatch
):
    # Registered by a Celeris that knew the feature (the check bypassed here): the manager's
    # load path refuses it before it serves, naming the feature.
    import asyncio

    from celeris.serving import registry as registry_module
    from celeris.serving.config import load_serve_settings
    from celeris.serving.engine import Engine
    from celeris.serving.manager import ModelManager

    bad = _with_meta(ckpts[0], tmp_path / "bad", features=["close_ratio"])
    with monkeypatch.context() as patched:
        patched.setattr(registry_module, "_check_features", lambda *a: None)
        reg.register("btc", bad, stage="production")
    settings = load_serve_settings(
        models=["btc@production"], registry=reg.root, backend="torch", registry_poll_s=0,
        log_level="warning",
    )  # fmt: skip
    manager = ModelManager(Engine(config=settings.batcher_config()), reg, settings)
    with pytest.raises(ConfigError, match=r"cannot serve btc@1: .*unknown feature 'close_ratio'"):
        asyncio.run(manager.start(settings.models))
    assert manager.status == "failed" and "close_ratio" in (manager.error or "")
