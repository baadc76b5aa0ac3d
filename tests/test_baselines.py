"""The baseline models TFN(B), LMF(B), MulT, MISA(B) and MAG-BERT: build, forward, backward, ablations."""
from __future__ import annotations

from dataclasses import replace

import pytest
import torch

import fusionkit
from fusionkit.testing import random_batch, tiny_bert_config
from fusionkit.types import ModelOutput

D_A, D_V = 5, 7
MODELS = ("tfn", "lmf", "mult", "misa", "mag", "mag_mmsa", "iccn", "iccn_e2e")


def _model(name: str, **kw):
    torch.manual_seed(0)
    return fusionkit.create(name, bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V, **kw)


def _batch(**kw):
    return random_batch(batch_size=4, seq_len=9, d_acoustic=D_A, d_visual=D_V, **kw)


@pytest.fixture(scope="module", params=[m for m in MODELS if m in fusionkit.list_components("model")])
def built(request):
    return request.param, _model(request.param)


def test_forward_backward_shapes_and_train_defaults(built):
    name, model = built
    model.train()
    out = model(_batch())
    assert isinstance(out, ModelOutput)
    assert out.prediction.shape == (4,) and out.features.dim() == 2 and out.features.shape[0] == 4
    loss = (out.prediction - _batch().label).pow(2).mean() + sum(out.loss_terms.values())
    model.zero_grad()
    loss.backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert sum(g.abs().sum() for g in grads) > 0
    defaults = model.train_defaults  # what the engine reads (a variant's recipe lives on its instances)
    assert {"lr", "encoder_lr", "batch_size", "epochs", "warmup", "grad_clip"} <= set(defaults)


def test_text_only_ablation_runs(built):
    """Zeroed audio and visual (the single-modality ablation) still give finite predictions."""
    name, model = built
    batch = _batch()
    silent = replace(batch, acoustic=torch.zeros_like(batch.acoustic), visual=torch.zeros_like(batch.visual))
    model.eval()
    with torch.no_grad():
        out = model(silent)
    assert torch.isfinite(out.prediction).all() and torch.isfinite(out.features).all()


def test_eval_is_deterministic_and_padding_free(built):
    """In eval mode a sample's prediction does not depend on the other samples of the batch or on padding."""
    name, model = built
    model.eval()
    batch = _batch(lengths=[9, 5, 7, 4])
    with torch.no_grad():
        full = model(batch).prediction
        again = model(batch).prediction
        short = random_batch(batch_size=1, seq_len=5, d_acoustic=D_A, d_visual=D_V, lengths=[5])
        # sample 1 alone, cut to its own length
        single = replace(
            short,
            input_ids=batch.input_ids[1:2, :5],
            attention_mask=batch.attention_mask[1:2, :5],
            token_type_ids=batch.token_type_ids[1:2, :5],
            acoustic=batch.acoustic[1:2, :5],
            visual=batch.visual[1:2, :5],
        )
        alone = model(single).prediction
    assert torch.equal(full, again)
    assert torch.allclose(alone, full[1:2], atol=1e-5)


def test_tfn_prediction_is_in_label_range_and_fusion_size():
    model = _model("tfn", audio_hidden=3, video_hidden=2, text_out=4)
    assert model.fusion.out_dim == 4 * 3 * 5
    assert model.post_fusion_layer_1.in_features == 60
    with torch.no_grad():
        model.post_fusion_layer_3.bias.fill_(50.0)
        out = model.eval()(_batch()).prediction
    assert ((out > -3) & (out <= 3)).all() and torch.allclose(out, torch.full_like(out, 3.0))


def test_lmf_uses_rank_and_regresses_one_score():
    model = _model("lmf", rank=2, audio_hidden=3, video_hidden=4, text_out=5)
    assert [tuple(f.shape) for f in model.fusion.factors] == [(2, 4, 1), (2, 5, 1), (2, 6, 1)]


