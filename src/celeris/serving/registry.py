"""The model registry: versioned, staged, hash-verified model artifacts.

A registered model version is

* an **artifact**: a copy of a checkpoint directory (``config.json``, ``model.safetensors`` and
  any exported ``model.onnx`` / ``model.int8.onnx`` with their verification record
  ``exports.json``) under ``root/artifacts/<name>/<version>/``, written once and never modified;
* a **row** in the ``models`` table: name, version (1, 2, ... per name), stage (``staging``,
  ``production`` or ``archived``), the sha256 of the artifact tree, metrics (JSON), creation time
  (ISO 8601 UTC) and the artifact path relative to ``root``.

Every stage change is appended to ``stage_changes``; :meth:`ModelRegistry.rollback` replays that
history to find the version that was production before the current one.

Storage is SQLite in WAL mode at ``root/registry.db`` by default (readers never block the
writer; concurrent writers wait up to ``busy_timeout_s``). A ``postgresql://`` URL stores the
same two tables in PostgreSQL through psycopg 3; the SQL is the same text for both, and the
dialect differences (parameter marker, how the writer lock is taken, error classes) live in
:class:`_SQLite` and :class:`_Postgres` only. Artifacts stay files under ``root`` either way
(point ``root`` at shared storage when several hosts share a PostgreSQL registry).

Versions are allocated inside a write transaction (SQLite ``BEGIN IMMEDIATE``; PostgreSQL
``pg_advisory_xact_lock``), so two processes registering at once get distinct
versions. An artifact is copied to a temporary directory, fsynced, and renamed into place inside
that transaction: a crash leaves either no version or a complete one, never half of one. The
staging directory is named after its process (:func:`celeris.data.atomic.temp_name`), and
opening the registry or registering removes those of processes that died. A checkpoint holding a
symbolic link or a special file (FIFO, device, socket) is refused: a link would copy, and hash as
legitimate, whatever it points at.

Production is what clients of ``NAME@production`` call, so a version whose interface (input
size, features, horizon, target: :data:`INTERFACE_KEYS`, read from ``config.json``) differs from
the current production version's is refused as production (:class:`IncompatibleVersion`) by
:meth:`ModelRegistry.promote`, ``register(stage="production")`` and :meth:`ModelRegistry.rollback`,
unless ``allow_incompatible=True``.

The artifact hash (:func:`tree_sha256`) covers the whole tree, not only the weights: a changed
config, scaler, ONNX file or export record is tampering too. :meth:`ModelRegistry.load` copies the artifact to a
private directory, hashes that copy and loads from it, so the bytes that were verified are the
bytes that run.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from celeris.checks import check_int, check_real
from celeris.data.atomic import sweep_temp_names, temp_name
from celeris.errors import (
    ConfigError,
    DataError,
    ModelNotFound,
    check_choice,
    did_you_mean,
)
from celeris.formatting import redact_url
from celeris.serving.errors import (
    ArtifactTampered,
    IncompatibleVersion,
    RegistryError,
    RegistryUnavailable,
)

if TYPE_CHECKING:
    from celeris.models.predictor import Predictor

__all__ = [
    "INTERFACE_KEYS",
    "SELECTORS",
    "STAGES",
    "ArtifactTampered",
    "IncompatibleVersion",
    "ModelNotFound",
    "ModelRecord",
    "ModelRegistry",
    "RegistryError",
    "RegistryUnavailable",
    "StageChange",
    "interface",
    "parse_ref",
    "tree_sha256",
]

STAGES = ("staging", "production", "archived")
"""The stages a model version can be in; at most one version per name is ``production``."""

SELECTORS = ("production", "staging", "latest")
"""Words allowed after ``@`` in a reference besides a version number."""

# Names become directory names and appear in refs and URLs: no '@', '/', whitespace or dot-dirs.
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
_EXPORT_FILES = {"onnx": "model.onnx", "onnx-int8": "model.int8.onnx"}
# celeris.models.checkpoint's file names, repeated because importing that module loads torch,
# which registering, listing and promoting do not need (tests check the two agree)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"
_PG_WRITER_LOCK = 0x63656C6572697301  # "celeris" + 1: the registry's advisory-lock key
_STALE_TEMP_S = 24 * 3600.0  # a staging directory this old belongs to a dead process

# The schema, identical text for SQLite and PostgreSQL. stage_changes is keyed by (name, seq)
# with seq allocated under the writer lock, so no AUTOINCREMENT / SERIAL dialect is needed.
_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS models (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        stage TEXT NOT NULL,
        sha256 TEXT NOT NULL,
        metrics_json TEXT NOT NULL,
        created_at TEXT NOT NULL,
        path TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
    "CREATE INDEX IF NOT EXISTS models_name_stage ON models (name, stage)",
    """CREATE TABLE IF NOT EXISTS stage_changes (
        name TEXT NOT NULL,
        seq INTEGER NOT NULL,
        version INTEGER NOT NULL,
        from_stage TEXT,
        to_stage TEXT NOT NULL,
        reason TEXT NOT NULL,
        changed_at TEXT NOT NULL,
        PRIMARY KEY (name, seq)
    )""",
)
_COLUMNS = "name, version, stage, sha256, metrics_json, created_at, path"


@dataclasses.dataclass(frozen=True)
class ModelRecord:
    """One registered model version (a row of the registry)."""

    name: str
    version: int
    stage: str
    sha256: str
    metrics: dict[str, Any]
    created_at: str
    path: Path

    @property
    def ref(self) -> str:
        """Return the exact reference ``"name@version"``."""
        return f"{self.name}@{self.version}"

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (``path`` as a string, ``ref`` included)."""
        return {
            "name": self.name,
            "version": self.version,
            "ref": self.ref,
            "stage": self.stage,
            "sha256": self.sha256,
            "metrics": dict(self.metrics),
            "created_at": self.created_at,
            "path": str(self.path),
        }


