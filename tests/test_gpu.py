"""The CUDA path end to end (marked ``gpu``: skipped without a CUDA device; ``benchmarks/gpu_check.sh`` runs them)."""
import json
import signal

import numpy as np
import pytest
import torch

import fusionkit
from fusionkit.testing import tiny_bert_config
from fusionkit.training import TrainConfig, TrainingInterrupted, train_and_evaluate

pytestmark = pytest.mark.gpu

TINY = {"bert_config": tiny_bert_config(hidden_size=16, num_layers=2, heads=2)}
FAST = dict(epochs=2, batch_size=8, lr=3e-3, encoder_lr=1e-3, quiet=True, num_threads=1, device="cuda")


@pytest.fixture(scope="module")
def data():
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    return load_splits("synthetic", tokenizer=load_tokenizer(None), max_samples=32, seed=0, cache=False)


def test_auto_precision_is_bf16_on_a_bf16_gpu(data, tmp_path):
    result = train_and_evaluate("text", data, TrainConfig(**FAST, out_dir=tmp_path), TINY)
    expected = "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    assert json.loads((tmp_path / "result.json").read_text())["config"]["precision"] == expected
    assert np.isfinite(result.test_predictions).all()


@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_mhmf_trains_on_cuda(data, precision):
    if precision == "bf16" and not torch.cuda.is_bf16_supported():
        pytest.skip("this GPU has no bf16")
    losses = []
    result = train_and_evaluate("mhmf", data, TrainConfig(**FAST, precision=precision), {**TINY, "d_fusion": 16},
                                on_step=lambda info: losses.append(info["loss"]))
    assert np.isfinite(losses).all() and np.isfinite(result.test_predictions).all()


def test_cuda_resume_matches_and_the_checkpoint_holds_cuda_rng(data, tmp_path):
    """Resuming restores the CUDA generators; predictions match the uninterrupted run (within 1e-5: some CUDA
    backward kernels accumulate with atomics, so bit-equality is not promised on a GPU)."""
    full = train_and_evaluate("mhmf", data, TrainConfig(**FAST, out_dir=tmp_path / "full"), {**TINY, "d_fusion": 16})

    def stop(info):
        if info["step"] == 5:
            signal.raise_signal(signal.SIGINT)

    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted):
        train_and_evaluate("mhmf", data, TrainConfig(**FAST, out_dir=out), {**TINY, "d_fusion": 16}, on_step=stop)
    from safetensors.torch import load_file

    state = json.loads((out / "last/state.json").read_text())
    tensors = load_file(str(out / "last" / state["files"]["state"]))
    assert any(k.startswith("rank0.rng.cuda.") for k in tensors)
    resumed = train_and_evaluate("mhmf", data, TrainConfig(**FAST, out_dir=out, resume=True),
                                 {**TINY, "d_fusion": 16})
    np.testing.assert_allclose(resumed.test_predictions, full.test_predictions, rtol=1e-5, atol=1e-5)


def test_loader_pins_memory_for_cuda(data):
    from fusionkit.data import make_loader

    batch = next(iter(make_loader(data.splits["train"], batch_size=4, shuffle=True, pin_memory=True)))
    assert batch.input_ids.is_pinned() and batch.acoustic.is_pinned()
    moved = batch.to("cuda", non_blocking=True)
    assert moved.acoustic.device.type == "cuda"


def test_predictor_on_cuda_matches_cpu(data, tmp_path):
    train_and_evaluate("text", data, TrainConfig(**{**FAST, "epochs": 1}, out_dir=tmp_path), TINY)
    cpu, gpu = fusionkit.load(tmp_path / "best"), fusionkit.load(tmp_path / "best", device="cuda")
    a, b = cpu.evaluate(data.splits["test"]), gpu.evaluate(data.splits["test"])
    np.testing.assert_allclose(a.predictions, b.predictions, rtol=1e-4, atol=1e-4)
