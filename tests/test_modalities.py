"""Absent modalities: every model on every subset (t,a / t,v / t), its own way; unchanged with all present;
``--modalities`` in ``benchmarks.run``."""
from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch

import benchmarks.run as bench
import fusionkit
from fusionkit.testing import random_batch, tiny_bert_config

D_A, D_V = 5, 7
MODELS = ("mhmf", "mhmf_small", "mag", "mag_mmsa", "misa", "mult", "lmf", "tfn", "iccn", "iccn_e2e", "text")
SUBSETS = (("t", "a"), ("t", "v"), ("t",))
# models that fuse or pair modalities refuse text alone (nothing to fuse); ``text`` and ``mhmf`` run on it
FROZEN_TEXT = {"iccn"}  # a frozen text encoder by default (the authors' precomputed BERT vectors)
TEXT_ALONE_REFUSED = {"mag", "mag_mmsa", "mult", "lmf", "tfn", "iccn", "iccn_e2e"}
SMOKE = ["--dataset", "synthetic", "--seeds", "1", "--epochs", "1", "--batch-size", "8", "--max-samples", "16",
         "--tiny-bert", "--quiet"]


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def _build(name, seed=0, **kw):
    torch.manual_seed(seed)
    return fusionkit.create(name, bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V, **kw)


def _batch(modalities=("t", "a", "v"), seed=0):
    batch = random_batch(batch_size=4, seq_len=8, d_acoustic=D_A, d_visual=D_V, seed=seed)
    return replace(batch, acoustic=batch.acoustic if "a" in modalities else None,
                   visual=batch.visual if "v" in modalities else None)


def _run(model, batch, seed=1):
    torch.manual_seed(seed)
    model.train()
    out = model(batch)
    return out, out.prediction.sum() + sum(out.loss_terms.values())


@pytest.mark.parametrize("name", MODELS)
def test_all_modalities_explicit_is_bit_identical_to_the_default_build(name):
    default, explicit = _build(name), _build(name, modalities=("t", "a", "v"))
    sd_a, sd_b = default.state_dict(), explicit.state_dict()
    assert list(sd_a) == list(sd_b) and all(torch.equal(sd_a[k], sd_b[k]) for k in sd_a)
    (out_a, loss_a), (out_b, loss_b) = _run(default, _batch()), _run(explicit, _batch())
    assert torch.equal(out_a.prediction, out_b.prediction) and torch.equal(out_a.features, out_b.features)
    assert out_a.loss_terms.keys() == out_b.loss_terms.keys()
    assert all(torch.equal(out_a.loss_terms[k], out_b.loss_terms[k]) for k in out_a.loss_terms)
    loss_a.backward()
    loss_b.backward()
    for (k, p), q in zip(default.named_parameters(), explicit.parameters()):
        assert (p.grad is None) == (q.grad is None) and (p.grad is None or torch.equal(p.grad, q.grad)), k


def test_full_data_passes_no_modalities_argument():
    """With every modality the factories get exactly the arguments they got before ``modalities`` existed."""
    from fusionkit.data import load_splits
    from fusionkit.training.engine import _build_kwargs

    data = load_splits("synthetic", max_samples=8)
    assert "modalities" not in _build_kwargs(data, {}, "tfn")
    assert _build_kwargs(data.select_modalities("t,a"), {}, "tfn")["modalities"] == ("t", "a")


@pytest.mark.parametrize("subset", SUBSETS, ids=lambda s: ",".join(s))
@pytest.mark.parametrize("name", MODELS)
def test_every_model_on_every_subset_runs_or_refuses_before_training(name, subset):
    if subset == ("t",) and name in TEXT_ALONE_REFUSED:
        with pytest.raises(ValueError, match=r"text alone .*'text'"):
            _build(name, modalities=subset)
        return
    model = _build(name, modalities=subset)
    out, loss = _run(model, _batch(subset))
    assert out.prediction.shape == (4,) and torch.isfinite(out.prediction).all()
    loss.backward()
    trained = model.parameters() if name in FROZEN_TEXT else model.encoder.parameters()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trained)
    absent = {"a", "v"} - set(subset)
    words = {"a": ("audio", "acoustic", "w_a", "w_ha"), "v": ("video", "vision", "visual", "w_v", "w_hv")}
    for key in model.state_dict():  # nothing of an absent modality is built
        parts = set(key.lower().replace("_with_", ".").split("."))
        assert not any(w in parts or key.lower().startswith(w + "_") for m in absent for w in words[m]), key
    if name != "text" and len(subset) > 1:  # a batch lacking a modality the model was built with: one clear error
        with pytest.raises(ValueError, match="built (with|for)"):
            _build(name, modalities=("t", "a", "v"))(_batch(subset))


