"""Writing a (poisoned) dataset: image folder, webdataset tar, or pickle per pair.

File names come from row numbers, never from captions or original member names, and every
byte is a function of the inputs (PNG encoding, fixed tar headers, pickle protocol 4), so the
same inputs and seed give identical files.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from pathlib import Path

import numpy as np

from alignscope._files import atomic_path

FORMATS = ("folder", "webdataset", "pickle")


def _png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG", optimize=False)
    return buf.getvalue()


class DatasetWriter:
    """Collects (row, image, caption) and writes them under ``root`` in ``fmt``."""

    def __init__(self, root: Path, fmt: str) -> None:
        if fmt not in FORMATS:
            raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        self.root = root
        self.fmt = fmt
        root.mkdir(parents=True, exist_ok=True)
        self._tar: tarfile.TarFile | None = None
        self._tar_tmp = None
        if fmt == "webdataset":
            self._ctx = atomic_path(root / "00000.tar")
            self._tar_tmp = self._ctx.__enter__()
            self._tar = tarfile.open(self._tar_tmp, "w", format=tarfile.USTAR_FORMAT)

    def add(self, row: int, image: np.ndarray, caption: str) -> str:
        """Write one pair; returns the name it was written under."""
        key = f"{row:08d}"
        if self.fmt == "folder":
            with atomic_path(self.root / f"{key}.png") as tmp:
                tmp.write_bytes(_png(image))
            with atomic_path(self.root / f"{key}.txt") as tmp:
                tmp.write_text(caption, encoding="utf-8")
            return f"{key}.png"
        if self.fmt == "pickle":
            with atomic_path(self.root / f"{key}.p") as tmp:
                tmp.write_bytes(
                    pickle.dumps({"img": np.ascontiguousarray(image), "text": caption}, protocol=4)
                )
            return f"{key}.p"
        for name, data in ((f"{key}.png", _png(image)), (f"{key}.txt", caption.encode("utf-8"))):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode, info.uname, info.gname = len(data), 0, 0o644, "", ""
            self._tar.addfile(info, io.BytesIO(data))  # type: ignore[union-attr]
        return f"00000.tar/{key}"

    def close(self) -> None:
        if self._tar is not None:
            self._tar.close()
            self._ctx.__exit__(None, None, None)
            self._tar = None

    def abort(self) -> None:
        """Stop without publishing: close the tar being written and delete it (the folder
        and pickle formats write each pair whole, so they have nothing to undo)."""
        if self._tar is not None:
            self._tar.close()
            self._tar = None
            # an exception handed to atomic_path makes it delete the temp file, not rename it
            stop = InterruptedError("poisoning stopped before the tar was complete")
            self._ctx.__exit__(type(stop), stop, None)
