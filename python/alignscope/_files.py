"""Files written atomically (a temp file in the target directory, then a rename): the one
place every layer writes outputs through."""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it over ``path`` only on success.

    An error or Ctrl-C leaves ``path`` as it was (absent or the old file), never half-written.
    """
    target = Path(path)
    if not target.parent.exists():
        raise FileNotFoundError(f"output directory {str(target.parent)!r} does not exist")
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        # mkstemp creates 0600; give the result the permissions a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_umask())
        os.replace(tmp_path, target)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


# Bytes hashed at each end of a file by fingerprint_files: enough to tell rewritten files apart
# without reading stores of many GB.
_EDGE_BYTES = 1 << 20


def fingerprint_files(paths: list[Path]) -> list[dict[str, object]]:
    """Per file: absolute path, size, mtime (ns) and the sha256 of its first and last MiB.

    A cheap identity for inputs too large to hash whole; any rewrite changes the mtime, and a
    copy with a new mtime only costs a recomputation, never a wrong reuse.
    """
    out = []
    for path in paths:
        file = Path(path).resolve()
        info = file.stat()
        digest = hashlib.sha256()
        with open(file, "rb") as fh:
            digest.update(fh.read(_EDGE_BYTES))
            if info.st_size > _EDGE_BYTES:
                fh.seek(max(_EDGE_BYTES, info.st_size - _EDGE_BYTES))
                digest.update(fh.read(_EDGE_BYTES))
        out.append(
            {
                "path": str(file),
                "size": info.st_size,
                "mtime_ns": info.st_mtime_ns,
                "edges_sha256": digest.hexdigest(),
            }
        )
    return out
