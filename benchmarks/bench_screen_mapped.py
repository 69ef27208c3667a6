"""The screening scores on a world built another way than synth's: no concept directions shared
by the views, no modality-gap construction, no Zipf/hierarchy parameters. A check that the
scores are not fitted to synth's geometry.

    python benchmarks/bench_screen_mapped.py [--n 20000] [--seeds 3] [--knn ivf]

With ``--knn ivf`` (or hnsw) every score is also computed with that approximate search, and the
table adds its AUROC minus the exact search's and each view's recall@k: the approximate path
checked on a world the IVF parameters were not chosen on.

The "mapped" world: C clusters in a 48-d latent space with random anisotropic covariances and
Dirichlet-distributed sizes; the image view is a random nonlinear map (tanh of a random linear
map) of the latent to 64 dims; a caption is the image map of its cluster's mean (captions and
images share one space, as CLIP's do: a matched pair must align) plus a per-cluster caption
offset and noise; the second (VAE-like) view is a third random map of the
latent plus a low-rank nuisance shared across clusters. Dirty-label poisons: C_P clusters get m
rows whose latent comes from one target cluster while the caption stays theirs. Clean-label
poisons: rows of the source cluster whose second view is pulled 30-70% of the way toward one
anchor per attacked cluster (an image of the target), the image view unchanged.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from alignscope.screen import compute_scores, evaluate_scores

SCORES = (
    "combined",
    "relative_alignment",
    "alignment",
    "concept_consistency",
    "cross_view",
    "view_residual",
    "view_density",
    "k_distance",
    "lid",
)


def mapped_world(n: int, kind: str, seed: int, clusters: int = 400, attacked: int = 100):
    rng = np.random.default_rng(seed)
    m = max(1, round(0.0008 * n))
    latent_dim, d, d2 = 48, 64, 64
    sizes = rng.dirichlet(np.full(clusters, 0.7))
    benign = n - attacked * m
    cluster = rng.choice(clusters, size=benign, p=sizes)
    means = rng.normal(size=(clusters, latent_dim)) * 1.5
    chol = rng.normal(size=(clusters, latent_dim, latent_dim)) * 0.25 / np.sqrt(latent_dim)
    src = rng.choice(np.argsort(-sizes)[: 2 * attacked], size=attacked, replace=False)
    tgt = (src + rng.integers(1, clusters, size=attacked)) % clusters
    p_cluster = np.repeat(src, m)
    caption_cluster = np.concatenate([cluster, p_cluster])
    shown = caption_cluster.copy()
    poisoned = np.zeros(n, dtype=bool)
    poisoned[benign:] = True
    if kind == "dirty":
        shown[benign:] = np.repeat(tgt, m)
    z = means[shown] + np.einsum("nij,nj->ni", chol[shown], rng.normal(size=(n, latent_dim)))
    a_img = rng.normal(size=(latent_dim, d)) / np.sqrt(latent_dim)
    image = np.tanh(z @ a_img) + 0.1 * rng.normal(size=(n, d))
    offset = rng.normal(size=(clusters, d)) * 0.6
    text = np.tanh(means[caption_cluster] @ a_img) + offset[caption_cluster]
    text += 0.5 * rng.normal(size=(n, d))
    a_lat = rng.normal(size=(latent_dim, d2)) / np.sqrt(latent_dim)
    nuisance = rng.normal(size=(n, 4)) @ rng.normal(size=(4, d2)) * 0.8
    second = z @ a_lat + nuisance + 0.2 * rng.normal(size=(n, d2))
    if kind == "clean":
        anchors = (means[tgt] + rng.normal(size=(attacked, latent_dim)) * 0.3) @ a_lat
        phi = rng.uniform(0.3, 0.7, size=attacked * m)[:, None]
        second[benign:] = (1 - phi) * second[benign:] + phi * np.repeat(anchors, m, axis=0)
    order = rng.permutation(n)
    return (
        image[order].astype(np.float32),
        text[order].astype(np.float32),
        second[order].astype(np.float32),
        poisoned[order],
    )


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--n", type=int, default=20_000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--knn", choices=("ivf", "hnsw"), help="also the approximate search")
    args = parser.parse_args()
    print(f"mapped world, N = {args.n:,}, {args.seeds} seeds: AUROC / TPR@1% (mean)")
    for kind in ("dirty", "clean"):
        cells: dict[str, list[tuple[float, float]]] = {}
        diffs: dict[str, list[float]] = {}
        recalls: dict[str, list[float]] = {}
        for seed in range(args.seeds):
            image, text, second, poisoned = mapped_world(args.n, kind, seed)
            table = compute_scores(image, text, scores=SCORES, second_view=second)
            exact = evaluate_scores(table.scores, poisoned)
            for name, m in exact.items():
                cells.setdefault(name, []).append((m["auroc"], m["tpr_at_1pct_fpr"]))
            if args.knn:
                approx = compute_scores(
                    image, text, scores=SCORES, second_view=second, knn=args.knn
                )
                for name, m in evaluate_scores(approx.scores, poisoned).items():
                    diffs.setdefault(name, []).append(m["auroc"] - exact[name]["auroc"])
                for view, d in approx.neighbours.items():
                    recalls.setdefault(view, []).append(d["recall_at_k"])
        print(f"\n{kind}-label" + (f"  ({args.knn} AUROC - exact)" if args.knn else ""))
        for name, values in cells.items():
            a, t = np.mean(values, axis=0)
            extra = f"   {np.mean(diffs[name]):+.4f}" if name in diffs else ""
            print(f"  {name:20} {a:.3f} / {t:.2f}{extra}")
        if recalls:
            print("  recall@k: " + ", ".join(f"{v} {np.mean(r):.3f}" for v, r in recalls.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
