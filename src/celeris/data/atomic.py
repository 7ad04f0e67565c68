"""Atomic file writes and the sweeping of what killed writers leave behind.

Every file Celeris writes goes through :func:`atomic_path` (or :func:`atomic_write_bytes`): the
data goes to a temporary sibling in the same directory, is fsynced, and ``os.replace`` puts it
in place, then the directory is fsynced so the rename survives a power loss. A reader sees the
old file or the new one, never a prefix of the new one; a killed writer leaves the old file
intact plus a temporary sibling.

Temporary names carry their writer: ``.<name>.tmp-<pid>-<host>-<token>`` (``host`` is a short
hash of the host name, for directories shared between machines). :func:`sweep_stale` removes
the leftovers of writers that are gone: on this host, those whose process no longer exists; from
another host (or of an unknown format), those older than ``max_age_s``. A live writer's file is
never touched, so sweeping at start-up is safe beside concurrent writers.
:func:`temp_files_of` lists exactly the temporary siblings :func:`atomic_path` makes for a file
(derived from :func:`temp_name`, so a user's ``.prices.csv.tmp-notes`` is never one of them)
and :func:`sweep_temp_files` sweeps them: what a writer of one file calls before it writes.

This module is at the bottom of the package tree (``celeris.data`` imports nothing else from
Celeris) so every package can use it.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import os
import re
import secrets
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "STALE_AFTER_S",
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_text",
    "fsync_dir",
    "sweep_stale",
    "sweep_temp_files",
    "sweep_temp_names",
    "temp_files_of",
    "temp_name",
    "temp_names_in",
]

STALE_AFTER_S = 24 * 3600.0
"""Age after which a temporary file whose writer cannot be checked is taken to be garbage."""

_HOST_BYTES = 4  # the host tag: a blake2b digest of the host name, 8 hex digits
_TOKEN_BYTES = 6  # the random part: 12 hex digits (any length is read back)
# The tag temp_name() writes, ``tmp-<pid>-<host>-<token>``, as the sweeps read it back.
_TAG_PATTERN = rf"tmp-(\d+)-([0-9a-f]{{{2 * _HOST_BYTES}}})-[0-9a-f]+"
_TEMP_RE = re.compile(rf"\.{_TAG_PATTERN}$")


def _host_tag() -> str:
    return hashlib.blake2b(socket.gethostname().encode(), digest_size=_HOST_BYTES).hexdigest()


def temp_name(base: str = "") -> str:
    """Return a fresh temporary name ``.<base>.tmp-<pid>-<host>-<token>`` (``.tmp-...`` when
    ``base`` is empty) that :func:`sweep_stale` can attribute to this process."""
    tag = f"tmp-{os.getpid()}-{_host_tag()}-{secrets.token_hex(_TOKEN_BYTES)}"
    return f".{base}.{tag}" if base else f".{tag}"


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return True  # cannot tell: keep the file
    return True


def _is_stale(path: Path, now: float, max_age_s: float) -> bool:
    match = _TEMP_RE.search(path.name)
    if match is not None and match.group(2) == _host_tag():
        pid = int(match.group(1))
        if pid == os.getpid():
            return False  # ours: a writer of this process may be using it right now
        return not _pid_alive(pid)
    try:
        age = now - path.lstat().st_mtime
    except OSError:
        return False
    return age > max_age_s


def sweep_stale(
    directory: str | os.PathLike[str], pattern: str = ".*.tmp*", *, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove temporary files or directories in ``directory`` left by dead writers.

    Parameters
    ----------
    directory
        Where to look (not recursive); a missing directory has nothing to sweep.
    pattern
        Glob of the candidates, e.g. ``".prices.csv.tmp-*"``.
    max_age_s
        Age after which a candidate whose writer cannot be checked (another host, an older
        name format) is removed.

    Returns
    -------
    list of pathlib.Path
        What was removed.
    """
    try:
        candidates = sorted(Path(directory).glob(pattern))
    except OSError:
        return []
    return _remove_stale(candidates, max_age_s)


