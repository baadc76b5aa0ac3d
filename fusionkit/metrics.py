"""Evaluation metrics of multimodal sentiment analysis (CMU-MOSI / CMU-MOSEI convention).

Labels and predictions are real sentiment scores in ``[-3, 3]``. Every metric is computed once on the full
split (never averaged over batches):

``acc2_has0``
    Binary accuracy, *negative vs non-negative*: class = ``score >= 0`` for labels and predictions; every
    sample counts, zero labels fall in the non-negative class.
``acc2_non0``
    Binary accuracy, *negative vs positive*: samples whose label is exactly 0 are removed, then class =
    ``score > 0`` (MAG-BERT / MISA convention).
``f1_has0`` / ``f1_non0``
    Weighted F1 over the same two class definitions: per-class F1 averaged with the classes' label counts as
    weights — exactly ``sklearn.metrics.f1_score(average="weighted", zero_division=0)``, computed in NumPy
    (importing ``sklearn.metrics`` costs seconds per process).
``acc7``
    Seven-class accuracy: labels and predictions are clipped to ``[-3, 3]`` and rounded to the nearest
    integer; ``numpy.round`` rounds halves to even (2.5 → 2, -0.5 → -0), as in the reference evaluation code.
``acc5``
    Five-class accuracy: clip to ``[-2, 2]``, then round as for ``acc7``.
``mae``
    Mean absolute error of the raw (unclipped) predictions.
``corr``
    Pearson correlation of predictions and labels. It is undefined when either side is constant; we report
    **0.0** (no linear association can be measured) and emit a :class:`RuntimeWarning`, so that mean ± std
    over seeds and model selection stay finite.

Accuracies and F1 are fractions in ``[0, 1]`` (tables multiply by 100).
"""
from __future__ import annotations

import warnings
from typing import Callable

import numpy as np

METRICS: tuple[str, ...] = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5", "mae", "corr")

# Direction of improvement, used by model selection and tables.
LOWER_IS_BETTER: frozenset[str] = frozenset({"mae"})


def _as_arrays(preds, labels) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(preds, dtype=np.float64).reshape(-1)
    y = np.asarray(labels, dtype=np.float64).reshape(-1)
    if p.shape != y.shape:
        raise ValueError(f"preds and labels differ in length: {p.shape[0]} predictions vs {y.shape[0]} labels")
    if p.size == 0:
        raise ValueError("cannot compute metrics on an empty set of predictions")
    if not (np.isfinite(p).all() and np.isfinite(y).all()):
        raise ValueError("preds and labels must be finite (found NaN or inf)")
    return p, y


