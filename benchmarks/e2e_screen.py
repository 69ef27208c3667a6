"""Screening end to end on files: ``alignscope poison`` -> ``embed`` -> ``screen --manifest``
with the test suite's tiny models, for badnets-1, dirty-label and nightshade (issue #15).

    python benchmarks/e2e_screen.py [--workdir DIR] [--json FILE] [--n 360] [--per-concept 8]
        [--steps 60] [--seed 0] [--threads 1] [--methods badnets-1,dirty-label,nightshade]

It builds, in a temporary folder (or ``--workdir``, which must be empty or absent):

- an image-caption folder of N generated 64 x 64 pictures of six concepts (COCO / ImageNet
  nouns, so the packaged vocabulary finds them): each concept a shape of its own colour on a
  background of its own colour, with jittered position, size and colours, pixel noise, and a
  caption from five templates naming the concept (30 distinct captions, each repeated: web
  data repeats captions too); concept frequencies are Zipf-imbalanced so "the most frequent
  concepts" of the poison plans are well defined;
- the tiny models of tests/conftest.py: the open_clip config of ``tiny_open_clip`` (random
  weights), ``tiny_vae_model()`` saved with ``save_pretrained`` and the tiny SSCD net saved as
  TorchScript. Nothing is downloaded.

Then, for each poison method, it runs the real command line (``python -m alignscope``, one
process per stage, so each stage's wall time includes its imports as a user sees it):

1. ``poison DATA --method M`` (badnets-1: ``--target cat --ratio 0.1``; dirty-label and
   nightshade: the 2 most frequent concepts, ``--per-concept`` poisons each; nightshade with the
   tiny VAE, ``--steps`` PGD steps, ``--nightshade-size 0`` (the pictures' own size), anchors
   taken from dataset images of the target);
2. ``embed POISONED --clip TINY --vae TINY_VAE --vae-size 64 --sscd TINY_SSCD``;
3. ``screen STORE --manifest poison_manifest.parquet --json`` with the default scores (the
   combined score first; view_density and cross_view on the store's vae view, purification on
   its vae_purified view);
4. ``screen STORE --second-view sscd --scores cross_view,view_density --json``: the same
   view scores with a copy-detection descriptor as the second view.

It prints one table per method (score, AUROC, AUPRC, TPR at 1% and 5% FPR, from the runs'
summary.json) and the wall time of each stage; ``--json FILE`` writes the numbers. The models
have random weights, so the numbers show that the pipeline runs and what it reports, not how
well a trained CLIP would screen. A stage that exits non-zero is reported with its command and
stderr, the method's later stages are skipped, and the script exits 1. The CLI processes run
with ``OMP_NUM_THREADS=1`` unless ``--threads`` says otherwise (see ``Runner``).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"

# tests/conftest.py::tiny_open_clip
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}

# (noun, shape, shape colour, background colour). Nouns of the packaged vocabulary; each concept
# differs from the others in shape and both colours, so even a random-weight encoder sees six
# clusters (the screening scores compare a pair with its neighbours).
CONCEPTS = [
    ("dog", "circle", (200, 60, 40), (30, 90, 40)),
    ("cat", "square", (240, 200, 40), (40, 40, 110)),
    ("car", "triangle", (40, 120, 220), (200, 200, 190)),
    ("boat", "stripes", (250, 250, 250), (20, 60, 160)),
    ("bird", "cross", (30, 30, 30), (140, 200, 240)),
    ("clock", "ring", (170, 40, 170), (230, 170, 120)),
]
TEMPLATES = [
    "a photo of a {}",
    "a {} on a plain background",
    "close-up picture of the {}",
    "an image showing a {}",
    "a {} in the middle of the frame",
]
SIZE = 64
ZIPF = 0.7  # concept frequency ~ rank^-0.7: 360 pictures give 119, 72, 54, 44, 38, 33
TRIGGER_TARGET = "cat"
TRIGGER_RATIO = 0.1
POISONED_CONCEPTS = 2
METRICS = ("auroc", "auprc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr")


def concept_counts(n: int) -> list[int]:
    """Pictures per concept: Zipf-imbalanced, summing to ``n``, every concept at least 8."""
    weights = np.arange(1, len(CONCEPTS) + 1, dtype=float) ** -ZIPF
    counts = np.maximum(8, np.floor(n * weights / weights.sum())).astype(int)
    counts[0] += n - counts.sum()  # the rounding remainder goes to the most frequent concept
    return counts.tolist()


def _jitter(rng: np.random.Generator, colour: tuple[int, int, int], spread: int) -> tuple:
    return tuple(int(v) for v in np.clip(np.array(colour) + rng.integers(-spread, spread + 1, 3),
                                         0, 255))  # fmt: skip


def draw(concept: int, rng: np.random.Generator) -> Any:
    """One 64 x 64 RGB PIL picture of ``concept``: its shape at a random place and size, colours
    jittered, Gaussian pixel noise (so no two pictures are alike and the VAE latents spread)."""
    from PIL import Image, ImageDraw

    _, shape, fg, bg = CONCEPTS[concept]
    image = Image.new("RGB", (SIZE, SIZE), _jitter(rng, bg, 30))
    pen = ImageDraw.Draw(image)
    colour = _jitter(rng, fg, 40)
    r = int(rng.integers(12, 24))
    cx, cy = (int(v) for v in rng.integers(r, SIZE - r, 2))
    box = (cx - r, cy - r, cx + r, cy + r)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    elif shape == "triangle":
        pen.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=colour)
    elif shape == "stripes":
        for x in range(cx - r, cx + r, 6):
            pen.rectangle((x, cy - r, x + 2, cy + r), fill=colour)
    elif shape == "cross":
        w = max(2, r // 3)
        pen.rectangle((cx - r, cy - w, cx + r, cy + w), fill=colour)
        pen.rectangle((cx - w, cy - r, cx + w, cy + r), fill=colour)
    else:  # ring
        pen.ellipse(box, outline=colour, width=max(2, r // 4))
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0.0, 8.0, (SIZE, SIZE, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def build_dataset(root: Path, n: int, seed: int) -> Path:
    """An image folder (NNNNN.png + NNNNN.txt) of ``n`` pictures, concepts shuffled over rows."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(len(CONCEPTS)), concept_counts(n))
    rng.shuffle(labels)
    root.mkdir(parents=True)
    for i, c in enumerate(labels):
        draw(int(c), rng).save(root / f"{i:05d}.png")
        template = TEMPLATES[int(rng.integers(len(TEMPLATES)))]
        (root / f"{i:05d}.txt").write_text(template.format(CONCEPTS[c][0]))
    return root


