"""Keep numba's on-disk cache of a kernel honest about the other files it compiles in.

numba (``cache=True``) invalidates a cached kernel when *its own* source file changes, not when
a file whose jitable helpers it inlines does: the grouped kernel inlines ``kernel.py``'s order
arithmetic and ``perp.py``'s formulas, so editing either would leave it running stale machine
code. :func:`guard` stores a digest of those files beside the cache and flushes the kernel's
cache index when the digest differs, before the kernel's first call compiles or loads it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def _digest(files: list[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def guard(dispatcher: Any, dependencies: list[Path]) -> None:
    """Flush ``dispatcher``'s cache when any of ``dependencies`` changed since it was cached.

    Best effort: a read-only or missing cache directory leaves numba's own behaviour.
    """
    cache = getattr(dispatcher, "_cache", None)
    cache_path = getattr(cache, "_cache_path", None)
    if cache is None or cache_path is None:
        return
    name = getattr(dispatcher, "__name__", "kernel")
    stamp = Path(cache_path) / f"{name}.celeris-deps"
    digest = _digest(dependencies)
    try:
        if stamp.exists() and stamp.read_text() == digest:
            return
        cache.flush()
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text(digest)
    except OSError:
        return
