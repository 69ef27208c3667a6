"""The training loop shared by every mode.

Each step draws its batch, timesteps and noise from generators seeded by (seed, step), so a
resumed run repeats exactly what an uninterrupted one does: a checkpoint holds the trainable
weights, the optimizer, the EMA weights and the step, nothing else is needed.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from alignscope._files import atomic_path


@dataclass
class TrainConfig:
    """Hyper-parameters of a run (see README "Training" for the papers' presets).

    timestep_min : SZT's high-noise window: timesteps are drawn from [timestep_min, T).
    min_snr_gamma : Min-SNR loss weighting (Hang et al.), None for plain MSE.
    ema_decay : keep an exponential moving average of the trainable weights, None for none.
    mixed_precision : "no" or "bf16" (autocast on the forward pass).
    """

    steps: int = 500
    learning_rate: float = 1e-4
    batch_size: int = 1
    gradient_accumulation: int = 1
    resolution: int = 512
    seed: int = 0
    checkpoint_every: int = 0
    timestep_min: int = 0
    min_snr_gamma: float | None = None
    ema_decay: float | None = None
    gradient_checkpointing: bool = False
    mixed_precision: str = "no"
    jpeg_quality: int | None = None
    mask_dir: str | None = None
    weight_decay: float = 0.0
    device: str = "cpu"

    def check(self, num_timesteps: int) -> None:
        from alignscope._devices import check_device

        check_device(self.device)
        if self.resolution < 8 or self.resolution % 8:
            raise ValueError(
                "resolution must be a multiple of 8 (the VAE's downsampling), "
                f"got {self.resolution}"
            )
        if self.steps < 1 or self.batch_size < 1 or self.gradient_accumulation < 1:
            raise ValueError("steps, batch_size and gradient_accumulation must be >= 1")
        if not 0 <= self.timestep_min < num_timesteps:
            raise ValueError(
                f"timestep_min must be in [0, {num_timesteps}), got {self.timestep_min}"
            )
        if self.mixed_precision not in ("no", "bf16"):
            raise ValueError(
                f"mixed_precision must be 'no' or 'bf16', got {self.mixed_precision!r}"
            )
        if self.jpeg_quality is not None and not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"jpeg_quality must be in [1, 100], got {self.jpeg_quality}")


@dataclass
class TrainResult:
    output: str
    steps: int
    losses: list[float] = field(default_factory=list)
    resumed_from: int = 0
    seconds: float = 0.0


@dataclass
class Processes:
    """This process among the training processes: one, or several under ``accelerate launch``.

    Every process draws the same global batch, noise and timesteps (the generators are seeded
    by step only) and trains on its own slice; gradients are averaged across processes before
    the optimizer step, so N processes with batch b each follow one process with batch N*b.
    """

    count: int = 1
    index: int = 0
    device: str = "cpu"
    accelerator: Any = None

    @property
    def main(self) -> bool:
        return self.index == 0

    def shard(self, per_process: int) -> slice:
        return slice(self.index * per_process, (self.index + 1) * per_process)

    def mean(self, tensor: Any) -> Any:
        """The mean of ``tensor`` over the processes (a new tensor; the input is untouched)."""
        if self.count == 1:
            return tensor
        import torch.distributed as dist

        out = tensor.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out.div_(self.count)

    def barrier(self) -> None:
        if self.count > 1:
            self.accelerator.wait_for_everyone()

    def average_gradients(self, parameters: list[Any]) -> None:
        """In place, one tensor at a time: no copy of all the gradients at once."""
        if self.count == 1:
            return
        import torch.distributed as dist

        for p in parameters:  # the same collective as mean(), in place
            if p.grad is not None:
                dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
                p.grad.div_(self.count)


def processes(device: str) -> Processes:
    """One process, or the accelerate process group when launched with WORLD_SIZE > 1."""
    import os

    world = int(os.environ.get("WORLD_SIZE", "1") or 1)
    if world <= 1:
        return Processes(1, 0, device)
    try:
        from accelerate import Accelerator
    except ImportError as exc:
        raise ValueError(
            f"WORLD_SIZE is {world}: training on several processes needs accelerate "
            "(pip install 'alignscope[train]'; start it with `accelerate launch`)"
        ) from exc
    acc = Accelerator(cpu=not device.startswith("cuda"))
    return Processes(acc.num_processes, acc.process_index, str(acc.device), acc)


def step_generator(seed: int, step: int) -> Any:
    import torch

    return torch.Generator().manual_seed(seed * 1_000_003 + step)


def sample_timesteps(generator: Any, batch: int, low: int, high: int) -> Any:
    import torch

    return torch.randint(low, high, (batch,), generator=generator)


PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def prediction_type(scheduler: Any) -> str:
    """The scheduler's ``config.prediction_type``, one of :data:`PREDICTION_TYPES`.

    Raises
    ------
    ValueError naming the value, for any other (a model trained or scored against the wrong
    target would give numbers, not an error).
    """
    kind = scheduler.config.prediction_type
    if kind not in PREDICTION_TYPES:
        raise ValueError(
            f"unsupported scheduler prediction_type {kind!r}: the model's scheduler config must "
            f"predict one of {', '.join(PREDICTION_TYPES)}"
        )
    return kind


def noise_target(scheduler: Any, latents: Any, noise: Any, t: Any) -> Any:
    """What the UNet is trained to predict for clean ``latents`` noised with ``noise`` at
    timesteps ``t``: the noise ("epsilon"), v = sqrt(a) noise - sqrt(1 - a) latents
    ("v_prediction", the scheduler's ``get_velocity``) or the clean latents ("sample").

    The one copy of the rule: training's loss, the analyses that repeat it and the diffusion
    classifier all take their target here.
    """
    kind = prediction_type(scheduler)
    if kind == "v_prediction":
        return scheduler.get_velocity(latents, noise, t)
    return latents if kind == "sample" else noise


def diffusion_loss(
    *,
    unet: Any,
    scheduler: Any,
    latents: Any,
    encoder_hidden_states: Any,
    generator: Any,
    timestep_min: int,
    min_snr_gamma: float | None,
    mask: Any | None,
    shard: slice | None = None,
) -> Any:
    """Noise-prediction loss of one batch: the target the scheduler predicts
    (:func:`noise_target`), timesteps from [timestep_min, T), optional Min-SNR weights,
    optional loss mask (latent resolution, 1 = learn). Noise and timesteps are drawn for the
    whole (global) batch; with ``shard`` only that slice of it is computed here."""
    import torch

    noise = torch.randn(latents.shape, generator=generator).to(latents.device)
    t = sample_timesteps(
        generator, latents.shape[0], timestep_min, scheduler.config.num_train_timesteps
    )
    t = t.to(latents.device)  # drawn on the CPU generator: runs and resumes repeat exactly
    if shard is not None:
        latents, noise, t = latents[shard], noise[shard], t[shard]
        encoder_hidden_states = encoder_hidden_states[shard]
        mask = None if mask is None else mask[shard]
    noisy = scheduler.add_noise(latents, noise, t)
    pred = unet(noisy, t, encoder_hidden_states).sample
    target = noise_target(scheduler, latents, noise, t)
    err = (pred.float() - target.float()) ** 2
    if mask is not None:
        per_sample = (err * mask).sum(dim=(1, 2, 3)) / (
            mask.sum(dim=(1, 2, 3)) * err.shape[1]
        ).clamp(min=1.0)
    else:
        per_sample = err.mean(dim=(1, 2, 3))
    if min_snr_gamma is not None:
        alphas = scheduler.alphas_cumprod.to(latents.device)[t]
        snr = alphas / (1 - alphas)
        # Hang et al.'s min(SNR, gamma) on the x0 loss, in each target's units (as diffusers'
        # training scripts weigh it): / SNR for epsilon, / (SNR + 1) for v, as is for x0
        weight = torch.minimum(snr, torch.full_like(snr, min_snr_gamma))
        kind = prediction_type(scheduler)
        if kind == "epsilon":
            weight = weight / snr
        elif kind == "v_prediction":
            weight = weight / (snr + 1)
        per_sample = per_sample * weight
    return per_sample.mean()


def run_loop(
    *,
    config: TrainConfig,
    out: Path,
    parameters: list[Any],
    compute_loss: Callable[[int, Any], Any],
    after_step: Callable[[], None] | None = None,
    state_extra: Callable[[], dict[str, Any]] | None = None,
    load_extra: Callable[[dict[str, Any]], None] | None = None,
    progress: bool = True,
    procs: Processes | None = None,
) -> TrainResult:
    """Optimise ``parameters`` for ``config.steps`` steps of ``compute_loss(step, generator)``.

    Writes ``out/train_log.jsonl`` (step, loss, lr, seconds) and checkpoints
    ``out/checkpoints/step_<k>.pt`` every ``checkpoint_every`` steps; resumes from the latest
    one at or before ``config.steps``. The checkpoints must come from this same run: the
    caller checks that (:func:`alignscope.train.train` claims ``out`` with a record of the
    dataset, the model and :func:`resumable_config`).
    """
    import torch

    procs = procs or Processes(device=config.device)
    if procs.main:
        out.mkdir(parents=True, exist_ok=True)
    procs.barrier()
    optimizer = torch.optim.AdamW(
        parameters, lr=config.learning_rate, weight_decay=config.weight_decay
    )
    ema = [p.detach().clone() for p in parameters] if config.ema_decay else None
    start_step = 0
    ckpt_dir = out / "checkpoints"
    latest = _latest_checkpoint(ckpt_dir, config.steps)
    if latest is not None:
        start_step, ema = _resume(
            latest,
            parameters=parameters,
            optimizer=optimizer,
            ema=ema,
            load_extra=load_extra,
            procs=procs,
        )
    result = TrainResult(str(out), config.steps, resumed_from=start_step)
    log = out / "train_log.jsonl"
    if procs.main:
        # steps after the checkpoint are trained again: their log lines and any later
        # checkpoint (a longer earlier run's) go, so the folder describes one run to its end
        if log.exists():
            _truncate_log(log, start_step)
        _drop_checkpoints_after(ckpt_dir, start_step)
    began = time.perf_counter()
    bar = None
    if progress and procs.main:
        from tqdm import tqdm

        bar = tqdm(
            total=config.steps, initial=start_step, desc="training", unit="step", file=sys.stderr
        )
    device_type = "cuda" if procs.device.startswith("cuda") else "cpu"
    autocast = torch.autocast(
        device_type, dtype=torch.bfloat16, enabled=config.mixed_precision == "bf16"
    )
    for step in range(start_step, config.steps):
        tick = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for micro in range(config.gradient_accumulation):
            generator = step_generator(config.seed, step * config.gradient_accumulation + micro)
            with autocast:
                loss = compute_loss(step, generator) / config.gradient_accumulation
            loss.backward()
            total += float(procs.mean(loss.detach()))
        procs.average_gradients(parameters)
        optimizer.step()
        if after_step is not None:
            after_step()
        if ema is not None:
            with torch.no_grad():
                for shadow, p in zip(ema, parameters, strict=True):
                    shadow.mul_(config.ema_decay).add_(p.detach(), alpha=1 - config.ema_decay)
        result.losses.append(total)
        if not procs.main:
            continue
        _log_step(log, step, total, config.learning_rate, time.perf_counter() - tick)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{total:.4f}")
        if (
            config.checkpoint_every
            and (step + 1) % config.checkpoint_every == 0
            and step + 1 < config.steps
        ):
            ckpt_dir.mkdir(exist_ok=True)
            state = {
                "step": step + 1,
                "parameters": [p.detach().clone() for p in parameters],
                "optimizer": optimizer.state_dict(),
                "ema": ema if ema is not None else [],
                "extra": state_extra() if state_extra else {},
            }
            with atomic_path(ckpt_dir / f"step_{step + 1}.pt") as tmp:
                torch.save(state, tmp)
    if bar is not None:
        bar.close()
    procs.barrier()
    _finish(out, config, parameters, ema, procs)
    result.seconds = time.perf_counter() - began
    return result


def _resume(
    latest: Path,
    *,
    parameters: list[Any],
    optimizer: Any,
    ema: list[Any] | None,
    load_extra: Callable[[dict[str, Any]], None] | None,
    procs: Processes,
) -> tuple[int, list[Any] | None]:
    """Load the checkpoint ``latest`` into the parameters and the optimizer; return the step
    it ends on and the EMA weights (the saved ones where the run keeps an EMA)."""
    import torch

    state = torch.load(latest, map_location=procs.device, weights_only=True)
    with torch.no_grad():
        for p, saved in zip(parameters, state["parameters"], strict=True):
            p.copy_(saved)
    optimizer.load_state_dict(state["optimizer"])
    if ema is not None:
        ema = [t.clone() for t in state["ema"]]
    if load_extra is not None:
        load_extra(state.get("extra", {}))
    start_step = int(state["step"])
    return start_step, ema


def _log_step(log: Path, step: int, loss: float, learning_rate: float, seconds: float) -> None:
    """Append the line of 0-based ``step`` (logged as ``step + 1``, the steps done)."""
    with open(log, "a", encoding="utf-8") as fh:
        fh.write(
            json.dumps(
                {
                    "step": step + 1,
                    "loss": loss,
                    "lr": learning_rate,
                    "seconds": seconds,
                }
            )
            + "\n"
        )


def _finish(
    out: Path,
    config: TrainConfig,
    parameters: list[Any],
    ema: list[Any] | None,
    procs: Processes,
) -> None:
    """End of training: the EMA weights (if kept) become the parameters, and the main process
    writes ``out/train_config.json``."""
    import torch

    if ema is not None:
        with torch.no_grad():
            for p, shadow in zip(parameters, ema, strict=True):
                p.copy_(shadow)
    if procs.main:
        with atomic_path(out / "train_config.json") as tmp:
            tmp.write_text(
                json.dumps({**asdict(config), "processes": procs.count}, indent=2) + "\n"
            )


# Settings a resumed run may change: the step at which it stops (every step's weights are the
# same whatever the total: the learning rate is constant), how often it saves, where it runs
# (the same arithmetic on another device), and whether activations are recomputed in the
# backward pass (the same gradients, less memory).
RESUMABLE_CHANGES = ("steps", "checkpoint_every", "device", "gradient_checkpointing")


def resumable_config(config: TrainConfig) -> dict[str, Any]:
    """The settings a resumed run must share with the run it continues: all of
    :class:`TrainConfig` but :data:`RESUMABLE_CHANGES`."""
    out = asdict(config)
    for key in RESUMABLE_CHANGES:
        del out[key]
    return out


def _truncate_log(log: Path, last_step: int) -> None:
    kept = []
    for line in log.read_text(encoding="utf-8").splitlines():
        try:
            if int(json.loads(line)["step"]) <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):
            continue  # a line cut by an interruption
    with atomic_path(log) as tmp:
        tmp.write_text("".join(f"{line}\n" for line in kept), encoding="utf-8")


def _checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in ``ckpt_dir``."""
    if not ckpt_dir.is_dir():
        return []
    return [
        (int(p.stem.split("_")[1]), p)
        for p in ckpt_dir.glob("step_*.pt")
        if p.stem.split("_")[1].isdigit()
    ]


def _drop_checkpoints_after(ckpt_dir: Path, step: int) -> None:
    for k, path in _checkpoints(ckpt_dir):
        if k > step:
            path.unlink()


def _latest_checkpoint(ckpt_dir: Path, last_step: int) -> Path | None:
    """The checkpoint of the highest step up to ``last_step``: a rerun with fewer steps than
    an earlier one of the same run resumes before its own end, never past it."""
    steps = [(k, p) for k, p in _checkpoints(ckpt_dir) if k <= last_step]
    return max(steps)[1] if steps else None


def batch_indices(seed: int, step: int, size: int, count: int) -> np.ndarray:
    """The examples of a step: a seeded permutation per epoch, read in order."""
    per_epoch = max(1, count // size) if count >= size else 1
    epoch, slot = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(count)
    if count < size:
        return np.random.default_rng([seed, step]).choice(count, size=size, replace=True)
    return order[slot * size : (slot + 1) * size]
