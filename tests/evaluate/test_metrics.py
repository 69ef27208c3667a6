"""The paper's generation metrics, splits and bleed-through sets against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope.evaluate.metrics import (
    bleed_through_concepts,
    generation_metrics,
    poisoned_prompts,
    split_metrics,
)


def test_thresholds_are_strict_and_utility_needs_both():
    clip = [0.30, 0.236, 0.24, 0.10]  # 0.236 itself is not accurate: the paper counts "> 0.236"
    aes = [7.0, 7.0, 6.5, 6.6]
    m = generation_metrics(clip, aes)
    assert m["count"] == 4
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["aesthetics"] == pytest.approx(3 / 4)  # 6.5 itself is not above 6.5
    assert m["utility"] == pytest.approx(1 / 4)  # only image 0 is above both
    assert m["clip_mean"] == pytest.approx(np.mean(clip))


def test_aesthetics_fraction():
    m = generation_metrics([0.3, 0.3, 0.3], [6.6, 6.5, 6.4])
    assert m["aesthetics"] == pytest.approx(1 / 3) and m["utility"] == pytest.approx(1 / 3)
    assert "aesthetics" not in generation_metrics([0.3])
    empty = generation_metrics([])
    assert empty["count"] == 0 and empty["accuracy"] is None


def test_split_by_concept_groups():
    concepts = ["dog", "dog", "cat", "cat", "car", "car"]
    clip = [0.3, 0.1, 0.3, 0.3, 0.1, 0.1]
    out = split_metrics(concepts, clip, None, poisoned=["dog"], bleed_through=["car"])
    assert out["all"]["accuracy"] == pytest.approx(3 / 6)
    assert out["poisoned"]["accuracy"] == pytest.approx(1 / 2)
    # clean = every unpoisoned concept (the paper's column), bleed-through a subset of it
    assert out["clean"]["count"] == 4 and out["clean"]["accuracy"] == 0.5
    assert out["bleed_through"]["count"] == 2 and out["bleed_through"]["accuracy"] == 0.0
    assert set(split_metrics(concepts, clip, None)) == {"all"}


def test_bleed_through_uses_unnormalised_l2():
    concepts = ["dog", "puppy", "car", "wolf"]
    feats = np.array([[0.0, 0.0], [3.0, 0.0], [10.0, 0.0], [0.0, 4.7]])
    # puppy: 3.0 from dog; wolf: 4.7; car: 10 -> only puppy and wolf bleed
    assert bleed_through_concepts(feats, concepts, ["dog"]) == {"puppy": "dog", "wolf": "dog"}
    assert bleed_through_concepts(feats, concepts, ["dog"], threshold=4.0) == {"puppy": "dog"}
    # nearest poisoned concept is named; poisoned concepts are never "related"
    assert bleed_through_concepts(feats, concepts, ["dog", "car"], threshold=8.0) == {
        "puppy": "dog",
        "wolf": "dog",
    }
    assert bleed_through_concepts(feats, concepts, ["absent"]) == {}
    with pytest.raises(ValueError, match=r"text_features must be \(4, d\)"):
        bleed_through_concepts(feats[:3], concepts, ["dog"])


def test_bleed_through_leaves_out_a_concept_exactly_at_the_threshold():
    # A 3-4-5 triangle: "cat" is exactly 5.0 from "dog" (every step of the distance is exact in
    # float64), and the docstring's "closer than threshold" leaves it out at threshold 5.0.
    concepts = ["dog", "cat", "puppy", "car"]
    feats = np.array([[0.0, 0.0], [3.0, 4.0], [3.0, 3.0], [6.0, 8.0]])
    assert bleed_through_concepts(feats, concepts, ["dog"], threshold=5.0) == {"puppy": "dog"}
    # just above 5.0 takes it in; car (10.0) stays out of both
    assert bleed_through_concepts(feats, concepts, ["dog"], threshold=np.nextafter(5.0, 6.0)) == {
        "cat": "dog",
        "puppy": "dog",
    }


def test_poisoned_prompts_by_attack_kind():
    manifest = {
        "poisoned": [True, True, False, True],
        "method": ["dirty-label", "dirty-label", "", "badnets-1"],
        "source_concept": ["dog", "cat", "", "car"],
        "target_concept": ["car", "boat", "", "cat"],
    }
    # concept attacks poison the source prompt; all-to-one attacks the target class's prompt
    assert poisoned_prompts(manifest) == ["dog", "cat"]
    with pytest.raises(ValueError, match="lacks the columns"):
        poisoned_prompts({"poisoned": []})


def test_bad_scores_are_named():
    with pytest.raises(ValueError, match=r"clip_scores\[1\] is nan"):
        generation_metrics([0.3, float("nan")])
    with pytest.raises(ValueError, match="aesthetics has 1 scores for 2 images"):
        generation_metrics([0.3, 0.3], [6.0])
