"""Hand-computed cases for the MSA metrics."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fusionkit import metrics
from fusionkit.metrics import METRICS, compute_metrics

# labels include an exact zero (index 1) and out-of-range predictions (index 4)
PREDS = [1.2, -0.4, 0.0, 2.6, -3.5]
LABELS = [1.0, 0.0, -0.2, 3.0, -2.0]


def test_hand_case_all_metrics():
    m = compute_metrics(PREDS, LABELS)
    assert list(m) == list(METRICS)
    # has0: pred>=0 [T F T T F] vs label>=0 [T T F T F] -> 3 of 5 agree
    assert m["acc2_has0"] == pytest.approx(0.6)
    # non0: drop label 0 -> pred>0 [T F T F] vs label>0 [T F T F]
    assert m["acc2_non0"] == pytest.approx(1.0)
    # class True: P=R=2/3; class False: P=R=1/2; weighted (3*2/3 + 2*1/2) / 5
    assert m["f1_has0"] == pytest.approx(0.6)
    assert m["f1_non0"] == pytest.approx(1.0)
    # clip[-3,3]+round: preds [1 -0 0 3 -3] vs labels [1 0 -0 3 -2]
    assert m["acc7"] == pytest.approx(0.8)
    # clip[-2,2]+round: preds [1 -0 0 2 -2] vs labels [1 0 -0 2 -2]
    assert m["acc5"] == pytest.approx(1.0)
    assert m["mae"] == pytest.approx((0.2 + 0.4 + 0.2 + 0.4 + 1.5) / 5)


def test_zero_label_counts_as_non_negative_only_in_has0():
    preds, labels = [-1.0, 1.0], [0.0, 2.0]
    assert metrics.acc2_has0(preds, labels) == 0.5  # 0 label is non-negative, prediction negative
    assert metrics.acc2_non0(preds, labels) == 1.0  # zero-label sample dropped


def test_f1_weighted_by_support():
    # labels: 3 negative, 1 non-negative; predictions all negative
    preds, labels = [-1, -1, -1, -1], [-2, -1, -0.5, 1]
    # class neg: P=3/4 R=1 F1=6/7 (support 3); class non-neg: F1=0 (support 1)
    assert metrics.f1_has0(preds, labels) == pytest.approx(3 / 4 * 6 / 7)


def test_rounding_is_half_to_even():
    assert metrics.acc7([0.5, 1.5, 2.5, -0.5], [0, 2, 2, 0]) == 1.0
    assert metrics.acc7([0.5, 1.5, 2.5, -0.5], [1, 1, 3, -1]) == 0.0


def test_acc5_clips_at_two():
    assert metrics.acc5([2.9, -2.6], [2.0, -3.0]) == 1.0
    assert metrics.acc7([2.9, -2.6], [2.0, -3.0]) == 0.5


def test_corr_hand_case():
    # dp = dy rearranged: sum dp*dy = 4, sum dp^2 = sum dy^2 = 5
    assert metrics.corr([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)
    assert metrics.corr([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_constant_predictions_give_zero_corr_with_warning():
    with pytest.warns(RuntimeWarning, match="constant predictions"):
        m = compute_metrics([0.5, 0.5, 0.5], [1.0, -1.0, 2.0])
    assert m["corr"] == 0.0
    assert m["acc2_has0"] == pytest.approx(2 / 3)
    assert m["mae"] == pytest.approx((0.5 + 1.5 + 1.5) / 3)


def test_all_zero_labels_non0_metrics_warn():
    with pytest.warns(RuntimeWarning, match="every label is 0"):
        assert metrics.acc2_non0([1.0, -1.0], [0.0, 0.0]) == 0.0


def test_unknown_metric_lists_names():
    with pytest.raises(KeyError, match="acc2_has0.*corr"):
        compute_metrics([1.0], [1.0], names=["acc3"])
    with pytest.raises(KeyError, match="unknown metric 'acc3'"):
        metrics.get_metric("acc3")


def test_bad_inputs():
    with pytest.raises(ValueError, match="differ in length"):
        compute_metrics([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="empty"):
        compute_metrics([], [])
    with pytest.raises(ValueError, match="finite"):
        compute_metrics([np.nan], [1.0])


def test_direction():
    assert not metrics.higher_is_better("mae")
    assert metrics.higher_is_better("acc2_non0")


scores = st.lists(st.floats(-3, 3, allow_nan=False), min_size=2, max_size=30)


@settings(max_examples=20, deadline=None)
@given(scores)
def test_perfect_predictions(labels):
    m = compute_metrics(labels, labels, names=["acc2_has0", "acc7", "acc5", "mae"])
    assert m == {"acc2_has0": 1.0, "acc7": 1.0, "acc5": 1.0, "mae": 0.0}


@pytest.mark.filterwarnings("ignore:.*(constant|every label is 0):RuntimeWarning")
@settings(max_examples=20, deadline=None)
@given(scores, st.integers(0, 2**31 - 1))
def test_ranges_and_negation(labels, seed):
    preds = np.random.default_rng(seed).uniform(-3, 3, len(labels))
    m = compute_metrics(preds, labels)
    for name in ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "acc5"):
        assert 0.0 <= m[name] <= 1.0
    assert -1.0 <= m["corr"] <= 1.0
    # negating both sides flips no non-zero sign comparison and keeps |error|
    neg = compute_metrics(-preds, -np.asarray(labels), names=["mae", "acc2_non0"])
    assert neg["mae"] == pytest.approx(m["mae"])
    assert neg["acc2_non0"] == pytest.approx(m["acc2_non0"])  # preds are never exactly 0 here


@settings(max_examples=25, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=40))
def test_weighted_f1_matches_sklearn(pairs):
    from sklearn.metrics import f1_score

    true, pred = (np.array(x, dtype=bool) for x in zip(*pairs))
    assert metrics.weighted_f1(true, pred) == pytest.approx(
        f1_score(true, pred, average="weighted", zero_division=0), abs=1e-12)


def test_format_metric_scales_percentages_and_keeps_errors_raw():
    from fusionkit.metrics import METRICS, format_metric, get_metric

    assert format_metric("acc2_non0", 0.83125) == "83.1"
    assert format_metric("f1_has0", 0.5) == "50.0"
    assert format_metric("mae", 0.79251) == "0.793"
    assert format_metric("corr", -0.25) == "-0.250"
    assert format_metric("mae", 0.0125, signed=True) == "+0.013"
    assert format_metric("acc7", -0.012, signed=True) == "-1.2"
    for name in METRICS:  # every metric carries how it is shown, beside its label
        assert get_metric(name).scale in (1.0, 100.0) and get_metric(name).digits in (1, 3)
    with pytest.raises(KeyError, match="unknown metric 'acc9'"):
        format_metric("acc9", 0.5)