@dataclasses.dataclass(frozen=True)
class StageChange:
    """One entry of a model's stage history (``from_stage`` is None at registration)."""

    name: str
    seq: int
    version: int
    from_stage: str | None
    to_stage: str
    reason: str
    changed_at: str


def parse_ref(ref: str) -> tuple[str, int | str]:
    """Split ``"name@7"`` / ``"name@production"`` / ``"name"`` into ``(name, selector)``.

    The selector is a version number (int) or one of :data:`SELECTORS`; a bare name means
    ``"production"``.

    Raises
    ------
    ConfigError
        An empty or malformed reference, or an unknown selector.
    """
    if not isinstance(ref, str) or not ref.strip():
        raise ConfigError(
            f"model reference must be 'name', 'name@VERSION' or 'name@STAGE', got {ref!r}"
        )
    name, sep, selector = ref.strip().partition("@")
    _check_name(name)
    if not sep:
        return name, "production"
    if selector.isdigit():
        version = int(selector)
        if version < 1:
            raise ConfigError(f"{ref!r}: versions start at 1")
        return name, version
    if selector not in SELECTORS:
        raise ConfigError(
            f"{ref!r}: unknown selector {selector!r}{did_you_mean(selector, SELECTORS)}; "
            f"use a version number or one of {', '.join(SELECTORS)}"
        )
    return name, selector


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise ConfigError(
            f"invalid model name {name!r}: use 1-128 letters, digits, '_', '.' or '-', "
            "starting with a letter or digit"
        )
    return name


def tree_sha256(directory: str | os.PathLike[str]) -> str:
    """Return the sha256 of a directory tree: its files' relative paths and bytes.

    Files are taken in sorted order of their POSIX relative path; each contributes
    ``path + NUL + size (8 bytes little-endian) + bytes``, so renaming, adding, removing or
    changing any file changes the digest. A symbolic link contributes its target instead of
    being followed (artifacts are stored without links; one appearing later is tampering).
    Empty directories do not count.
    """
    root = Path(directory)
    h = hashlib.sha256()
    for rel, path in _tree_files(root):
        h.update(rel.encode("utf-8") + b"\0")
        if path.is_symlink():
            target = os.readlink(path).encode("utf-8", "surrogateescape")
            h.update(b"\xff" * 8 + target)  # no real size is 2**64-1: links cannot collide
            continue
        h.update(path.stat().st_size.to_bytes(8, "little"))
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def _tree_files(root: Path) -> list[tuple[str, Path]]:
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        base = Path(dirpath)
        # links to directories are listed in dirnames by os.walk; hash them as links
        names = filenames + [d for d in dirnames if (base / d).is_symlink()]
        for fname in names:
            path = base / fname
            files.append((path.relative_to(root).as_posix(), path))
    files.sort(key=lambda item: item[0])
    return files


def _checkpoint_files(src: Path) -> list[tuple[str, Path]]:
    """Return ``src``'s files (relative POSIX path, path), refusing anything but plain files
    and directories.

    A symbolic link would copy (and hash as legitimate) whatever it points at, ``/etc/shadow``
    or a whole tree, and a FIFO or device blocks or never ends: a checkpoint holds neither.
    """
    files: list[tuple[str, Path]] = []
    for dirpath, dirnames, filenames in os.walk(src, followlinks=False):
        base = Path(dirpath)
        for entry in sorted(dirnames + filenames):
            path = base / entry
            rel = path.relative_to(src).as_posix()
            try:
                mode = path.lstat().st_mode
            except OSError as exc:
                raise DataError(f"cannot register {src}: cannot read {rel}: {exc}") from None
            if stat.S_ISLNK(mode):
                raise DataError(
                    f"cannot register {src}: {rel} is a symbolic link (to "
                    f"{os.readlink(path)!r}); a checkpoint must hold plain files only, copy "
                    "the target in instead"
                )
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise DataError(
                    f"cannot register {src}: {rel} is not a regular file (a FIFO, socket or "
                    "device); a checkpoint must hold plain files only"
                )
            files.append((rel, path))
    return files