def test_mag_injection_layer_and_unaligned_error():
    model = _model("mag", injection_layer=2)
    assert model.encoder.injection_layer == 2
    batch = _batch()
    unaligned = replace(batch, acoustic_mask=batch.mask.clone())
    with pytest.raises(ValueError, match="aligned"):
        model(unaligned)
    with pytest.raises(ValueError, match="injection_layer"):
        _model("mag", injection_layer=9)


def test_train_defaults_are_valid_training_configs(built):
    config = pytest.importorskip("fusionkit.training.config")
    name, model = built
    cfg = config.TrainConfig().resolve(model.train_defaults)
    assert cfg.lr == model.train_defaults["lr"]


def test_misa_loss_terms_are_weighted_and_adversarial_option_trains_the_discriminator():
    model = _model("misa", diff_weight=0.0, recon_weight=2.0)
    out = model(_batch())
    assert set(out.loss_terms) == {"diff", "sim", "recon"}
    assert out.loss_terms["diff"].item() == 0.0 and out.loss_terms["recon"].item() > 0
    assert model(_batch(labels=False)).loss_terms == {}
    adversarial = _model("misa", use_cmd_sim=False)
    out = adversarial(_batch())
    out.loss_terms["sim"].backward()
    disc = adversarial.discriminator.net[0].weight.grad
    assert disc is not None and disc.abs().sum() > 0
    # gradient reversal: the discriminator descends the domain loss, the shared encoder ascends it
    assert adversarial.shared_private.shared[0].weight.grad.abs().sum() > 0


def test_mult_partial_mode_and_unaligned_sequences():
    model = _model("mult", targets=("l",), d_model=12, heads=2, layers=1).eval()
    assert set(model.mem) == {"l"} and set(model.trans) == {"l_with_a", "l_with_v"}
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
    assert out.features.shape == (4, 24)
    # unaligned audio: its own length and mask; padded audio steps do not matter
    g = torch.Generator().manual_seed(0)
    a_mask = torch.arange(13)[None, :] < torch.tensor([13, 6, 9, 2])[:, None]
    acoustic = torch.randn(4, 13, D_A, generator=g) * a_mask[..., None]
    unaligned = replace(batch, acoustic=acoustic, acoustic_mask=a_mask)
    noisy = replace(unaligned, acoustic=acoustic + 5.0 * ~a_mask[..., None])
    with torch.no_grad():
        assert torch.allclose(model(unaligned).prediction, model(noisy).prediction, atol=1e-5)
    with pytest.raises(ValueError, match="targets"):
        _model("mult", targets=("x",))


def test_mult_reads_the_last_real_step():
    """The authors' data are left-padded, so their index -1 is the last word; with right padding it is the last
    real step (here [SEP]), never a padded one."""
    from baselines.mult import last_real_step

    x = torch.arange(2 * 4, dtype=torch.float).reshape(2, 4, 1)
    mask = torch.tensor([[True, True, True, True], [True, True, False, False]])
    assert last_real_step(x, mask).flatten().tolist() == [3.0, 5.0]


def test_mult_wide_conv_kernel_is_padding_free():
    """With a temporal kernel wider than 1 (MMSA's grid has 3 and 5) a real step's projection must not read
    BERT's states at [PAD]: a sample's prediction does not depend on its batch's padding or on pad tokens."""
    model = _model("mult", d_model=12, heads=2, layers=1, kernel_size=3).eval()
    batch = _batch(lengths=[9, 5, 7, 4])
    pad = ~batch.mask
    other_pad_tokens = replace(batch, input_ids=torch.where(pad, torch.full_like(batch.input_ids, 1500),
                                                            batch.input_ids))
    alone = replace(batch, input_ids=batch.input_ids[1:2, :5], attention_mask=batch.attention_mask[1:2, :5],
                    token_type_ids=batch.token_type_ids[1:2, :5], acoustic=batch.acoustic[1:2, :5],
                    visual=batch.visual[1:2, :5], label=batch.label[1:2], ids=batch.ids[1:2])
    with torch.no_grad():
        full = model(batch).prediction
        assert torch.allclose(model(other_pad_tokens).prediction, full, atol=1e-6)
        assert torch.allclose(model(alone).prediction, full[1:2], atol=1e-5)


