"""Statistics for benchmark tables: seed spread, 95 % intervals and paired comparisons against a reference model.

Every table of ``python -m benchmarks.run`` reports, per model and metric:

* the per-seed test values, their mean ± sample standard deviation and a 95 % Student-t interval of the mean
  (:func:`describe`);
* against a reference model (``text`` unless ``--reference MODEL``), on the seeds both ran:
  the per-seed paired differences with their mean, t-interval and paired t-test p-value
  (:func:`paired_seed_differences`), and a **paired bootstrap over seeds and test examples**
  (:func:`paired_bootstrap`): each replicate draws seeds with replacement and, within each drawn seed, test
  examples with replacement — the *same* examples for both models — and averages the per-seed metric
  differences. It gives a percentile interval and a two-sided p-value for ΔMAE, ΔAcc2 (non0) and ΔCorr;
* Holm's step-down correction of those p-values across the models of one table, per metric (:func:`holm`);
* a gain mark: ``▲`` where the bootstrap interval excludes 0 on the model's better side, ``▼`` where it
  excludes 0 on the worse side, ``·`` where it contains 0.

Differences are always *model − reference*; for MAE a negative difference is a gain.
"""
from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Iterable, Mapping, Sequence

import numpy as np

CONFIDENCE = 0.95
BOOTSTRAP_REPLICATES = 2000
# Metrics of the paired comparison and whether a smaller value is better.
PAIRED_METRICS: dict[str, bool] = {"mae": True, "acc2_non0": False, "corr": False}
# Metrics that get mean ± std and a t-interval in the intervals table (all of fusionkit.metrics.METRICS go
# to results.json).
INTERVAL_METRICS = ("acc2_non0", "f1_non0", "acc7", "mae", "corr")
GAIN, LOSS, TIE = "▲", "▼", "·"


