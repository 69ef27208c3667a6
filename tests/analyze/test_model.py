"""The setup the analyses share (analyze._model): the timestep window and the concept's prompt,
with the exact errors a user of timesteps, sensitivity and masks gets."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from alignscope.analyze._model import concept_prompt, timestep_window

# Only what the helpers read: the scheduler's T and the concept's phrase.
SCHEDULER = SimpleNamespace(config=SimpleNamespace(num_train_timesteps=1000))
CONCEPT = SimpleNamespace(phrase="<c> <c>_1")


def test_timestep_window_defaults_to_all_of_training_and_refuses_an_empty_or_outside_one():
    assert timestep_window(SCHEDULER, None) == (0, 1000)
    assert timestep_window(SCHEDULER, (0, 1000)) == (0, 1000)
    assert timestep_window(SCHEDULER, (999, 1000)) == (999, 1000)
    for low, high in ((700, 700), (700, 100), (-1, 10), (0, 1001)):
        with pytest.raises(ValueError) as err:
            timestep_window(SCHEDULER, (low, high))
        assert str(err.value) == (
            f"timesteps must satisfy 0 <= low < high <= 1000, got {low}, {high}"
        )


def test_concept_prompt_puts_the_phrase_in_the_template_or_names_the_bad_prompt():
    assert concept_prompt(CONCEPT, None) == "a photo of a <c> <c>_1"
    assert concept_prompt(CONCEPT, "") == "a photo of a <c> <c>_1"  # empty: the default
    assert concept_prompt(CONCEPT, "{} on a beach") == "<c> <c>_1 on a beach"
    with pytest.raises(ValueError) as err:
        concept_prompt(CONCEPT, "a photo of a cat")
    assert str(err.value) == "prompt 'a photo of a cat' must hold {} where the concept goes"
