"""Files written atomically (a temp file in the target directory, then a rename): the one
place every layer writes outputs through."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
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


def fingerprint_tree(path: str | os.PathLike[str]) -> dict[str, object]:
    """Identity of a file or a folder of inputs without reading their contents: for a folder,
    the sha256 of every regular file's relative path, size and mtime (ns), in sorted order
    (links followed; pipes and devices are not data and do not count); for a file,
    :func:`fingerprint_files` of it."""
    root = Path(path).resolve()
    if root.is_file():
        return fingerprint_files([root])[0]
    digest = hashlib.sha256()
    count = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            file = Path(dirpath) / name
            try:
                info = file.stat()
            except OSError:
                continue
            if not stat.S_ISREG(info.st_mode):
                continue
            rel = file.relative_to(root).as_posix()
            digest.update(f"{rel}\0{info.st_size}\0{info.st_mtime_ns}\n".encode())
            count += 1
    return {"path": str(root), "files": count, "listing_sha256": digest.hexdigest()}


# ----------------------------------------------------------------------------- provenance
# Every command that writes an output folder records what produced it here, and a rerun
# resumes only into a folder whose record matches (one mechanism for every command).
RECORD_NAME = ".alignscope-run.json"
LOCK_NAME = ".alignscope-run.lock"


class OutputConflict(ValueError):
    """An output folder that this run must not write into (another run's, or one in use)."""


def _differences(old: dict[str, object], new: dict[str, object], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            out += _differences(a, b, f"{prefix}{key}.")
        elif a != b:
            out.append(f"{prefix}{key}: {_short(a)} there, {_short(b)} now")
    return out


def _short(value: object) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


@contextlib.contextmanager
def claimed_output(
    out_dir: str | os.PathLike[str],
    command: str,
    identity: dict[str, object],
    *,
    overwrite: bool = False,
    replaces_all: bool = False,
) -> Iterator[Path]:
    """Claim ``out_dir`` for one run of ``command`` whose result depends on ``identity``
    (inputs' fingerprints, models' fingerprints, every setting that changes the output).

    - The folder is locked for the run (``flock`` on ``.alignscope-run.lock``): a second run
      into it stops at once instead of interleaving its files with this one's.
    - A folder holding a record of the same command and identity is resumed; one holding
      another run's record is refused, naming what differs, unless ``overwrite``, which deletes
      that run's outputs first. A non-empty folder without a record (not alignscope's) is
      refused even with ``overwrite``: nothing of the user's is ever deleted.
    - The record (``.alignscope-run.json``) is written before any output, with
      ``"complete": false``, and marked complete when the block exits without an error.
    - ``replaces_all``: the command stages every output and replaces the old ones whole at
      its end (screen). Then ``overwrite`` deletes nothing up front and the new record is
      written only on success, so an interrupted run leaves the earlier run, record included,
      exactly as it was.

    Yields the folder's path.
    """
    import fcntl

    root = Path(out_dir)
    if root.exists() and not root.is_dir():
        raise OutputConflict(f"--out {str(root)!r} is a file; give a folder")
    root.mkdir(parents=True, exist_ok=True)
    lock = open(root / LOCK_NAME, "a+")  # held (and flocked) for the whole run
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OutputConflict(
                f"--out {str(root)!r} is being written by another alignscope run; wait for it "
                "or choose another folder"
            ) from exc
        record_path = root / RECORD_NAME
        wanted = {"command": command, "identity": json.loads(json.dumps(identity, default=str))}
        others = [p for p in root.iterdir() if p.name not in (LOCK_NAME, RECORD_NAME)]
        if record_path.exists():
            try:
                old = json.loads(record_path.read_text())
            except (OSError, ValueError):
                old = {"command": "?", "identity": {}}
            same = old.get("command") == command and old.get("identity") == wanted["identity"]
            if not same and not overwrite:
                differ = _differences(
                    {"command": old.get("command"), **(old.get("identity") or {})},
                    {"command": command, **wanted["identity"]},
                )
                raise OutputConflict(
                    f"--out {str(root)!r} holds the output of another run ("
                    + "; ".join(differ[:4])
                    + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
                    + "): pass --overwrite to replace it, or choose another folder"
                )
            if not same and not replaces_all:
                for p in others:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        elif [p for p in others if not (p / RECORD_NAME).is_file()]:
            # (a sub-folder with its own record is alignscope's: e.g. the store that screen or
            # replicate embedded a dataset into, inside their --out)
            raise OutputConflict(
                f"--out {str(root)!r} is not empty and was not written by alignscope; choose "
                "an empty or new folder"
            )
        if not replaces_all:
            with atomic_path(record_path) as tmp:
                tmp.write_text(json.dumps({**wanted, "complete": False}, indent=1, sort_keys=True))
        try:
            yield root
        except BaseException:
            # a run that stopped before writing anything (bad input, say) claims nothing
            if not replaces_all and not [
                p for p in root.iterdir() if p.name not in (LOCK_NAME, RECORD_NAME)
            ]:
                record_path.unlink(missing_ok=True)
            raise
        with atomic_path(record_path) as tmp:
            tmp.write_text(json.dumps({**wanted, "complete": True}, indent=1, sort_keys=True))
    finally:
        lock.close()
