"""``benchmarks.timing_toy``: the toy's rule (cue position decides the target) and that tfn, which averages the
acoustic stream over time, cannot beat chance on it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import timing_toy as toy


@pytest.mark.parametrize("fixed", [True, False])
def test_the_target_is_the_half_that_holds_the_cue(fixed):
    data = toy.make(200, strength=50.0, fixed_length=fixed, seed=3)
    assert torch.equal(data["ids"], toy.make(200, strength=50.0, fixed_length=fixed, seed=3)["ids"])
    for i in range(200):
        n = int(data["mask"][i].sum()) - 2
        assert not fixed or n == 12
        cued = np.flatnonzero(data["acoustic"][i, 1:n + 1, :toy.CUE_DIMS].mean(-1).numpy() > 25)  # word indices
        assert len(cued) == toy.CUE_WORDS
        first = bool((cued < n // 2).all())
        assert first or bool((cued >= n // 2).all())
        assert data["target"][i] == (-1.5 if first else 1.5)
    assert 0.35 < float((data["target"] < 0).float().mean()) < 0.65
    assert not data["acoustic"][~data["mask"]].any()  # padding is zero


def test_batches_have_no_nonverbal_row_at_cls_and_sep():
    data = toy.make(8, strength=1.0, fixed_length=False, seed=0)
    batch = toy.batch_of(data, torch.arange(8))
    last = batch.attention_mask.sum(1) - 1
    assert not batch.acoustic[:, 0].any() and not batch.acoustic[torch.arange(8), last].any()


def test_a_time_average_cannot_read_the_position():
    """tfn sees the acoustic stream through its mean over time, which is the same for either half: chance."""
    row = toy.run("tfn", strength=4.0, fixed_length=True, steps=60, seed=0, lr=1e-3)
    assert 40 <= row["test_acc2"] <= 60, row


def test_irony_rule_negates_the_text_value_where_the_cue_is():
    data = toy.make(300, strength=50.0, fixed_length=False, seed=1, rule="irony")
    for i in range(300):
        n = int(data["mask"][i].sum()) - 2
        y = 1.5 if int(data["ids"][i, 1]) == toy.POSITIVE else -1.5
        assert int(data["ids"][i, 1]) in (toy.POSITIVE, toy.NEGATIVE)
        cued = int((data["acoustic"][i, 1:n + 1, :toy.CUE_DIMS].mean(-1) > 25).sum())
        assert cued in (0, toy.CUE_WORDS)
        assert data["target"][i] == (-y if cued else y)
    with pytest.raises(ValueError, match="rule must be"):
        toy.make(2, strength=1.0, fixed_length=True, seed=0, rule="xor")
