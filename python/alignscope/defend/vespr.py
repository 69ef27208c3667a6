"""VESPR and its baselines on an availability-poisoned class set: a clean-test accuracy table.

VESPR (Styborski et al., *Exploiting Supervised Poison Vulnerability to Strengthen
Self-Supervised Defense*, arXiv:2409.08509) trains one encoder with two heads on the poisoned
set: SimCLR's projection head and a supervised classifier. Each batch's two augmented views are
first perturbed by PGD within ``at_epsilon`` to *raise* the classifier's cross-entropy (the
supervised model is what a poison fools, so its adversary goes for the poison's shortcut
first), and the encoder is trained on the perturbed views with
``alpha * NT-Xent + beta * cross-entropy``. Where the paper's text (its abstract and the
objective L = alpha L_CL + beta L_CE with delta* = argmax CE, ||delta||_inf <= eps_AT, T steps)
left a choice, this implementation chose, and says so:

- both views are perturbed, each by its own PGD run against the shared encoder's classifier,
  with the network in eval mode (BatchNorm statistics frozen during the attack);
- eps_AT = 8/255 (the poisons' budget), step 2/255, T = 5 steps, alpha = beta = 1;
- the cross-entropy is taken on the perturbed views, with the encoder's own linear head.

The table's rows, all scored on the clean test set: ``sl`` (a supervised network trained on
the poisoned set, scored directly), ``sl-at`` (the same with PGD adversarial training: the
"adversarial training of a supervised model" of the issue, on its own), ``ssl`` (SimCLR on the
poisoned images, linear probe), ``ssl-jpeg`` (SimCLR on JPEG-compressed poisoned images,
quality 10, and the probe on them too), ``vespr``, and ``random-init`` (the probe on an
untrained encoder: what the features give with no training at all). Linear probes are fitted
on the poisoned training images and their labels, the protocol of the SSL-poisoning papers.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from alignscope.defend.ssl import SSLConfig, jpeg, linear_probe, train_ssl
from alignscope.defend.supervised import SupervisedConfig, accuracy, train_supervised

DEFEND_METHODS = ("sl", "sl-at", "ssl", "ssl-jpeg", "vespr", "random-init")
TABLE_JSON = "defend_table.json"
TABLE_TEXT = "defend_table.txt"
_DESCRIBE = {
    "sl": "supervised on the data (classifier)",
    "sl-at": "supervised, PGD adversarial training (classifier)",
    "ssl": "SimCLR (linear probe)",
    "ssl-jpeg": "SimCLR on JPEG-compressed inputs (linear probe)",
    "vespr": "VESPR: SimCLR + adversarial supervised head (linear probe)",
    "random-init": "untrained encoder (linear probe)",
}


@dataclass
class DefendConfig:
    """The settings of every row: ``ssl`` (SimCLR and VESPR, whose ``adversarial`` flag this
    module sets), ``sl`` (the supervised rows), the JPEG quality and the probe's steps."""

    ssl: SSLConfig = field(default_factory=SSLConfig)
    sl: SupervisedConfig = field(default_factory=SupervisedConfig)
    jpeg_quality: int = 10
    probe_steps: int = 500

    def identity(self) -> dict[str, Any]:
        sl = asdict(self.sl)
        sl.pop("device")
        return {"ssl": self.ssl.identity(), "sl": sl, "jpeg_quality": self.jpeg_quality,
                "probe_steps": self.probe_steps}  # fmt: skip


def align_test_labels(train_classes: list[str], test_classes: list[str]) -> np.ndarray:
    """For each test class index, the index of the same class name among the training
    classes; a test class the training set lacks is an error naming it."""
    index = {c: k for k, c in enumerate(train_classes)}
    missing = [c for c in test_classes if c not in index]
    if missing:
        raise ValueError(
            f"--test: class {missing[0]!r} is not a class of the training data "
            f"({', '.join(train_classes)}); the test set must use the training set's class names"
        )
    return np.asarray([index[c] for c in test_classes], dtype=np.int64)