def test_tfn_absent_factor_is_the_constant_one():
    """TFN on (v, t) is the slice of the 3-way product at the audio index of the prepended 1."""
    from fusionkit.components.tensor_fusion import TensorFusion

    g = torch.Generator().manual_seed(0)
    a, v, t = torch.randn(3, 2, generator=g), torch.randn(3, 3, generator=g), torch.randn(3, 4, generator=g)
    full = TensorFusion(dims=(2, 3, 4))(a, v, t).reshape(3, 3, 4, 5)
    pair = TensorFusion(dims=(3, 4))(v, t).reshape(3, 4, 5)
    assert torch.equal(full[:, 0], pair)
    model = _build("tfn", modalities=("t", "v"))
    assert model.audio_subnet is None and model.fusion.dims == (16, 64)
    lmf = _build("lmf", modalities=("t", "a"))
    assert lmf.video_subnet is None and len(lmf.fusion.factors) == 2 and lmf.fusion.dims == (32, 64)


def test_mult_drops_the_crossmodal_pairs_of_an_absent_modality():
    model = _build("mult", modalities=("t", "a"))
    assert set(model.trans) == {"l_with_a", "a_with_l"} and set(model.proj) == {"l", "a"}
    assert model.targets == ("l", "a") and all(m.dim == 30 for m in model.mem.values())
    with pytest.raises(ValueError, match="include"):
        _build("mult", modalities=("t", "a"), targets=("l", "v"))


def test_misa_drops_the_losses_of_an_absent_modality():
    model = _build("misa", modalities=("t", "a"))
    assert model.visual_encoder is None and model.shared_private.modalities == ("t", "a")
    model.train()
    batch = _batch(("t", "a"))
    torch.manual_seed(1)
    out = model(batch)
    assert set(out.loss_terms) == {"diff", "sim", "recon"} and out.features.shape == (4, 4 * 128)
    # the similarity term is the CMD of the one remaining shared pair, weighted by sim_weight 1
    captured = {}
    model.shared_private.register_forward_hook(lambda _m, _i, o: captured.setdefault("sp", o))
    torch.manual_seed(1)
    out = model(batch)
    s_t, s_a = captured["sp"].shared
    assert torch.allclose(out.loss_terms["sim"], model.cmd(s_t, s_a))
    text_only = _build("misa", modalities=("t",))
    text_only.train()
    assert set(text_only(_batch(("t",))).loss_terms) == {"diff", "recon"}


def test_mag_gate_without_vision_is_the_acoustic_term_alone():
    model = _build("mag", modalities=("t", "a"))
    gate = model.encoder.injection
    assert gate.W_hv is None and gate.W_v is None and gate.d_visual == 0
    z = torch.randn(2, 3, 32)
    a = torch.randn(2, 3, D_A)
    h = torch.relu(gate.W_ha(torch.cat([a, z], -1))) * gate.W_a(a)
    alpha = (z.norm(dim=-1) / (h.norm(dim=-1) + gate.eps) * gate.beta_shift).clamp(max=1.0)
    assert torch.allclose(gate.shift(z, a, None), alpha[..., None] * h)


def test_iccn_e2e_keeps_one_text_based_embedding_and_drops_dcca():
    model = _build("iccn_e2e", modalities=("t", "v"))
    assert model.audio_encoder is None and model.audio_cnn is None
    out, _ = _run(model, _batch(("t", "v")))
    assert not out.loss_terms and out.features.shape == (4, 8 + 32)  # [e_v; text], no DCCA partner
    full, _ = _run(_build("iccn_e2e"), _batch())
    assert set(full.loss_terms) == {"dcca"} and full.features.shape == (4, 2 * 8 + 32)


def test_mhmf_drops_the_branch_and_its_gate():
    model = _build("mhmf", modalities=("t", "a"))
    assert model.vision_adapter is None and len(model.vision_stages) == 0 and model.gated_fusion.gate_vision is None
    out, _ = _run(model, _batch(("t", "a")))
    assert out.loss_terms and all(k.startswith("restitution/audio/") for k in out.loss_terms)
    text_only = _build("mhmf", modalities=("t",))
    assert text_only.gated_fusion is None and text_only.restitution_loss is None
    out, _ = _run(text_only, _batch(("t",)))
    assert out.features.shape == (4, 32) and not out.loss_terms  # the head reads H_t^L alone


# ------------------------------------------------------------------------------------------ benchmarks.run


@pytest.mark.slow
def test_run_with_modalities_records_and_says_what_was_used(tmp_path):
    out = tmp_path / "ta"
    assert bench.main(["--models", "tfn,mhmf", *SMOKE, "--modalities", "t,a", "--out", str(out)]) == 0
    md = (out / "results.md").read_text()
    assert md.startswith("# Results on synthetic — simulated: text, acoustic; not used: visual (simulated)")
    results = json.loads((out / "results.json").read_text())
    assert results["modalities"] == "t,a" and results["channels"]["visual"] == "simulated"
    assert json.loads((out / "tfn/seed0/run.json").read_text())["modalities"] == "t,a"
    model_json = json.loads((out / "tfn/seed0/best/model.json").read_text())
    assert model_json["kwargs"]["modalities"] == ["t", "a"] and model_json["d_visual"] == 0
    predictor = fusionkit.load(out / "tfn/seed0")  # rebuilt on (t, a); visual features are refused, not ignored
    assert isinstance(predictor.predict("the movie was great", acoustic=torch.ones(4, 74).numpy()), float)
    with pytest.raises(ValueError, match="trained without the visual modality"):
        predictor.predict("so boring", acoustic=torch.ones(2, 74).numpy(), visual=torch.ones(2, 47).numpy())


