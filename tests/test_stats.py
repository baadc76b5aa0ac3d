"""fusionkit.stats on cases with known answers."""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats as sps

from fusionkit import stats


def test_describe_matches_textbook_t_interval():
    values = [1.0, 2.0, 4.0]
    d = stats.describe(values)
    mean, sd = 7 / 3, np.std(values, ddof=1)
    half = sps.t.ppf(0.975, 2) * sd / math.sqrt(3)  # 4.303 · sd / √3
    assert d["mean"] == pytest.approx(mean) and d["std"] == pytest.approx(sd)
    assert (d["ci_low"], d["ci_high"]) == pytest.approx((mean - half, mean + half))
    assert stats.describe([0.5]) == {"values": [0.5], "n": 1, "mean": 0.5, "std": 0.0, "ci_low": None,
                                     "ci_high": None}


def test_identical_predictions_give_p_one_and_zero_interval():
    rng = np.random.default_rng(0)
    y = [rng.normal(size=50) for _ in range(3)]
    p = [yy + rng.normal(size=50) for yy in y]
    out = stats.paired_bootstrap(p, [x.copy() for x in p], y, replicates=300)
    for metric, b in out.items():
        assert b["p"] == 1.0, metric
        assert b["delta"] == 0.0 and b["ci_low"] == 0.0 and b["ci_high"] == 0.0, metric
        assert stats.gain_mark(metric, b["ci_low"], b["ci_high"]) == stats.TIE
    per_seed = stats.paired_seed_differences({0: 0.7, 1: 0.8}, {0: 0.7, 1: 0.8})
    assert per_seed["p"] == 1.0 and per_seed["ci_low"] == per_seed["ci_high"] == 0.0


def _shifted(delta: float, n: int, rng) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels 0, reference errors 10 + noise, model errors = reference errors + delta + N(0, 1): the per-example
    absolute-error difference is exactly delta + N(0, 1), so ΔMAE is a mean of n such draws."""
    y = np.zeros(n)
    ref = 10 + rng.normal(size=n)
    return ref + delta + rng.normal(size=n), ref, y


@pytest.mark.parametrize("delta, expected", [(0.28, None), (0.0, 0.05)])
def test_constant_shift_detected_at_expected_power(delta, expected):
    # z-test power at δ√n/σ = 2.8, α = 0.05: Φ(2.8 − 1.96) + Φ(−2.8 − 1.96) ≈ 0.80; under δ = 0 the rate is α
    n, sims = 100, 200
    power = sps.norm.cdf(delta * math.sqrt(n) - 1.96) + sps.norm.cdf(-delta * math.sqrt(n) - 1.96)
    expected = power if expected is None else expected
    rng = np.random.default_rng(1)
    rejected = 0
    for i in range(sims):
        a, b, y = _shifted(delta, n, rng)
        out = stats.paired_bootstrap([a], [b], [y], metrics=("mae",), replicates=400, seed=i)["mae"]
        rejected += out["p"] < 0.05
        if delta:
            assert out["delta"] == pytest.approx(np.mean(np.abs(a) - np.abs(b)))
    tolerance = 3 * math.sqrt(expected * (1 - expected) / sims)
    assert abs(rejected / sims - expected) < tolerance + 0.03


def test_shift_in_mae_marks_a_gain_and_a_loss():
    rng = np.random.default_rng(2)
    a, b, y = _shifted(-1.0, 200, rng)  # model errors 1 lower: a clear MAE gain
    gain = stats.paired_bootstrap([a], [b], [y], metrics=("mae",), replicates=500)["mae"]
    assert gain["ci_high"] < 0 and stats.gain_mark("mae", gain["ci_low"], gain["ci_high"]) == stats.GAIN
    loss = stats.paired_bootstrap([b], [a], [y], metrics=("mae",), replicates=500)["mae"]
    assert loss["ci_low"] > 0 and stats.gain_mark("mae", loss["ci_low"], loss["ci_high"]) == stats.LOSS
    assert stats.gain_mark("corr", 0.01, 0.2) == stats.GAIN and stats.gain_mark("acc2_non0", -0.2, -0.1) == stats.LOSS
    assert stats.gain_mark("corr", 0.0001, 0.2, p=0.051) == stats.TIE  # edge: interval and p disagree → not separated


def test_bootstrap_metrics_equal_fusionkit_metrics():
    from fusionkit.metrics import compute_metrics

    rng = np.random.default_rng(3)
    y = np.round(rng.normal(size=40), 0)  # some labels exactly 0 (dropped by acc2_non0)
    p = rng.normal(size=40)
    m = compute_metrics(p, y)
    for metric in stats.PAIRED_METRICS:
        assert float(stats._metric_rows(metric, p, y)) == pytest.approx(m[metric])


def test_holm_hand_case():
    # sorted 0.005·4 = 0.02, 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → max(0.06, 0.04) = 0.06
    adjusted = stats.holm({"a": 0.01, "b": 0.04, "c": 0.03, "d": 0.005, "e": None})
    assert adjusted["e"] is None
    assert [adjusted[k] for k in "abcd"] == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert stats.holm({"a": 0.6, "b": 0.7}) == {"a": 1.0, "b": 1.0}


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(0, 1), min_size=1, max_size=8))
def test_holm_is_monotone_and_at_least_raw(ps):
    adjusted = stats.holm({str(i): p for i, p in enumerate(ps)})
    for i, p in enumerate(ps):
        assert p - 1e-12 <= adjusted[str(i)] <= 1.0
    order = sorted(range(len(ps)), key=lambda i: ps[i])
    values = [adjusted[str(i)] for i in order]
    assert values == sorted(values)


def test_table_statistics_and_render(tmp_path):
    rng = np.random.default_rng(4)
    y = rng.normal(size=30)
    runs, files = [], {}
    for label, noise in (("text", 1.0), ("good", 0.2)):
        for seed in (0, 1, 2):
            p = y + noise * rng.normal(size=30)
            path = tmp_path / f"{label}{seed}.csv"
            path.write_text("id,label,prediction\n" + "".join(f"s{i},{y[i]:.6g},{p[i]:.6g}\n"
                                                               for i in range(30)[::-1]))
            from fusionkit.metrics import compute_metrics

            runs.append({"model": label, "seed": seed, "test": compute_metrics(p, y)})
            files.setdefault(label, {})[seed] = path
    out = stats.table_statistics(runs, ["text", "good"], predictions=files, replicates=300)
    boot = out["paired"]["good"]["bootstrap"]
    assert boot["mae"]["mark"] == stats.GAIN and boot["mae"]["p_holm"] == boot["mae"]["p"]  # one model: Holm = raw
    assert out["per_model"]["good"]["metrics"]["mae"]["n"] == 3
    text = "\n".join(stats.render(out))
    assert "Gain over text" in text and "95 %" in text and "(Holm)" in text
    none = stats.table_statistics(runs, ["text", "good"], reference="lmf")
    assert none["paired"] == {} and "not in this table" in "\n".join(stats.render(none))
