"""Poison screening: per-sample suspicion scores, their evaluation against ground truth, and a
filtered training list."""

from alignscope.screen.decisions import FewShotModel, Threshold, few_shot, threshold_at_fpr
from alignscope.screen.evaluation import auprc, auroc, evaluate_scores, tpr_at_fpr, tradeoff_curve
from alignscope.screen.scores import SCORES, ScoreTable, compute_scores

__all__ = [
    "SCORES",
    "FewShotModel",
    "ScoreTable",
    "Threshold",
    "auprc",
    "auroc",
    "compute_scores",
    "evaluate_scores",
    "few_shot",
    "threshold_at_fpr",
    "tpr_at_fpr",
    "tradeoff_curve",
]
