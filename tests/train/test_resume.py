"""Training stopped between checkpoints, and again while writing one, then resumed: the weights,
the log and the checkpoints equal an uninterrupted run's.

The reference is the same configuration trained once without interruption. The run has EMA
weights and two micro-batches per step, so a resume must restore the optimizer, the EMA shadow
and the step, and a stop between two micro-batches must not leak half a step's gradient.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from alignscope._files import LOCK_NAME, RECORD_NAME
from alignscope.io.datasets import open_dataset
from alignscope.train import TrainConfig, modes, train

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
safetensors_torch = pytest.importorskip("safetensors.torch")

CONFIG = TrainConfig(
    steps=6,
    learning_rate=1e-3,
    batch_size=2,
    gradient_accumulation=2,
    resolution=16,
    seed=3,
    checkpoint_every=2,
    ema_decay=0.9,
)


def _finetune(data: Path, out: Path, model: Path):
    return train("finetune", open_dataset(data), out, model=model, config=CONFIG, progress=False)


def _log(out: Path) -> tuple[list[int], list[float]]:
    rows = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows], [r["loss"] for r in rows]


def _files(out: Path) -> list[str]:
    """Every file under ``out`` (hidden temp files included) but the run's record and lock."""
    return sorted(
        p.relative_to(out).as_posix()
        for p in out.rglob("*")
        if p.is_file() and p.name not in (RECORD_NAME, LOCK_NAME)
    )


def _complete(out: Path) -> bool:
    """The run's record says it finished."""
    return json.loads((out / RECORD_NAME).read_text())["complete"]


def _assert_close_tensors(got: dict, want: dict, what: str) -> None:
    assert got.keys() == want.keys(), what
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=0, atol=1e-6, msg=f"{what} {name}")