def run_row(
    method: str,
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    n_classes: int,
    config: DefendConfig,
    *,
    checkpoint: Path | None = None,
    progress: Any = None,
) -> float:
    """The clean-test accuracy of one row of the table (see the module's description)."""
    if method not in DEFEND_METHODS:
        raise ValueError(f"method must be one of {', '.join(DEFEND_METHODS)}, got {method!r}")
    if method in ("sl", "sl-at"):
        model = train_supervised(
            train_x, train_y, n_classes, replace(config.sl, adversarial=method == "sl-at")
        )
        return accuracy(model, test_x, test_y)
    ssl = replace(config.ssl, adversarial=method == "vespr")
    if method == "random-init":
        ssl = replace(ssl, epochs=0)
    if method == "ssl-jpeg":
        train_x = jpeg(train_x, config.jpeg_quality)
        test_x = jpeg(test_x, config.jpeg_quality)  # the purifier is part of the model
    encoder = train_ssl(
        train_x, ssl, labels=train_y, n_classes=n_classes,
        checkpoint=None if method == "random-init" else checkpoint, progress=progress,
    )  # fmt: skip
    return linear_probe(
        encoder, train_x, train_y, test_x, test_y, n_classes=n_classes,
        steps=config.probe_steps, seed=config.ssl.seed,
    )  # fmt: skip


def defend_table(
    train: Any,
    test: Any,
    out: str | Path,
    *,
    methods: tuple[str, ...] = DEFEND_METHODS,
    config: DefendConfig | None = None,
    identity: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Any = None,
) -> dict[str, Any]:
    """Run ``methods`` on ``train`` and score them on ``test`` (both
    :class:`~alignscope.poison.availability.ClassImages`); write ``defend_table.json`` and
    ``defend_table.txt`` under ``out`` and return the table.

    Each finished row is kept in ``out/rows/{method}.json`` and each SimCLR / VESPR run
    checkpoints every epoch in ``out/checkpoints/``: a run started again with the same inputs
    and settings resumes where it stopped.
    """
    from alignscope._files import atomic_path, claimed_output

    config = config or DefendConfig()
    unknown = [m for m in methods if m not in DEFEND_METHODS]
    if unknown:
        raise ValueError(
            f"--methods: unknown method {unknown[0]!r}; choose from {', '.join(DEFEND_METHODS)}"
        )
    test_y = align_test_labels(train.classes, test.classes)[test.labels]
    if train.images.shape[1:] != test.images.shape[1:]:
        h, w = train.images.shape[1:3]
        th, tw = test.images.shape[1:3]
        raise ValueError(
            f"--test images are {tw}x{th} but the training images are {w}x{h}; give a test set "
            "of the same size"
        )
    k = len(train.classes)
    claim = {"command": "defend vespr", **(identity or {}), "settings": config.identity()}
    with claimed_output(out, "defend", claim, overwrite=overwrite):
        root = Path(out)
        (root / "rows").mkdir(exist_ok=True)
        (root / "checkpoints").mkdir(exist_ok=True)
        rows = []
        for method in methods:
            done = root / "rows" / f"{method}.json"
            if done.exists():
                rows.append(json.loads(done.read_text(encoding="utf-8")))
                continue
            report = None if progress is None else (lambda e, loss, m=method: progress(m, e, loss))
            acc = run_row(
                method, train.images, train.labels, test.images, test_y, k, config,
                checkpoint=root / "checkpoints" / f"{method}.pt", progress=report,
            )  # fmt: skip
            row = {"method": method, "accuracy": acc, "evaluation": _DESCRIBE[method]}
            with atomic_path(done) as tmp:
                tmp.write_text(json.dumps(row) + "\n", encoding="utf-8")
            rows.append(row)
        table = {
            "rows": rows,
            "chance": 1.0 / k,
            "classes": train.classes,
            "train_images": len(train.images),
            "test_images": len(test.images),
            "settings": config.identity(),
        }
        with atomic_path(root / TABLE_JSON) as tmp:
            tmp.write_text(json.dumps(table, indent=2) + "\n", encoding="utf-8")
        with atomic_path(root / TABLE_TEXT) as tmp:
            tmp.write_text(format_table(table), encoding="utf-8")
    return table


def format_table(table: dict[str, Any]) -> str:
    """The table as aligned text: method, clean test accuracy, how it was scored."""
    lines = [f"{'method':<12} {'clean acc':>9}  evaluation"]
    for row in table["rows"]:
        lines.append(f"{row['method']:<12} {row['accuracy']:>9.3f}  {row['evaluation']}")
    lines.append(
        f"chance {table['chance']:.3f}; {table['train_images']} training images, "
        f"{table['test_images']} test images, {len(table['classes'])} classes"
    )
    return "\n".join(lines) + "\n"