def _copy_tree(src: Path, dst: Path) -> None:
    """Copy the checkpoint ``src`` to the new directory ``dst`` and fsync every file.

    Links and special files are refused (:func:`_checkpoint_files`); each file is opened with
    ``O_NOFOLLOW`` and checked again once open, so one swapped in after the check is refused
    too rather than followed.
    """
    files = _checkpoint_files(src)
    dst.mkdir()
    nofollow = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    for rel, path in files:
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDONLY | nofollow)
        except OSError as exc:
            raise DataError(f"cannot register {src}: cannot open {rel}: {exc.strerror}") from None
        with open(fd, "rb") as fin:
            if not stat.S_ISREG(os.fstat(fin.fileno()).st_mode):
                raise DataError(f"cannot register {src}: {rel} is not a regular file")
            with open(target, "wb") as fout:
                shutil.copyfileobj(fin, fout, 1 << 20)
                fout.flush()
                os.fsync(fout.fileno())
        shutil.copystat(path, target, follow_symlinks=False)
    for dirpath, _, _ in os.walk(dst):
        _fsync(Path(dirpath))


def _sweep_stale(parent: Path) -> None:
    """Remove staging directories left by registrations whose process died before renaming
    them (on this host: the process is gone; otherwise older than a day). Only names that
    :func:`~celeris.data.atomic.temp_name` gives count: ``.tmp-notes`` is left alone."""
    sweep_temp_names(parent, max_age_s=_STALE_TEMP_S)


def _fsync(path: Path) -> None:
    # a rename is only as durable as the data it points at: flush before publishing
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _check_checkpoint(directory: Path) -> None:
    """Refuse a directory that is not a checkpoint, without importing torch."""
    if not directory.is_dir():
        raise DataError(f"cannot register {directory}: not a directory")
    _checkpoint_files(directory)  # links and special files first: reading them could hang
    for fname in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / fname).is_file():
            raise DataError(f"cannot register {directory}: not a checkpoint ({fname} is missing)")
    try:
        document = json.loads((directory / CONFIG_FILE).read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot register {directory}: corrupt {CONFIG_FILE}: {exc}") from None
    if not isinstance(document, dict) or not isinstance(document.get("model"), str):
        raise DataError(f"cannot register {directory}: {CONFIG_FILE} names no model")
    _check_features(directory, document.get("meta"))
    expected = document.get("weights_sha256")
    if expected is not None:
        h = hashlib.sha256((directory / WEIGHTS_FILE).read_bytes()).hexdigest()
        if h != expected:
            raise DataError(
                f"cannot register {directory}: {WEIGHTS_FILE} does not match the checksum in "
                f"{CONFIG_FILE} (corrupt or replaced)"
            )


def _check_features(directory: Path, meta: Any) -> None:
    """Refuse a checkpoint whose inputs this Celeris cannot compute from bars: an unknown
    feature-spec version or feature name (a model that records no features is registered: its
    clients send finished windows)."""
    from celeris.models.features import recorded_spec

    n_features = meta.get("n_features") if isinstance(meta, dict) else None
    try:
        recorded_spec(meta, n_features if isinstance(n_features, int) else None)
    except (ConfigError, DataError) as exc:
        raise type(exc)(f"cannot register {directory}: {exc}") from None


INTERFACE_KEYS = ("input_size", "n_features", "horizon", "features", "target", "target_kind")
"""What clients of ``NAME@production`` depend on: the input window's shape and features, and
the forecast's length and kind. Versions that differ in any of them are incompatible."""

_INTERFACE_DEFAULTS: dict[str, Any] = {"n_features": 1, "target_kind": "level"}


def interface(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """Return a checkpoint's or artifact's interface (:data:`INTERFACE_KEYS`) from its
    ``config.json``, without torch; keys the checkpoint does not record are ``None`` (or the
    predictor's default: one feature, ``level`` targets).

    Raises
    ------
    DataError
        No readable ``config.json`` with a ``meta`` object.
    """
    path = Path(directory) / CONFIG_FILE
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"cannot read the interface of {path.parent}: {exc}") from None
    meta = document.get("meta") if isinstance(document, dict) else None
    if not isinstance(meta, dict):
        raise DataError(f"cannot read the interface of {path.parent}: {CONFIG_FILE} has no meta")
    out = {key: meta.get(key, _INTERFACE_DEFAULTS.get(key)) for key in INTERFACE_KEYS}
    if out["features"] is not None:
        out["features"] = [str(f) for f in out["features"]]
    return out


def _differences(candidate: Mapping[str, Any], current: Mapping[str, Any]) -> list[str]:
    return [
        f"{key} {candidate[key]!r} instead of {current[key]!r}"
        for key in INTERFACE_KEYS
        if candidate[key] != current[key]
    ]


def _check_compatible(
    candidate: ModelRecord, candidate_dir: Path, current: ModelRecord, allow: bool
) -> None:
    """Raise :class:`IncompatibleVersion` when ``candidate`` cannot replace ``current`` as
    production (unless ``allow``)."""
    if allow or candidate.version == current.version:
        return
    theirs = interface(candidate_dir)
    try:
        ours = interface(current.path)
    except DataError as exc:
        raise IncompatibleVersion(
            f"cannot tell whether {candidate.ref} can replace {current.ref} as production: "
            f"{exc}; pass --allow-incompatible (allow_incompatible=True) to promote it anyway"
        ) from None
    diffs = _differences(theirs, ours)
    if diffs:
        raise IncompatibleVersion(
            f"{candidate.ref} cannot replace {current.ref} as production: it has "
            f"{'; '.join(diffs)}, so clients sending {candidate.name}@production's inputs "
            "would break; update them and pass --allow-incompatible (allow_incompatible=True) "
            "to promote it anyway"
        )


def _metrics_json(metrics: Mapping[str, Any] | None) -> str:
    if metrics is None:
        return "{}"
    if not isinstance(metrics, Mapping) or not all(isinstance(k, str) for k in metrics):
        raise ConfigError("metrics must be a mapping with string keys")
    try:
        return json.dumps(dict(metrics), sort_keys=True, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"metrics must be JSON-serialisable and finite: {exc}") from None


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


# ---------------------------------------------------------------------------------------------
# Database dialects: the only places SQLite and PostgreSQL differ.


class _SQLite:
    """SQLite in WAL mode; the writer lock is ``BEGIN IMMEDIATE``."""

    errors: tuple[type[BaseException], ...] = (sqlite3.Error,)

    def __init__(self, path: Path, busy_timeout_s: float) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with contextlib.closing(self.connect()) as conn:
                # persistent in the file; readers then never block the single writer
                conn.execute("PRAGMA journal_mode=WAL")
        except sqlite3.Error as exc:
            raise RegistryUnavailable(f"cannot open the registry database {path}: {exc}") from exc

    def connect(self) -> Any:
        # isolation_level=None: no implicit transactions; we issue BEGIN ourselves
        conn = sqlite3.connect(
            self.path, timeout=self.busy_timeout_s, isolation_level=None, check_same_thread=False
        )
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_s * 1000)}")
        conn.execute("PRAGMA synchronous = NORMAL")  # durable across app crashes in WAL mode
        return conn

    def begin(self, conn: Any, write: bool) -> None:
        # IMMEDIATE takes the write lock up front, so "read max(version), insert" cannot race
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")

    def sql(self, query: str) -> str:
        return query

    def describe(self) -> str:
        return f"sqlite:///{self.path}"


