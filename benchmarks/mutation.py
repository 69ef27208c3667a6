"""A mutation check of the test suite: plant one small, plausible bug at a time in a copy of
the package, run the tests that should notice it, and report which bugs survive.

Each mutation replaces a snippet that must occur exactly once in its file (a stale list stops
the run before any test does). The copy of ``python/`` (with the compiled ``_core``) is put
first on ``PYTHONPATH``, ahead of the site-packages ``.pth`` that points at the working tree,
and a preflight check proves that the copy is what Python and pytest import. Results: killed
(a test failed), survived (the selected tests passed), timeout, or error (the run itself went
wrong: tests not found, a failing baseline). The report is a Markdown table on stdout;
progress goes to stderr.

    nice -n 10 python benchmarks/mutation.py                 # every mutation
    python benchmarks/mutation.py --list                     # the list, nothing run
    python benchmarks/mutation.py --only auroc-ordinal-ranks,lid-sign
    python benchmarks/mutation.py --baseline --strict        # exit 1 if any mutation survives

The exit status is 0 whatever the results (it reports), 1 with ``--strict`` when a mutation
survived, and 2 when the list itself is stale (a snippet not found exactly once) or an
argument is wrong.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "alignscope"
DEFAULT_TIMEOUT = 300.0
SANITY_MARKER = "alignscope-mutation-sanity-check"


@dataclass(frozen=True)
class Mutation:
    """One planted bug.

    id : short name, used by ``--only``.
    area : the part of the package (metrics, screen, search, poison, evaluate, train, embed, cli).
    file : path under ``python/alignscope``.
    old, new : the original snippet (exactly once in ``file``) and its replacement.
    tests : pytest paths (files, directories or node ids) that should kill it.
    description : one line: the bug, as a reviewer would name it.
    k : an optional ``-k`` expression narrowing ``tests`` (keeps the slow tests out).
    """

    id: str
    area: str
    file: str
    old: str
    new: str
    tests: tuple[str, ...]
    description: str
    k: str | None = None

    def selection(self) -> tuple[str, ...]:
        """The pytest arguments that choose its tests: the paths that exist (tests come and
        go while a suite is reworked; a path that is gone would stop pytest), then ``-k``."""
        paths = [t for t in self.tests if (ROOT / t.split("::", 1)[0]).exists()]
        return (*paths, *(("-k", self.k) if self.k else ()))

    def missing(self) -> list[str]:
        return [t for t in self.tests if not (ROOT / t.split("::", 1)[0]).exists()]


# Selections shared by several mutations. "not overfits and not recovers" leaves out the two
# training tests that take a minute each; none of the train mutations needs them.
_SCREEN = ("tests/screen",)
_METRICS = ("tests/metrics",)
_SEARCH = ("tests/search",)
_EVAL_METRICS = ("tests/evaluate",)
_EVAL_RUN = ("tests/evaluate/test_evaluate.py", "tests/test_json_outputs.py")
_TRAIN = ("tests/train",)
_TRAIN_FAST = "not overfits and not recovers and not two_processes"

MUTATIONS: tuple[Mutation, ...] = (
    # --- metrics: the AD engine's Python side ------------------------------------------------
    Mutation(
        "ad-structure-sign",
        "metrics",
        "metrics/_terms.py",
        "            c0=c0,\n            row_labels=codes,",
        "            c0=-c0,\n            row_labels=codes,",
        _METRICS,
        "exact structure term: the constant c0 of D_A - D_B = c0 + <z, w> with its sign flipped "
        "(control, killed in the audit)",
    ),
    Mutation(
        "ad-kept-diagonal",
        "metrics",
        "metrics/_terms.py",
        "        row_sums, _, _ = _backend.pair_abs_sum(\n            views.packed,\n",
        "        row_sums, _, _ = _backend.pair_abs_sum(\n            views.packed,\n"
        "            views.packed,\n",
        _METRICS,
        "exact structure term sums over all (i, k), the diagonal i = k kept (control, killed "
        "in the audit)",
    ),
    Mutation(
        "sampled-kept-diagonal",
        "metrics",
        "metrics/sampled.py",
        "            row_ids=rid,\n            col_ids=cid,\n            block=block,",
        "            block=block,",
        _METRICS,
        "block-sampled structure term counts self-pairs (I_r = K_c) instead of zeroing them",
    ),
    Mutation(
        "per-sample-ad-weights-swapped",
        "metrics",
        "metrics/ad.py",
        "        ad=alpha * d_ab + (1.0 - alpha) * terms.d_s,",
        "        ad=alpha * terms.d_s + (1.0 - alpha) * d_ab,",
        ("tests/metrics", "tests/test_cli.py"),
        "per-sample AD(x_i, y_i) weighs D_s by alpha and D_img:txt by 1 - alpha",
    ),
    Mutation(
        "ad-json-structure-is-feature",
        "cli",
        "metrics/result.py",
        '            "structure": self.structure,',
        '            "structure": self.feature,',
        ("tests/test_cli.py", "tests/test_json_outputs.py", "tests/metrics"),
        "`ad --json` (ADResult.to_dict) emits the feature value as `structure`",
        k="test_ad or to_dict",
    ),
    # --- screen: scores and detection metrics ------------------------------------------------
    Mutation(
        "auroc-ordinal-ranks",
        "screen",
        "screen/evaluation.py",
        "            ranks[order[start:end]] = (start + end + 1) / 2.0",
        "            ranks[order[start:end]] = np.arange(start + 1, end + 1)",
        _SCREEN,
        "AUROC with ordinal ranks (ties broken by position) instead of average ranks",
    ),
    Mutation(
        "auprc-no-tie-groups",
        "screen",
        "screen/evaluation.py",
        "distinct = np.flatnonzero(np.diff(s_sorted)) if s.size > 1 else np.array([], dtype=int)",
        "distinct = np.arange(s.size - 1)",
        _SCREEN,
        "AUPRC takes the precision at every row, tied scores no longer grouped",
    ),
    Mutation(
        "tpr-at-fpr-ge",
        "screen",
        "screen/evaluation.py",
        "    return float(np.mean(s[y] > fpr_threshold(s[~y], fpr)))",
        "    return float(np.mean(s[y] >= fpr_threshold(s[~y], fpr)))",
        _SCREEN,
        "TPR at FPR counts poisons tied with the threshold benign score (`>=` for `>`)",
    ),
    Mutation(
        "tradeoff-strict",
        "screen",
        "screen/evaluation.py",
        "        benign_removed.append(float(np.mean(s[~y] >= threshold)))",
        "        benign_removed.append(float(np.mean(s[~y] > threshold)))",
        _SCREEN,
        "trade-off curve misses benign rows tied with the removal threshold (`>` for `>=`)",
    ),
    Mutation(
        "k-distance-first-neighbour",
        "screen",
        "screen/scores.py",
        '"k_distance"] = dist[:, -1], f"k={kk}"',
        '"k_distance"] = dist[:, 0], f"k={kk}"',
        _SCREEN,
        "k_distance taken from the first instead of the k-th neighbour",
    ),
    Mutation(
        "lid-sign",
        "screen",
        "screen/scores.py",
        "-1.0 / np.minimum(mean, -1e-12)",
        "1.0 / np.minimum(mean, -1e-12)",
        _SCREEN,
        "LID estimate with its sign flipped (every LID negative, the ranking reversed)",
    ),
    Mutation(
        "lid-count-off-by-one",
        "screen",
        "screen/scores.py",
        "            mean = ratios[:, :-1].mean(axis=1) if kk > 1 else np.zeros(n)",
        "            mean = ratios.mean(axis=1) if kk > 1 else np.zeros(n)",
        _SCREEN,
        "LID averages k log-ratios (the zero one of the k-th neighbour included) instead of k - 1",
    ),
    Mutation(
        "concept-consistency-one-half",
        "screen",
        "screen/scores.py",
        "1.0 - 0.5 * (caption_agreement + image_agreement)",
        "1.0 - caption_agreement",
        _SCREEN,
        "concept_consistency uses only the caption agreement, not the mean of both halves",
    ),
    Mutation(
        "cross-view-one-view",
        "screen",
        "screen/scores.py",
        "    both = np.concatenate([near1, near2], axis=1)",
        "    both = near1",
        _SCREEN,
        "cross_view averages over the first view's neighbours only, not the union of both",
    ),
    Mutation(
        "screen-threshold-ge",
        "screen",
        "screen/run.py",
        "        removed = primary > threshold",
        "        removed = primary >= threshold",
        ("tests/screen", "tests/test_cli.py"),
        "`screen --threshold T` also removes rows scoring exactly T (`>=` for `>`)",
    ),
    Mutation(
        "screen-keep-includes-removed",
        "screen",
        "screen/run.py",
        "    out.write_keep([ids[i] for i in range(n) if not removed[i]], ",
        "    out.write_keep([ids[i] for i in range(n)], ",
        ("tests/screen", "tests/test_cli.py"),
        "keep.txt lists every row, the removed ones included",
    ),
    Mutation(
        "screen-rank-by-ignored",
        "screen",
        "screen/run.py",
        "    key = rank_by or scores[0]",
        "    key = scores[0]",
        ("tests/screen", "tests/test_cli.py"),
        "`--rank-by` ignored: ranking and removal always by the first score",
    ),
    Mutation(
        "cli-screen-k-ignored",
        "cli",
        "cli/screen.py",
        "        k=args.k,\n        knn=args.knn,",
        "        k=10,\n        knn=args.knn,",
        ("tests/screen", "tests/test_cli.py"),
        "`screen --k` not passed on: the k-NN scores always use k = 10",
    ),
    # --- search: top-k and replication statistics ------------------------------------------
    Mutation(
        "dcr-percentile-flipped",
        "search",
        "search/replication.py",
        'out.update({f"p{p}": float(np.percentile(x, p)) for p in PERCENTILES})',
        'out.update({f"p{p}": float(np.percentile(x, 100 - p)) for p in PERCENTILES})',
        _SEARCH,
        "DCR percentiles computed at 100 - p (p50 unchanged)",
    ),
    Mutation(
        "dcr-threshold-ge",
        "search",
        "search/replication.py",
        'out.update({f"fraction_above_{t}": float(np.mean(x > t)) for t in THRESHOLDS})',
        'out.update({f"fraction_above_{t}": float(np.mean(x >= t)) for t in THRESHOLDS})',
        _SEARCH,
        "DCR fraction above 0.5 / 0.75 counts similarities equal to the threshold",
    ),
    Mutation(
        "dcr-duplicate-matches-itself",
        "search",
        "search/replication.py",
        "        s, i = topk(queries, training, 1, exclude=unique, method=method, view=view, "
        "threads=threads)",
        "        s, i = topk(queries, training, 1, method=method, view=view, threads=threads)",
        _SEARCH,
        "train -> train baseline does not exclude the matched item itself (always 1.0)",
    ),
    Mutation(
        "topk-merge-ties-larger-index",
        "search",
        "search/exact.py",
        "    order = np.lexsort((i, -v), axis=1)[:, :k]",
        "    order = np.lexsort((-i, -v), axis=1)[:, :k]",
        _SEARCH,
        "top-k merge across database chunks breaks ties by the larger index",
    ),
    # --- poison: Nightshade, triggers, measurements ----------------------------------------
    Mutation(
        "nightshade-no-decay",
        "poison",
        "poison/nightshade.py",
        "[s - (s - s / 100.0) / steps * i for i in range(steps)]",
        "[s for i in range(steps)]",
        ("tests/poison",),
        "Nightshade PGD step size never decays (budget at every step, not budget -> budget/100)",
    ),
    Mutation(
        "nightshade-budget-ceil",
        "poison",
        "poison/nightshade.py",
        "    limit = int(np.floor(255 * budget + 1e-9))",
        "    limit = int(np.ceil(255 * budget))",
        ("tests/poison",),
        "Nightshade 8-bit budget rounded up: the saved image exceeds the L-inf budget",
    ),
    Mutation(
        "badnets1-size-ceil",
        "poison",
        "poison/triggers.py",
        "10\n    out = arr.copy()\n    out[-side:, -side:, :] = badnets1_patch",
        "9\n    out = arr.copy()\n    out[-side:, -side:, :] = badnets1_patch",
        ("tests/poison",),
        "BadNets-1 square side min(H, W) // 9, not // 10 (a larger square)",
        k="not nightshade",
    ),
    Mutation(
        "badnets1-off-by-one",
        "poison",
        "poison/triggers.py",
        "    out[-side:, -side:, :] = badnets1_patch(side)[:, :, None]",
        "    out[-side - 1 : -1, -side - 1 : -1, :] = badnets1_patch(side)[:, :, None]",
        ("tests/poison",),
        "BadNets-1 square one pixel up and left of the bottom-right corner",
        k="not nightshade",
    ),
    Mutation(
        "poison-l2-is-rms",
        "poison",
        "poison/methods.py",
        '        "l2": float(np.sqrt(np.sum(diff**2))),',
        '        "l2": float(np.sqrt(np.mean(diff**2))),',
        ("tests/poison",),
        "perturbation L2 reported as the RMS (mean instead of sum of squares)",
        k="not nightshade",
    ),
    Mutation(
        "poison-psnr-20log",
        "poison",
        "poison/methods.py",
        "10 * np.log10(1.0 / mse)",
        "20 * np.log10(1.0 / mse)",
        ("tests/poison",),
        "PSNR as 20 log10(1 / MSE) (the amplitude form applied to a power)",
        k="not nightshade",
    ),
    # --- evaluate: the paper's generation metrics ------------------------------------------
    Mutation(
        "accuracy-threshold-ge",
        "evaluate",
        "evaluate/metrics.py",
        "    accurate = clip > clip_threshold",
        "    accurate = clip >= clip_threshold",
        _EVAL_METRICS,
        "Generation Accuracy counts CLIP = 0.236 as accurate (`>=` for `>`)",
        k="metrics",
    ),
    Mutation(
        "utility-either-threshold",
        "evaluate",
        "evaluate/metrics.py",
        '        out["utility"] = float((accurate & pretty).mean()) if n else None',
        '        out["utility"] = float((accurate | pretty).mean()) if n else None',
        _EVAL_METRICS,
        "Model Utility counts images above either threshold instead of both",
        k="metrics",
    ),
    Mutation(
        "bleed-through-le",
        "evaluate",
        "evaluate/metrics.py",
        "        if c not in poisoned_set and dist[i, nearest[i]] < threshold",
        "        if c not in poisoned_set and dist[i, nearest[i]] <= threshold",
        _EVAL_METRICS,
        "bleed-through includes concepts at exactly the threshold distance (`<=` for `<`)",
        k="metrics",
    ),
    Mutation(
        "bleed-through-squared",
        "evaluate",
        "evaluate/metrics.py",
        "    dist = np.sqrt(np.maximum(dist2, 0.0))",
        "    dist = np.maximum(dist2, 0.0)",
        _EVAL_METRICS,
        "bleed-through compares the squared L2 distance with the 4.8 threshold",
        k="metrics",
    ),
    Mutation(
        "per-concept-threshold-ignored",
        "evaluate",
        "evaluate/sections.py",
        "            clip_threshold=cfg.clip_threshold,\n",
        "",
        _EVAL_RUN,
        "per-concept accuracy in metrics.json ignores `--clip-threshold` (always 0.236)",
        k="evaluate and not dissection",
    ),
    Mutation(
        "cli-evaluate-bleed-threshold-ignored",
        "cli",
        "cli/evaluate.py",
        '            bleed_threshold="bleed_threshold",\n',
        "",
        _EVAL_RUN,
        "`evaluate --bleed-threshold` not passed on (always 4.8)",
        k="evaluate and (cli or report_files)",
    ),
    # --- train: the shared loop -----------------------------------------------------------
    Mutation(
        "timestep-window-off-by-one",
        "train",
        "train/loop.py",
        "    return torch.randint(low, high, (batch,), generator=generator)",
        "    return torch.randint(low + 1, high, (batch,), generator=generator)",
        _TRAIN,
        "SZT timesteps drawn from (timestep_min, T) instead of [timestep_min, T)",
        k=_TRAIN_FAST,
    ),
    Mutation(
        "loss-mask-ignored",
        "train",
        "train/loop.py",
        "    if mask is not None:\n        per_sample = (err * mask)",
        "    if False:\n        per_sample = (err * mask)",
        _TRAIN,
        "SZT loss mask ignored: masked pixels still train",
        k=_TRAIN_FAST,
    ),
    Mutation(
        "loss-mask-channel-scale",
        "train",
        "train/loop.py",
        "            mask.sum(dim=(1, 2, 3)) * err.shape[1]\n",
        "            mask.sum(dim=(1, 2, 3))\n",
        _TRAIN,
        "masked loss divided by the mask's pixels, not pixels x channels (4x the plain MSE)",
        k=_TRAIN_FAST,
    ),
    Mutation(
        "resume-skips-a-step",
        "train",
        "train/loop.py",
        '    start_step = int(state["step"])',
        '    start_step = int(state["step"]) + 1',
        _TRAIN,
        "resumed training starts one step after the checkpoint",
        k=_TRAIN_FAST,
    ),
    Mutation(
        "gradient-accumulation-not-averaged",
        "train",
        "train/loop.py",
        "                loss = compute_loss(step, generator) / config.gradient_accumulation",
        "                loss = compute_loss(step, generator)",
        _TRAIN,
        "gradient accumulation sums the micro-batch losses instead of averaging them",
        k=_TRAIN_FAST,
    ),
    Mutation(
        "cli-train-timestep-min-ignored",
        "cli",
        "cli/train.py",
        '        "timestep_min": args.timestep_min,',
        '        "timestep_min": None,',
        _TRAIN,
        "`train --timestep-min` not passed on (SZT silently off)",
        k=_TRAIN_FAST,
    ),
    # --- embed: resume ---------------------------------------------------------------------
    Mutation(
        "embed-resume-partial-shard",
        "embed",
        "embed/embedder.py",
        '    meta = root / "metadata"\n    if not meta.is_dir():\n        return set()\n'
        '    out = set()\n    for p in meta.glob("metadata_*.parquet"):',
        '    meta = root / "img_emb"\n    if not meta.is_dir():\n        return set()\n'
        '    out = set()\n    for p in meta.glob("img_emb_*.npy"):',
        ("tests/embed",),
        "embed resume treats a shard whose image embeddings exist (metadata not yet) as complete",
    ),
    # --- hostile data, provenance and the Ray path (this session's mechanisms) ---------------
    Mutation(
        "torchscript-operators-unchecked",
        "security",
        "_torchscript.py",
        "    if not trust:\n        bad = {op: where",
        "    if False:\n        bad = {op: where",
        ("tests/security/test_hostile_models.py",),
        "TorchScript files run without the operator allow-list (aten::from_file reaches files)",
    ),
    Mutation(
        "image-formats-sniffed",
        "security",
        "io/datasets.py",
        "Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)",
        "Image.open(io.BytesIO(data))",
        ("tests/security/test_hostile_images.py",),
        "image formats sniffed from content again (PostScript named .jpg reaches Ghostscript)",
    ),
    Mutation(
        "manifest-poisoned-untyped",
        "io",
        "io/manifest.py",
        '    "poisoned": "boolean",\n',
        "",
        ("tests/io/test_manifest.py",),
        "a manifest's poisoned column is not type-checked (the strings 'false' read as True)",
    ),
    Mutation(
        "provenance-ignores-identity",
        "io",
        "_files.py",
        '            same = old.get("command") == command and old.get("identity") == '
        'wanted["identity"]',
        '            same = old.get("command") == command',
        ("tests/test_files.py", "tests/poison/test_resume.py"),
        "a rerun into --out resumes whatever inputs and settings produced it",
    ),
    Mutation(
        "ray-per-sample-without-feature",
        "metrics",
        "metrics/_terms.py",
        "    d_ab = inputs.d_ab\n    if codes is None:\n        source = _source(None, None, store",
        "    d_ab = inputs.d_ab\n    if False:\n        source = _source(None, None, store",
        ("tests/distributed/test_ray_tiles.py",),
        "backend='ray' drops the alpha * D_img:txt term (the old CLI wrote AD = (1 - a) D_s)",
    ),
    # --- screening: peer-relative scores and the combined ranking (#15) -----------------------
    Mutation(
        "relative-alignment-untrimmed",
        "screen",
        "screen/relative.py",
        "        trusted = ~(score > np.quantile(score, 1.0 - TRIM))",
        "        trusted = ~(score > np.inf)",
        _SCREEN,
        "relative_alignment keeps the most suspicious rows in every reference (no trimming)",
    ),
    Mutation(
        "view-density-unwhitened",
        "screen",
        "screen/relative.py",
        "    white = np.ascontiguousarray(whiten(view), dtype=np.float32)",
        "    white = np.ascontiguousarray(view, dtype=np.float32)",
        _SCREEN,
        "view_density searches the raw second view, so style-like directions pick the neighbours",
    ),
    Mutation(
        "purification-raw-shift",
        "screen",
        "screen/relative.py",
        '    return shift - np.median(shift[_neighbours(image_emb, k, knn, "image")], axis=1)',
        "    return shift",
        _SCREEN,
        "purification is the raw latent shift, not relative to the CLIP peers'",
    ),
    Mutation(
        "upper-tail-ties-right",
        "screen",
        "screen/combine.py",
        '    return (s.size - np.searchsorted(ordered, s, side="left")) / s.size',
        '    return (s.size - np.searchsorted(ordered, s, side="right") + 1) / s.size',
        _SCREEN,
        "upper_tail counts tied rows as lower (ties no longer share the tail probability)",
    ),
    Mutation(
        "combined-unweighted",
        "screen",
        "screen/combine.py",
        "    logs = -np.log(tails) * np.array(list(weights.values()))[:, None]",
        "    logs = -np.log(tails)",
        _SCREEN,
        "the combined score ignores the concentration weights (plain min-p)",
    ),
    Mutation(
        "combined-structure-ignored",
        "screen",
        "screen/combine.py",
        "        name: concentration(structure.get(name, v), neighbours or [])",
        "        name: concentration(v, neighbours or [])",
        _SCREEN,
        "each input is weighed by its own top rows, not by its structure array",
    ),
    Mutation(
        "alignment-spread-untrusted",
        "screen",
        "screen/relative.py",
        "        keep = trusted[rows]",
        "        keep = np.ones_like(trusted[rows])",
        _SCREEN,
        "the studentized residual's spread counts the trimmed (suspicious) peers too",
    ),
    Mutation(
        "alignment-spread-unpooled",
        "screen",
        "screen/relative.py",
        "        pooled = np.sqrt((self.peers * self.spread**2 + typical**2) / (self.peers + 1))",
        "        pooled = np.sqrt((self.peers * self.spread**2 + typical**2) / (self.peers + 2))",
        _SCREEN,
        "the studentized residual pools the typical spread as two peers, not one",
    ),
    Mutation(
        "combined-duplicates-as-neighbours",
        "screen",
        "screen/scores.py",
        "    idx = np.where(sims < DUPLICATE_COS, idx, -1)",
        "    idx = np.where(sims < 2.0, idx, -1)",
        _SCREEN,
        "repeated captions count as neighbours when weighing the combined score's inputs",
    ),
)


class StaleMutation(ValueError):
    """A mutation's snippet is not in its file exactly once."""


