"""Concepts in captions: a vocabulary of common object nouns, caption tokenisation with plural
folding, concept frequencies, and the Implosion paper's selection of concepts to poison (the
most frequent nouns, generic words excluded, or a window of ranks)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources

# Words that describe the picture, not what it shows (excluded from selection).
GENERIC = frozenset(
    {
        "photo",
        "image",
        "picture",
        "illustration",
        "background",
        "view",
        "stock",
        "vector",
        "design",
        "art",
        "print",
        "drawing",
        "painting",
        "close",
        "set",
        "style",
        "icon",
    }
)
_WORD = re.compile(r"[a-z]+(?:'[a-z]+)?")


@dataclass(frozen=True)
class Vocabulary:
    """Nouns (one or more words) and the sources that list them."""

    nouns: tuple[str, ...]
    sources: dict[str, tuple[str, ...]]

    def __contains__(self, noun: str) -> bool:
        return noun in self.sources

    @property
    def longest(self) -> int:
        return max(len(n.split()) for n in self.nouns)


@lru_cache(maxsize=1)
def load_vocabulary() -> Vocabulary:
    """The packaged vocabulary (COCO and ImageNet-1k class names; see the data file)."""
    text = resources.files("alignscope.poison").joinpath("data/concepts.tsv").read_text("utf-8")
    sources = {}
    for line in text.splitlines():
        if not line or line.startswith("#") or line.startswith("noun\t"):
            continue
        noun, _, src = line.partition("\t")
        sources[noun] = tuple(src.split(","))
    return Vocabulary(tuple(sorted(sources)), sources)


def make_vocabulary(nouns: Iterable[str]) -> Vocabulary:
    """A vocabulary of the given nouns (lowercased), e.g. a project's own concept list."""
    clean = sorted({n.strip().lower() for n in nouns if n.strip()})
    return Vocabulary(tuple(clean), {n: ("user",) for n in clean})


def singular(word: str, vocabulary: Vocabulary) -> str:
    """Fold a simple English plural onto a vocabulary noun ("dogs" -> "dog", "boxes" -> "box",
    "berries" -> "berry"); other words come back unchanged."""
    if word in vocabulary:
        return word
    for suffix, replacement in (("ies", "y"), ("ves", "fe"), ("ves", "f"), ("es", ""), ("s", "")):
        if word.endswith(suffix) and len(word) > len(suffix) + 1:
            candidate = word[: -len(suffix)] + replacement
            if candidate in vocabulary:
                return candidate
    return word


def caption_concepts(caption: str, vocabulary: Vocabulary) -> set[str]:
    """The vocabulary nouns a caption mentions (multi-word nouns matched first, plurals folded
    on the last word)."""
    words = _WORD.findall(caption.lower())
    found: set[str] = set()
    used = [False] * len(words)
    for size in range(min(vocabulary.longest, len(words)), 0, -1):
        for start in range(len(words) - size + 1):
            if any(used[start : start + size]):
                continue
            *head, last = words[start : start + size]
            phrase = " ".join([*head, singular(last, vocabulary)])
            if phrase in vocabulary:
                found.add(phrase)
                used[start : start + size] = [True] * size
    return found


def concept_frequencies(captions: Iterable[str], vocabulary: Vocabulary) -> Counter[str]:
    """How many captions mention each concept (document frequency)."""
    counts: Counter[str] = Counter()
    for caption in captions:
        counts.update(caption_concepts(caption, vocabulary))
    return counts


def select_concepts(
    frequencies: Counter[str],
    *,
    top: int | None = None,
    ranks: tuple[int, int] | None = None,
    exclude: Iterable[str] = GENERIC,
) -> list[str]:
    """Concepts by descending frequency (ties alphabetical), generic words excluded: the
    ``top`` most frequent, or ranks ``a..b`` inclusive, 1-based (e.g. (1501, 2000))."""
    if (top is None) == (ranks is None):
        raise ValueError("give exactly one of top= or ranks=")
    skip = set(exclude)
    ordered = sorted((c for c in frequencies if c not in skip), key=lambda c: (-frequencies[c], c))
    if top is not None:
        if top < 1:
            raise ValueError(f"top must be >= 1, got {top}")
        return ordered[:top]
    a, b = ranks  # type: ignore[misc]
    if not 1 <= a <= b:
        raise ValueError(f"ranks must satisfy 1 <= a <= b, got {a}-{b}")
    return ordered[a - 1 : b]
