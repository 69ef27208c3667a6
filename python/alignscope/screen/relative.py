"""Scores that judge a sample against its peers, not against a global scale.

Real captions differ in how well they can match an image (a concept's typical CLIP score, a
generic caption, a caption naming two things), and a VAE latent varies with style that CLIP
ignores. A global threshold on a raw similarity then flags whole concepts and generic captions;
comparing each sample with the samples most like it removes those offsets. Every function
returns (N,) float64, higher meaning more suspicious, and costs one k-NN search per view it
reads; ``knn=`` takes a neighbour source (:data:`Knn`: exact by default; compute_scores passes
one that searches each view once, exactly or approximately).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from alignscope._rows import unit_rows
from alignscope.screen.combine import upper_tail
from alignscope.search.knn import self_neighbours
from alignscope.search.rows import Rows, as_rows

# Neighbours that define a caption's expected CLIP score: enough that the m poisons of a
# concept stay a minority among them in frequent concepts, few enough to stay on-topic.
REFERENCE_K = 50
# Share of the most suspicious rows left out of every reference (poisons are a minority; a
# reference that includes them drifts toward them), and the reweighting rounds.
TRIM = 0.1
ROUNDS = 2
_CHUNK = 8192


# A neighbour source: (label of the view, rows, k) -> (sims, idx), each (N, min(k, N - 1)),
# best first, the row itself excluded. compute_scores passes a cache that searches each view
# once (exactly or approximately); the default searches exactly every time.
# The rows are an (N, d) array or :class:`~alignscope.search.rows.Rows` (a store's view).
Knn = Callable[[str, "np.ndarray | Rows", int], tuple[np.ndarray, np.ndarray]]


def exact_knn(label: str, x: np.ndarray | Rows, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The exact neighbour source (``label`` unused; k is capped at N - 1 by the search)."""
    found = self_neighbours(x, k)
    return found.sims, found.idx


def _neighbours(x: np.ndarray | Rows, k: int, knn: Knn | None, label: str) -> np.ndarray:
    return (knn or exact_knn)(label, x, k)[1]


def relative_alignment(
    image_emb: np.ndarray | Rows,
    text_emb: np.ndarray | Rows,
    k: int = REFERENCE_K,
    *,
    knn: Knn | None = None,
) -> np.ndarray:
    """How far a pair's CLIP score falls below that of the pairs with the nearest captions.

    score_i = ref_i - cos(x_i, y_i), where ref_i is the mean CLIP score cos(x_j, y_j) over the
    k nearest captions j of y_i, leaving out rows whose own score is in the top ``TRIM`` share
    (:data:`ROUNDS` rounds, starting from the median; "top share" is every row above the
    (1 - TRIM) quantile of the scores, interpolated linearly between order statistics at
    position (N - 1)(1 - TRIM); a row none of whose peers is trusted keeps its previous
    reference). A dirty-label pair (caption of p, image of
    t) scores high; a generic caption is compared with other generic captions, a concept with a
    low typical CLIP score with itself.

    Parameters
    ----------
    image_emb, text_emb : (N, d) float, any scale (rows are normalised), or Rows.
    k : reference neighbours (capped at N - 1).
    """
    return alignment_residual(image_emb, text_emb, k, knn=knn).score


@dataclass(frozen=True)
class AlignmentResidual:
    """A pair's CLIP score against its caption peers' (:func:`alignment_residual`).

    score : (N,) float64, ref_i - cos(x_i, y_i) (:func:`relative_alignment`).
    spread : (N,) float64 >= 0, sqrt(mean over the trusted peers j of (cos(x_j, y_j) - ref_i)^2),
        the peers' own scatter about the reference (0 for a row without a trusted peer).
    peers : (N,) int64, how many trusted peers each row's reference and spread average.
    """

    score: np.ndarray
    spread: np.ndarray
    peers: np.ndarray

    def studentized(self) -> np.ndarray:
        """(N,) float64 score / s: how many of its peers' spreads a pair falls below them.

        Concepts differ in how widely their CLIP scores scatter (a hard concept, a generic
        caption's many possible images); in raw units the widest-scattering concept fills the
        top of the ranking without any poison in it. s pools a row's spread with the typical
        one (the median of the positive spreads of rows with peers) as if it were one more peer:
        s^2 = (peers * spread^2 + typical^2) / (peers + 1). With 50 peers this moves s by
        about 1%; it keeps s > 0 where every peer has the same score (exact duplicates of one
        pair, common in web data) and gives a row without trusted peers the typical spread."""
        # typical: the median of the positive spreads (a set where most pairs have duplicate
        # peers would otherwise pool with 0)
        have = (self.peers > 0) & (self.spread > 0)
        typical = float(np.median(self.spread[have])) if have.any() else 0.0
        pooled = np.sqrt((self.peers * self.spread**2 + typical**2) / (self.peers + 1))
        # 1e-300: every spread 0 (all pairs score alike) leaves every score 0 as well
        return self.score / np.maximum(pooled, 1e-300)


