"""Keep numba's on-disk cache of a kernel honest about the other files it compiles in.

numba (``cache=True``) invalidates a cached kernel when *its own* source file changes, not when
a file whose jitable helpers it inlines does: the grouped kernel inlines ``kernel.py``'s order
arithmetic and ``perp.py``'s formulas, so editing either would leave it running stale machine
code. :func:`watch` registers a kernel file with the files it depends on; numba's cache then
stamps the kernel's entries with a digest of all of them (a cache locator that wraps the one
numba would pick, changing only the source stamp), so a change to any of them recompiles it,
eagerly compiled kernels included.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from numba.core import caching

_WATCHED: dict[str, tuple[Path, ...]] = {}
# Newer numba names it CacheImpl, older _CacheImpl; its locator list is shared by subclasses.
_IMPL: Any = getattr(caching, "CacheImpl", None) or getattr(caching, "_CacheImpl")  # noqa: B009


def _digest(files: Iterable[Path]) -> str:
    h = hashlib.sha256()
    for path in files:
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()


class DependencyStampLocator(caching._CacheLocator):
    """numba's own locator for a watched file, with the dependencies' digest in its stamp."""

    def __init__(self, inner: Any, digest: str) -> None:
        self._inner = inner
        self._digest = digest
        self._py_file = getattr(inner, "_py_file", None)

    def ensure_cache_path(self) -> None:
        self._inner.ensure_cache_path()

    def get_cache_path(self) -> str:
        return str(self._inner.get_cache_path())

    def get_source_stamp(self) -> Any:
        return (self._inner.get_source_stamp(), self._digest)

    def get_disambiguator(self) -> str:
        return str(self._inner.get_disambiguator())

    @classmethod
    def from_function(cls, py_func: Any, py_file: str) -> DependencyStampLocator | None:
        deps = _WATCHED.get(os.path.realpath(py_file))
        if deps is None:
            return None
        for klass in _IMPL._locator_classes:
            if klass is cls:
                continue
            inner = klass.from_function(py_func, py_file)
            if inner is not None:
                return cls(inner, _digest(deps))
        return None


def watch(source_file: str | Path, dependencies: Iterable[str | Path]) -> None:
    """Stamp the numba cache of the kernels defined in ``source_file`` with ``dependencies``.

    Call before the kernels are decorated (an explicit signature compiles at decoration).
    """
    _WATCHED[os.path.realpath(source_file)] = tuple(Path(p) for p in dependencies)
    classes = _IMPL._locator_classes
    if DependencyStampLocator not in classes:
        classes.insert(0, DependencyStampLocator)
