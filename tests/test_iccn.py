"""iccn as its first author's code builds it: CNN sizes, the top-k DCCA loss, the two engine stages, modalities."""
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

import fusionkit
from fusionkit.components.conv import strided_cnn_flatten_size
from fusionkit.testing import random_batch, tiny_bert_config

D_A, D_V = 5, 7


def _model(**kw):
    torch.manual_seed(0)
    return fusionkit.create("iccn", bert_config=tiny_bert_config(), d_acoustic=D_A, d_visual=D_V, **kw)


def _batch(batch_size=6, **kw):
    return random_batch(batch_size=batch_size, seq_len=9, d_acoustic=D_A, d_visual=D_V, **kw)


# -- the CNN ----------------------------------------------------------------------------------------------
# the authors' fc_dim constants: MY(768, 74, 35, 50, 6303, …) for 768 × 50, Conv_CCA's ConvNet(fc_dim=9741 / 4584)
# for raw 768 × 74 / 768 × 35 products; Conv_CCAA's 6303 is also the size of a raw 768 × 47 (MOSI FACET) product
@pytest.mark.parametrize("height, width, fc_dim", [(768, 50, 6303), (768, 74, 9741), (768, 35, 4584),
                                                   (768, 47, 6303)])
def test_cnn_flatten_size_matches_the_authors_fc_dim(height, width, fc_dim):
    assert strided_cnn_flatten_size(height, width) == fc_dim
    cnn = fusionkit.create("iccn_product_cnn", height=height, width=width, d_out=50).eval()
    assert cnn.fc_dim == fc_dim and cnn.fc.in_features == fc_dim
    with torch.no_grad():
        assert cnn.layers(torch.zeros(1, 1, height, width)).numel() == fc_dim  # what the layers really give
        assert cnn(torch.zeros(2, height, width)).shape == (2, 50)


def test_cnn_layers_are_the_authors():
    cnn = fusionkit.create("iccn_product_cnn", height=32, width=50, d_out=50)
    kinds = [type(m).__name__ for m in cnn.layers]
    assert kinds == ["Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d"] * 2
    for conv in (cnn.layers[0], cnn.layers[4]):
        assert conv.out_channels == 3 and conv.kernel_size == (3, 3) and conv.stride == (2, 2)
        assert conv.padding == (1, 1) and conv.bias is not None
    assert cnn.layers[3].kernel_size == 2 and cnn.layers[3].stride == 1
    with pytest.raises(ValueError, match="too small for 2 stages"):
        fusionkit.create("iccn_product_cnn", height=4, width=50, d_out=5)
    with pytest.raises(ValueError, match=r"built for \(B, 32, 50\) matrices"):
        cnn(torch.zeros(2, 50, 32))


def test_projected_lstm_is_a_bias_free_1x1_projection_then_the_last_hidden_state():
    block = fusionkit.create("projected_lstm", d_in=4, d_hidden=6).eval()
    assert block.proj.bias is None and block.proj.kernel_size == (1,) and block.rnn.hidden_size == 6
    assert not block.rnn.bidirectional and block.rnn.num_layers == 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 5, 4, generator=g)
    with torch.no_grad():
        projected = x @ block.proj.weight[:, :, 0].T  # kernel 1, no bias: a matrix product per step
        _, (h, _) = block.rnn(projected)
        assert torch.allclose(block(x, torch.ones(1, 5, dtype=torch.bool)), h[-1], atol=1e-6)
        padded = torch.cat([x, torch.randn(1, 3, 4, generator=g)], dim=1)
        mask = torch.tensor([[True] * 5 + [False] * 3])
        assert torch.allclose(block(padded, mask), h[-1], atol=1e-6)  # padding changes nothing


def test_vector_outer_product_by_hand():
    t = torch.tensor([[1.0, 2.0]])
    a = torch.tensor([[3.0, 0.0, -1.0]])
    assert torch.equal(fusionkit.create("vector_outer_product")(t, a), torch.tensor([[[3.0, 0.0, -1.0],
                                                                                       [6.0, 0.0, -2.0]]]))