def alignment_residual(
    image_emb: np.ndarray | Rows,
    text_emb: np.ndarray | Rows,
    k: int = REFERENCE_K,
    *,
    knn: Knn | None = None,
) -> AlignmentResidual:
    """:func:`relative_alignment` and the spread of the trusted peers it is measured against
    (:class:`AlignmentResidual`); one caption search and one pass over the pairs for both."""
    agreement = paired_cosines(image_emb, text_emb)
    near = _neighbours(text_emb, k, knn, "text")
    # In chunks of rows: the (N, k) float64 peer table would be 400 MB at N = 1M.
    reference = np.empty_like(agreement)
    for s in range(0, near.shape[0], _CHUNK):
        reference[s : s + _CHUNK] = np.median(agreement[near[s : s + _CHUNK]], axis=1)
    trusted = np.ones(agreement.shape, dtype=bool)
    for _ in range(ROUNDS):
        score = reference - agreement
        trusted = ~(score > np.quantile(score, 1.0 - TRIM))
        for s in range(0, near.shape[0], _CHUNK):
            rows = near[s : s + _CHUNK]
            reference[s : s + _CHUNK] = _trusted_mean(
                agreement[rows], trusted[rows], reference[s : s + _CHUNK]
            )
    spread = np.empty_like(agreement)
    count = np.empty(agreement.shape, dtype=np.int64)
    for s in range(0, near.shape[0], _CHUNK):
        rows = near[s : s + _CHUNK]
        keep = trusted[rows]
        deviation = agreement[rows] - reference[s : s + _CHUNK, None]
        count[s : s + _CHUNK] = keep.sum(axis=1)
        squares = np.where(keep, deviation**2, 0.0).sum(axis=1)
        spread[s : s + _CHUNK] = np.sqrt(squares / np.maximum(count[s : s + _CHUNK], 1))
    return AlignmentResidual(reference - agreement, spread, count)


def paired_cosines(a: np.ndarray | Rows, b: np.ndarray | Rows) -> np.ndarray:
    """(N,) float64 cos(a_i, b_i), in chunks of rows: memory O(chunk d), not two float64 copies
    of the views (4 GB each at N = 1M, d = 512)."""
    ra, rb = as_rows(a, "image_emb"), as_rows(b, "text_emb")
    out = np.empty(ra.n)
    for s, e in ra.spans(_CHUNK):
        x = unit_rows(ra.read(s, e), np.float64)
        y = unit_rows(rb.read(s, e), np.float64)
        out[s:e] = np.einsum("ij,ij->i", x, y)
    ra.release()
    rb.release()
    return out


def _trusted_mean(values: np.ndarray, trusted: np.ndarray, fallback: np.ndarray) -> np.ndarray:
    """Row means of ``values`` over ``trusted`` entries; ``fallback`` where none is trusted."""
    count = trusted.sum(axis=1)
    total = np.where(trusted, values, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), fallback)


