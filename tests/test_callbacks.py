"""Trainer callbacks: ``on_epoch_end`` sees each finished epoch, and ``should_stop`` stops like early stopping."""
from __future__ import annotations

import json

import pytest

from fusionkit.testing import tiny_bert_config
from fusionkit.training import TrainConfig, TrainerCallback, train_and_evaluate

TINY = {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)}


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0, cache=False)


class StopAfter(TrainerCallback):
    def __init__(self, epochs: int):
        self.epochs, self.seen = epochs, []

    def on_epoch_end(self, state):
        self.seen.append((state.epoch, state.global_step, len(state.history), state.best_epoch))
        state.should_stop = state.epoch >= self.epochs


def test_callback_sees_every_epoch_and_stops_the_run(data, tmp_path):
    cfg = dict(epochs=3, batch_size=8, lr=3e-3, encoder_lr=1e-3, quiet=True, num_threads=1, patience=10)
    full = train_and_evaluate("text", data, TrainConfig(**cfg), TINY)
    stopper = StopAfter(1)
    stopped = train_and_evaluate("text", data, TrainConfig(**cfg, out_dir=tmp_path), TINY, callbacks=[stopper])
    assert stopper.seen == [(1, 4, 1, 1)]  # 32 examples in batches of 8: 4 steps per epoch
    assert len(stopped.history) == 1 and len(full.history) == 3
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in (stopped.history[0], full.history[0])]
    assert strip[0] == strip[1]  # a callback observes; it does not change the computation
    state = json.loads((tmp_path / "last" / "state.json").read_text())
    assert state["run"]["stopped_early"] is True  # a resumed run does not continue past the stop