class CountingLoss:
    """Wraps diffusion_loss: counts its calls (one per micro-batch) and raises on ``fail_at``."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.original, self.fail_at, self.calls = modes.diffusion_loss, fail_at, 0

    def __call__(self, **kwargs):
        self.calls += 1
        if self.calls == self.fail_at:
            raise KeyboardInterrupt
        return self.original(**kwargs)


def test_training_stopped_twice_resumes_to_the_uninterrupted_run(
    tmp_path, four_images, tiny_sd_dir, monkeypatch
):
    ref = tmp_path / "reference"
    reference = _finetune(four_images, ref, tiny_sd_dir)
    assert reference.resumed_from == 0 and len(reference.losses) == 6
    out = tmp_path / "out"

    # 1. stopped inside step 4, between its two micro-batches (calls 7 and 8): steps 1-3 are
    # logged, step_2.pt is the last checkpoint
    loss = CountingLoss(fail_at=8)
    monkeypatch.setattr(modes, "diffusion_loss", loss)
    with pytest.raises(KeyboardInterrupt):
        _finetune(four_images, out, tiny_sd_dir)
    assert _files(out) == ["checkpoints/step_2.pt", "train_log.jsonl"]
    assert _log(out)[0] == [1, 2, 3]
    assert not _complete(out)  # the record is there from the start, marked unfinished

    # 2. resumed from step 2 and stopped again while step_4.pt is half written
    loss = CountingLoss()
    monkeypatch.setattr(modes, "diffusion_loss", loss)
    save = torch.save

    def cut_short(obj, path, *args, **kwargs):
        if Path(path).name.startswith(".step_4.pt."):
            Path(path).write_bytes(b"half a checkpoint")
            raise KeyboardInterrupt
        return save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", cut_short)
    with pytest.raises(KeyboardInterrupt):
        _finetune(four_images, out, tiny_sd_dir)
    monkeypatch.setattr(torch, "save", save)
    assert loss.calls == 4  # steps 3-4 only: the run did start from step_2.pt
    assert _files(out) == ["checkpoints/step_2.pt", "train_log.jsonl"]  # no partial step_4.pt
    assert _log(out)[0] == [1, 2, 3, 4]

    # 3. resumed from step 2 again (the latest whole checkpoint) and finished
    loss = CountingLoss()
    monkeypatch.setattr(modes, "diffusion_loss", loss)
    resumed = _finetune(four_images, out, tiny_sd_dir)
    assert resumed.resumed_from == 2 and loss.calls == 8  # steps 3-6, two micro-batches each
    assert _files(out) == _files(ref)
    assert _complete(out) and (out / RECORD_NAME).read_bytes() == (ref / RECORD_NAME).read_bytes()

    steps, losses = _log(out)
    want_steps, want_losses = _log(ref)
    assert steps == want_steps == list(range(1, 7))  # each step logged once
    np.testing.assert_allclose(losses, want_losses, rtol=0, atol=1e-6)
    np.testing.assert_allclose(resumed.losses, reference.losses[2:], rtol=0, atol=1e-6)
    for name in _files(ref):
        if name.endswith(".safetensors"):  # the saved pipeline: trained UNet (EMA), frozen rest
            _assert_close_tensors(
                safetensors_torch.load_file(out / name),
                safetensors_torch.load_file(ref / name),
                name,
            )
    for step in (2, 4):  # the checkpoints: weights, EMA shadow and the optimizer's moments
        got = torch.load(out / "checkpoints" / f"step_{step}.pt", weights_only=True)
        want = torch.load(ref / "checkpoints" / f"step_{step}.pt", weights_only=True)
        assert got["step"] == want["step"] == step
        for key in ("parameters", "ema"):
            _assert_close_tensors(dict(enumerate(got[key])), dict(enumerate(want[key])), key)
        for k, moments in want["optimizer"]["state"].items():
            for m in ("exp_avg", "exp_avg_sq"):
                torch.testing.assert_close(
                    got["optimizer"]["state"][k][m], moments[m], rtol=0, atol=1e-6
                )
    assert (out / "train_config.json").read_bytes() == (ref / "train_config.json").read_bytes()


# ------------------------------------------------------------------ reruns into the same --out
SHORT = TrainConfig(
    steps=3, learning_rate=1e-3, batch_size=2, resolution=16, seed=0, checkpoint_every=2
)


def _short(data: Path, out: Path, model: Path, config: TrainConfig = SHORT, **kwargs):
    return train(
        "finetune", open_dataset(data), out, model=model, config=config, progress=False, **kwargs
    )


def _contents(out: Path) -> dict[str, bytes]:
    return {name: (out / name).read_bytes() for name in _files(out)}


def _refused(out: Path, differences: str) -> str:
    return (
        f"--out {str(out)!r} holds the output of another run ({differences}): pass "
        "--overwrite to replace it, or choose another folder"
    )


def test_rerun_with_another_setting_model_or_dataset_is_refused(
    tmp_path, four_images, tiny_sd_dir, capsys
):
    import dataclasses
    import shutil

    from alignscope._files import OutputConflict
    from alignscope.cli import main

    out = tmp_path / "r"
    _short(four_images, out, tiny_sd_dir)
    before = _contents(out)
    # a setting
    with pytest.raises(OutputConflict) as refused:
        _short(four_images, out, tiny_sd_dir, dataclasses.replace(SHORT, learning_rate=1e-2))
    assert str(refused.value) == _refused(out, "config.learning_rate: 0.001 there, 0.01 now")
    # the same through the CLI: exit 2, one line
    argv = ["train", "finetune", str(four_images), "--model", str(tiny_sd_dir), "--out", str(out)]
    argv += ["--steps", "3", "--lr", "0.001", "--batch-size", "2", "--resolution", "16"]
    argv += ["--checkpoint-every", "2", "--quiet"]
    capsys.readouterr()
    assert main([*argv, "--seed", "1"]) == 2
    err = capsys.readouterr().err
    assert err == f"alignscope: error: {_refused(out, 'config.seed: 0 there, 1 now')}\n"
    # a model: the same files elsewhere (copied with their times, so only the path differs)
    copy = shutil.copytree(tiny_sd_dir, tmp_path / "sd_copy")
    with pytest.raises(OutputConflict, match=r"holds the output of another run \(model\.path: "):
        _short(four_images, out, copy)
    # the process count (two processes of batch b train as one of batch 2b), as if two had run
    record = (out / RECORD_NAME).read_text()
    two = json.loads(record)
    two["identity"]["processes"] = 2
    (out / RECORD_NAME).write_text(json.dumps(two))
    with pytest.raises(OutputConflict) as refused:
        _short(four_images, out, tiny_sd_dir)
    assert str(refused.value) == _refused(out, "processes: 2 there, 1 now")
    (out / RECORD_NAME).write_text(record)
    # the dataset: one caption rewritten
    (four_images / "0.txt").write_text("a photo of something else")
    with pytest.raises(OutputConflict) as refused:
        _short(four_images, out, tiny_sd_dir)
    assert str(refused.value).startswith(
        f"--out {str(out)!r} holds the output of another run (dataset.listing_sha256: "
    )
    assert ";" not in str(refused.value)  # nothing else differs
    assert _contents(out) == before  # every refusal left the run as it was


def test_overwrite_starts_over(tmp_path, four_images, tiny_sd_dir):
    import dataclasses

    other = dataclasses.replace(SHORT, learning_rate=1e-2, checkpoint_every=0)
    fresh = _short(four_images, tmp_path / "fresh", tiny_sd_dir, other)
    out = tmp_path / "r"
    _short(four_images, out, tiny_sd_dir)
    assert (out / "checkpoints" / "step_2.pt").exists()
    result = _short(four_images, out, tiny_sd_dir, other, overwrite=True)
    assert result.resumed_from == 0
    assert not (out / "checkpoints").exists()  # the earlier run's checkpoint went first
    assert _log(out) == _log(tmp_path / "fresh")  # the run a new folder gets
    np.testing.assert_allclose(result.losses, fresh.losses, rtol=0, atol=0)
    assert json.loads((out / RECORD_NAME).read_text())["identity"]["config"]["learning_rate"] == (
        1e-2
    )


def test_more_or_fewer_steps_continue_the_same_run(tmp_path, four_images, tiny_sd_dir):
    """--steps, --checkpoint-every, --device and --gradient-checkpointing change no step's
    weights, so a rerun with other values continues the run (from the last checkpoint at or
    before its own end) instead of being refused."""
    import dataclasses

    out = tmp_path / "r"
    five = _short(four_images, out, tiny_sd_dir, dataclasses.replace(SHORT, steps=5))
    reference = _log(out)  # the uninterrupted five steps; step_2.pt and step_4.pt
    three = _short(four_images, out, tiny_sd_dir, SHORT)
    assert three.resumed_from == 2  # not step_4.pt, past its end
    assert _log(out) == (reference[0][:3], reference[1][:3])
    six = dataclasses.replace(SHORT, steps=6, checkpoint_every=3, gradient_checkpointing=True)
    longer = _short(four_images, out, tiny_sd_dir, six)
    # step_4.pt went when the three-step rerun trained its steps after step 2 again
    assert longer.resumed_from == 2
    assert _log(out)[0] == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose(_log(out)[1][:5], five.losses, rtol=0, atol=1e-6)
