"""bert_encoder: hidden states, modes, injection hook, and the no-download error."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import fusionkit
from fusionkit.encoders import TextModelNotFound, build_bert_encoder, load_tokenizer, resolve_text_model
from fusionkit.testing import random_batch, tiny_bert_config


def _run(encoder, batch, **kw):
    return encoder(batch.input_ids, batch.mask, batch.token_type_ids, **kw)


def test_bundled_minilm_loads_and_returns_every_layer():
    encoder = fusionkit.create("bert_encoder")
    tok = load_tokenizer()
    enc = tok(["what a wonderful movie", "boring"], padding=True, return_tensors="pt")
    out = encoder(enc["input_ids"], enc["attention_mask"].bool(), enc["token_type_ids"])
    assert (encoder.num_layers, encoder.hidden_size) == (6, 384)
    assert len(out.hidden_states) == 7
    assert all(h.shape == (2, enc["input_ids"].shape[1], 384) for h in out.hidden_states)
    assert torch.equal(out.last_hidden_state, out.hidden_states[-1])
    # pretrained weights: identical sentences give identical vectors, different ones do not
    cos = torch.cosine_similarity(out.hidden_states[-1][0, 0], out.hidden_states[-1][1, 0], dim=0)
    assert cos < 0.999


def test_frozen_mode_has_no_trainable_parameters_and_stays_in_eval():
    encoder = build_bert_encoder(config=tiny_bert_config(), mode="frozen")
    encoder.train()
    assert not any(p.requires_grad for p in encoder.parameters())
    assert not encoder.model.training
    batch = random_batch()
    assert not _run(encoder, batch).last_hidden_state.requires_grad


def test_random_mode_reinitialises_pretrained_weights():
    pretrained = build_bert_encoder(mode="finetune")
    random = build_bert_encoder(mode="random")
    a = pretrained.model.embeddings.word_embeddings.weight
    b = random.model.embeddings.word_embeddings.weight
    assert a.shape == b.shape and not torch.allclose(a, b)


class AddOffset(nn.Module):
    def forward(self, hidden, offset):
        return hidden + offset


@pytest.mark.parametrize("layer", [0, 2, 4])
def test_injection_hook_transforms_hidden_states_at_its_layer(layer):
    torch.manual_seed(0)
    plain = build_bert_encoder(config=tiny_bert_config(num_layers=4)).eval()
    injected = build_bert_encoder(config=tiny_bert_config(num_layers=4), injection=AddOffset(), injection_layer=layer).eval()
    injected.model.load_state_dict(plain.model.state_dict())
    batch = random_batch()
    ref = _run(plain, batch).hidden_states
    out = _run(injected, batch, injection_inputs={"offset": torch.tensor(1.0)}).hidden_states
    for i in range(layer):
        torch.testing.assert_close(out[i], ref[i])
    torch.testing.assert_close(out[layer], ref[layer] + 1.0)
    if layer < 4:
        assert not torch.allclose(out[layer + 1], ref[layer + 1])
    with pytest.raises(ValueError, match="pass injection_inputs"):
        _run(injected, batch)


class Scale(nn.Module):
    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.tensor(2.0))

    def forward(self, hidden):
        return hidden * self.weight


def test_frozen_encoder_still_trains_its_injection_module():
    encoder = build_bert_encoder(config=tiny_bert_config(), mode="frozen", injection=Scale(), injection_layer=1)
    out = _run(encoder, random_batch(), injection_inputs={}).last_hidden_state
    out.sum().backward()
    assert encoder.injection.weight.grad is not None and encoder.injection.weight.grad != 0
    assert all(p.grad is None for p in encoder.model.parameters())


def test_bad_arguments_give_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown encoder mode 'thawed'"):
        build_bert_encoder(config=tiny_bert_config(), mode="thawed")
    with pytest.raises(ValueError, match="injection_layer=9 is outside"):
        build_bert_encoder(config=tiny_bert_config(num_layers=4), injection=AddOffset(), injection_layer=9)
    with pytest.raises(TextModelNotFound, match="no download"):
        resolve_text_model("no-such-org/no-such-bert")
    with pytest.raises(TextModelNotFound, match="config.json"):
        resolve_text_model(tmp_path)
    assert resolve_text_model(None) == resolve_text_model("default")
