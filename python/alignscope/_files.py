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
# A run's resumable intermediate files (neighbour tables, staged outputs), inside its --out:
# alignscope's own, so never a reason to call the folder foreign.
WORK_NAME = ".alignscope-work"


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
    flag: str = "--out",
    shown: str | os.PathLike[str] | None = None,
    kind: str = "folder",
) -> Iterator[Path]:
    """Claim ``out_dir`` for one run of ``command`` whose result depends on ``identity``
    (inputs' fingerprints, models' fingerprints, every setting that changes the output).

    Refusals name the output as the user gave it: ``flag`` and ``shown`` (default: ``--out``
    and ``out_dir``), and ``kind`` says what to choose instead ("folder", or "file" when the
    claimed folder is a file's hidden record folder, as :func:`claimed_file` claims it).

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
    named = f"{flag} {str(root if shown is None else shown)!r}"
    if root.exists() and not root.is_dir():
        raise OutputConflict(f"{named} is a file; give a folder")
    root.mkdir(parents=True, exist_ok=True)
    lock = open(root / LOCK_NAME, "a+")  # held (and flocked) for the whole run
    try:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as exc:
            raise OutputConflict(
                f"{named} is being written by another alignscope run; wait for it "
                f"or choose another {kind}"
            ) from exc
        record_path = root / RECORD_NAME
        wanted = {"command": command, "identity": json.loads(json.dumps(identity, default=str))}
        others = [p for p in root.iterdir() if p.name not in (LOCK_NAME, RECORD_NAME, WORK_NAME)]
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
                    f"{named} holds the output of another run ("
                    + "; ".join(differ[:4])
                    + (f"; and {len(differ) - 4} more" if len(differ) > 4 else "")
                    + f"): pass --overwrite to replace it, or choose another {kind}"
                )
            if not same and not replaces_all:
                for p in others:
                    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        elif [p for p in others if not (p / RECORD_NAME).is_file()]:
            # (a sub-folder with its own record is alignscope's: e.g. the store that screen or
            # replicate embedded a dataset into, inside their --out)
            raise OutputConflict(
                f"{named} is not empty and was not written by alignscope; choose "
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


# ----------------------------------------------------------------------------- free space
# Outputs whose size is known before they are written (embeddings, a poisoned copy, per-sample
# terms) are checked against the free space first: a full disk is then an error before the
# work, not after hours of it. The estimates are lower bounds, so a refusal is never wrong by
# much; ENOSPC during the writes stays a clean error too (the CLI maps both to exit 2).
import errno  # noqa: E402  (this section's own import, kept with it)


class InsufficientSpace(OSError):
    """Too little free space for an output whose size is known in advance (errno ENOSPC, so
    the CLI reports it as it reports a full disk). ``need`` and ``free`` are in bytes."""

    def __init__(self, path: str, need: int, free: int, what: str) -> None:
        super().__init__(
            errno.ENOSPC,
            f"not enough free space for {what}: about {_human(need)} needed, {_human(free)} free",
            path,
        )
        self.need, self.free = need, free

    def __str__(self) -> str:
        return f"cannot write {self.filename!r}: {self.strerror}"


def _human(n: int) -> str:
    """Bytes as people read them, exact too: '512 bytes', '3.0 MiB (3,145,729 bytes)' (need and
    free rounded alike could read as equal)."""
    if n < 1024:
        return f"{n:,} bytes"
    scaled = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        scaled /= 1024
        if scaled < 1024 or unit == "TiB":
            break
    return f"{scaled:,.1f} {unit} ({n:,} bytes)"


def tree_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes of the regular files under ``path`` (a file: its size; missing: 0). Links are not
    followed and pipes or devices do not count: a size estimate, not a read."""
    root = Path(path)
    try:
        info = root.lstat()
    except OSError:
        return 0
    if stat.S_ISREG(info.st_mode):
        return info.st_size
    total = 0
    if stat.S_ISDIR(info.st_mode):
        for dirpath, _, filenames in os.walk(root):
            for name in filenames:
                try:
                    sub = os.lstat(os.path.join(dirpath, name))
                except OSError:
                    continue
                if stat.S_ISREG(sub.st_mode):
                    total += sub.st_size
    return total


def ensure_free_space(path: str | os.PathLike[str], need_bytes: int, what: str) -> None:
    """Raise :class:`InsufficientSpace` when the file system that ``path`` (an output file or
    folder, which need not exist yet) would be written on has fewer than ``need_bytes`` free.

    ``what`` names the output in the message ("the embeddings"). One ``statvfs`` call
    (``shutil.disk_usage``) on the nearest existing folder; a need of 0 or less passes.
    """
    if need_bytes <= 0:
        return
    probe = Path(path).absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if need_bytes > free:
        raise InsufficientSpace(str(path), int(need_bytes), int(free), what)


# ----------------------------------------------------------------------------- single-file outputs
# A command whose output is one file (`ad --per-sample FILE`) cannot claim that file's folder
# (usually the user's own, full of other files), so its record and lock live in a hidden
# folder beside the file, claimed through claimed_output like any output folder.


@contextlib.contextmanager
def claimed_file(
    path: str | os.PathLike[str],
    command: str,
    identity: dict[str, object],
    *,
    flag: str,
    overwrite: bool = False,
) -> Iterator[Path]:
    """:func:`claimed_output` for an output that is one file, written whole at the end (with
    :func:`atomic_path`) and named on the command line by ``flag`` (messages name it).

    The record and the lock are in ``.<name>.alignscope/`` beside the file, claimed with
    ``replaces_all``: the record is written only once the run completes, so an interrupted
    run leaves the earlier file and its record as they were.

    - The file exists with the record of the same command and identity: the run goes ahead
      (it rewrites the same result).
    - The file exists with another run's record: refused naming what differs, unless
      ``overwrite``.
    - The file exists without a record (not written by alignscope, or before records
      existed): refused unless ``overwrite``; the user named this file as the output, so
      ``overwrite`` may replace it.
    - The file is gone: a record left beside it binds nothing.

    A run that fails before completing leaves no hidden folder where there was none.
    Yields the file's path.
    """
    target = Path(path)
    side = target.parent / f".{target.name}.alignscope"
    had_side = side.exists()
    if target.exists() and not (side / RECORD_NAME).is_file() and not overwrite:
        raise OutputConflict(
            f"{flag} {str(target)!r} already exists and no alignscope record says what wrote "
            "it: pass --overwrite to replace it, or choose another file"
        )
    claimed = False
    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(
                claimed_output(  # its refusals worded for the file the user named
                    side,
                    command,
                    identity,
                    overwrite=overwrite or not target.exists(),
                    replaces_all=True,
                    flag=flag,
                    shown=target,
                    kind="file",
                )
            )
            claimed = True
            yield target
    finally:
        if claimed and not had_side and not (side / RECORD_NAME).exists():
            (side / LOCK_NAME).unlink(missing_ok=True)
            with contextlib.suppress(OSError):
                side.rmdir()