def build_models(root: Path) -> tuple[str, Path, Path]:
    """(tiny CLIP spec, tiny VAE folder, tiny SSCD TorchScript file), the test suite's models."""
    import torch

    sys.path.insert(0, str(TESTS))
    # tests/conftest.py's builders, so "the tiny VAE of the tests" is that very model; _sscd_net
    # is the body of its tiny_sscd fixture
    from conftest import _sscd_net, tiny_vae_model

    root.mkdir(parents=True)
    (root / "alignscope-tiny.json").write_text(json.dumps(TINY_CLIP))
    tiny_vae_model().save_pretrained(root / "vae")
    sscd = root / "sscd_tiny.torchscript"
    with warnings.catch_warnings():  # TorchScript is deprecated in torch, but it is SSCD's format
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.script(_sscd_net()).save(str(sscd))
    return f"open_clip:{root / 'alignscope-tiny.json'}", root / "vae", sscd


class Runner:
    """Runs ``python -m alignscope ARGS`` in a subprocess, timing it and keeping the failures."""

    def __init__(self, workdir: Path, threads: int) -> None:
        self.workdir = workdir
        self.failures: list[dict[str, Any]] = []
        self.env = dict(os.environ)
        if threads > 0:
            # torch's OpenMP threads wait for each other after every (tiny) op, so they lose
            # most when other processes hold the cores: with both threads, the nightshade stage
            # took 311 s in a busy moment against 16 s alone; with one core busy, 12.0 s with
            # two threads against 8.1 s with one (4 poisons). Alone, one thread is ~25% slower.
            self.env["OMP_NUM_THREADS"] = str(threads)

    def shown(self, argv: list[str]) -> str:
        """The command as a user would type it, with the work folder written as $W."""
        text = shlex.join(["alignscope", *argv])
        return text.replace(str(self.workdir), "$W")

    def __call__(self, argv: list[str]) -> tuple[bool, float, str]:
        print(f"$ {self.shown(argv)}", flush=True)
        start = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "alignscope", *argv],
            capture_output=True,
            text=True,
            env=self.env,
        )
        seconds = time.perf_counter() - start
        if done.returncode != 0:
            self.failures.append(
                {
                    "command": self.shown(argv),
                    "exit": done.returncode,
                    "stderr": done.stderr.strip()[-2000:].replace(str(self.workdir), "$W"),
                }
            )
            print(f"  -> exit {done.returncode}: {done.stderr.strip()[-600:]}", flush=True)
            return False, seconds, done.stdout
        return True, seconds, done.stdout


