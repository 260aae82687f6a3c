"""Anomaly (novelty) detection quality, given the scores: pure numpy + scikit-learn.

The score and the threshold are defined in components/scoring.py (docs/stages.md, "Metrics":
anomaly detection). Here, on the test split: which examples the threshold flags, and,
when classes were held out of training (data.holdout_labels), how well the score tells
those classes (positive: the novelties) from the classes the model was trained on.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

FPR_AT = 0.05  # the false-positive rate the true-positive rate is read at


def flagged(scores, threshold: float) -> dict:
    """How many of the scored examples the threshold flags (score > threshold, as
    components/scoring.py defines it), and what fraction."""
    scores = np.asarray(scores, np.float64)
    n_flagged = int(np.sum(scores > threshold))
    return {
        "anomaly_flagged": n_flagged,
        "anomaly_flagged_fraction": n_flagged / len(scores) if len(scores) else None,
    }


def held_out_detection(scores, held_out, threshold: float) -> dict:
    """How well the score finds the classes held out of training.

    scores [n]: per test example; held_out [n] bool: the example's class was held out
    (the positives). AUROC of the score for held-out vs seen (1 = every held-out example
    scores above every seen one, 0.5 = chance, 0 = reversed); at the threshold: precision
    and recall of the flag for held-out classes, the false-positive rate on seen classes,
    and the counts. A number that needs a kind of example the split lacks (AUROC without
    held-out or without seen examples; precision when nothing is flagged) is None.
    """
    scores = np.asarray(scores, np.float64)
    held_out = np.asarray(held_out, bool)
    if scores.ndim != 1 or scores.shape != held_out.shape:
        raise ValueError(
            f"scores {scores.shape} and held_out {held_out.shape}: expected two "
            "vectors of the same length"
        )
    flag = scores > threshold
    positives, negatives = int(held_out.sum()), int((~held_out).sum())
    tp, fp = int(np.sum(flag & held_out)), int(np.sum(flag & ~held_out))
    both = positives > 0 and negatives > 0
    return {
        "anomaly_held_out_examples": positives,
        "anomaly_seen_examples": negatives,
        "anomaly_true_positives": tp,  # held-out examples flagged
        "anomaly_false_positives": fp,  # seen-class examples flagged
        "anomaly_auroc": float(roc_auc_score(held_out, scores)) if both else None,
        "anomaly_precision": tp / (tp + fp) if tp + fp else None,
        "anomaly_recall": tp / positives if positives else None,
        "anomaly_false_positive_rate": fp / negatives if negatives else None,
        "anomaly_score_mean_held_out": float(scores[held_out].mean()) if positives else None,
        "anomaly_score_mean_seen": float(scores[~held_out].mean()) if negatives else None,
    }


def ranking(scores, held_out, prefix: str = "") -> dict:
    """How well a score ranks the held-out examples (positive) above the seen ones:
    AUROC, AUPRC (average precision) and the true-positive rate at FPR_AT false positives
    (the largest on the ROC curve without more); None without both kinds."""
    scores = np.asarray(scores, np.float64)
    held_out = np.asarray(held_out, bool)
    names = ("auroc", "auprc", f"tpr_at_{round(FPR_AT * 100)}fpr")
    if not (held_out.any() and (~held_out).any()):
        return {prefix + n: None for n in names}
    fpr, tpr, _ = roc_curve(held_out, scores)
    values = (
        roc_auc_score(held_out, scores),
        average_precision_score(held_out, scores),
        tpr[fpr <= FPR_AT].max(),
    )
    return {prefix + n: float(v) for n, v in zip(names, values)}
