"""A new baseline is one file plus an entry point: nothing in ``fusionkit/`` changes.

The test lays out an installed distribution (a module and its ``.dist-info`` with an ``entry_points.txt`` of the
group ``fusionkit``) in a temporary directory put on ``sys.path``. The module declares its model's slots and their
contracts itself (one from a reusable contract kind, one written in the file with its own dry run), takes the
shared text-model arguments, and is then listed, built, checked and trained at smoke size by ``benchmarks.run``.
"""
from __future__ import annotations

import json
import textwrap

import pytest
import torch

import benchmarks.run as bench
import fusionkit
from plugin_isolation import install_plugin

MODULE = textwrap.dedent('''
    """fk_pooled_baseline: masked mean of the text, of the audio and of the video, concatenated, then a head."""
    import torch
    from torch import nn

    import fusionkit
    from fusionkit.components.attention import masked_mean
    from fusionkit.slots import (PROBE_BATCH, Slot, SlotValue, build_block, head_slot, model_slots, probe_vec,
                                 shape_problem, text_encoder_slot)
    from fusionkit.text_model import TextModelArgs, text_model_factory
    from fusionkit.types import ModelOutput


    def _pool_fits(block, kw, ctx):  # this model's own contract, with its own dry run
        return shape_problem(block(probe_vec(kw["d_in"])), (PROBE_BATCH, kw["d_in"]))


    POOL_MIX = Slot("mix", "adapter", "identity_mix", ("d_in",), "forward(x (B, d_in))", "(B, d_in)",
                    dry_run=_pool_fits)


    class IdentityMix(nn.Module):
        def __init__(self, *, d_in: int):
            super().__init__()
            self.d_in = d_in

        def forward(self, x):
            return x


    class Pooled(nn.Module):
        def __init__(self, *, encoder, mix, head):
            super().__init__()
            self.encoder, self.mix, self.head = encoder, mix, head

        def forward(self, batch):
            mask = batch.attention_mask.bool()
            text = masked_mean(self.encoder(batch.input_ids, batch.attention_mask,
                                            batch.token_type_ids).last_hidden_state, mask)
            x = torch.cat([text, masked_mean(batch.acoustic, mask), masked_mean(batch.visual, mask)], -1)
            return ModelOutput(prediction=self.head(self.mix(x)), loss_terms={}, features=x)


    @model_slots("pooled", text_encoder_slot(), POOL_MIX, head_slot())
    @text_model_factory
    def build_pooled(text: TextModelArgs, *, dropout: float = 0.1, mix: SlotValue = "identity_mix",
                     head: SlotValue = "regression_head") -> Pooled:
        """Pooled: masked means of the three modalities, concatenated, and a regression head."""
        encoder = text.build_encoder(build_pooled)
        d_in = encoder.hidden_size + text.d_acoustic + text.d_visual
        return Pooled(encoder=encoder, mix=build_block(build_pooled, "mix", mix, d_in=d_in),
                      head=build_block(build_pooled, "head", head, d_in=d_in, options=dict(dropout=dropout)))


    @fusionkit.hookimpl
    def fusionkit_register_components(registry):
        registry.add("identity_mix", IdentityMix, kind="adapter")
        registry.add("pooled", build_pooled, kind="model")
''')
SMOKE = ["--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--max-samples", "16",
         "--tiny-bert", "--quiet", "--threads", "1"]


@pytest.fixture
def new_baseline(tmp_path, monkeypatch):
    site = install_plugin(tmp_path / "site", "fk_pooled_baseline", MODULE, entry_point="pooled_baseline")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("FUSIONKIT_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("FUSIONKIT_DISABLE_PLUGINS", raising=False)
    fusionkit.reset_registry()
    yield
    import sys

    sys.modules.pop("fk_pooled_baseline", None)
    fusionkit.reset_registry()


def test_new_baseline_is_listed_with_its_own_slots(new_baseline):
    from fusionkit.slots import slot_defaults, slots_of

    spec = fusionkit.get_registry().get("pooled")
    assert (spec.kind, spec.plugin) == ("model", "pooled_baseline")
    assert slot_defaults("pooled") == {"text_encoder": "bert_encoder", "mix": "identity_mix", "head": "regression_head"}
    assert slots_of("pooled")["mix"].dry_run.__module__ == "fk_pooled_baseline"
    # the contract written in the plug-in's file rejects a block that does not fit, naming the block
    from fusionkit.slots import SlotError
    from fusionkit.testing import tiny_bert_config

    with pytest.raises(SlotError, match="pooled.mix: block 'regression_head'.*is a 'head'"):
        fusionkit.create("pooled", bert_config=tiny_bert_config(), mix="regression_head")


def test_new_baseline_trains_through_benchmarks_run(new_baseline, tmp_path):
    out = tmp_path / "out"
    assert bench.main(["--models", "pooled,text", *SMOKE, "--out", str(out)]) == 0
    run = json.loads((out / "pooled/seed0/run.json").read_text())
    assert run["composition"]["mix"] == {"block": "identity_mix", "plugin": "pooled_baseline", "args": {}}
    results = json.loads((out / "results.json").read_text())
    assert {"pooled", "text"} <= set(results["config"]["variants"])
    model = fusionkit.load(out / "pooled/seed0").model
    assert type(model).__name__ == "Pooled" and torch.isfinite(next(model.parameters())).all()