class _Postgres:
    """PostgreSQL through psycopg 3; the writer lock is a transaction-scoped advisory lock."""

    def __init__(self, url: str, busy_timeout_s: float) -> None:
        try:
            import psycopg
        except ImportError:
            raise ConfigError(
                "a postgresql:// registry URL needs psycopg 3: pip install 'psycopg[binary]'"
            ) from None
        self._psycopg = psycopg
        self.errors = (psycopg.Error,)
        self.url = url
        self.busy_timeout_s = busy_timeout_s

    def connect(self) -> Any:
        conn = self._psycopg.connect(self.url, autocommit=True)
        conn.execute(f"SET lock_timeout = {int(self.busy_timeout_s * 1000)}")
        return conn

    def begin(self, conn: Any, write: bool) -> None:
        conn.execute("BEGIN")
        if write:
            # one writer at a time, like SQLite's BEGIN IMMEDIATE; plain SELECTs are not blocked.
            # An advisory lock (not LOCK TABLE) also works before the tables exist, so two
            # processes creating the schema at once do not race either. Released at COMMIT.
            conn.execute(f"SELECT pg_advisory_xact_lock({_PG_WRITER_LOCK})")

    def sql(self, query: str) -> str:
        return query.replace("?", "%s")  # our SQL has no literal '?'

    def describe(self) -> str:
        return redact_url(self.url)  # hide a password


