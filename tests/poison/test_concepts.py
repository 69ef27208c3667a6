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
    people = make_vocabulary(["woman", "man", "person", "child"])
    assert [singular(w, people) for w in ("women", "men", "people", "children", "oxen")] == [
        "woman",
        "man",
        "person",
        "child",
        "oxen",  # not in the table (and not in the vocabulary)
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
    assert len(vocab.nouns) == 2197  # data/README.md: 1,061 COCO/ImageNet + LVIS + Open Images
    # facts of the source lists: LVIS v1 has "chandelier" (not Open Images' boxable classes);
    # Open Images has "Woman", "Man", "House", "Tree", "Flower"; both have "Hat" and "Dress";
    # LVIS's "bat_(animal)" loses its sense, Open Images' "Human face" its "Human"
    assert vocab.sources["chandelier"] == ("lvis",)
    for noun in ("woman", "man", "house", "tree", "flower"):
        assert vocab.sources[noun] == ("openimages",), noun
    for noun in ("hat", "dress", "bat"):
        assert vocab.sources[noun] == ("lvis", "openimages"), noun
    assert vocab.sources["face"] == ("openimages",) and "human face" not in vocab
    assert "can" not in vocab and "tin can" in vocab  # a modal verb in captions (README)


def test_the_papers_example_nouns_are_concepts():
    """The Implosion paper's own examples (woman, man, house, tree, hat, flower, dress,
    chandelier) are nouns of the packaged vocabulary and are found in captions, plurals
    folded."""
    vocab = load_vocabulary()
    nouns = ("woman", "man", "house", "tree", "hat", "flower", "dress", "chandelier")
    assert all(noun in vocab for noun in nouns)
    captions = {
        "a woman in a dress": {"woman", "dress"},
        "Two men wearing hats": {"man", "hat"},  # an irregular plural folds too
        "houses among trees, flowers": {"house", "tree", "flower"},
        "a crystal chandelier": {"chandelier"},  # crystal: a material word before a noun
    }
    for caption, expected in captions.items():
        assert caption_concepts(caption, vocab) == expected, caption


# Noun phrases against the packaged vocabulary: each expected set is read off the caption by hand
# (rules in caption_concepts' docstring). "fur", "sunset", "stand", "collar", "gate" and "board"
# are not in the vocabulary; "table", "building", "dog bed" (LVIS / Open Images), "dining
# table", "garbage truck", "truck", "hot dog", "dog", "orange" are.
@pytest.mark.parametrize(
    ("caption", "expected"),
    [
        ("a cat with orange fur", {"cat"}),  # orange describes the fur
        ("an orange on a table", {"orange", "table"}),  # the fruit: a function word follows
        ("a garbage truck parked", {"garbage truck"}),  # whole, not also "truck"
        ("hot dog stand", {"hot dog"}),  # whole, not "dog"
        ("a dog. Orange sunset", {"dog"}),  # the full stop ends dog's phrase
        ("an orange and white cat", {"cat"}),  # two coordinated colours
        ("the sky is bright orange", set()),  # predicative colour
        ("Oranges in a bowl", {"orange", "bowl"}),  # a plural is a thing
        ("an orange sitting on a dining table", {"orange", "dining table"}),  # -ing verb follows
        ("an orange building", {"building"}),  # -ing noun follows
        ("a cat bed", {"bed"}),  # noun-noun compound: the last noun is the head
        ("a dog bed", {"dog bed"}),  # ... unless the compound is a noun itself (Open Images)
        ("a teddy bear cake", {"cake"}),  # a multi-word noun as a modifier
        ("a dog\u2019s collar", {"dog"}),  # possessive (curly apostrophe)
        ("an iron gate; an iron on a board", {"iron"}),  # material, then the appliance
        ("a go-kart and a jack-o'-lantern", {"go-kart", "jack-o'-lantern"}),  # hyphenated nouns
        ("Cat - stock photo", {"cat"}),  # a free-standing dash is punctuation
    ],
)
def test_caption_concepts_on_noun_phrases(caption, expected):
    assert caption_concepts(caption, load_vocabulary()) == expected


def test_an_adjective_only_data_set_does_not_make_orange_a_concept():
    captions = ["a cat with orange fur", "orange sky over a dog", "a dog in an orange vest"]
    assert concept_frequencies(captions, load_vocabulary()) == {"cat": 1, "dog": 2, "vest": 1}


def test_a_target_used_only_as_a_modifier_is_refused(tmp_path, capsys):
    """``--target orange`` on captions where orange is only a colour: no caption names the
    thing, so the all-to-one attack is refused with the nearby concepts of the data."""
    from PIL import Image

    from alignscope.cli import main

    data = tmp_path / "data"
    data.mkdir()
    captions = ["a cat with orange fur", "an orangutan in a tree", "an orange and white dog"]
    for i, caption in enumerate(captions):
        Image.new("RGB", (8, 8), (i, 0, 0)).save(data / f"{i}.png")
        (data / f"{i}.txt").write_text(caption)
    argv = ["poison", str(data), "--out", str(tmp_path / "o"), "--method", "relabel"]
    assert main([*argv, "--target", "orange", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert (
        "target 'orange' is named by no caption of the dataset; "
        "the closest concepts in the data: orangutan" in err
    )


def test_concept_candidates_pool_top_and_window():
    from collections import Counter

    from alignscope.poison.concepts import concept_candidates

    ranked = [f"n{i:03d}" for i in range(700)]  # distinct counts: rank i + 1 is ranked[i]
    freq = Counter({c: 1000 - i for i, c in enumerate(ranked)})
    assert concept_candidates(freq, concepts=100) == ranked[:500]  # the paper's pool
    assert concept_candidates(freq, concepts=100, pool=600) == ranked[:600]
    assert concept_candidates(freq, concepts=100, pool=0) == ranked[:100]  # exactly the top K
    assert concept_candidates(freq, ranks=(501, 600)) == ranked[500:600]
    for kwargs, message in [
        ({"concepts": 100, "pool": 50}, "concept_pool=50 is smaller than concepts=100: the pool"),
        ({"concepts": 1, "pool": -1}, r"concept_pool must be >= 0 \(0: exactly the top C_P\)"),
        ({"ranks": (1, 2), "pool": 5}, "concept_pool= goes with concepts=; a window of ranks"),
        ({}, r"give exactly one of concepts= \(C_P\) or ranks="),
    ]:
        with pytest.raises(ValueError, match=f"^{message}"):
            concept_candidates(freq, **kwargs)


def test_read_vocabulary(tmp_path):
    from alignscope.poison.concepts import read_vocabulary

    path = tmp_path / "nouns.txt"
    path.write_text("# my nouns\nDog\n\nhot dog\tkept from a concepts.tsv row\n  # indented\n")
    vocab = read_vocabulary(path)
    assert vocab.nouns == ("dog", "hot dog")
    assert caption_concepts("Hot dogs and dogs", vocab) == {"hot dog", "dog"}
    path.write_text("# nothing but a comment\n")
    with pytest.raises(ValueError, match=r"lists no nouns: give one noun per line$"):
        read_vocabulary(path)
    with pytest.raises(FileNotFoundError, match=r"^vocabulary file '.*absent.txt' does not exist$"):
        read_vocabulary(tmp_path / "absent.txt")
