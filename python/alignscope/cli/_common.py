"""What every command family of the `alignscope` command shares: exit codes, the one-line
usage error, API names rewritten as the flags a user typed, argument types and readers."""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

import numpy as np

EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143  # 128 + SIGTERM, as a shell reports a process stopped by it

# API argument names -> the CLI flags a user typed, so messages name what they can fix.
_FLAG_NAMES = (
    ("true_labels", "--true-labels"),
    ("image_emb", "--images"),
    ("text_emb", "--texts"),
    ("labels", "--labels"),
)


class UsageError(Exception):
    """Bad input detected by the CLI itself; printed as one line, exit code 2."""


# keyword-argument spellings in API messages -> the flags (literal replacements)
_KEYWORD_FLAGS = (
    ("unet_config=", "--unet-config"),
    ("placeholder=", "--placeholder"),
    ("initializer=", "--initializer"),
    ("target=", "--target"),
    ("layers='all'", "--attention-layers all"),
)


def _to_flags(message: str) -> str:
    for api, flag in _FLAG_NAMES:
        message = re.sub(rf"(?<![\w-]){api}\b", flag, message)
    for keyword, flag in _KEYWORD_FLAGS:
        message = message.replace(keyword, flag)
    return message


def _load_npy(path: str, flag: str) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"{flag}: no such file {path!r}")
    try:
        return np.load(p, mmap_mode="r", allow_pickle=False)
    except Exception as exc:  # numpy raises several types for a bad header or a short file
        raise UsageError(f"{flag}: cannot read {path!r} as a .npy array ({exc})") from exc


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from exc
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


class _Parser(argparse.ArgumentParser):
    """argparse, with usage errors as one line and exit code 2, and no abbreviated flags
    (``--image`` silently meaning ``--images`` hides typos and breaks when a flag is added)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_BAD_INPUT, f"alignscope: error: {message} (see `{self.prog} --help`)\n")


def _add_trust_models(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--trust-models",
        dest="trust_models",
        action="store_true",
        help="run TorchScript model files without checking their operators (trusted files only)",
    )


def _add_overwrite(parser: argparse.ArgumentParser, output: str = "--out") -> None:
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace the outputs of another run in {output} (by default a rerun resumes only "
        "when its inputs and settings match the recorded ones)",
    )


def _open_dataset(path: str | Path, trust_pickles: bool, name: str = "DATASET") -> Any:
    """A dataset, or a one-line usage error naming the argument."""
    from alignscope.io.datasets import open_dataset

    try:
        return open_dataset(path, trust_pickles=trust_pickles)
    except (ValueError, FileNotFoundError) as exc:
        raise UsageError(f"{name}: {exc}") from exc


def _quiet_model_libraries() -> None:
    """--quiet also silences the loading bars and notices of diffusers and transformers."""
    for name in ("diffusers", "transformers"):
        try:
            logging = __import__(f"{name}.utils", fromlist=["logging"]).logging
        except ImportError:
            continue
        logging.disable_progress_bar()
        logging.set_verbosity_error()
