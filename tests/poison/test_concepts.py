"""Concept tokenisation and selection against hand-computed frequencies."""

from __future__ import annotations

import pytest

from alignscope.poison.concepts import (
    caption_concepts,
    concept_frequencies,
    load_vocabulary,
    make_vocabulary,
    select_concepts,
    singular,
)

VOCAB = make_vocabulary(["dog", "cat", "box", "berry", "hot dog", "teddy bear", "knife", "photo"])
CAPTIONS = [
    "A photo of two dogs and a cat",  # dog, cat, photo
    "Hot dogs on a grill",  # hot dog (not dog)
    "a teddy bear next to boxes of berries",  # teddy bear, box, berry
    "Cats, cats everywhere!",  # cat (once per caption)
    "knives and a dog",  # knife, dog
    "",  # nothing
]


def test_plural_folding():
    assert [singular(w, VOCAB) for w in ("dogs", "boxes", "berries", "knives", "dogma")] == [
        "dog",
        "box",
        "berry",
        "knife",
        "dogma",
    ]


def test_caption_concepts():
    assert caption_concepts(CAPTIONS[0], VOCAB) == {"dog", "cat", "photo"}
    assert caption_concepts(CAPTIONS[1], VOCAB) == {"hot dog"}
    assert caption_concepts(CAPTIONS[2], VOCAB) == {"teddy bear", "box", "berry"}


def test_frequencies_and_selection_match_hand_counts():
    freq = concept_frequencies(CAPTIONS, VOCAB)
    assert freq == {
        "dog": 2,
        "cat": 2,
        "photo": 1,
        "hot dog": 1,
        "teddy bear": 1,
        "box": 1,
        "berry": 1,
        "knife": 1,
    }
    assert select_concepts(freq, top=3) == ["cat", "dog", "berry"]  # "photo" is generic
    assert select_concepts(freq, ranks=(2, 4)) == ["dog", "berry", "box"]
    with pytest.raises(ValueError, match="exactly one of top= or ranks="):
        select_concepts(freq)


def test_packaged_vocabulary_cites_its_sources():
    vocab = load_vocabulary()
    assert "dog" in vocab and "teddy bear" in vocab and "goldfish" in vocab
    assert vocab.sources["dog"] == ("coco",) or "coco" in vocab.sources["dog"]
    assert len(vocab.nouns) > 1000
