"""Which screening score catches which poison: AUROC, AUPRC and TPR@1% FPR of every score on
the synthetic concept world (dirty-label and clean-label-like poisons, with a latent second
view in which every poison shows its target), and each score's time.

    python benchmarks/bench_screen.py [--n 20000]
"""

from __future__ import annotations

import argparse
import sys
import time

from alignscope.screen import compute_scores, evaluate_scores
from alignscope.synth import concept_world

SCORES = ("alignment", "d_s", "ad_xy", "concept_consistency", "cross_view", "k_distance", "lid")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    args = parser.parse_args()
    n = args.n
    m = max(1, round(0.0008 * n))
    results = {}
    seconds = {}
    for kind in ("dirty", "clean"):
        w = concept_world(
            n,
            concepts=n // 50,
            poisoned_concepts=n // 200,
            per_concept=m,
            kind=kind,
            dim=64,
            seed=0,
            latent_view=True,
        )
        for score in SCORES:
            start = time.perf_counter()
            table = compute_scores(
                w.image_emb, w.text_emb, scores=(score,), second_view=w.latent_emb
            )
            seconds[score] = time.perf_counter() - start
            results[(kind, score)] = evaluate_scores(table.scores, w.poisoned)[score]
    print(f"N = {n:,}, {n // 200} poisoned concepts x {m} poisons, d = 64 (concept_world, seed 0)")
    heads = ("dirty AUROC", "clean AUROC", "dirty TPR@1%", "clean TPR@1%", "seconds")
    print(f"{'score':22} " + " ".join(f"{h:>12}" for h in heads))
    for score in SCORES:
        d, c = results[("dirty", score)], results[("clean", score)]
        cells = (d["auroc"], c["auroc"], d["tpr_at_1pct_fpr"], c["tpr_at_1pct_fpr"], seconds[score])
        print(f"{score:22} " + " ".join(f"{v:12.3f}" for v in cells))
    return 0


if __name__ == "__main__":
    sys.exit(main())