# -- the DCCA objective -----------------------------------------------------------------------------------
def _authors_formula(h1: np.ndarray, h2: np.ndarray, k: int, r: float = 1e-3) -> float:
    """The eigendecomposition form of their objectives.py, in numpy float64: −Σ √(top-k eig(TᵀT))."""
    n = h1.shape[0]
    a, b = h1 - h1.mean(0), h2 - h2.mean(0)
    s11 = a.T @ a / (n - 1) + r * np.eye(a.shape[1])
    s22 = b.T @ b / (n - 1) + r * np.eye(b.shape[1])
    s12 = a.T @ b / (n - 1)

    def root_inv(s):
        d, v = np.linalg.eigh(s)
        return v @ np.diag(d ** -0.5) @ v.T

    t = root_inv(s11) @ s12 @ root_inv(s22)
    eig = np.sort(np.linalg.eigvalsh(t.T @ t))[::-1][:k]
    return -float(np.sqrt(eig).sum())


@pytest.mark.parametrize("k", [1, 2, 3])  # of 4 correlations
def test_top_k_dcca_loss_equals_the_closed_form(k):
    g = torch.Generator().manual_seed(0)
    h1 = torch.randn(9, 4, generator=g, dtype=torch.float64)
    h2 = 0.5 * h1 @ torch.randn(4, 4, generator=g, dtype=torch.float64) + torch.randn(9, 4, generator=g,
                                                                                    dtype=torch.float64)
    loss = fusionkit.create("dcca_loss", r1=1e-3, r2=1e-3, top_k=k, eps=1e-9)(h1, h2)
    # dcca_loss adds eps (1e-9) to the covariance diagonals where their code only filters eigenvalues below it:
    # a relative difference of order eps / r = 1e-6 at most
    assert loss.item() == pytest.approx(_authors_formula(h1.numpy(), h2.numpy(), k), rel=1e-6)
    assert loss.item() != pytest.approx(_authors_formula(h1.numpy(), h2.numpy(), k + 1), rel=1e-3)


def test_top_k_dcca_loss_of_linearly_related_views_is_minus_k():
    g = torch.Generator().manual_seed(1)
    h1 = torch.randn(12, 3, generator=g, dtype=torch.float64)
    h2 = h1 @ torch.tensor([[2.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 3.0]], dtype=torch.float64)
    # unregularised, every canonical correlation of an invertible linear map is 1
    loss = fusionkit.create("dcca_loss", r1=0.0, r2=0.0, top_k=2)(h1, h2)
    assert loss.item() == pytest.approx(-2.0, abs=1e-6)


def test_model_uses_the_authors_dcca_settings():
    model = _model()
    assert (model.cca_loss.r1, model.cca_loss.r2, model.cca_loss.eps, model.cca_loss.top_k) == (1e-3, 1e-3, 1e-9, 20)
    assert model.cca_loss.mean is False
    with pytest.raises(ValueError, match="cca_top_k=60 exceeds the 50 canonical correlations"):
        _model(cca_top_k=60)


# -- stages on the model ----------------------------------------------------------------------------------
def test_dcca_stage_trains_the_embeddings_only():
    model = _model()
    assert [s.name for s in model.stages] == ["dcca", "downstream"]
    model.enter_stage("dcca")
    model.train()
    out = model(_batch())
    assert set(out.loss_terms) == {"dcca"} and torch.equal(out.prediction, torch.zeros(6))
    assert out.diagnostics["dcca"] == out.loss_terms["dcca"].detach()
    assert -20.0 <= out.loss_terms["dcca"].item() <= 0.0  # minus a sum of 20 correlations in [0, 1]
    out.loss_terms["dcca"].backward()
    for name, p in model.named_parameters():
        trained = name.split(".")[0] in ("audio_encoder", "video_encoder", "audio_cnn", "video_cnn")
        assert p.requires_grad == trained, name  # the frozen text encoder and the regressor are not trained
        assert (p.grad is not None and p.grad.abs().sum() > 0) == trained, name
    # one sample: a zero term that keeps the graph (no covariance from one sample)
    single = model(_batch(batch_size=1))
    assert single.loss_terms["dcca"].item() == 0.0 and single.loss_terms["dcca"].requires_grad


