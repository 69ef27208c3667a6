"""Wall time of the CPU end-to-end run poison -> train -> evaluate -> report on tiny models,
the run of tests/evaluate/test_evaluate.py::test_poison_train_evaluate_report (the test checks
its results; this times it). Issue #25's budget for it is 180 s on a CPU.

    python benchmarks/bench_evaluate.py [--repeat 1] [--out DIR]

The tiny Stable Diffusion pipeline is the test suite's (tests/conftest.py: build_tiny_sd); the
tiny CLIP and the aesthetics head have the same configs as the test fixtures. Nothing is
downloaded.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parents[1] / "tests"
NOUNS = ["dog", "cat", "car", "tree", "boat"]
BUDGET_S = 180.0

# tests/conftest.py::tiny_open_clip
TINY_CLIP = {
    "embed_dim": 16,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def _models(root: Path) -> tuple[Path, str, Path]:
    """(tiny SD folder, tiny CLIP spec, aesthetics head file), built from configs."""

    sys.path.insert(0, str(TESTS))
    from conftest import build_tiny_sd, write_aesthetics_head, write_byte_vocab

    build_tiny_sd(write_byte_vocab(root / "byte_vocab")).save_pretrained(root / "sd")
    (root / "alignscope-tiny.json").write_text(json.dumps(TINY_CLIP))
    clip = f"open_clip:{root / 'alignscope-tiny.json'}"
    write_aesthetics_head(root / "aesthetics.pth")
    return root / "sd", clip, root / "aesthetics.pth"


def _run(root: Path, sd: Path, clip: str, aesthetics: Path) -> dict[str, float]:
    """The test's run, phase by phase: seconds of each."""
    from PIL import Image

    from alignscope.evaluate.generate import GenerationSettings
    from alignscope.evaluate.run import EvalConfig, evaluate
    from alignscope.io.datasets import open_dataset
    from alignscope.poison.concepts import make_vocabulary
    from alignscope.poison.run import poison_dataset
    from alignscope.train import TrainConfig, train

    seconds = {}
    start = time.perf_counter()
    rng = np.random.default_rng(20241022)
    data = root / "data"
    data.mkdir()
    for i in range(20):
        small = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(small).resize((16, 16), Image.BICUBIC).save(data / f"{i:03d}.png")
        (data / f"{i:03d}.txt").write_text(f"a photo of a {NOUNS[i % 5]}")
    poison_dataset(
        open_dataset(data),
        root / "poisoned",
        vocabulary=make_vocabulary(NOUNS),
        method="dirty-label",
        concepts=1,
        per_concept=2,
        seed=1,
    )
    seconds["poison"] = time.perf_counter() - start

    start = time.perf_counter()
    train(
        "finetune",
        open_dataset(root / "poisoned"),
        root / "trained",
        model=sd,
        config=TrainConfig(steps=6, learning_rate=1e-3, batch_size=4, resolution=16),
        progress=False,
    )
    seconds["train"] = time.perf_counter() - start

    config = EvalConfig(
        concepts=NOUNS,
        generation=GenerationSettings(images_per_concept=2, steps=2, height=16, width=16),
        clip=clip,
        aesthetics=str(aesthetics),
        aesthetics_clip=clip,
        poison_manifest=str(root / "poisoned" / "poison_manifest.parquet"),
        bleed_threshold=1e9,
        attention_concepts=2,
        attention_resolution=4,
    )
    models = {"benign": sd, "poisoned": root / "trained" / "model"}
    start = time.perf_counter()
    evaluate(models, root / "eval", config, progress=False, quiet=True)
    seconds["evaluate"] = time.perf_counter() - start
    start = time.perf_counter()
    evaluate(models, root / "eval", config, progress=False, quiet=True)  # resumes: no images
    seconds["evaluate again"] = time.perf_counter() - start
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs to time (1)")
    parser.add_argument("--out", help="working directory (default: a temporary one)")
    args = parser.parse_args()
    from alignscope.cli import _quiet_model_libraries

    _quiet_model_libraries()  # no loading bars between the timings
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.out or tmp)
        root.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        sd, clip, aesthetics = _models(root / "models")
        print(f"tiny models built in {time.perf_counter() - start:.1f} s (not in the run's time)")
        for run in range(args.repeat):
            work = root / f"run{run}"
            work.mkdir()
            seconds = _run(work, sd, clip, aesthetics)
            total = sum(seconds.values())
            phases = ", ".join(f"{name} {s:.1f} s" for name, s in seconds.items())
            print(f"run {run + 1}: {total:.1f} s (budget {BUDGET_S:.0f} s): {phases}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