def test_wrong_feature_size_is_a_clear_error(built):
    name, model = built
    model.eval()
    batch = random_batch(batch_size=4, seq_len=9, d_acoustic=D_A + 1, d_visual=D_V)
    with pytest.raises(ValueError, match=str(D_A)):
        model(batch)


def test_single_sample_training_batch(built):
    """The last batch of an epoch may hold one sample (BatchNorm in TFN/LMF, batch moments in MISA)."""
    name, model = built
    model.train()
    out = model(random_batch(batch_size=1, seq_len=6, d_acoustic=D_A, d_visual=D_V))
    loss = out.prediction.sum() + sum(out.loss_terms.values())
    model.zero_grad()
    loss.backward()
    assert torch.isfinite(loss) and all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mag_pooling_follows_the_text_models_declaration(tmp_path):
    from fusionkit.encoders import bert

    assert bert.declared_pooling(None) == "mean"  # the bundled MiniLM is a mean-pooling sentence encoder
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "config.json").write_text("{}")
    assert bert.declared_pooling(plain) is None
    (plain / "1_Pooling").mkdir()
    (plain / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true}')
    assert bert.declared_pooling(plain) == "cls"
    assert _model("mag").pooling == "cls" and _model("mag").pooler is not None  # tiny config: authors' head
    mean = _model("mag", pooling="mean")
    assert mean.pooling == "mean" and mean.pooler is None
    with pytest.raises(ValueError, match="unknown pooling 'max'"):
        _model("mag", pooling="max")


def test_mag_mean_pooling_ignores_padding():
    model = _model("mag", pooling="mean").eval()
    batch = _batch()
    with torch.no_grad():
        out = model(batch)
        hidden = model.encoder(batch.input_ids, batch.mask, batch.token_type_ids,
                               injection_inputs={"acoustic": batch.acoustic, "visual": batch.visual}).last_hidden_state
    weights = batch.mask.float().unsqueeze(-1)
    torch.testing.assert_close(out.features, (hidden * weights).sum(1) / weights.sum(1))


@pytest.mark.parametrize("name, pooling", [("mag", "mean"), ("mag_mmsa", "cls")])
def test_mag_reloads_with_the_pooling_it_was_trained_with(tmp_path, name, pooling):
    """A text model declaring mean pooling: ``mag`` ("auto") trains with mean pooling, ``mag_mmsa`` with the [CLS]
    pooler; ``fusionkit.load`` rebuilds each from a bare config and must pick the same head."""
    import json

    from transformers import BertModel

    from fusionkit.encoders.bert import load_tokenizer
    from fusionkit.inference import load
    from fusionkit.training.build import model_description
    from fusionkit.training.checkpoint import save_model_weights

    local = tmp_path / "text_model"
    torch.manual_seed(0)
    BertModel(tiny_bert_config()).save_pretrained(local)
    load_tokenizer(None).save_pretrained(local)
    (local / "1_Pooling").mkdir()
    (local / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    kwargs = {"text_model": str(local), "d_acoustic": D_A, "d_visual": D_V}
    trained = fusionkit.create(name, **kwargs).eval()
    assert trained.pooling == pooling
    best = tmp_path / "best"
    best.mkdir()
    (best / "model.json").write_text(json.dumps(model_description(name, kwargs)))
    save_model_weights(trained, best / "model.safetensors")
    loaded = load(best)
    assert loaded.model.pooling == pooling
    batch = _batch()
    with torch.no_grad():
        torch.testing.assert_close(loaded(batch).prediction, trained(batch).prediction)