def test_downstream_stage_freezes_the_embeddings_and_their_batchnorm():
    model = _model()
    model.enter_stage("downstream")
    model.train()
    assert model.head.training and not model.audio_cnn.training and not model.video_encoder.training
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = model(_batch())
    assert not out.loss_terms and out.features.shape == (6, 2 * 50 + tiny_bert_config().hidden_size)
    (out.prediction.sum()).backward()
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("head."))
    assert all(p.grad is not None for p in model.head.parameters())
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # BatchNorm running statistics included
    with pytest.raises(ValueError, match="not 'joint'"):
        model.enter_stage("joint")


def test_unaligned_audio_and_video_with_their_own_lengths_and_padding():
    model = _model().eval()
    batch = _batch(batch_size=3)
    g = torch.Generator().manual_seed(2)
    audio, video = torch.randn(3, 6, D_A, generator=g), torch.randn(3, 4, D_V, generator=g)
    a_mask = torch.tensor([[True] * 6, [True] * 3 + [False] * 3, [True] * 5 + [False]])
    v_mask = torch.tensor([[True] * 4, [True] * 2 + [False] * 2, [True] * 4])
    unaligned = replace(batch, acoustic=audio, visual=video, acoustic_mask=a_mask, visual_mask=v_mask)
    # the same utterances padded further (and with other values at the padded steps)
    padded = replace(unaligned, acoustic=torch.cat([audio * a_mask[..., None], torch.randn(3, 2, D_A, generator=g)], 1),
                     acoustic_mask=torch.cat([a_mask, torch.zeros(3, 2, dtype=torch.bool)], 1))
    with torch.no_grad():
        out, out_padded = model(unaligned), model(padded)
    assert out.prediction.shape == (3,)
    assert torch.allclose(out.features, out_padded.features, atol=1e-6)
    assert torch.allclose(out.prediction, out_padded.prediction, atol=1e-6)


# -- absent modalities -------------------------------------------------------------------------------------
@pytest.mark.parametrize("present, kept", [(("t", "a"), "audio"), (("t", "v"), "video")])
def test_an_absent_modality_drops_its_branch_and_the_dcca_stage(present, kept):
    model = _model(modalities=present)
    dropped = "video" if kept == "audio" else "audio"
    assert getattr(model, f"{dropped}_encoder") is None and getattr(model, f"{dropped}_cnn") is None
    assert [s.name for s in model.stages] == ["downstream"]  # no DCCA pair
    batch = _batch()
    batch = replace(batch, **({"visual": None} if dropped == "video" else {"acoustic": None}))
    model.enter_stage("downstream")
    model.train()
    out = model(batch)
    assert not out.loss_terms and out.features.shape == (6, 50 + tiny_bert_config().hidden_size)
    out.prediction.sum().backward()  # the one branch trains with the regressor
    branch = [p for n, p in model.named_parameters() if n.startswith((f"{kept}_encoder", f"{kept}_cnn"))]
    assert branch and all(p.grad is not None and p.grad.abs().sum() > 0 for p in branch)
    with pytest.raises(ValueError, match="not 'dcca'"):
        model.enter_stage("dcca")
    with pytest.raises(ValueError, match="text alone leaves none"):
        _model(modalities=("t",))


# -- the engine runs the stages ----------------------------------------------------------------------------
def _train(tmp_path, on_step=None, **cfg):
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer
    from fusionkit.training import TrainConfig, train_and_evaluate

    data = load_splits("synthetic", tokenizer=load_tokenizer(), max_samples=24, seed=0)
    config = TrainConfig(**{"seed": 0, "out_dir": tmp_path, "epochs": 2, "batch_size": 8, "quiet": True, **cfg})
    return data, train_and_evaluate("iccn", data, config, {"bert_config": tiny_bert_config()}, on_step=on_step)