class _Tx:
    """A transaction handle: ``execute`` with ``?`` parameters on either dialect."""

    def __init__(self, conn: Any, dialect: _SQLite | _Postgres) -> None:
        self._conn = conn
        self._dialect = dialect

    def execute(self, query: str, params: Sequence[Any] = ()) -> Any:
        return self._conn.execute(self._dialect.sql(query), tuple(params))

    def all(self, query: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        return list(self.execute(query, params).fetchall())

    def one(self, query: str, params: Sequence[Any] = ()) -> tuple[Any, ...] | None:
        row = self.execute(query, params).fetchone()
        return None if row is None else tuple(row)


# ---------------------------------------------------------------------------------------------


class ModelRegistry:
    """Versioned model artifacts with stages, metrics and sha256 verification.

    Parameters
    ----------
    root : str or Path
        Directory holding ``artifacts/`` (and ``registry.db`` unless ``url`` is given).
    url : str, optional
        ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db`` or
        ``postgresql://user:pass@host/db`` (needs psycopg 3). Default: SQLite at
        ``root/registry.db``.
    busy_timeout_s : float
        How long a writer waits for another writer's transaction before failing.

    Examples
    --------
    >>> reg = ModelRegistry("~/.celeris/registry")                     # doctest: +SKIP
    >>> rec = reg.register("btc-nhits", "runs/nhits", metrics={"mae": 0.8})  # doctest: +SKIP
    >>> reg.promote("btc-nhits", rec.version)                         # doctest: +SKIP
    >>> record, predictor = reg.load("btc-nhits@production")          # doctest: +SKIP
    """

    def __init__(
        self, root: str | os.PathLike[str], url: str | None = None, *, busy_timeout_s: float = 30.0
    ) -> None:
        busy_timeout_s = check_real("busy_timeout_s", busy_timeout_s, minimum=0, open_low=True)
        self.root = Path(root).expanduser().resolve()
        self.artifacts = self.root / "artifacts"
        self.artifacts.mkdir(parents=True, exist_ok=True)
        self._db: _SQLite | _Postgres
        if url is None:
            self._db = _SQLite(self.root / "registry.db", busy_timeout_s)
        elif url.startswith("sqlite:///"):
            path = Path(url[len("sqlite:///") :]).expanduser()
            if not str(path) or str(path) == ":memory:":
                raise ConfigError(f"registry URL {url!r} names no database file")
            self._db = _SQLite(path.resolve(), busy_timeout_s)
        elif url.startswith(("postgresql://", "postgres://")):
            self._db = _Postgres(url, busy_timeout_s)
        else:
            raise ConfigError(
                f"unsupported registry URL {url!r}: use sqlite:///PATH or postgresql://..."
            )
        with self._transaction(write=True) as tx:
            for statement in _SCHEMA:
                tx.execute(statement)
        for parent in self.artifacts.iterdir():  # staging copies of registrations that died
            if parent.is_dir() and not parent.is_symlink():
                _sweep_stale(parent)

    def __repr__(self) -> str:
        return f"ModelRegistry({str(self.root)!r}, url={self._db.describe()!r})"

    # -- transactions ------------------------------------------------------------------------

    @contextlib.contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Tx]:
        try:
            conn = self._db.connect()
        except self._db.errors as exc:
            raise RegistryUnavailable(
                f"cannot open the registry database {self._db.describe()}: {exc}"
            ) from exc
        try:
            self._db.begin(conn, write)
            try:
                yield _Tx(conn, self._db)
            except BaseException:
                with contextlib.suppress(*self._db.errors):
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        except self._db.errors as exc:
            raise RegistryUnavailable(
                f"registry database {self._db.describe()} failed: {exc}"
            ) from exc
        finally:
            conn.close()

    def _record(self, row: tuple[Any, ...]) -> ModelRecord:
        name, version, stage, sha, metrics_json, created_at, path = row
        return ModelRecord(
            name=name,
            version=int(version),
            stage=stage,
            sha256=sha,
            metrics=json.loads(metrics_json),
            created_at=created_at,
            path=self.root / path,
        )

    def _rows(self, tx: _Tx, name: str) -> list[ModelRecord]:
        rows = tx.all(f"SELECT {_COLUMNS} FROM models WHERE name = ? ORDER BY version", (name,))
        return [self._record(r) for r in rows]

    def _known(self, tx: _Tx, name: str) -> list[ModelRecord]:
        """Return ``name``'s versions, or raise ModelNotFound with a did-you-mean hint."""
        records = self._rows(tx, name)
        if not records:
            names = [r[0] for r in tx.all("SELECT DISTINCT name FROM models ORDER BY name")]
            shown = ", ".join(names[:20]) + (
                f" and {len(names) - 20} more" if len(names) > 20 else ""
            )
            known = f"; registered: {shown}" if names else "; the registry is empty"
            raise ModelNotFound(f"no model named {name!r}{did_you_mean(name, names)}{known}")
        return records

    def _log_change(
        self, tx: _Tx, name: str, version: int, from_stage: str | None, to_stage: str, reason: str
    ) -> None:
        row = tx.one("SELECT MAX(seq) FROM stage_changes WHERE name = ?", (name,))
        seq = 1 if row is None or row[0] is None else int(row[0]) + 1
        tx.execute(
            "INSERT INTO stage_changes (name, seq, version, from_stage, to_stage, reason, "
            "changed_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (name, seq, version, from_stage, to_stage, reason, _now()),
        )

    def _set_stage(self, tx: _Tx, record: ModelRecord, stage: str, reason: str) -> None:
        tx.execute(
            "UPDATE models SET stage = ? WHERE name = ? AND version = ?",
            (stage, record.name, record.version),
        )
        self._log_change(tx, record.name, record.version, record.stage, stage, reason)

    def _make_production(
        self, tx: _Tx, record: ModelRecord, reason: str, *, allow_incompatible: bool
    ) -> None:
        """Move ``record`` to production and the current production version to archived;
        refuse a version incompatible with the current one unless ``allow_incompatible``."""
        others = [
            r
            for r in self._rows(tx, record.name)
            if r.stage == "production" and r.version != record.version
        ]
        for other in others:
            _check_compatible(record, record.path, other, allow_incompatible)
        for other in others:
            self._set_stage(tx, other, "archived", "superseded")
        self._set_stage(tx, record, "production", reason)

    # -- public API --------------------------------------------------------------------------

    def register(
        self,
        name: str,
        checkpoint_dir: str | os.PathLike[str],
        *,
        metrics: Mapping[str, Any] | None = None,
        stage: str = "staging",
        exports: Iterable[str] = (),
        allow_incompatible: bool = False,
    ) -> ModelRecord:
        """Copy a checkpoint into the registry as the next version of ``name``; return its record.

        Parameters
        ----------
        name : str
            Model name (letters, digits, ``_ . -``; becomes a directory name).
        checkpoint_dir : path
            A checkpoint written by :func:`celeris.models.checkpoint.save_checkpoint`. Its whole
            tree is copied (and any ``model.onnx`` already exported in it).
        metrics : mapping, optional
            JSON-serialisable, finite evaluation metrics stored with the version.
        stage : str
            Initial stage; ``"production"`` archives the current production version.
        exports : iterable of str
            ONNX variants (``"onnx"``, ``"onnx-int8"``) to export into the artifact before it
            is hashed, so that loading with those backends needs no export at serve time.
        allow_incompatible : bool
            With ``stage="production"``: replace the current production version even if the
            interface (:data:`INTERFACE_KEYS`) differs, which breaks its clients.

        Raises
        ------
        DataError
            ``checkpoint_dir`` is not a checkpoint (or its weights fail their own checksum),
            or holds a symbolic link or a special file.
        ConfigError
            A bad name, stage, metrics or export.
        IncompatibleVersion
            ``stage="production"`` with an interface other than the current production
            version's (nothing is registered).
        """
        _check_name(name)
        check_choice("stage", stage, STAGES)
        metrics_json = _metrics_json(metrics)
        wanted = [check_choice("export", e, tuple(_EXPORT_FILES)) for e in exports]
        source = Path(checkpoint_dir).expanduser()
        _check_checkpoint(source)

        parent = self.artifacts / name
        parent.mkdir(parents=True, exist_ok=True)
        _sweep_stale(parent)
        staged = parent / temp_name()  # .tmp-<pid>-<host>-<token>: sweepable once we die
        try:
            # the slow part (copy, export, hash) happens before the writer lock is taken
            _copy_tree(source, staged)
            for export in wanted:
                if export not in _recorded_exports(staged):
                    # a file without its verification record (exported before exports.json
                    # existed) is exported again, so the artifact says what it verified
                    from celeris.models.export import export_checkpoint

                    export_checkpoint(staged, "onnx", int8=export == "onnx-int8")
            sha = tree_sha256(staged)
            with self._transaction(write=True) as tx:
                row = tx.one("SELECT MAX(version) FROM models WHERE name = ?", (name,))
                version = 1 if row is None or row[0] is None else int(row[0]) + 1
                final = parent / str(version)
                if final.exists():
                    # left by a process that died after its rename but before its commit:
                    # no row references it and we hold the writer lock, so it is garbage
                    shutil.rmtree(final)
                os.replace(staged, final)
                try:
                    _fsync(parent)
                    record = ModelRecord(
                        name=name,
                        version=version,
                        stage="staging",
                        sha256=sha,
                        metrics=json.loads(metrics_json),
                        created_at=_now(),
                        path=final,
                    )
                    tx.execute(
                        f"INSERT INTO models ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?)",
                        (
                            name,
                            version,
                            "staging",
                            sha,
                            metrics_json,
                            record.created_at,
                            final.relative_to(self.root).as_posix(),
                        ),
                    )
                    self._log_change(tx, name, version, None, "staging", "register")
                    if stage == "production":
                        self._make_production(
                            tx, record, "register", allow_incompatible=allow_incompatible
                        )
                    elif stage != "staging":
                        self._set_stage(tx, record, stage, "register")
                except BaseException:
                    # still under the writer lock: nobody else can have claimed this version
                    shutil.rmtree(final, ignore_errors=True)
                    raise
        finally:
            shutil.rmtree(staged, ignore_errors=True)  # gone already after a successful rename
        return dataclasses.replace(record, stage=stage)

    def get(self, ref: str) -> ModelRecord:
        """Return the record ``ref`` names: ``name@7``, ``name@production``, ``name@staging``
        (the newest staging version), ``name@latest`` (the newest version) or ``name``
        (= production).

        Raises
        ------
        ModelNotFound
            An unknown name (with a did-you-mean hint), version or empty stage; the message
            lists the versions and their stages.
        ConfigError
            A malformed reference.
        """
        name, selector = parse_ref(ref)
        with self._transaction(write=False) as tx:
            records = self._known(tx, name)
        return _select(ref, name, selector, records)

    def list(self, name: str | None = None) -> builtins.list[ModelRecord]:
        """Return all versions (of ``name``, or of every model), ordered by name and version."""
        with self._transaction(write=False) as tx:
            if name is not None:
                return self._known(tx, _check_name(name))
            rows = tx.all(f"SELECT {_COLUMNS} FROM models ORDER BY name, version")
        return [self._record(r) for r in rows]

    def history(self, name: str) -> builtins.list[StageChange]:
        """Return ``name``'s stage changes, oldest first."""
        with self._transaction(write=False) as tx:
            self._known(tx, _check_name(name))
            rows = tx.all(
                "SELECT name, seq, version, from_stage, to_stage, reason, changed_at "
                "FROM stage_changes WHERE name = ? ORDER BY seq",
                (name,),
            )
        return [
            StageChange(
                name=r[0],
                seq=int(r[1]),
                version=int(r[2]),
                from_stage=r[3],
                to_stage=r[4],
                reason=r[5],
                changed_at=r[6],
            )
            for r in rows
        ]

    def promote(
        self,
        name: str,
        version: int | str,
        stage: str = "production",
        *,
        allow_incompatible: bool = False,
    ) -> ModelRecord:
        """Move ``name@version`` to ``stage``; return the updated record.

        Promoting to production archives the current production version (at most one per name)
        and first verifies the artifact's hash and that its interface (input shape, features,
        horizon, target: :data:`INTERFACE_KEYS`) equals the current production version's, so
        its clients keep working; ``allow_incompatible=True`` promotes it anyway. Moving a
        version to the stage it already has changes nothing.

        Raises
        ------
        ModelNotFound
            Unknown name or version.
        ArtifactTampered
            Promotion to production of an artifact that fails verification.
        IncompatibleVersion
            Promotion to production of a version whose interface differs, without
            ``allow_incompatible``.
        """
        _check_name(name)
        check_choice("stage", stage, STAGES)
        wanted = _version_number(version)
        target = _select(f"{name}@{wanted}", name, wanted, self.list(name))
        if stage == "production":
            self.verify(target)  # hash outside the writer lock: it reads every byte
        with self._transaction(write=True) as tx:
            record = _select(f"{name}@{wanted}", name, wanted, self._known(tx, name))
            if record.sha256 != target.sha256:
                raise RegistryError(f"{record.ref} changed while being promoted; try again")
            if record.stage == stage:
                return record
            if stage == "production":
                self._make_production(tx, record, "promote", allow_incompatible=allow_incompatible)
            else:
                self._set_stage(tx, record, stage, "promote")
        return dataclasses.replace(record, stage=stage)

    def rollback(self, name: str, *, allow_incompatible: bool = False) -> ModelRecord:
        """Return production to the version that was production before the current one.

        The current production version is archived. Rollbacks stack: rolling back twice after
        promoting versions 1, 2 and 3 serves version 1. Like :meth:`promote`, a previous
        version with another interface is refused unless ``allow_incompatible``.

        Raises
        ------
        RegistryError
            ``name`` has no production version, or no earlier production version.
        IncompatibleVersion
            The previous version's interface differs from the current one's.
        """
        _check_name(name)
        with self._transaction(write=False) as tx:
            target = self._rollback_target(tx, name)
        self.verify(target)
        with self._transaction(write=True) as tx:
            again = self._rollback_target(tx, name)
            if again.version != target.version:
                raise RegistryError(f"{name}'s production changed during the rollback; try again")
            current = next(r for r in self._rows(tx, name) if r.stage == "production")
            _check_compatible(again, again.path, current, allow_incompatible)
            self._set_stage(tx, current, "archived", "rolled back")
            self._set_stage(tx, again, "production", "rollback")
        return dataclasses.replace(again, stage="production")

    def _rollback_target(self, tx: _Tx, name: str) -> ModelRecord:
        records = self._known(tx, name)
        current = [r for r in records if r.stage == "production"]
        if not current:
            raise RegistryError(
                f"{name} has no production version to roll back from ({_versions(records)})"
            )
        stack = _production_stack(
            tx.all(
                "SELECT version, to_stage, reason FROM stage_changes WHERE name = ? ORDER BY seq",
                (name,),
            )
        )
        now = current[0].version
        if not stack or stack[-1] != now:
            stack.append(now)
        while stack and stack[-1] == now:
            stack.pop()
        if not stack:
            raise RegistryError(
                f"{name}@{now} is the first production version of {name}: there is no earlier "
                f"one to roll back to ({_versions(records)})"
            )
        by_version = {r.version: r for r in records}
        return by_version[stack[-1]]

    def incompatibilities(self, record: ModelRecord) -> builtins.list[str]:
        """Return how ``record``'s interface differs from its name's production version
        (empty when it is the same, when it is production, or when there is none)."""
        try:
            current = self.get(f"{record.name}@production")
        except ModelNotFound:
            return []
        if current.version == record.version:
            return []
        return _differences(interface(record.path), interface(current.path))

    def check_compatible(self, record: ModelRecord) -> None:
        """Raise :class:`IncompatibleVersion` when ``record`` could not become production
        without ``allow_incompatible`` (what :meth:`promote` checks under its lock)."""
        try:
            current = self.get(f"{record.name}@production")
        except ModelNotFound:
            return
        _check_compatible(record, record.path, current, False)

    def verify(self, record: ModelRecord) -> None:
        """Recompute the artifact tree's sha256; raise :class:`ArtifactTampered` on a mismatch.

        A missing artifact directory, or a file changed, added or removed since registration,
        is a mismatch.
        """
        _verify_tree(record, record.path)

    def load(
        self,
        ref: str,
        *,
        backend: str = "auto",
        threads: int | None = None,
        device: str = "cpu",
        max_batch: int = 4096,
        compile: bool = False,
    ) -> tuple[ModelRecord, Predictor]:
        """Verify and load a registered model; return ``(record, predictor)``.

        The artifact is copied to a private temporary directory, that copy is hashed and
        compared with the registry, and the predictor is built from it (the weights are in
        memory afterwards and the copy is deleted), so what was verified is what runs.
        ``backend="auto"`` (the default) runs the fastest backend the artifact's
        ``exports.json`` verified (:meth:`~celeris.models.predictor.Predictor.load`: int8 ONNX
        within its error budget, else fp32 ONNX, else torch; an artifact registered before
        exports were recorded, holding ``model.onnx`` and no record, runs fp32 ONNX as it
        always did; torch for one with neither). An explicit ONNX backend whose file is not in the artifact is exported into
        the private copy (slower; register with ``exports=("onnx",)`` to avoid it); the
        artifact itself is never written.

        Raises
        ------
        ModelNotFound
            ``ref`` names nothing.
        ArtifactTampered
            The artifact's hash does not match the registry.
        """
        from celeris.models.predictor import CHOICES, Predictor

        check_choice("backend", backend, CHOICES)
        record = self.get(ref)
        if not record.path.is_dir():
            _verify_tree(record, record.path)  # raises, naming the missing tree
        # Named after this process: a server killed mid-load leaves a whole artifact copy in
        # the temporary directory, which the next load removes once the process is gone.
        # One base for every model, so that any model's load sweeps every dead process's copy
        # (copies made before named the model: this model's are swept too).
        scratch, base = Path(tempfile.gettempdir()), "celeris-load"
        sweep_temp_names(scratch, base)
        sweep_temp_names(scratch, f"{base}-{record.name}")
        tmp = scratch / temp_name(base)
        tmp.mkdir(mode=0o700)
        try:
            private = tmp / "artifact"
            shutil.copytree(record.path, private, symlinks=True)
            _verify_tree(record, private, shown=record.path)
            predictor = Predictor.load(
                private,
                backend=_legacy_default(private) if backend == "auto" else backend,
                threads=threads,
                device=device,
                max_batch=max_batch,
                compile=compile,
            )
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return record, predictor