def view_residual(
    image_emb: np.ndarray | Rows, view: np.ndarray, k: int = 10, *, knn: Knn | None = None
) -> np.ndarray:
    """How unusual a sample's second view is, given the second views of its CLIP neighbours.

    r_i = v_i - mean_j v_j over the k nearest CLIP images j of x_i (unit rows of the second
    view); the score is the squared Mahalanobis norm r_i' S^-1 r_i under S = R'R / N, the
    second moment of all residuals about zero (their mean is ~0 by construction).
    S whitens away what varies among images CLIP calls alike (style, colour, texture in a VAE
    latent), so a shift the CLIP neighbourhood does not explain (a latent
    pulled toward another concept) stands out.

    Parameters
    ----------
    image_emb : (N, d) CLIP image embeddings; view : (N, d2) the second image view.
    k : CLIP neighbours (capped at N - 1).
    """
    near = _neighbours(image_emb, k, knn, "image")
    v = unit_rows(view, np.float64)
    residual = np.empty_like(v)
    for s in range(0, v.shape[0], _CHUNK):
        residual[s : s + _CHUNK] = v[s : s + _CHUNK] - v[near[s : s + _CHUNK]].mean(axis=1)
    cov = residual.T @ residual / residual.shape[0]
    # A ridge of 1e-6 of the mean variance keeps S invertible when the view has fewer
    # informative directions than dimensions (constant channels, d2 > N).
    cov += np.eye(cov.shape[0]) * (1e-6 * np.trace(cov) / cov.shape[0] + 1e-300)
    values, vectors = np.linalg.eigh(cov)
    whitened = residual @ (vectors / np.sqrt(values))
    return np.einsum("ij,ij->i", whitened, whitened)


def whiten(view: np.ndarray) -> np.ndarray:
    """(N, d2) float64 PCA-whitened rows: centred, rotated to the principal axes and scaled to
    unit variance on each, so that a few high-variance directions (style shared across
    concepts, in a VAE latent) do not decide who is whose neighbour. Axes with variance below
    1e-9 of the largest are dropped (constant channels)."""
    x = np.asarray(view, dtype=np.float64)
    x = x - x.mean(axis=0)
    values, vectors = np.linalg.eigh(x.T @ x / max(x.shape[0], 1))
    keep = values > 1e-9 * max(float(values.max()), 1e-300)
    return x @ (vectors[:, keep] / np.sqrt(values[keep]))


def view_density(
    image_emb: np.ndarray | Rows, view: np.ndarray, k: int = 10, *, knn: Knn | None = None
) -> np.ndarray:
    """How much tighter a sample's neighbourhood is in the second view than in CLIP.

    score_i = P(mean cosine distance to the k nearest CLIP images) - P(mean cosine distance
    to the k nearest rows of the whitened second view), with P the percentile among all rows.
    Nightshade pulls every poison of a concept toward the latent of one anchor image, so the
    poisons become near neighbours in the latent while their CLIP views stay ordinary, varied
    images of their concept. Percentiles make the two views' distance scales comparable; a
    benign near-duplicate is tight in both views and scores ~0.

    Parameters
    ----------
    image_emb : (N, d) CLIP image embeddings; view : (N, d2) the second image view.
    k : neighbours per view (capped at N - 1).
    """
    # The engine searches float32 rows; whitened coordinates are O(1), well inside its range.
    white = np.ascontiguousarray(whiten(view), dtype=np.float32)
    spread = []
    for label, x in (("image", image_emb), ("second_whitened", white)):
        sims, _ = (knn or exact_knn)(label, x, k)
        spread.append(np.clip(1.0 - sims.astype(np.float64), 0.0, None).mean(axis=1))
    # P(v) = share of rows at or below v = the upper tail of -v (one owner of the ranking)
    return upper_tail(-spread[0]) - upper_tail(-spread[1])


def purification_shift(
    image_emb: np.ndarray | Rows,
    latent: np.ndarray,
    purified: np.ndarray,
    k: int = 10,
    *,
    knn: Knn | None = None,
) -> np.ndarray:
    """How much further a sample's latent moves under mild purification than its peers' do.

    shift_i = log(|z_i - z~_i| / |z_i|), with z the pooled VAE latent of the image and z~ that
    of its purified copy (JPEG, a small resize, a slight blur: alignscope embed --vae); the
    score is shift_i minus the median shift of its k nearest CLIP images. An adversarial
    perturbation (Nightshade) is brittle under purification, a benign image is not; comparing
    with CLIP peers removes what a concept's texture does to the shift.

    Parameters
    ----------
    image_emb : (N, d) CLIP image embeddings.
    latent, purified : (N, d2) pooled latents of the images and of their purified copies.
    """
    z = np.asarray(latent, dtype=np.float64)
    moved = np.linalg.norm(z - np.asarray(purified, dtype=np.float64), axis=1)
    size = np.linalg.norm(z, axis=1)
    # The floor keeps an image that purification leaves bit-identical finite (log 0).
    shift = np.log(np.maximum(moved, 1e-12 * np.maximum(size, 1e-300)) / np.maximum(size, 1e-300))
    return shift - np.median(shift[_neighbours(image_emb, k, knn, "image")], axis=1)
