"""`evaluate` stopped while writing an attention map, then mid-generation, then mid-scoring,
then finished: the images, scores and report equal an uninterrupted run's, no image is
generated twice, and no stop leaves a half-written file.

The reference is the same evaluation run once without interruption. Images are generated one
per pipeline call (batch size 1), so a resumed run draws each image exactly as the
uninterrupted run did and the PNGs must match byte for byte.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from alignscope.evaluate import run
from alignscope.evaluate.generate import GenerationSettings
from alignscope.evaluate.run import EvalConfig, evaluate

diffusers = pytest.importorskip("diffusers")
pytest.importorskip("open_clip")
GENERATE = diffusers.StableDiffusionPipeline.__call__  # the original, before any test patches it


def _config(clip: str) -> EvalConfig:
    return EvalConfig(
        concepts=["dog", "cat"],
        generation=GenerationSettings(
            images_per_concept=2, steps=1, batch_size=1, height=16, width=16
        ),
        clip=clip,
        poisoned=["cat"],
        attention_concepts=1,
        attention_resolution=4,
    )


def _snapshot(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (hidden temp files included) by relative path."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _without_seconds(data: dict) -> dict:
    """A report or model section with its wall-clock fields removed (they differ per run)."""
    if "models" in data:
        return {**data, "models": {k: _without_seconds(v) for k, v in data["models"].items()}}
    return {k: v for k, v in data.items() if k != "seconds"}


class CountingGeneration:
    """Patched over StableDiffusionPipeline.__call__: counts the images generated for the
    concepts (a list of prompts; the attention pass sends one string) and raises once the
    ``fail_at``-th such call begins."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.fail_at, self.images = fail_at, []

    def install(self, monkeypatch) -> CountingGeneration:
        counter = self

        def call(pipe, prompt=None, *args, **kwargs):
            if isinstance(prompt, list):
                if len(counter.images) + 1 == counter.fail_at:
                    raise KeyboardInterrupt
                counter.images.extend(prompt)
            return GENERATE(pipe, prompt, *args, **kwargs)

        monkeypatch.setattr(diffusers.StableDiffusionPipeline, "__call__", call)
        return self


def test_evaluate_stopped_three_times_then_finished(
    tmp_path, tiny_sd_dir, tiny_open_clip, monkeypatch
):
    config = _config(tiny_open_clip)
    models = {"m": tiny_sd_dir}
    ref = tmp_path / "reference"
    counter = CountingGeneration().install(monkeypatch)
    reference = evaluate(models, ref, config, progress=False, quiet=True)
    assert len(counter.images) == 4
    want = _snapshot(ref)

    out = tmp_path / "out"
    # 0. stopped while an attention map is half written (the pass before generation)
    save = np.save

    def half_save(file, arr, *args, **kwargs):
        buf = io.BytesIO()
        save(buf, arr, *args, **kwargs)
        half = buf.getvalue()[: buf.tell() // 2]
        if hasattr(file, "write"):
            file.write(half)
        else:
            Path(file).write_bytes(half)
        raise KeyboardInterrupt

    monkeypatch.setattr(np, "save", half_save)
    with pytest.raises(KeyboardInterrupt):
        evaluate(models, out, config, progress=False, quiet=True)
    monkeypatch.setattr(np, "save", save)
    partial = _snapshot(out)
    assert not [n for n in partial if n.endswith(".npy")]  # no half-written map, no temp file
    assert all(partial[n] == want[n] for n in partial)  # the overlay before it is whole

    # 1. stopped as the third image starts: two images on disk, nothing scored
    CountingGeneration(fail_at=3).install(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        evaluate(models, out, config, progress=False, quiet=True)
    images = sorted(n for n in _snapshot(out) if n.startswith("m/images/") and n.endswith(".png"))
    assert len(images) == 2
    for name, data in _snapshot(out).items():  # every file there is whole and final
        assert name in want, name
        if name.startswith("m/images/"):
            assert data == want[name], name
    assert not (out / "m" / "scores.csv").exists() and not (out / "report.json").exists()

    # 2. resumed: only the two missing images are generated; stopped as scoring starts
    counter = CountingGeneration().install(monkeypatch)
    encode = run._encode_images

    def stop_scoring(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_encode_images", stop_scoring)
    with pytest.raises(KeyboardInterrupt):
        evaluate(models, out, config, progress=False, quiet=True)
    monkeypatch.setattr(run, "_encode_images", encode)
    assert counter.images == ["a photo of cat", "a photo of cat"]
    assert {n: want[n] for n in want if n.startswith("m/images/")} == {
        n: d for n, d in _snapshot(out).items() if n.startswith("m/images/")
    }
    assert not (out / "m" / "scores.csv").exists()

    # 3. finished: nothing generated, every output as in the uninterrupted run
    counter = CountingGeneration().install(monkeypatch)
    report = evaluate(models, out, config, progress=False, quiet=True)
    assert counter.images == []
    assert _without_seconds(report) == _without_seconds(reference)
    got = _snapshot(out)
    assert sorted(got) == sorted(want)
    for name in want:
        if name.endswith(".json"):  # metrics and report: equal but for the timings
            assert _without_seconds(json.loads(got[name])) == _without_seconds(
                json.loads(want[name])
            ), name
        else:  # images, scores.csv, grid, attention maps, report.html: byte-identical
            assert got[name] == want[name], name
