"""The numbers behind screen's decisions: how the few-shot model compares with the best
single score and the combined score, and what false-positive rate each threshold rule
actually realises at a 1% target, on the worlds of bench_screen.py.

    python benchmarks/bench_decisions.py [--n 20000] [--seeds 3] [--draws 10]

Few-shot: for each world, attack and seed, ``draws`` random draws of P poisons and C clean
rows (5 + 20 and 20 + 80) fit ``screen.few_shot`` on the scores of bench_screen.py (latent
second view); AUROC on the other rows, against the best single score and the combined score on
the same rows. Thresholds at 1% FPR, over every score: the realised rate on benign rows of
(a) ``threshold_at_fpr`` from all rows ("score-distribution"), (b) from 1,000 random clean rows
("reference-clean", with its 95% upper bound), and (c) a median + MAD Gaussian fit of all rows
(the rule decisions.py rejected), as min-max over scores, worlds and seeds.
"""

from __future__ import annotations

import argparse
import sys
from statistics import NormalDist

import numpy as np

from alignscope.screen import auroc, compute_scores
from alignscope.screen.decisions import few_shot, threshold_at_fpr

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_screen import SCORES, _world  # the same worlds and scores

LABELS = ((5, 20), (20, 80))
FPR = 0.01
REFERENCE_ROWS = 1000


def _realised(score: np.ndarray, benign: np.ndarray, threshold: float) -> float:
    return float(np.mean(score[benign] > threshold))


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--draws", type=int, default=10)
    args = parser.parse_args()
    z = NormalDist().inv_cdf(1 - FPR)
    rates: dict[str, list[float]] = {"score-distribution": [], "reference-clean": [], "mad": []}
    bounds: list[float] = []
    print(f"N = {args.n:,}, {args.seeds} seeds x {args.draws} draws; AUROC on unlabelled rows")
    print(f"{'world':10} {'attack':6} {'labels':>7} {'few-shot':>9} {'best single':>12} "
          f"{'combined':>9}")  # fmt: skip
    for world in ("easy", "realistic"):
        for kind in ("dirty", "clean"):
            found: dict[tuple[int, int], list[tuple[float, float, float]]] = {}
            for seed in range(args.seeds):
                image, text, latent, poisoned = _world(world, args.n, kind, seed)
                table = compute_scores(image, text, scores=SCORES, second_view=latent)
                scores = table.scores
                singles = [s for s in scores if s != "combined"]
                benign = ~poisoned
                rng = np.random.default_rng([seed, 11])
                for score in scores.values():
                    t = threshold_at_fpr(score, FPR)
                    rates["score-distribution"].append(_realised(score, benign, t.value))
                    ref = rng.choice(np.flatnonzero(benign), REFERENCE_ROWS, replace=False)
                    t = threshold_at_fpr(score, FPR, reference=ref)
                    rest = benign.copy()
                    rest[ref] = False
                    rates["reference-clean"].append(_realised(score, rest, t.value))
                    bounds.append(float(t.fpr_upper_bound))
                    med = np.median(score)
                    mad = 1.4826 * np.median(np.abs(score - med))
                    rates["mad"].append(_realised(score, benign, med + z * mad))
                for p, c in LABELS:
                    if poisoned.sum() < 2 * p:  # too few poisons left to evaluate on (small N)
                        continue
                    for draw in range(args.draws):
                        r = np.random.default_rng([seed, draw, 7])
                        pois = r.choice(np.flatnonzero(poisoned), p, replace=False)
                        clean = r.choice(np.flatnonzero(benign), c, replace=False)
                        rest = np.ones(args.n, dtype=bool)
                        rest[pois] = rest[clean] = False
                        model = few_shot(scores, pois, clean).score()
                        best = max(auroc(scores[s][rest], poisoned[rest]) for s in singles)
                        found.setdefault((p, c), []).append(
                            (
                                auroc(model[rest], poisoned[rest]),
                                best,
                                auroc(scores["combined"][rest], poisoned[rest]),
                            )
                        )
            for (p, c), rows in found.items():
                mean = np.mean(rows, axis=0)
                print(f"{world:10} {kind:6} {p:>3}+{c:<3} {mean[0]:9.3f} {mean[1]:12.3f} "
                      f"{mean[2]:9.3f}")  # fmt: skip
    print(f"\nrealised FPR on benign rows at a {FPR:.0%} target (min - max over scores, worlds, "
          "seeds):")  # fmt: skip
    for rule, values in rates.items():
        print(f"  {rule:20} {min(values):.4f} - {max(values):.4f}")
    print(f"  reference-clean 95% upper bound: {min(bounds):.4f} - {max(bounds):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