def apply_mutation(package: Path, mutation: Mutation) -> None:
    """Replace ``mutation.old`` by ``mutation.new`` in ``package / mutation.file``."""
    path = package / mutation.file
    if not path.is_file():
        raise StaleMutation(f"{mutation.id}: {mutation.file} does not exist")
    text = path.read_text(encoding="utf-8")
    count = text.count(mutation.old)
    if count != 1:
        raise StaleMutation(
            f"{mutation.id}: the snippet occurs {count} times in {mutation.file} (needs exactly "
            f"one):\n{mutation.old}"
        )
    path.write_text(text.replace(mutation.old, mutation.new), encoding="utf-8")


def check_snippets(mutations: list[Mutation]) -> list[str]:
    """Messages for every mutation whose snippet is not exactly once in the working tree."""
    problems = []
    for m in mutations:
        path = ROOT / "python" / PACKAGE / m.file
        if not path.is_file():
            problems.append(f"{m.id}: {m.file} does not exist")
            continue
        count = path.read_text(encoding="utf-8").count(m.old)
        if count != 1:
            problems.append(f"{m.id}: the snippet occurs {count} times in {m.file}")
        if m.old == m.new:
            problems.append(f"{m.id}: the replacement equals the snippet")
    return problems


def compiled_modules(python: str) -> list[Path]:
    """The compiled extension modules the package imports (``_core``; ``_cuda`` when built),
    wherever the installation put them, found by importing them."""
    code = (
        "import importlib.util\n"
        f"import {PACKAGE}._core as core\n"
        "print(core.__file__)\n"
        f"spec = importlib.util.find_spec('{PACKAGE}._cuda')\n"
        "print(spec.origin if spec and spec.origin else '')\n"
    )
    done = subprocess.run(
        [python, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"cannot import {PACKAGE}._core:\n{done.stderr.strip()}")
    return [Path(line) for line in done.stdout.splitlines() if line.strip()]


def make_copy(compiled: list[Path]) -> Path:
    """A temporary directory holding a copy of ``python/`` and the compiled modules."""
    tmp = Path(tempfile.mkdtemp(prefix="alignscope-mutation-"))
    shutil.copytree(
        ROOT / "python", tmp / "python", ignore=shutil.ignore_patterns("__pycache__", "*.pyc")
    )
    for so in compiled:
        target = tmp / "python" / PACKAGE / so.name
        if not target.exists():
            shutil.copy2(so, target)
    return tmp


def environment(copy: Path) -> dict[str, str]:
    env = dict(os.environ)
    rest = env.get("PYTHONPATH")
    env["PYTHONPATH"] = str(copy / "python") + (os.pathsep + rest if rest else "")
    # No .pyc next to the copy or the tests: other pytest runs share tests/__pycache__.
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@dataclass
class Outcome:
    result: str  # killed, survived, timeout, error
    seconds: float
    detail: str = ""


def run_pytest(python: str, copy: Path, selection: tuple[str, ...], timeout: float) -> Outcome:
    """Run the selected tests against ``copy``; classify by pytest's exit status."""
    cmd = [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *selection]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        cwd=ROOT,
        env=environment(copy),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a timeout ends the workers it spawned
    )
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return Outcome("timeout", time.monotonic() - start, f"over {timeout:g} s")
    seconds = time.monotonic() - start
    code = proc.returncode
    if code == 0:
        return Outcome("survived", seconds)
    if code == 1:
        return Outcome("killed", seconds, _first_failure(output))
    if code == 2 and "during collection" in output:
        # the mutated package fails to import: every selected test is stopped by it
        return Outcome("killed", seconds, "collection error: " + _first_failure(output))
    tail = " ".join(output.strip().splitlines()[-3:])
    return Outcome("error", seconds, f"pytest exit {code}: {tail[:200]}")


