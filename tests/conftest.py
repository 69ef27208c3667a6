from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(20241022)


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins byte-level BPE uses for the byte values (GPT-2's table)."""
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    extra = iter(range(256, 512))
    return [chr(b) if b in printable else chr(next(extra)) for b in range(256)]


@pytest.fixture(scope="session")
def byte_vocab(tmp_path_factory) -> Path:
    """A directory with vocab.json and merges.txt of a tiny byte-level CLIP tokenizer (no merges):
    enough for transformers' CLIPTokenizer offline."""
    root = tmp_path_factory.mktemp("byte_vocab")
    chars = _byte_chars()
    vocab = {c: i for i, c in enumerate(chars)}
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return root