@pytest.mark.slow
def test_engine_runs_the_two_stages_in_order_and_stage_two_never_updates_stage_one(tmp_path):
    from fusionkit.training import checkpoint as ckpt

    data, result = _train(tmp_path)
    assert list(result.stage_results) == ["dcca", "downstream"]
    dcca, downstream = result.stage_results["dcca"], result
    assert all(h["stage"] == "dcca" and "dcca" in h["valid_diagnostics"] for h in dcca.history)
    assert all(h["stage"] == "downstream" for h in downstream.history) and len(downstream.history) == 2
    assert dcca.test == {} and downstream.test  # the DCCA stage never touches the test split
    stage1 = ckpt.read_model_weights(tmp_path / "stage1-dcca" / "best" / ckpt.MODEL_WEIGHTS)
    final = ckpt.read_model_weights(tmp_path / "best" / ckpt.MODEL_WEIGHTS)
    torch.manual_seed(0)  # the engine seeds with the run's seed before building
    initial = fusionkit.create("iccn", bert_config=tiny_bert_config(), d_acoustic=data.info.d_acoustic,
                               d_visual=data.info.d_visual).state_dict()
    embedding = [k for k in final if not k.startswith("head.")]
    assert all(torch.equal(stage1[k], final[k]) for k in embedding)  # weights and BatchNorm statistics
    assert any(not torch.equal(stage1[k], initial[k]) for k in embedding if k.startswith("audio_cnn."))
    head = [k for k in final if k.startswith("head.")]
    assert all(torch.equal(stage1[k], initial[k]) for k in head)  # stage 1 leaves the regressor alone
    assert any(not torch.equal(final[k], initial[k]) for k in head)
    assert json.loads((tmp_path / "stage1-dcca" / "result.json").read_text())["stage"] == "dcca"
    assert (tmp_path / "result.json").is_file() and (tmp_path / "log.jsonl").is_file()


@pytest.mark.slow
def test_resume_at_a_stage_boundary_replays_the_run(tmp_path):
    import shutil

    _, first = _train(tmp_path)
    for name in ("last", "best", "log.jsonl", "result.json"):  # as if stopped right after stage 1
        path = tmp_path / name
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    _, resumed = _train(tmp_path, resume=True)
    assert resumed.stage_results["dcca"].history == first.stage_results["dcca"].history
    assert [h["valid"] for h in resumed.history] == [h["valid"] for h in first.history]
    assert np.array_equal(resumed.test_predictions, first.test_predictions)


def test_show_lists_the_stages_and_the_authors_sizes(capsys):
    from fusionkit.__main__ import main

    assert main(["show", "iccn"]) == 0
    text = capsys.readouterr().out
    for expected in ("1. dcca", "2. downstream", "rmsprop", "adam", "Conv1d 1×1 no bias → 50-d", "LSTM(50)",
                     "Conv2d(→3, 3×3, stride 2, pad 1) → BatchNorm", "→ 50-d embedding", "top-k 20",
                     "6303 for 768×50"):
        assert expected in text, expected


@pytest.mark.slow
def test_interrupted_downstream_stage_resumes_mid_epoch_to_the_same_result(tmp_path):
    calls = []
    small = dict(epochs=1, batch_size=4, save_every=1)
    _, reference = _train(tmp_path / "reference", on_step=calls.append, **small)
    stage1_steps = reference.stage_results["dcca"].history[-1]["step"]
    assert len(calls) > stage1_steps + 2

    class Stop(Exception):
        pass

    def stop_in_stage_two(info, seen=[]):  # noqa: B006 - a counter across calls
        seen.append(info)
        if len(seen) == stage1_steps + 2:  # stage 2, epoch 1, after step 1 was checkpointed
            raise Stop

    out = tmp_path / "interrupted"
    with pytest.raises(Stop):
        _train(out, on_step=stop_in_stage_two, **small)
    state = json.loads((out / "last" / "state.json").read_text())
    assert state["identity"]["stage"] == "downstream" and state["run"]["batches_done"] == 1
    _, resumed = _train(out, resume=True, **small)
    assert [h["valid"] for h in resumed.history] == [h["valid"] for h in reference.history]
    assert np.array_equal(resumed.test_predictions, reference.test_predictions)
