"""The fast path gives the plain path's results (dynamic vs fixed padding, mask-free batches, the frozen-encoder
cache); smoke tests of ``python -m benchmarks.speed``."""
import json

import numpy as np
import pytest
import torch

import benchmarks.speed as speed
import fusionkit
from fusionkit.data import collate, load_splits, make_loader
from fusionkit.encoders.bert import load_tokenizer
from fusionkit.testing import tiny_bert_config
from fusionkit.training import TrainConfig, train_and_evaluate
from fusionkit.training.encoder_cache import UncachedLayerError, attach_encoder_cache

TOL = 1e-5
TINY = tiny_bert_config(hidden_size=32, num_layers=4)


@pytest.fixture(scope="module", autouse=True)
def private_cache(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("FUSIONKIT_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


@pytest.fixture(scope="module")
def data():
    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=24, seed=0, cache=False)


def build(name: str, **kw):
    torch.manual_seed(0)
    return fusionkit.create(name, bert_config=TINY, **kw).eval()


def padded_pair(dataset, count: int = 12):
    """The same examples collated with dynamic padding and padded to ``max_seq_length`` (50)."""
    examples = [dataset[i] for i in range(count)]
    kw = dict(max_seq_length=dataset.max_seq_length, pad_token_id=dataset.pad_token_id)
    return collate(examples, padding="dynamic", **kw), collate(examples, padding="fixed", **kw)


# -- dynamic padding = fixed padding ---------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mhmf", "text"])
def test_dynamic_and_fixed_padding_give_the_same_predictions(data, name):
    dynamic, fixed = padded_pair(data.splits["train"])
    assert dynamic.input_ids.shape[1] < fixed.input_ids.shape[1] == 50
    model = build(name)
    with torch.inference_mode():
        a, b = model(dynamic), model(fixed)
    torch.testing.assert_close(a.prediction, b.prediction, atol=TOL, rtol=0)
    torch.testing.assert_close(a.features, b.features, atol=TOL, rtol=0)


def test_batch_without_padding_skips_the_masks_and_gives_the_same_predictions(data, monkeypatch):
    from fusionkit.components import attention

    train = data.splits["train"]
    by_length: dict = {}
    for i in range(len(train)):
        by_length.setdefault(len(train[i].input_ids), []).append(i)
    group = max(by_length.values(), key=len)
    assert len(group) >= 2
    examples = [train[i] for i in group]
    full, fixed = collate(examples), collate(examples, padding="fixed", max_seq_length=train.max_seq_length)
    assert bool(full.mask.all()) and not bool(fixed.mask.all())
    masks = []
    original = attention.key_padding_bias
    monkeypatch.setattr(attention, "key_padding_bias", lambda m: masks.append(m is not None) or original(m))
    model = build("mhmf")
    with torch.inference_mode():
        a = model(full)
        assert masks and not any(masks)  # the fast path: no key-padding mask in any fusion attention
        b = model(fixed)
        assert all(masks[len(masks) // 2:])
        single = model(collate(examples[:1]))
    torch.testing.assert_close(a.prediction, b.prediction, atol=TOL, rtol=0)
    torch.testing.assert_close(single.prediction, b.prediction[:1], atol=TOL, rtol=0)


def test_dynamic_and_fixed_padding_give_the_same_hidden_states_at_real_tokens(data):
    dynamic, fixed = padded_pair(data.splits["train"])
    encoder = build("text").encoder
    with torch.inference_mode():
        short = encoder(dynamic.input_ids, dynamic.mask, dynamic.token_type_ids).hidden_states
        long = encoder(fixed.input_ids, fixed.mask, fixed.token_type_ids).hidden_states
    t = dynamic.input_ids.shape[1]
    mask = dynamic.mask[..., None]
    for s, l in zip(short, long):
        torch.testing.assert_close(s * mask, l[:, :t] * mask, atol=TOL, rtol=0)


def test_bucketed_loader_gives_the_same_predictions_as_fixed_padding(data):
    """Through the real loaders: bucketed dynamic batches and MAG-BERT's fixed-50 batches, matched by id."""
    train = data.splits["train"]
    model = build("mhmf")
    preds = {}
    for padding, bucketing in (("dynamic", True), ("fixed", False)):
        loader = make_loader(train, batch_size=8, shuffle=True, seed=3, padding=padding, bucketing=bucketing)
        with torch.inference_mode():
            preds[padding] = {i: p for b in loader for i, p in zip(b.ids, model(b).prediction.tolist())}
    assert preds["dynamic"].keys() == preds["fixed"].keys() and len(preds["fixed"]) == len(train)
    for key, value in preds["fixed"].items():
        assert abs(preds["dynamic"][key] - value) < TOL


# -- frozen-encoder cache ----------------------------------------------------------------------------------
def test_cache_encodes_each_sample_once_and_reassembles_batches(data):
    train = data.splits["train"]
    model = build("mhmf", encoder_mode="frozen")
    plain = build("mhmf", encoder_mode="frozen")
    cache = attach_encoder_cache(model)
    assert cache is not None and cache.layers == model.encoder_layers_used
    calls = []
    model.encoder.model.register_forward_hook(lambda *args: calls.append(1))
    first = collate([train[i] for i in range(8)])
    regrouped = collate([train[i] for i in (5, 1, 7, 2)])  # other batch, other padded length
    with torch.inference_mode():
        model(first)
        assert len(calls) == 1 and cache.misses == 1 and len(cache.entries) == 8
        out = model(regrouped)
        assert len(calls) == 1 and cache.hits == 1  # served from the cache
        torch.testing.assert_close(out.prediction, plain(regrouped).prediction, atol=TOL, rtol=0)
        # a known id with other word pieces is encoded again, not served stale
        changed = collate([train[i] for i in (5, 1)])
        changed.input_ids[0, 1] += 1
        torch.testing.assert_close(model(changed).prediction, plain(changed).prediction, atol=TOL, rtol=0)
        assert len(calls) == 2


def test_cache_filled_under_inference_mode_serves_training(data):
    model = build("mhmf", encoder_mode="frozen", d_fusion=16)  # narrower than the tiny BERT: real projections
    cache = attach_encoder_cache(model)
    batch = collate([data.splits["train"][i] for i in range(4)])
    with torch.inference_mode():
        model(batch)
    model.train()
    out = model(batch)
    assert cache.hits == 1
    (out.prediction.sum() + sum(out.loss_terms.values())).backward()
    assert model.text_projections["3"].weight.grad.abs().sum() > 0


def test_cache_only_keeps_the_declared_layers(data):
    model = build("mhmf", encoder_mode="frozen")
    cache = attach_encoder_cache(model)
    batch = collate([data.splits["train"][i] for i in range(4)])
    with torch.inference_mode():
        model(batch)
        stored = next(iter(cache.entries.values()))[2]
        assert stored.shape[0] == len(model.encoder_layers_used) < model.encoder.num_layers + 1
        hidden = model.encoder(batch.input_ids, batch.mask, batch.token_type_ids).hidden_states
    unused = min(set(range(model.encoder.num_layers + 1)) - set(model.encoder_layers_used))
    with pytest.raises(UncachedLayerError, match=f"hidden state {unused} is not in the frozen-encoder cache"):
        hidden[unused]


@pytest.mark.parametrize("mode,cached", [("finetune", False), ("random", False), ("frozen", True)])
def test_only_a_frozen_encoder_is_cached(mode, cached):
    assert (attach_encoder_cache(build("text", encoder_mode=mode)) is not None) == cached


def test_mag_injection_is_never_cached():
    assert attach_encoder_cache(build("mag", encoder_mode="frozen")) is None


def test_cached_and_uncached_frozen_training_give_the_same_predictions(data, monkeypatch):
    from fusionkit.training import engine

    caches = []
    monkeypatch.setattr(engine, "attach_encoder_cache", lambda model: caches.append(attach_encoder_cache(model)))
    config = dict(epochs=2, batch_size=8, lr=3e-3, quiet=True, num_threads=1, seed=0)
    runs = {cached: train_and_evaluate("mhmf", data, TrainConfig(**config, cache_encoder=cached),
                                       {"bert_config": TINY, "encoder_mode": "frozen"})
            for cached in (False, True)}
    (cache,) = caches  # only the cached run installs one; its second epoch and evaluations are served from it
    assert cache.hits >= len(data.splits["train"]) // 8 and len(cache.entries) == sum(map(len, data.splits.values()))
    np.testing.assert_allclose(runs[True].test_predictions, runs[False].test_predictions, atol=TOL, rtol=0)
    assert [h["train_loss"] for h in runs[True].history] == pytest.approx(
        [h["train_loss"] for h in runs[False].history], abs=TOL)


# -- python -m benchmarks.speed ----------------------------------------------------------------------------
def test_speed_smoke(tmp_path, capsys):
    out = tmp_path / "speed"
    argv = ["--tiny-bert", "--dataset", "synthetic", "--models", "mhmf,mhmf_small,tfn", "--batch-size", "4",
            "--steps", "2", "--warmup", "1", "--epoch-samples", "8", "--infer-utterances", "2", "--threads", "1",
            "--flop-batches", "2", "--checkpoint-models", "mhmf", "--precision", "bf16", "--out", str(out)]
    assert speed.main(argv) == 0
    results = json.loads((out / "speed.json").read_text())
    per_model = {f"{m}_{k}" for m in ("mhmf", "mhmf_small", "tfn")
                 for k in ("step_s", "flops_per_step", "step_ratio", "flop_ratio", "efficiency")}
    checkpoint = {f"checkpoint_mhmf_{k}" for k in ("mb", "save_s", "epoch_s", "saves_per_epoch", "fraction")}
    expected = {"encoder_step_s", "encoder_flops_per_step", *per_model, *checkpoint,
                "epoch_samples_per_s_dynamic", "epoch_samples_per_s_fixed50", "dynamic_over_fixed50",
                "data_fraction", "infer_ms_per_utterance", "text_infer_ms_per_utterance", "infer_latency_ratio",
                "infer_utterances_per_s", "peak_rss_mb", "machine"}
    assert set(results) == expected
    for m in ("mhmf", "mhmf_small", "tfn"):
        assert results[f"{m}_step_ratio"] == pytest.approx(results[f"{m}_step_s"] / results["encoder_step_s"])
        assert results[f"{m}_flop_ratio"] == pytest.approx(results[f"{m}_flops_per_step"]
                                                           / results["encoder_flops_per_step"])
        assert results[f"{m}_efficiency"] == pytest.approx(results[f"{m}_step_ratio"] / results[f"{m}_flop_ratio"])
        assert results[f"{m}_flop_ratio"] > 1  # every model does the encoder's work and more
    assert results["infer_latency_ratio"] == pytest.approx(results["infer_ms_per_utterance"]
                                                           / results["text_infer_ms_per_utterance"])
    assert 0 < results["checkpoint_mhmf_fraction"] < 1 and results["checkpoint_mhmf_saves_per_epoch"] >= 1
    assert 0 < results["data_fraction"] < 1 and results["peak_rss_mb"] > 0
    machine = results["machine"]
    assert machine["threads"] == 1 and machine["torch"] == torch.__version__
    assert (machine["device"], machine["precision"]) == ("cpu", "bf16") and len(machine["loadavg_1_5_15min"]) == 3
    assert "| mhmf_efficiency |" in (out / "speed.md").read_text()
    assert "| dynamic_over_fixed50 |" in capsys.readouterr().out
    assert not list(out.glob("fusionkit-ckpt-*"))  # the checkpoint measurement cleans up


def test_training_step_flops_match_the_formulas():
    """One Linear layer and one attention call, counted by hand: a matmul of (m, k) by (k, n) is 2mkn FLOPs
    forward and twice that backward (input and weight gradients); SDPA is 4·B·H·T·S·d forward and 2.5× that
    backward (torch's formulas, registered here for the CPU flash kernel)."""
    from torch.utils.flop_counter import FlopCounterMode

    speed.register_cpu_attention_flops()
    b, h, t, s, d = 2, 3, 5, 7, 4
    q = torch.randn(b, h, t, d, requires_grad=True)
    k, v = torch.randn(b, h, s, d, requires_grad=True), torch.randn(b, h, s, d, requires_grad=True)
    mask = torch.ones(b, 1, 1, s, dtype=torch.bool)
    with FlopCounterMode(display=False) as counter:
        torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).sum().backward()
    forward = 4 * b * h * t * s * d
    assert counter.get_total_flops() == forward + int(2.5 * forward)
    layer = torch.nn.Linear(6, 3)
    with FlopCounterMode(display=False) as counter:
        layer(torch.randn(4, 6, requires_grad=True)).sum().backward()
    assert counter.get_total_flops() == 3 * 2 * 4 * 6 * 3


def test_checkpoint_cost_arithmetic():
    # 16 326 samples / 32 = 511 steps of 1.2 s = 613.2 s: two interval saves (300 s) + the epoch end
    cost = speed.checkpoint_cost(0.5, 1.2, train_size=16326, batch_size=32, interval=300)
    assert cost["saves_per_epoch"] == 3 and cost["epoch_s"] == pytest.approx(613.2)
    assert cost["fraction"] == pytest.approx(1.5 / (613.2 + 1.5))
    assert speed.checkpoint_cost(0.5, 1.2, train_size=16326, batch_size=32, interval=0)["saves_per_epoch"] == 1


def test_bert_base_config_is_bert_base_with_the_bundled_vocabulary():
    config = speed.bert_base_config()
    assert (config.num_hidden_layers, config.hidden_size, config.num_attention_heads, config.intermediate_size) == (
        12, 768, 12, 3072)
    assert config.vocab_size == len(load_tokenizer(None))


@pytest.mark.parametrize("argv,message", [
    (["--models", "nope"], "unknown model 'nope'"),
    (["--steps", "0"], "--steps must be at least 1"),
    (["--tiny-bert", "--text-model", "x"], "exclusive"),
    (["--tiny-bert", "--bert-base"], "exclusive"),
    (["--flop-batches", "0"], "--flop-batches must be at least 1"),
    (["--save-interval", "-5"], "--save-interval must be ≥ 0"),
    (["--checkpoint-models", "gpt"], "unknown 'gpt'"),
    (["--precision", "fp8"], "invalid choice"),
])
def test_speed_usage_errors(argv, message, capsys, tmp_path):
    assert speed.main([*argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.slow
def test_speed_levers_smoke(tmp_path):
    out = tmp_path / "levers"
    argv = ["--levers", "--tiny-bert", "--dataset", "synthetic", "--batch-size", "4", "--steps", "1", "--warmup", "0",
            "--epoch-samples", "8", "--infer-utterances", "2", "--threads", "1", "--out", str(out)]
    assert speed.main(argv) == 0
    levers = json.loads((out / "levers.json").read_text())
    assert set(levers["step_s"]) == {"text", "mhmf", "mhmf_small", "mhmf_d48_h4", "mhmf_d64_h4", "mhmf_h4",
                                     "mhmf_ffn_dropout", "text_foreach_adamw", "mhmf_foreach_adamw",
                                     "mhmf_plain_blocks", "mhmf_small_plain_blocks"}
    assert levers["mhmf_fast_blocks_speedup"] == pytest.approx(
        levers["step_s"]["mhmf_plain_blocks"] / levers["step_s"]["mhmf"])
    assert levers["mhmf_over_encoder"] == pytest.approx(levers["step_s"]["mhmf"] / levers["step_s"]["text"])
    assert levers["fused_adamw_encoder_speedup"] == pytest.approx(
        levers["step_s"]["text_foreach_adamw"] / levers["step_s"]["text"])
    for key in ("bucketing_over_dynamic_random", "frozen_cache_speedup", "mask_free_batch1_speedup",
                "inference_mode_batch1_speedup", "one_thread_batch1_speedup", "data_cache_speedup"):
        assert levers[key] > 0, key
