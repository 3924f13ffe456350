"""Derived files in a shared cache, written so that a reader never sees half of one."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_cached(target: Path, write: Callable[[Path], None]) -> None:
    """Make `target` with `write(temporary path)`, then rename it into place. Several processes may
    make the same file at once: each writes its own temporary file and the last rename wins."""
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    try:
        write(Path(temporary))
        os.chmod(temporary, 0o644)  # mkstemp makes it private; the cache is shared like the others
        os.replace(temporary, target)
    finally:
        Path(temporary).unlink(missing_ok=True)


def file_identity(path: Path) -> str:
    """What names a large file in a cache key without reading it: its path, size and modification time."""
    stat = path.stat()
    return f"{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
