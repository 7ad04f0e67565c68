"""celeris.data.atomic: temp-file-plus-rename writes and the sweeping of killed writers' files."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from celeris.data.atomic import (
    atomic_path,
    atomic_write_bytes,
    sweep_stale,
    sweep_temp_files,
    temp_files_of,
    temp_name,
)

# A writer that starts replacing TARGET through atomic_path, writes part of the new file,
# says so on stdout and then waits to be killed (a crash mid-write).
_SLOW_WRITER = """
import sys, time
from celeris.data.atomic import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    with open(tmp, "wb") as fh:
        fh.write(b"half of the new file")
        fh.flush()
        print(tmp, flush=True)
        time.sleep(600)
"""


def _start_writer(target: Path) -> tuple[subprocess.Popen[str], Path]:
    proc = subprocess.Popen(
        [sys.executable, "-c", _SLOW_WRITER, str(target)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert line, "the writer exited before writing"
    return proc, Path(line)


def test_atomic_path_writer_killed_mid_write_old_file_intact_leftover_swept(tmp_path):
    target = tmp_path / "prices.csv"
    target.write_bytes(b"the old file\n")
    proc, tmp = _start_writer(target)
    try:
        assert tmp.parent == tmp_path and tmp.exists()
        # a live writer's temporary file is never swept
        assert sweep_stale(tmp_path, ".prices.csv.tmp-*") == []
        assert tmp.exists()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    assert target.read_bytes() == b"the old file\n"
    assert tmp.exists()  # what a crash leaves behind ...
    assert sweep_stale(tmp_path, ".prices.csv.tmp-*") == [tmp]  # ... and the next start removes
    assert sorted(p.name for p in tmp_path.iterdir()) == ["prices.csv"]


def test_atomic_path_exception_leaves_old_file_and_no_temp(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="boom"), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("boom")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_write_bytes_replaces_file(tmp_path):
    target = tmp_path / "a.bin"
    target.write_bytes(b"old")
    atomic_write_bytes(target, b"new")
    assert target.read_bytes() == b"new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin"]


def test_atomic_path_missing_directory_raises_file_not_found(tmp_path):
    with pytest.raises(FileNotFoundError):
        atomic_write_bytes(tmp_path / "nope" / "a.bin", b"x")
    assert not (tmp_path / "nope").exists()


def test_sweep_stale_own_process_temp_kept(tmp_path):
    mine = tmp_path / temp_name("a.bin")
    mine.write_bytes(b"being written by this process")
    assert sweep_stale(tmp_path, ".a.bin.tmp-*") == []
    assert mine.exists()


def test_sweep_stale_unknown_writer_removed_only_when_old(tmp_path):
    # another host's (or an older format's) temp file: its writer cannot be checked, so age decides
    foreign = tmp_path / ".a.bin.tmp-123-00000000-abcdef"
    foreign.write_bytes(b"x")
    assert sweep_stale(tmp_path, ".a.bin.tmp-*", max_age_s=3600) == []
    old = time.time() - 7200
    os.utime(foreign, (old, old))
    assert sweep_stale(tmp_path, ".a.bin.tmp-*", max_age_s=3600) == [foreign]


def test_sweep_stale_dead_writer_directory_removed(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(timeout=30)
    from celeris.data import atomic

    name = f".tmp-{proc.pid}-{atomic._host_tag()}-abc123"
    leftover = tmp_path / name
    (leftover / "sub").mkdir(parents=True)
    (leftover / "sub" / "weights").write_bytes(b"x" * 1000)
    assert sweep_stale(tmp_path, ".tmp-*") == [leftover]
    assert not leftover.exists()


def _age(path: Path, days: float = 2.0) -> Path:
    old = time.time() - days * 86400
    os.utime(path, (old, old), follow_symlinks=False)
    return path


def test_temp_files_of_killed_writers_file_matched_users_similar_names_not(tmp_path):
    target = tmp_path / "prices.csv"
    target.write_bytes(b"the old file\n")
    proc, leftover = _start_writer(target)  # a temporary file atomic_path itself made
    try:
        assert temp_files_of(target) == [leftover]
        assert sweep_temp_files(target) == []  # its writer is alive: kept
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        assert proc.stdout is not None
        proc.stdout.close()
    other = tmp_path / temp_name("prices.csv.gz")  # another file's temporary sibling
    other.write_bytes(b"")
    users = [
        tmp_path / name
        for name in (".prices.csv.tmp-notes", ".prices.csv.tmp", ".prices.csv.my.tmp.bak")
    ]
    for path in users:
        path.write_bytes(b"the user's own file")
        _age(path)
    assert temp_files_of(target) == [leftover]
    assert sweep_temp_files(target) == [leftover]
    assert not leftover.exists()
    assert all(p.exists() for p in users) and other.exists()


def test_temp_files_of_pre_atomic_mkstemp_leftover_swept_only_when_old(tmp_path):
    # What the store wrote before celeris.data.atomic: tempfile.mkstemp(prefix=".1m.parquet.",
    # suffix=".tmp"); no writer to check, so only its age tells.
    import tempfile

    target = tmp_path / "1m.parquet"
    fd, name = tempfile.mkstemp(dir=tmp_path, prefix=".1m.parquet.", suffix=".tmp")
    os.close(fd)
    legacy = Path(name)
    assert temp_files_of(target) == [legacy]
    assert sweep_temp_files(target) == []  # recent: it may be a writer's
    _age(legacy)
    assert sweep_temp_files(target) == [legacy]