def _recorded_exports(tree: Path) -> dict[str, Any]:
    """The exports a checkpoint's ``exports.json`` records whose file is in ``tree``."""
    from celeris.models.checkpoint_file import read_exports

    record = read_exports(tree)
    entries = {} if record is None else record.get("exports", {})
    return {k: v for k, v in entries.items() if (tree / _EXPORT_FILES.get(k, "-")).is_file()}


def _legacy_default(tree: Path) -> str:
    """``"auto"``, except for an artifact registered before exports were recorded: one that holds
    ``model.onnx`` and no ``exports.json`` was verified when registered and served with the ONNX
    backend by default, and still is (``auto`` would fall back to torch, which a serve-only
    install lacks)."""
    from celeris.models.checkpoint_file import read_exports

    if (tree / _EXPORT_FILES["onnx"]).is_file() and read_exports(tree) is None:
        return "onnx"
    return "auto"


def _verify_tree(record: ModelRecord, tree: Path, *, shown: Path | None = None) -> None:
    where = shown or tree
    if not tree.is_dir():
        raise ArtifactTampered(
            f"artifact of {record.ref} is missing: {where} is not a directory "
            f"(registered sha256 {record.sha256}); refusing it"
        )
    actual = tree_sha256(tree)
    if actual != record.sha256:
        files = ", ".join(rel for rel, _ in _tree_files(tree)) or "no files"
        raise ArtifactTampered(
            f"artifact of {record.ref} at {where} does not match the registry: registered "
            f"sha256 {record.sha256}, found {actual} (files now: {files}); a file was changed, "
            "added or removed after registration; refusing it"
        )