@pytest.mark.slow
def test_run_with_all_modalities_named_is_identical_to_the_default(tmp_path):
    assert bench.main(["--models", "lmf", *SMOKE, "--out", str(tmp_path / "a")]) == 0
    assert bench.main(["--models", "lmf", *SMOKE, "--modalities", "t,a,v", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "a/results.json").read_bytes() == (tmp_path / "b/results.json").read_bytes()


def test_run_refuses_before_training(tmp_path, refusal):
    line = refusal(["--models", "text,tfn", *SMOKE, "--modalities", "t", "--out", str(tmp_path / "t")])
    assert "tfn on modalities t" in line and "text alone" in line
    assert not (tmp_path / "t/text").exists()  # nothing was trained, not even the model that could run
    line = refusal(["--models", "text", *SMOKE, "--modalities", "a,v", "--out", str(tmp_path / "x")])
    assert "--modalities a,v" in line and "lacks t" in line


# ------------------------------------------------------------------------------------------ channel kinds
def _info(**kw):
    from fusionkit.data.dataset import DatasetInfo

    base = dict(name="mosi-sim", format="segments_csv", d_acoustic=74, d_visual=47, simulated=True, description="")
    return DatasetInfo(**{**base, **kw})


def test_channel_kinds_without_a_record_keep_the_text_from_file():
    """Data cached before channels were recorded has ``channels == {}``: ``simulated`` then refers to the nonverbal
    channels only (mosi-sim's text is read from its file), a size of 0 is absent, and only ``synthetic`` has
    simulated text. A ``"real"`` recorded by an earlier version reads as ``"file"``."""
    assert _info().channel_kinds() == {"text": "file", "acoustic": "simulated", "visual": "simulated"}
    assert _info(d_visual=0, simulated=False).channel_kinds() == {"text": "file", "acoustic": "file",
                                                                  "visual": "absent"}
    assert _info(format="synthetic").channel_kind("text") == "simulated"
    assert _info().channel_summary() == "text from file, acoustic simulated (74-d), visual simulated (47-d)"
    recorded = _info(channels={"text": "file", "acoustic": "file", "visual": "absent"}, d_visual=0, simulated=False)
    assert recorded.channel_kinds() == recorded.channels and recorded.modalities == ("t", "a")
    legacy = _info(channels={"text": "real", "acoustic": "real", "visual": "absent"}, d_visual=0, simulated=False)
    assert legacy.channel_kinds() == recorded.channels


def test_selecting_modalities_of_unrecorded_data_keeps_each_kind():
    from fusionkit.data.dataset import LoadedData

    selected = LoadedData(splits={}, info=_info()).select_modalities("t,a")  # no splits: only the info changes
    assert selected.info.channel_kinds() == {"text": "file", "acoustic": "simulated", "visual": "absent"}
    assert selected.info.modalities == ("t", "a")
    # benchmarks.run records the dropped channel's own kind, so the header says "not used", not "from file"
    header = bench.channel_title({**selected.info.channel_kinds(), "visual": "simulated"}, "t,a", simulated=True)
    assert header == "from file: text; simulated: acoustic; not used: visual (simulated)"


def test_batch_require_names_the_model_the_missing_channel_and_the_fix():
    batch = _batch(("t", "a"))
    batch.require(("t", "a"), model="tfn")  # present: no error
    with pytest.raises(ValueError) as info:
        batch.require(("v", "a", "t"), model="tfn")
    assert str(info.value) == ("tfn was built with modalities t,a,v but the batch has no visual features; build it "
                               "with modalities=t,a")
    with pytest.raises(ValueError, match=r"has no acoustic or visual features; build it with modalities=t$"):
        _batch(("t",)).require(("t", "a", "v"), model="mhmf")


@pytest.mark.parametrize("name", [m for m in MODELS if m not in ("text", "mag", "mag_mmsa")])
def test_a_batch_lacking_a_built_modality_is_refused_before_the_encoder_runs(name, monkeypatch):
    model = _build(name, modalities=("t", "a", "v"))
    monkeypatch.setattr(model.encoder, "forward", lambda *a, **k: pytest.fail("the encoder ran"))
    with pytest.raises(ValueError, match=r"was built with modalities t,a,v but the batch has no visual features"):
        model(_batch(("t", "a")))