def temp_files_of(path: str | os.PathLike[str]) -> list[Path]:
    """Return the temporary siblings that writers of ``path`` left or are writing, sorted.

    Exactly the names :func:`atomic_path` gives (``.<name>.tmp-<pid>-<host>-<token>``, read
    with the pattern :func:`temp_name` writes), plus ``.<name>.<8 characters>.tmp``, what the store wrote with
    ``tempfile.mkstemp`` before this module existed. A user's file with a similar name
    (``.<name>.tmp-notes``, ``.<name>.tmp``) is not one of them.
    """
    target = Path(path)
    name = re.escape(target.name)
    ours = re.compile(rf"\.{name}\.{_TAG_PATTERN}")
    mkstemp = re.compile(rf"\.{name}\.[a-z0-9_]{{8}}\.tmp")  # tempfile's 8 random characters
    try:
        candidates = sorted(target.parent.glob(f".{glob.escape(target.name)}.*"))
    except OSError:
        return []
    return [p for p in candidates if ours.fullmatch(p.name) or mkstemp.fullmatch(p.name)]


def sweep_temp_files(
    path: str | os.PathLike[str], *, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove the temporary siblings of ``path`` (:func:`temp_files_of`) left by dead writers.

    Call it before writing ``path`` through :func:`atomic_path`: a live writer's file (this
    process's, or one whose process still runs on this host) is kept; one from another host
    is removed only once older than ``max_age_s``. Returns what was removed.
    """
    return _remove_stale(temp_files_of(path), max_age_s)


def temp_names_in(directory: str | os.PathLike[str], base: str = "") -> list[Path]:
    """Return the entries of ``directory`` named by :func:`temp_name` with ``base``, sorted.

    For temporary files or directories that are not the sibling of one final path (a
    registry's staging directories: ``temp_name()``, ``.tmp-<pid>-<host>-<token>``). Only that
    exact name format counts: ``.tmp-notes`` is somebody's file.
    """
    prefix = rf"\.{re.escape(base)}\." if base else r"\."
    ours = re.compile(prefix + _TAG_PATTERN)
    try:
        candidates = sorted(
            Path(directory).glob(f".{glob.escape(base)}.tmp-*" if base else ".tmp-*")
        )
    except OSError:
        return []
    return [p for p in candidates if ours.fullmatch(p.name)]


def sweep_temp_names(
    directory: str | os.PathLike[str], base: str = "", *, max_age_s: float = STALE_AFTER_S
) -> list[Path]:
    """Remove the entries of ``directory`` named by :func:`temp_name` with ``base``
    (:func:`temp_names_in`) that dead writers left; same rule as :func:`sweep_temp_files`."""
    return _remove_stale(temp_names_in(directory, base), max_age_s)


def _remove_stale(candidates: list[Path], max_age_s: float) -> list[Path]:
    removed: list[Path] = []
    now = time.time()
    for path in candidates:
        if not _is_stale(path, now, max_age_s):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except FileNotFoundError:
            continue  # swept by someone else at the same time
        except OSError:
            continue  # not ours to remove (permissions): leave it
        removed.append(path)
    return removed


def fsync_dir(directory: str | os.PathLike[str]) -> None:
    """Flush a directory's entries to disk (makes a rename in it durable; no-op where
    directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on a clean exit put it in place atomically.

    Write the whole file to the yielded path (by name: pandas, pyarrow and ``open`` all work).
    On success it is fsynced and renamed over ``path``, and the directory is fsynced. On an
    exception the temporary file is removed and ``path`` is left as it was.

    Raises
    ------
    FileNotFoundError
        The directory of ``path`` does not exist (nothing is created).
    """
    target = Path(path)
    tmp = target.parent / temp_name(target.name)
    try:
        yield tmp
        fd = os.open(tmp, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    fsync_dir(target.parent)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace ``path`` with ``data`` atomically (see :func:`atomic_path`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        fh.write(data)


def atomic_write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`atomic_path`)."""
    atomic_write_bytes(path, text.encode(encoding))
