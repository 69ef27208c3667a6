"""Poison screening: per-sample suspicion scores, their evaluation against ground truth, and a
filtered training list."""

from alignscope.screen.evaluation import auprc, auroc, evaluate_scores, tpr_at_fpr, tradeoff_curve
from alignscope.screen.scores import SCORES, ScoreTable, compute_scores

__all__ = [
    "SCORES",
    "ScoreTable",
    "auprc",
    "auroc",
    "compute_scores",
    "evaluate_scores",
    "tpr_at_fpr",
    "tradeoff_curve",
]