def _version_number(version: int | str) -> int:
    if not isinstance(version, str):
        return check_int("version", version, minimum=1)
    text = version.strip()
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"version must be a positive integer, got {version!r}")
    return int(text)


def _versions(records: Sequence[ModelRecord]) -> str:
    return "versions: " + ", ".join(f"{r.version} ({r.stage})" for r in records)


def _select(
    ref: str, name: str, selector: int | str, records: Sequence[ModelRecord]
) -> ModelRecord:
    if isinstance(selector, int):
        for r in records:
            if r.version == selector:
                return r
        raise ModelNotFound(f"{ref}: {name} has no version {selector}; {_versions(records)}")
    if selector == "latest":
        return records[-1]
    matching = [r for r in records if r.stage == selector]
    if not matching:
        hint = f"load one as {name}@VERSION or promote one"
        raise ModelNotFound(
            f"{ref}: {name} has no {selector} version; {_versions(records)}; {hint}"
        )
    return matching[-1]  # several staging versions: the newest


def _production_stack(changes: Iterable[tuple[Any, ...]]) -> list[int]:
    """Replay stage changes into the stack of production versions (top = current).

    A version becoming production is pushed; a rollback to version v pops down to v, so a
    second rollback goes further back rather than toggling between two versions.
    """
    stack: list[int] = []
    for version, to_stage, reason in changes:
        if to_stage != "production":
            continue
        v = int(version)
        if reason == "rollback":
            while stack and stack[-1] != v:
                stack.pop()
            if not stack:
                stack.append(v)
        elif not stack or stack[-1] != v:
            stack.append(v)
    return stack