def _metrics(out: Path) -> dict[str, dict[str, float]]:
    summary = json.loads((out / "summary.json").read_text())
    return {name: {k: m[k] for k in METRICS} for name, m in summary["metrics"].items()}


def _poison_facts(poisoned: Path) -> dict[str, Any]:
    """Counts and, for Nightshade, the mean VAE latent distance to the anchor before and after,
    read from the manifest (it shows whether the few PGD steps moved the latents at all)."""
    import pyarrow.parquet as pq

    m = pq.read_table(poisoned / "poison_manifest.parquet").to_pydict()
    flags = np.asarray(m["poisoned"], dtype=bool)
    facts: dict[str, Any] = {"rows": int(flags.size), "poisoned": int(flags.sum())}
    # trigger attacks have no source concept (all-to-one): shown as "*"
    pairs = {
        f"{s or '*'}->{t}"
        for s, t, p in zip(m["source_concept"], m["target_concept"], flags, strict=True)
        if p
    }
    facts["pairs"] = sorted(pairs)
    if "latent_before" in m and flags.any():
        before = np.asarray(m["latent_before"], dtype=float)[flags]
        after = np.asarray(m["latent_after"], dtype=float)[flags]
        if np.isfinite(before).all():
            facts["latent_before_mean"] = float(before.mean())
            facts["latent_after_mean"] = float(after.mean())
        linf = np.asarray(m["linf"], dtype=float)[flags]
        if np.isfinite(linf).any():  # dirty-label swaps whole images: no L-inf to report
            facts["linf_max"] = float(np.nanmax(linf))
    return facts


def poison_args(method: str, per_concept: int, steps: int, vae: Path) -> list[str]:
    if method == "badnets-1":
        return ["--target", TRIGGER_TARGET, "--ratio", str(TRIGGER_RATIO)]
    concept = ["--concepts", str(POISONED_CONCEPTS), "--per-concept", str(per_concept)]
    if method == "nightshade":
        # --nightshade-size 0: the generated pictures' own size (the release's 512-px crop
        # would upscale each 64-px picture 8x and take the tiny VAE minutes per poison on CPU)
        return [*concept, "--vae", str(vae), "--steps", str(steps), "--nightshade-size", "0"]
    return concept