# -- one model: seed spread --------------------------------------------------------------------------------
def t_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Student-t interval of the mean of ``values``; ``(nan, nan)`` for fewer than two values."""
    from scipy import stats

    x = np.asarray(values, dtype=np.float64)
    if x.size < 2:
        return float("nan"), float("nan")
    half = stats.t.ppf(0.5 + confidence / 2, df=x.size - 1) * x.std(ddof=1) / math.sqrt(x.size)
    return float(x.mean() - half), float(x.mean() + half)


def describe(values: Sequence[float], confidence: float = CONFIDENCE) -> dict:
    """``{"values", "n", "mean", "std", "ci_low", "ci_high"}``: std is the sample std (0 for one value), the
    interval a Student-t interval of the mean (``None`` for one value: a single run has no interval)."""
    x = np.asarray(values, dtype=np.float64)
    low, high = t_interval(x, confidence)
    return {"values": [float(v) for v in x], "n": int(x.size), "mean": float(x.mean()),
            "std": float(x.std(ddof=1)) if x.size > 1 else 0.0,
            "ci_low": None if math.isnan(low) else low, "ci_high": None if math.isnan(high) else high}


# -- two models: paired comparisons ------------------------------------------------------------------------
def paired_seed_differences(model: Mapping[int, float], reference: Mapping[int, float],
                            confidence: float = CONFIDENCE) -> dict:
    """Per-seed differences ``model[s] - reference[s]`` on the seeds both have, their mean, t-interval and the
    paired t-test p-value (``None`` with fewer than two seeds; 1.0 when every difference is 0)."""
    from scipy import stats

    seeds = sorted(set(model) & set(reference))
    d = np.array([model[s] - reference[s] for s in seeds], dtype=np.float64)
    out = {"seeds": seeds, **{k: v for k, v in describe(d, confidence).items() if k != "values"},
           "differences": [float(v) for v in d], "p": None}
    if d.size >= 2:
        out["p"] = 1.0 if not np.any(d) else (0.0 if d.std(ddof=1) == 0 else
                                             float(stats.ttest_1samp(d, 0.0).pvalue))
    return out


def _metric_rows(metric: str, p: np.ndarray, y: np.ndarray) -> np.ndarray:
    """``metric`` of every row of predictions ``p`` against labels ``y`` (both ``(..., n)``)."""
    if metric == "mae":
        return np.abs(p - y).mean(axis=-1)
    if metric == "acc2_non0":
        keep = y != 0
        correct = ((p > 0) == (y > 0)) & keep
        count = keep.sum(axis=-1)
        return np.where(count > 0, correct.sum(axis=-1) / np.maximum(count, 1), 0.0)
    if metric == "corr":  # Pearson per row; 0 where a side is constant (fusionkit.metrics convention)
        pc = p - p.mean(axis=-1, keepdims=True)
        yc = y - y.mean(axis=-1, keepdims=True)
        denom = np.sqrt((pc ** 2).sum(axis=-1) * (yc ** 2).sum(axis=-1))
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (pc * yc).sum(axis=-1) / denom
        return np.where(denom > 1e-12, r, 0.0)
    raise ValueError(f"no bootstrap metric {metric!r}; choose one of {', '.join(PAIRED_METRICS)}")


def paired_bootstrap(model: Sequence[np.ndarray], reference: Sequence[np.ndarray], labels: Sequence[np.ndarray], *,
                     metrics: Iterable[str] = tuple(PAIRED_METRICS), replicates: int = BOOTSTRAP_REPLICATES,
                     confidence: float = CONFIDENCE, seed: int = 0) -> dict:
    """Paired bootstrap of ``metric(model) - metric(reference)`` over seeds and test examples.

    ``model[k]``, ``reference[k]``, ``labels[k]``: test predictions of both models and the labels for the k-th
    seed, aligned example by example. Each replicate draws ``len(model)`` seeds with replacement and, within
    each drawn seed, its examples with replacement (the same indices for both models), then averages the
    per-seed differences. Returns ``{metric: {"delta", "ci_low", "ci_high", "p"}}``: ``delta`` is the observed
    mean per-seed difference, the interval the percentile interval of the replicates, and ``p`` the two-sided
    bootstrap p-value ``min(1, 2·min((1+#{δ*≤0}), (1+#{δ*≥0}))/(B+1))``. Identical predictions give
    δ* = 0 in every replicate: a zero-width interval at 0 and p = 1.
    """
    if not (len(model) == len(reference) == len(labels)) or not model:
        raise ValueError(f"paired_bootstrap needs one array per seed for model, reference and labels; got "
                         f"{len(model)}, {len(reference)} and {len(labels)}")
    arrays = []
    for k, (a, b, y) in enumerate(zip(model, reference, labels)):
        a, b, y = (np.asarray(v, dtype=np.float64).reshape(-1) for v in (a, b, y))
        if not (a.size == b.size == y.size) or a.size == 0:
            raise ValueError(f"seed {k}: model, reference and labels must have the same, non-zero length; got "
                             f"{a.size}, {b.size} and {y.size}")
        arrays.append((a, b, y))
    rng = np.random.default_rng(seed)
    k = len(arrays)
    seed_draws = rng.integers(0, k, size=(replicates, k))
    example_draws = [rng.integers(0, y.size, size=(replicates, y.size)) for _, _, y in arrays]
    out = {}
    alpha = 1 - confidence
    for metric in metrics:
        per_seed = np.empty((replicates, k))  # δ of seed j under replicate b's example draw for seed j
        observed = []
        for j, (a, b, y) in enumerate(arrays):
            idx = example_draws[j]
            per_seed[:, j] = _metric_rows(metric, a[idx], y[idx]) - _metric_rows(metric, b[idx], y[idx])
            observed.append(float(_metric_rows(metric, a, y) - _metric_rows(metric, b, y)))
        stars = per_seed[np.arange(replicates)[:, None], seed_draws].mean(axis=1)
        low, high = np.quantile(stars, [alpha / 2, 1 - alpha / 2])
        below = int(np.sum(stars <= 0))
        above = int(np.sum(stars >= 0))
        p = min(1.0, 2 * min(1 + below, 1 + above) / (replicates + 1))
        out[metric] = {"delta": float(np.mean(observed)), "ci_low": float(low), "ci_high": float(high), "p": p}
    return out


def holm(pvalues: Mapping[str, float | None]) -> dict[str, float | None]:
    """Holm's step-down adjusted p-values of one family (``None`` entries are left out and stay ``None``)."""
    present = sorted((p, name) for name, p in pvalues.items() if p is not None)
    m = len(present)
    adjusted: dict[str, float | None] = {name: None for name in pvalues}
    running = 0.0
    for i, (p, name) in enumerate(present):
        running = max(running, min(1.0, (m - i) * p))
        adjusted[name] = running
    return adjusted


def gain_mark(metric: str, ci_low: float, ci_high: float, p: float | None = None,
              confidence: float = CONFIDENCE) -> str:
    """``▲`` when the interval excludes 0 on the better side of ``metric``, ``▼`` on the worse side, else ``·``.
    With ``p``, the mark also needs ``p < 1 - confidence`` (the bootstrap p counts replicates with the +1
    correction, so at the edge the percentile interval can exclude 0 while p is just above 0.05)."""
    lower_better = PAIRED_METRICS.get(metric, metric == "mae")
    if p is not None and p >= 1 - confidence:
        return TIE
    if ci_high < 0 or ci_low > 0:
        better = ci_high < 0 if lower_better else ci_low > 0
        return GAIN if better else LOSS
    return TIE


# -- a whole table -----------------------------------------------------------------------------------------
def read_predictions(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``test_predictions.csv`` (``id,label,prediction``) → ids, labels, predictions."""
    ids, labels, preds = [], [], []
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            ids.append(row["id"])
            labels.append(float(row["label"]))
            preds.append(float(row["prediction"]))
    return ids, np.array(labels), np.array(preds)


def table_statistics(runs: list[dict], labels: list[str], *, reference: str | None = "text",
                     predictions: Mapping[str, Mapping[int, Path]] | None = None,
                     replicates: int = BOOTSTRAP_REPLICATES, confidence: float = CONFIDENCE) -> dict:
    """The ``statistics`` entry of ``results.json`` for ``runs`` (``{"model", "seed", "test"}`` dicts).

    ``labels``: the table's rows in order. ``reference``: the row every other row is compared with (``None``
    or a row not in the table: no paired comparison). ``predictions``: ``{row: {seed: test_predictions.csv}}``
    for the bootstrap (rows or seeds without a file get the per-seed comparison only).
    """
    from fusionkit.metrics import METRICS

    per_model = {}
    for label in labels:
        mine = sorted((r for r in runs if r["model"] == label), key=lambda r: r["seed"])
        per_model[label] = {"seeds": [r["seed"] for r in mine],
                            "metrics": {m: describe([r["test"][m] for r in mine], confidence) for m in METRICS}}
    out = {"confidence": confidence, "reference": reference, "per_model": per_model, "paired": {},
           "bootstrap_replicates": replicates,
           "method": "per-seed: Student-t interval of the mean; paired: per-seed differences (paired t-test) and a "
                     "paired bootstrap over seeds and test examples (percentile interval, two-sided p), Holm-"
                     "corrected across the table's models per metric"}
    if reference is None or reference not in per_model:
        return out
    ref_by_seed = {r["seed"]: r for r in runs if r["model"] == reference}
    paired = {}
    for label in labels:
        if label == reference:
            continue
        mine = {r["seed"]: r for r in runs if r["model"] == label}
        entry = {"seeds": sorted(set(mine) & set(ref_by_seed)), "per_seed": {}, "bootstrap": None}
        for metric in PAIRED_METRICS:
            entry["per_seed"][metric] = paired_seed_differences(
                {s: r["test"][metric] for s, r in mine.items()},
                {s: r["test"][metric] for s, r in ref_by_seed.items()}, confidence)
        files = [(predictions or {}).get(label, {}).get(s) for s in entry["seeds"]]
        ref_files = [(predictions or {}).get(reference, {}).get(s) for s in entry["seeds"]]
        if entry["seeds"] and all(f is not None and Path(f).is_file() for f in files + ref_files):
            a_list, b_list, y_list = [], [], []
            for fa, fb in zip(files, ref_files):
                ids_a, y_a, p_a = read_predictions(Path(fa))
                ids_b, y_b, p_b = read_predictions(Path(fb))
                order = {i: n for n, i in enumerate(ids_b)}
                if set(order) != set(ids_a):
                    raise ValueError(f"{fa} and {fb} predict different test examples; a paired comparison needs "
                                     f"the same test split")
                take = np.array([order[i] for i in ids_a])
                a_list.append(p_a)
                b_list.append(p_b[take])
                y_list.append(y_a)
            entry["bootstrap"] = paired_bootstrap(a_list, b_list, y_list, replicates=replicates,
                                                  confidence=confidence)
            for metric, b in entry["bootstrap"].items():
                b["mark"] = gain_mark(metric, b["ci_low"], b["ci_high"], b["p"], confidence)
        paired[label] = entry
    for metric in PAIRED_METRICS:
        adjusted = holm({label: (e["bootstrap"] or {}).get(metric, {}).get("p") for label, e in paired.items()})
        for label, p in adjusted.items():
            if paired[label]["bootstrap"] is not None:
                paired[label]["bootstrap"][metric]["p_holm"] = p
    out["paired"] = paired
    return out


def _num(metric: str, value: float | None, signed: bool = False) -> str:
    if value is None:
        return "–"
    from fusionkit.metrics import format_metric

    return format_metric(metric, value, signed=signed)


def _p(value: float | None) -> str:
    if value is None:
        return "–"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


METRIC_NAMES = {"acc2_has0": "Acc2 has0", "acc2_non0": "Acc2 non0", "f1_has0": "F1 has0", "f1_non0": "F1 non0",
                "acc7": "Acc7", "acc5": "Acc5", "mae": "MAE", "corr": "Corr"}


def render(statistics: dict | None) -> list[str]:
    """``results.md`` lines: the intervals table and the paired comparison with its gain column."""
    if not statistics:
        return []
    conf = int(round(100 * statistics["confidence"]))
    per_model = statistics["per_model"]
    several = max((e["metrics"]["mae"]["n"] for e in per_model.values()), default=0) > 1
    lines = ["", f"## Seed spread and {conf} % intervals", "",
             (f"Mean ± std (sample std over seeds) and the {conf} % Student-t interval of the mean; per-seed values "
              f"in `results.json` (`statistics.per_model`). One seed has no interval." if several else
              f"One seed per model: its values alone, with no spread and no {conf} % interval (run more seeds)."),
             ""]
    header = ["Model", "Seeds"] + [METRIC_NAMES[m] for m in INTERVAL_METRICS]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in per_model.items():
        cells = [label, ",".join(map(str, entry["seeds"]))]
        for metric in INTERVAL_METRICS:
            d = entry["metrics"][metric]
            text = _num(metric, d["mean"]) + (f" ± {_num(metric, d['std'])}" if d["n"] > 1 else "")
            if d["ci_low"] is not None:
                text += f" [{_num(metric, d['ci_low'])}, {_num(metric, d['ci_high'])}]"
            cells.append(text)
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    per_seed_lines = [f"- `{label}` {METRIC_NAMES[m]}: " + ", ".join(_num(m, v) for v in e["metrics"][m]["values"])
                      for label, e in per_model.items() for m in ("mae", "acc2_non0")]
    lines += ["Per-seed test values (seed order as above):", "", *per_seed_lines, ""]
    reference = statistics.get("reference")
    paired = statistics.get("paired") or {}
    if not paired:
        if reference is not None and reference not in per_model:
            lines += [f"No paired comparison: the reference model `{reference}` is not in this table "
                      f"(`--reference MODEL` picks another).", ""]
        return lines
    lines += [f"## Gain over {reference} (paired, model − {reference})", "",
              f"Per metric: the mean per-seed difference, its {conf} % interval from a paired bootstrap over seeds "
              f"and test examples ({statistics['bootstrap_replicates']} replicates; both models scored on the same "
              f"resampled examples), the bootstrap p-value and the Holm-corrected p over the "
              f"{len(paired)} model(s) of this table. {GAIN} = the interval excludes 0 in the model's favour "
              f"(and p < {1 - statistics['confidence']:.2g}), {LOSS} = against it, {TIE} = not separated. For MAE lower is better, so a gain is negative. "
              f"Claims over the whole table should use the Holm p.", ""]
    header = ["Model", "Seeds"] + [f"Δ{METRIC_NAMES[m]} [{conf} % CI]" for m in PAIRED_METRICS] + \
             [f"p {METRIC_NAMES[m]} (Holm)" for m in PAIRED_METRICS] + [f"Gain over {reference}"]
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for label, entry in paired.items():
        cells = [label, ",".join(map(str, entry["seeds"]))]
        boot = entry["bootstrap"]
        if boot is None:
            for metric in PAIRED_METRICS:
                d = entry["per_seed"][metric]
                cells.append(f"{_num(metric, d['mean'], True)} (per-seed only)")
            cells += ["–"] * len(PAIRED_METRICS) + ["no predictions"]
        else:
            for metric in PAIRED_METRICS:
                b = boot[metric]
                cells.append(f"{_num(metric, b['delta'], True)} [{_num(metric, b['ci_low'], True)}, "
                             f"{_num(metric, b['ci_high'], True)}] {b['mark']}")
            cells += [f"{_p(boot[m]['p'])} ({_p(boot[m].get('p_holm'))})" for m in PAIRED_METRICS]
            cells.append(" ".join(f"{METRIC_NAMES[m]} {boot[m]['mark']}" for m in PAIRED_METRICS))
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Per-seed paired differences (model − {reference}; mean, {conf} % t-interval, paired t-test p):", ""]
    for label, entry in paired.items():
        parts = []
        for metric in PAIRED_METRICS:
            d = entry["per_seed"][metric]
            text = f"{METRIC_NAMES[metric]} " + ", ".join(_num(metric, v, True) for v in d["differences"])
            if d["ci_low"] is not None:
                text += f" (mean {_num(metric, d['mean'], True)} [{_num(metric, d['ci_low'], True)}, " \
                        f"{_num(metric, d['ci_high'], True)}], p {_p(d['p'])})"
            parts.append(text)
        lines.append(f"- `{label}`: " + "; ".join(parts))
    lines.append("")
    return lines
