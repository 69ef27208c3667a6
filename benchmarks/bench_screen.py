"""Which screening score catches which poison, on the easy world, the realistic world and each
realistic factor alone: AUROC, AUPRC and TPR at 1% and 5% FPR of every score, mean +- sd over
seeds, for dirty-label and clean-label poisons (the latent view is the second view).

    python benchmarks/bench_screen.py [--n 20000] [--seeds 3] [--worlds easy,realistic,factors]
        [--json results.json]

Worlds: ``easy`` is synth.concept_world (the generator the first scores were developed on);
``realistic`` is synth.realistic_world with every factor on; ``factors`` adds one world per
factor group of synth.FACTOR_GROUPS (the easy settings with that one factor on). C_P = 100
poisoned concepts with m = round(0.0008 N) poisons each (16 at N = 20,000), C = N / 50.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

import numpy as np

from alignscope.screen import compute_scores, evaluate_scores
from alignscope.synth import FACTOR_GROUPS, REALISTIC, concept_world, only, realistic_world

SCORES = (
    "combined",
    "relative_alignment",
    "alignment",
    "d_s",
    "concept_consistency",
    "cross_view",
    "view_residual",
    "view_density",
    "k_distance",
    "lid",
)
METRICS = ("auroc", "auprc", "tpr_at_1pct_fpr", "tpr_at_5pct_fpr")
POISONED_CONCEPTS = 100  # at N = 20,000 (the setting); N / 200 below it


def _poisoned_concepts(n: int) -> int:
    return min(POISONED_CONCEPTS, max(1, n // 200))


def _world(name: str, n: int, kind: str, seed: int) -> Any:
    m = max(1, round(0.0008 * n))
    if name == "easy":
        w = concept_world(
            n,
            concepts=n // 50,
            poisoned_concepts=_poisoned_concepts(n),
            per_concept=m,
            kind=kind,
            dim=64,
            seed=seed,
            latent_view=True,
        )
        return w.image_emb, w.text_emb, w.latent_emb, w.poisoned
    factors = REALISTIC if name == "realistic" else only(name)
    w = realistic_world(
        n,
        poisoned_concepts=_poisoned_concepts(n),
        per_concept=m,
        kind=kind,
        factors=factors,
        seed=seed,
    )
    return w.image_emb, w.text_emb, w.latent_emb, w.poisoned


def run(n: int, seeds: int, worlds: list[str]) -> dict[str, Any]:
    """{world: {kind: {score: {metric: [values over seeds]}}}} plus seconds per score set."""
    results: dict[str, Any] = {}
    for name in worlds:
        for kind in ("dirty", "clean"):
            cell: dict[str, dict[str, list[float]]] = {}
            for seed in range(seeds):
                image, text, latent, poisoned = _world(name, n, kind, seed)
                start = time.perf_counter()
                table = compute_scores(image, text, scores=SCORES, second_view=latent)
                seconds = time.perf_counter() - start
                for score, m in evaluate_scores(table.scores, poisoned).items():
                    for metric in METRICS:
                        cell.setdefault(score, {}).setdefault(metric, []).append(m[metric])
                cell.setdefault("_seconds", {}).setdefault("all", []).append(seconds)
                print(f"{name} {kind} seed {seed}: {seconds:.1f} s", file=sys.stderr, flush=True)
            results.setdefault(name, {})[kind] = cell
    return results


def _cell(values: list[float]) -> str:
    return f"{np.mean(values):.3f}±{np.std(values):.3f}"


def report(results: dict[str, Any], n: int, seeds: int) -> None:
    m = max(1, round(0.0008 * n))
    print(
        f"N = {n:,}, C_P = {_poisoned_concepts(n)} x m = {m}, d = 64, {seeds} seeds; mean±sd "
        "(latent view as the second view)"
    )
    heads = ("AUROC", "AUPRC", "TPR@1%", "TPR@5%")
    for name, kinds in results.items():
        for kind, cell in kinds.items():
            print(f"\n{name}, {kind}-label")
            print(f"{'score':20} " + " ".join(f"{h:>13}" for h in heads))
            for score in SCORES:
                row = " ".join(f"{_cell(cell[score][metric]):>13}" for metric in METRICS)
                print(f"{score:20} {row}")
    print("\nper world: best single score (AUROC, TPR@1%) and the combined score")
    print(f"{'world':20} {'kind':6} {'best score':20} {'AUROC':>7} {'TPR@1%':>7} {'combined':>9}")
    for name, kinds in results.items():
        for kind, cell in kinds.items():
            singles = [s for s in SCORES if s != "combined"]
            best = max(singles, key=lambda s: np.mean(cell[s]["auroc"]))
            print(
                f"{name:20} {kind:6} {best:20} {np.mean(cell[best]['auroc']):7.3f} "
                f"{np.mean(cell[best]['tpr_at_1pct_fpr']):7.3f} "
                f"{np.mean(cell['combined']['auroc']):9.3f}"
            )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--worlds", default="easy,realistic,factors")
    parser.add_argument("--json", help="also write the raw results to this file")
    args = parser.parse_args()
    worlds: list[str] = []
    for w in args.worlds.split(","):
        worlds += list(FACTOR_GROUPS) if w == "factors" else [w]
    results = run(args.n, args.seeds, worlds)
    report(results, args.n, args.seeds)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "seeds": args.seeds, "results": results}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
