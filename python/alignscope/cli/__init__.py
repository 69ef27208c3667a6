"""The `alignscope` command: results on stdout (a table, or JSON with --json), progress and
errors on stderr. Exit codes: 0 success, 2 bad input or usage, 130 interrupted."""

from __future__ import annotations

import argparse
import errno
import signal
import sys
import threading
from collections.abc import Sequence
from typing import Any

from alignscope._files import OutputConflict
from alignscope.cli import ad, analyze, concepts, detect, embed, evaluate, poison, screen, train
from alignscope.cli._common import (
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_TERMINATED,
    UsageError,
    _Parser,
    _to_flags,
)

# benchmarks/bench_evaluate.py reaches the helper through the package face, as before the split
from alignscope.cli._common import _quiet_model_libraries as _quiet_model_libraries
from alignscope.cli.ad import DEMO_POISONED, cmd_ad, cmd_demo, cmd_info
from alignscope.cli.concepts import cmd_concepts
from alignscope.cli.embed import cmd_embed, cmd_replicate
from alignscope.cli.evaluate import cmd_evaluate
from alignscope.cli.poison import cmd_poison
from alignscope.cli.screen import cmd_screen
from alignscope.cli.train import cmd_train

__all__ = [
    "DEMO_POISONED",
    "EXIT_BAD_INPUT",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Terminated",
    "UsageError",
    "build_parser",
    "cmd_ad",
    "cmd_concepts",
    "cmd_demo",
    "cmd_embed",
    "cmd_evaluate",
    "cmd_info",
    "cmd_poison",
    "cmd_replicate",
    "cmd_screen",
    "cmd_train",
    "main",
]


def build_parser() -> argparse.ArgumentParser:
    """The ``alignscope`` parser: each command family adds its own sub-commands (flags beside
    handlers); the order here is the order ``--help`` lists them."""
    parser = _Parser(prog="alignscope", description=__doc__)
    from alignscope import __version__

    parser.add_argument("--version", action="version", version=f"alignscope {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    ad.register(sub)
    embed.register(sub)
    poison.register(sub)
    from alignscope.cli import defend  # availability-poison defences, beside poison

    defend.register(sub)
    concepts.register(sub)
    screen.register(sub)
    detect.register(sub)  # BiBadDiff's backdoor detectors, beside screening
    train.register(sub)
    analyze.register(sub)  # analyze and masks: SZT's analyses, after train
    evaluate.register(sub)
    ad.register_info(sub)
    return parser


class Terminated(KeyboardInterrupt):
    """SIGTERM (a scheduler's or `kill`'s stop), raised where Python next runs so the same
    clean-up as Ctrl-C happens: temporaries removed, nothing half-written."""


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


# A full or read-only disk is the user's to fix: one line naming the path, not a traceback.
_DISK_ERRORS = {errno.ENOSPC, errno.EROFS, errno.EDQUOT, errno.EFBIG}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); return the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return int(args.func(args))
    except Terminated:
        print("alignscope: terminated", file=sys.stderr)
        return EXIT_TERMINATED
    except UsageError as exc:
        print(f"alignscope: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OutputConflict as exc:
        # printed as written: the flag-name rewriting of other errors below would also rewrite
        # a path or a recorded key that holds "labels" (every command's refusal, one place)
        print(f"alignscope: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except (
        # bad input only: a TypeError or IndexError is a bug here, so it keeps its traceback
        ValueError,
        FileNotFoundError,
        FileExistsError,
        NotADirectoryError,
        IsADirectoryError,
        PermissionError,
    ) as exc:
        print(f"alignscope: error: {_to_flags(str(exc))}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:
        if exc.errno not in _DISK_ERRORS:
            raise
        where = exc.filename or "the output"
        print(
            f"alignscope: error: cannot write {str(where)!r}: {exc.strerror}; free space or "
            "choose a writable --out",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("alignscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