def run_method(
    run: Runner,
    method: str,
    data: Path,
    models: tuple[str, Path, Path],
    per_concept: int,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    clip, vae, sscd = models
    base = run.workdir / method
    poisoned, store = base / "poisoned", base / "store"
    result: dict[str, Any] = {"seconds": {}, "screens": {}, "commands": []}
    stages: list[tuple[str, list[str]]] = [
        (
            "poison",
            ["poison", str(data), "--out", str(poisoned), "--method", method,
             *poison_args(method, per_concept, steps, vae), "--seed", str(seed), "--quiet"],
        ),
        (
            "embed",
            ["embed", str(poisoned), "--out", str(store), "--clip", clip, "--vae", str(vae),
             "--vae-size", str(SIZE), "--sscd", str(sscd), "--quiet"],
        ),
        (
            "screen",
            ["screen", str(store), "--out", str(base / "screen"), "--manifest",
             str(poisoned / "poison_manifest.parquet"), "--json", "--quiet"],
        ),
        (
            "screen_sscd",
            ["screen", str(store), "--out", str(base / "screen_sscd"), "--manifest",
             str(poisoned / "poison_manifest.parquet"), "--second-view", "sscd", "--scores",
             "cross_view,view_density", "--json", "--quiet"],
        ),
    ]  # fmt: skip
    for stage, argv in stages:
        result["commands"].append(run.shown(argv))
        ok, seconds, _ = run(argv)
        result["seconds"][stage] = round(seconds, 2)
        if not ok:
            result["failed"] = stage
            return result
        if stage == "poison":
            result["poison"] = _poison_facts(poisoned)
        elif stage.startswith("screen"):
            name = "default" if stage == "screen" else "sscd"
            result["screens"][name] = _metrics(base / stage)
    return result


def _table(result: dict[str, Any]) -> str:
    from alignscope.report.tables import format_table

    rows = []
    for view, metrics in result["screens"].items():
        for name, m in metrics.items():
            label = name if view == "default" else f"{name} (second view: sscd)"
            rows.append((label, *(float(m[k]) for k in METRICS)))
    return format_table(("score", "AUROC", "AUPRC", "TPR@1%FPR", "TPR@5%FPR"), rows)


def report(results: dict[str, Any], setup_seconds: dict[str, float]) -> None:
    print()
    print("setup: " + ", ".join(f"{k} {v:.1f} s" for k, v in setup_seconds.items()))
    for method, result in results.items():
        facts = result.get("poison", {})
        head = f"== {method}"
        if facts:
            head += f": {facts['poisoned']} poisons of {facts['rows']} pairs"
            if facts["pairs"]:
                head += f" ({', '.join(facts['pairs'])})"
        print()
        print(head)
        if "latent_before_mean" in facts:
            print(
                f"   VAE latent distance to the anchor, mean over poisons: "
                f"{facts['latent_before_mean']:.4f} before, {facts['latent_after_mean']:.4f} "
                f"after (max L-inf {facts.get('linf_max', float('nan')):.4f})"
            )
        if result["screens"]:
            print(_table(result))
        print(
            "stage seconds: "
            + ", ".join(f"{k} {v:.1f}" for k, v in result["seconds"].items())
            + (f"  (FAILED at {result['failed']})" if "failed" in result else "")
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workdir", type=Path, help="an empty or absent folder (default: temp)")
    parser.add_argument("--json", type=Path, help="write the numbers to this file")
    parser.add_argument("--n", type=int, default=360, help="pictures in the dataset (360)")
    parser.add_argument(
        "--per-concept", type=int, default=8, help="dirty-label / nightshade poisons per concept"
    )
    parser.add_argument("--steps", type=int, default=60, help="nightshade PGD steps (60)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="OMP_NUM_THREADS of the CLI processes (1; 0 leaves torch's default)",
    )
    parser.add_argument(
        "--methods", default="badnets-1,dirty-label,nightshade", help="comma-separated"
    )
    args = parser.parse_args(argv)
    if args.workdir is not None:
        if args.workdir.exists() and any(args.workdir.iterdir()):
            parser.error(f"--workdir {args.workdir} is not empty")
        return _main(args, args.workdir.resolve())
    with tempfile.TemporaryDirectory(prefix="alignscope-e2e-") as tmp:
        return _main(args, Path(tmp))


def _main(args: argparse.Namespace, workdir: Path) -> int:
    total = time.perf_counter()
    setup: dict[str, float] = {}
    start = time.perf_counter()
    models = build_models(workdir / "models")
    setup["models"] = time.perf_counter() - start
    start = time.perf_counter()
    data = build_dataset(workdir / "data", args.n, args.seed)
    setup["dataset"] = time.perf_counter() - start
    counts = dict(zip((c[0] for c in CONCEPTS), concept_counts(args.n), strict=True))
    print(f"dataset: {args.n} pictures, {counts}", flush=True)
    print(f"CLI processes: OMP_NUM_THREADS={args.threads or 'unset'}", flush=True)
    run = Runner(workdir, args.threads)
    results = {
        method: run_method(run, method, data, models, args.per_concept, args.steps, args.seed)
        for method in args.methods.split(",")
    }
    report(results, setup)
    seconds = time.perf_counter() - total
    print(f"\ntotal {seconds:.1f} s")
    if run.failures:
        print("\nfailed commands:")
        for f in run.failures:
            print(f"  {f['command']}\n    exit {f['exit']}: {f['stderr'][-600:]}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "n": args.n,
                    "concept_counts": counts,
                    "per_concept": args.per_concept,
                    "nightshade_steps": args.steps,
                    "seed": args.seed,
                    "threads": args.threads,
                    "setup_seconds": {k: round(v, 2) for k, v in setup.items()},
                    "total_seconds": round(seconds, 2),
                    "methods": results,
                    "failures": run.failures,
                },
                indent=2,
            )
        )
    return 1 if run.failures else 0


if __name__ == "__main__":
    sys.exit(main())
