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

from alignscope._files import LOCK_NAME, RECORD_NAME, OutputConflict
from alignscope.evaluate import run
from alignscope.evaluate.generate import GenerationSettings, generate_images, model_fingerprint
from alignscope.evaluate.run import EvalConfig, evaluate, evaluate_identity

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
    """Every file under ``root`` (hidden temp files included) by relative path, but the
    provenance records and locks (:func:`_records`)."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in root.rglob("*")
        if p.is_file() and p.name not in (RECORD_NAME, LOCK_NAME)
    }


def _records(root: Path) -> dict[str, dict]:
    """The provenance records under ``root`` (the run's, and each images folder's)."""
    return {
        p.relative_to(root).as_posix(): json.loads(p.read_text()) for p in root.rglob(RECORD_NAME)
    }


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

    assert not _records(out)[RECORD_NAME]["complete"]  # the run's record: begun, unfinished

    # 3. finished: nothing generated, every output as in the uninterrupted run
    counter = CountingGeneration().install(monkeypatch)
    report = evaluate(models, out, config, progress=False, quiet=True)
    assert counter.images == []
    assert _records(out) == _records(ref)  # the run's and the images' records, complete
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


# ------------------------------------------------------------------ reruns into the same --out
def _small(clip: str) -> EvalConfig:
    return EvalConfig(
        concepts=["dog"],
        generation=GenerationSettings(
            images_per_concept=1, steps=1, batch_size=1, height=16, width=16
        ),
        clip=clip,
        attention_concepts=0,
    )


def _refused(out: Path, differences: str) -> str:
    return (
        f"--out {str(out)!r} holds the output of another run ({differences}): pass "
        "--overwrite to replace it, or choose another folder"
    )


def test_rerun_with_another_model_input_or_setting_is_refused(
    tmp_path, tiny_sd_dir, tiny_open_clip, monkeypatch, capsys
):
    import shutil
    from dataclasses import replace

    from alignscope.cli import main

    config = _small(tiny_open_clip)
    out = tmp_path / "e"
    counter = CountingGeneration().install(monkeypatch)
    evaluate({"m": tiny_sd_dir}, out, config, progress=False, quiet=True)
    before = _snapshot(out)

    def refusal(models, cfg) -> str:
        with pytest.raises(OutputConflict) as refused:
            evaluate(models, out, cfg, progress=False, quiet=True)
        return str(refused.value)

    # a model: a copy of the folder whose UNet weights differ in one byte
    other = shutil.copytree(tiny_sd_dir, tmp_path / "sd_other")
    weights = next((other / "unet").glob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    old, new = model_fingerprint(tiny_sd_dir), model_fingerprint(other)
    assert refusal({"m": other}, config) == _refused(out, f'models.m: "{old}" there, "{new}" now')
    # more concepts are the same evaluation (only their images are new); a generation
    # setting and a scoring setting are not
    fingerprints = {"m": model_fingerprint(tiny_sd_dir)}
    assert evaluate_identity(fingerprints, config) == evaluate_identity(
        fingerprints, replace(config, concepts=["dog", "cat"])
    )
    steps = replace(config, generation=replace(config.generation, steps=2))
    assert refusal({"m": tiny_sd_dir}, steps) == _refused(out, "generation.steps: 1 there, 2 now")
    threshold = replace(config, clip_threshold=0.3)
    assert refusal({"m": tiny_sd_dir}, threshold) == _refused(
        out, "clip_threshold: 0.236 there, 0.3 now"
    )
    # the same through the CLI: exit 2, one line (batch size and device change no image)
    argv = ["evaluate", str(tiny_sd_dir), "--names", "m", "--out", str(out), "--concepts", "dog"]
    argv += ["--images-per-concept", "1", "--steps", "1", "--height", "16", "--width", "16"]
    argv += ["--clip", tiny_open_clip, "--attention-concepts", "0", "--batch-size", "3", "--quiet"]
    capsys.readouterr()
    assert main([*argv, "--clip-threshold", "0.3"]) == 2
    assert capsys.readouterr().err == (
        f"alignscope: error: {_refused(out, 'clip_threshold: 0.236 there, 0.3 now')}\n"
    )
    assert len(counter.images) == 1 and _snapshot(out) == before  # nothing ran or changed

    # --overwrite starts over: the earlier run's outputs go, every image is generated again
    assert main([*argv[:3], "n", *argv[4:], "--clip-threshold", "0.3", "--overwrite"]) == 0
    assert len(counter.images) == 2 and not (out / "m").exists()
    report = json.loads((out / "report.json").read_text())
    assert list(report["models"]) == ["n"] and report["thresholds"]["clip"] == 0.3
    assert len(list((out / "n" / "images").rglob("*.png"))) == 1
    # and a true rerun of that resumes, generating nothing
    assert main([*argv[:3], "n", *argv[4:], "--clip-threshold", "0.3"]) == 0
    assert len(counter.images) == 2


def test_generated_images_record_their_model_and_settings(tmp_path, tiny_sd_dir, monkeypatch):
    """generate_images on its own (the API) claims its folder too: more concepts are added to
    it, other settings or another model are refused, overwrite starts over."""
    from dataclasses import replace

    pipe = run.load_pipeline(tiny_sd_dir)
    settings = GenerationSettings(images_per_concept=1, steps=1, batch_size=1, height=16, width=16)
    folder = tmp_path / "g"
    counter = CountingGeneration().install(monkeypatch)

    def generate(concepts, fingerprint="A", **kwargs):
        return generate_images(
            pipe, concepts, folder, kwargs.pop("s", settings), fingerprint=fingerprint,
            progress=False, **kwargs,
        )  # fmt: skip

    generate(["dog"])
    generate(["dog", "cat"])  # the concepts are not in the record: only cat is generated
    assert counter.images == ["a photo of dog", "a photo of cat"]
    with pytest.raises(OutputConflict) as refused:
        generate(["dog"], s=replace(settings, guidance=1.0))
    assert str(refused.value) == _refused(folder, "settings.guidance: 7.5 there, 1.0 now")
    with pytest.raises(OutputConflict) as refused:
        generate(["dog"], fingerprint="B")
    assert str(refused.value) == _refused(folder, 'model: "A" there, "B" now')
    assert counter.images == ["a photo of dog", "a photo of cat"]
    generate(["dog"], fingerprint="B", overwrite=True)
    assert counter.images[2:] == ["a photo of dog"]
    assert sorted(p.parent.name.split("-")[0] for p in folder.rglob("*.png")) == ["dog"]