_FAILURE = re.compile(r"^(FAILED|ERROR) (\S+)", re.MULTILINE)


def _first_failure(output: str) -> str:
    found = _FAILURE.search(output)
    return found.group(2) if found else ""


def preflight(python: str, compiled: list[Path], timeout: float) -> None:
    """Prove that the copy, not the working tree, is what gets imported: by Python (the
    package and ``_core`` paths) and by pytest (a planted import failure must stop it)."""
    copy = make_copy(compiled)
    try:
        code = (
            f"import {PACKAGE}, {PACKAGE}._core as c; print({PACKAGE}.__file__); print(c.__file__)"
        )
        done = subprocess.run(
            [python, "-c", code],
            cwd=ROOT,
            env=environment(copy),
            capture_output=True,
            text=True,
            check=False,
        )
        paths = done.stdout.split()
        print(f"preflight: {PACKAGE} imported from {' and '.join(paths)}", file=sys.stderr)
        inside = [Path(p).resolve().is_relative_to(copy.resolve()) for p in paths]
        if done.returncode != 0 or len(paths) != 2 or not all(inside):
            raise RuntimeError(
                f"the mutation copy in {copy} is not what Python imports (PYTHONPATH does not "
                f"take precedence?):\n{done.stdout}{done.stderr}"
            )
        init = copy / "python" / PACKAGE / "__init__.py"
        init.write_text(
            init.read_text(encoding="utf-8") + f"\nraise ImportError({SANITY_MARKER!r})\n",
            encoding="utf-8",
        )
        proc = subprocess.run(
            [python, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *_SCREEN],
            cwd=ROOT,
            env=environment(copy),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if proc.returncode == 0 or SANITY_MARKER not in proc.stdout + proc.stderr:
            raise RuntimeError(
                "pytest does not import the mutation copy: a planted import failure went "
                f"unnoticed (exit {proc.returncode})"
            )
        print(
            "preflight: pytest imports the copy (a planted import failure stops it)",
            file=sys.stderr,
        )
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def run_one(
    python: str, compiled: list[Path], mutation: Mutation, timeout: float, keep: bool
) -> Outcome:
    copy = make_copy(compiled)
    try:
        apply_mutation(copy / "python" / PACKAGE, mutation)
        return run_pytest(python, copy, mutation.selection(), timeout)
    finally:
        if keep:
            print(f"  kept {copy}", file=sys.stderr)
        else:
            shutil.rmtree(copy, ignore_errors=True)


def baselines(
    python: str, compiled: list[Path], mutations: list[Mutation], timeout: float
) -> dict[tuple[str, ...], Outcome]:
    """Each distinct test selection run once on an unmutated copy: a selection that fails
    there would 'kill' every mutation it is given."""
    out: dict[tuple[str, ...], Outcome] = {}
    copy = make_copy(compiled)
    try:
        for sel in dict.fromkeys(m.selection() for m in mutations):
            outcome = run_pytest(python, copy, sel, timeout)
            out[sel] = outcome
            state = "passes" if outcome.result == "survived" else f"FAILS ({outcome.detail})"
            print(f"baseline {' '.join(sel)}: {state} [{outcome.seconds:.1f} s]", file=sys.stderr)
    finally:
        shutil.rmtree(copy, ignore_errors=True)
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def table(rows: list[tuple[Mutation, Outcome]]) -> str:
    lines = [
        "| id | area | description | result | seconds | first failing test / note |",
        "|---|---|---|---|---:|---|",
    ]
    for m, o in rows:
        lines.append(
            f"| {m.id} | {m.area} | {_cell(m.description)} | {o.result} | {o.seconds:.1f} "
            f"| {_cell(o.detail)} |"
        )
    return "\n".join(lines)


def summary(rows: list[tuple[Mutation, Outcome]]) -> str:
    counts = {
        k: sum(o.result == k for _, o in rows) for k in ("killed", "survived", "timeout", "error")
    }
    decided = counts["killed"] + counts["survived"] + counts["timeout"]
    score = f"{(counts['killed'] + counts['timeout']) / decided:.0%}" if decided else "n/a"
    survivors = ", ".join(m.id for m, o in rows if o.result == "survived") or "none"
    total = sum(o.seconds for _, o in rows)
    return (
        f"{len(rows)} mutations: {counts['killed']} killed, {counts['survived']} survived, "
        f"{counts['timeout']} timeout, {counts['error']} error; mutation score {score} "
        f"(killed + timeout of those decided); {total:.0f} s of tests. Survivors: {survivors}."
    )


def listing(mutations: list[Mutation]) -> str:
    lines = ["| id | area | file | tests | description |", "|---|---|---|---|---|"]
    for m in mutations:
        lines.append(
            f"| {m.id} | {m.area} | {m.file} | {_cell(' '.join(m.selection()))} "
            f"| {_cell(m.description)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", help="comma-separated mutation ids to run")
    parser.add_argument("--list", action="store_true", help="print the mutations and exit")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a mutation survives")
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        help=f"seconds per mutation ({DEFAULT_TIMEOUT:g})",
    )
    parser.add_argument(
        "--baseline",
        action="store_true",
        help="first run each test selection unmutated; mutations whose selection fails there "
        "are reported as errors",
    )
    parser.add_argument(
        "--skip-stale",
        action="store_true",
        help="report mutations whose snippet is stale as errors instead of stopping",
    )
    parser.add_argument("--keep", action="store_true", help="keep the mutated copies")
    parser.add_argument(
        "--python", default=sys.executable, help="interpreter that runs pytest (this one)"
    )
    args = parser.parse_args(argv)

    ids = [m.id for m in MUTATIONS]
    if len(set(ids)) != len(ids):
        print("error: duplicate mutation ids", file=sys.stderr)
        return 2
    mutations = list(MUTATIONS)
    if args.only:
        wanted = [s.strip() for s in args.only.split(",") if s.strip()]
        unknown = [w for w in wanted if w not in ids]
        if unknown:
            print(f"error: unknown mutation id(s) {', '.join(unknown)}", file=sys.stderr)
            return 2
        mutations = [m for m in MUTATIONS if m.id in wanted]
    problems = check_snippets(mutations)
    stale = {p.split(":", 1)[0] for p in problems}
    if args.list:
        print(listing(mutations))
        if problems:
            print("STALE MUTATION LIST:\n  " + "\n  ".join(problems), file=sys.stderr)
        return 2 if problems else 0
    if problems:
        print("STALE MUTATION LIST:\n  " + "\n  ".join(problems), file=sys.stderr)
        if not args.skip_stale:
            print("fix the snippets (or pass --skip-stale)", file=sys.stderr)
            return 2

    compiled = compiled_modules(args.python)
    preflight(args.python, compiled, args.timeout)
    base = baselines(args.python, compiled, mutations, args.timeout) if args.baseline else {}

    rows: list[tuple[Mutation, Outcome]] = []
    for number, m in enumerate(mutations, 1):
        if m.id in stale:
            outcome = Outcome("error", 0.0, "stale snippet")
        elif m.selection() in base and base[m.selection()].result != "survived":
            outcome = Outcome("error", 0.0, f"baseline fails: {base[m.selection()].detail}")
        elif len(m.missing()) == len(m.tests):
            outcome = Outcome("error", 0.0, f"no test path exists: {' '.join(m.tests)}")
        else:
            outcome = run_one(args.python, compiled, m, args.timeout, args.keep)
            if m.missing():
                outcome.detail = f"{outcome.detail} (absent: {' '.join(m.missing())})".strip()
        rows.append((m, outcome))
        note = f" ({outcome.detail})" if outcome.detail else ""
        print(
            f"[{number}/{len(mutations)}] {m.id}: {outcome.result}{note} [{outcome.seconds:.1f} s]",
            file=sys.stderr,
            flush=True,
        )

    print(table(rows))
    print()
    print(summary(rows))
    if args.strict and any(o.result == "survived" for _, o in rows):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