def _non_zero(p: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    keep = y != 0
    if not keep.any():
        warnings.warn("every label is 0: acc2_non0/f1_non0 are undefined and reported as 0.0", RuntimeWarning,
                      stacklevel=3)
    return p[keep], y[keep]


def weighted_f1(true: np.ndarray, pred: np.ndarray) -> float:
    """Support-weighted F1 of a binary (bool) labelling; a class's F1 is 0 when it is never true nor predicted."""
    total = 0.0
    for cls in (False, True):
        tp = np.sum((pred == cls) & (true == cls))
        fp = np.sum((pred == cls) & (true != cls))
        fn = np.sum((pred != cls) & (true == cls))
        denom = 2 * tp + fp + fn
        total += (tp + fn) * (2 * tp / denom if denom else 0.0)
    return float(total / true.size) if true.size else 0.0


def acc2_has0(preds, labels) -> float:
    """Accuracy of negative (< 0) vs non-negative (>= 0) on all samples."""
    p, y = _as_arrays(preds, labels)
    return float(np.mean((p >= 0) == (y >= 0)))


def acc2_non0(preds, labels) -> float:
    """Accuracy of negative vs positive (> 0) on the samples with a non-zero label."""
    p, y = _non_zero(*_as_arrays(preds, labels))
    return float(np.mean((p > 0) == (y > 0))) if y.size else 0.0


def f1_has0(preds, labels) -> float:
    """Weighted F1 of negative vs non-negative on all samples."""
    p, y = _as_arrays(preds, labels)
    return weighted_f1(y >= 0, p >= 0)


def f1_non0(preds, labels) -> float:
    """Weighted F1 of negative vs positive on the samples with a non-zero label."""
    p, y = _non_zero(*_as_arrays(preds, labels))
    return weighted_f1(y > 0, p > 0) if y.size else 0.0


def _class_accuracy(preds, labels, bound: float) -> float:
    p, y = _as_arrays(preds, labels)
    return float(np.mean(np.round(np.clip(p, -bound, bound)) == np.round(np.clip(y, -bound, bound))))


def acc7(preds, labels) -> float:
    """Seven-class accuracy: clip to [-3, 3], round to the nearest integer (halves to even)."""
    return _class_accuracy(preds, labels, 3.0)


def acc5(preds, labels) -> float:
    """Five-class accuracy: clip to [-2, 2], round to the nearest integer (halves to even)."""
    return _class_accuracy(preds, labels, 2.0)


def mae(preds, labels) -> float:
    """Mean absolute error."""
    p, y = _as_arrays(preds, labels)
    return float(np.mean(np.abs(p - y)))


def corr(preds, labels) -> float:
    """Pearson correlation; 0.0 with a RuntimeWarning when predictions or labels are constant."""
    p, y = _as_arrays(preds, labels)
    dp, dy = p - p.mean(), y - y.mean()
    denom = np.sqrt(np.sum(dp * dp) * np.sum(dy * dy))
    if denom == 0.0:
        side = "predictions" if np.all(dp == 0) else "labels"
        warnings.warn(f"Pearson correlation is undefined for constant {side}; reporting corr = 0.0",
                      RuntimeWarning, stacklevel=2)
        return 0.0
    return float(np.clip(np.sum(dp * dy) / denom, -1.0, 1.0))


_FUNCTIONS: dict[str, Callable[..., float]] = {
    "acc2_has0": acc2_has0,
    "acc2_non0": acc2_non0,
    "f1_has0": f1_has0,
    "f1_non0": f1_non0,
    "acc7": acc7,
    "acc5": acc5,
    "mae": mae,
    "corr": corr,
}


# Each function carries its table label (``metric.label``) and how a table shows it (``metric.scale``: 100 for
# the percentages, ``metric.digits``), so a renderer never keeps its own copy.
for _fn, _label in zip(_FUNCTIONS.values(), ("Acc2 has0", "Acc2 non0", "F1 has0", "F1 non0", "Acc7", "Acc5", "MAE",
                                            "Corr")):
    _fn.label = _label
    _fn.scale, _fn.digits = (1.0, 3) if _fn in (mae, corr) else (100.0, 1)


def metric_label(name: str) -> str:
    """The table label of metric ``name`` (``"Acc2 has0"``, ``"MAE"``, …)."""
    return get_metric(name).label


def format_metric(name: str, value: float, *, signed: bool = False) -> str:
    """``value`` of metric ``name`` as a table shows it: accuracies and F1 in percent with one decimal
    (``0.8312`` → ``"83.1"``), MAE and Corr with three decimals; ``signed`` prefixes ``+`` to a positive value."""
    fn = get_metric(name)
    return f"{value * fn.scale:{'+' if signed else ''}.{fn.digits}f}"


def get_metric(name: str) -> Callable[..., float]:
    """The metric function called ``name``; an unknown name raises ``KeyError`` listing the known names."""
    try:
        return _FUNCTIONS[name]
    except KeyError:
        raise KeyError(f"unknown metric {name!r}; known metrics: {', '.join(METRICS)}") from None


def higher_is_better(name: str) -> bool:
    """Whether larger values of metric ``name`` are better (``mae`` is the only lower-is-better metric)."""
    get_metric(name)
    return name not in LOWER_IS_BETTER


def compute_metrics(preds, labels, names=METRICS) -> dict[str, float]:
    """``{name: value}`` for every metric in ``names`` (default: all of :data:`METRICS`), in that order."""
    functions = [(n, get_metric(n)) for n in names]
    return {n: fn(preds, labels) for n, fn in functions}
