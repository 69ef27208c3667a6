"""Progress reporting for long engine runs: a tqdm bar on stderr, or a user callback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

ProgressArg = bool | Callable[[int, int], Any]


class TileProgress:
    """Adapts the engine's (done, total) tile counts to a tqdm bar or a callable.

    Use as a context manager; ``callback`` is None when progress is off.
    """

    def __init__(self, progress: ProgressArg, desc: str) -> None:
        if not (isinstance(progress, bool) or callable(progress)):
            raise TypeError(f"progress must be a bool or a callable(done, total), got {progress!r}")
        self._user = progress if callable(progress) and not isinstance(progress, bool) else None
        self._enabled = progress is True
        self._desc = desc
        self._bar: Any = None

    def _tick(self, done: int, total: int) -> None:
        if self._user is not None:
            self._user(done, total)
            return
        if self._bar is None:
            from tqdm import tqdm

            # the engine reports work in its own units (tiles, pair blocks): a rate such as
            # "8987794.29tile/s" means nothing to a user, so the bar shows share and time
            self._bar = tqdm(
                total=total,
                desc=self._desc,
                file=sys.stderr,
                leave=False,
                bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}<{remaining}",
            )
        self._bar.n = done
        self._bar.refresh()

    @property
    def callback(self) -> Callable[[int, int], None] | None:
        return self._tick if (self._enabled or self._user is not None) else None

    def __enter__(self) -> TileProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()
