"""Training and inference speed of the fusion models against their text encoder: ``python -m benchmarks.speed``.

Examples::

    python -m benchmarks.speed                                  # mhmf, bundled MiniLM, batch 32
    python -m benchmarks.speed --data-root /data --models mhmf,mag,misa --out runs/speed

Everything is measured in one process, on the same batches, after warm-up, as medians over repeated steps:

* ``encoder_step_s``: one training step (forward, MSE, backward, gradient clipping, AdamW — the engine's
  optimizer groups) of the text encoder alone with the ``text`` model's head;
* ``<model>_step_s`` / ``<model>_step_ratio``: the same for each model, and its ratio to the encoder step. The
  models' steps run round-robin on each batch, so load drifts on a shared machine hit all of them equally;
* ``encoder_flops_per_step`` / ``<model>_flops_per_step``: FLOPs of one training step (forward + backward, mean
  over ``--flop-batches`` of the timed batches) counted by ``torch.utils.flop_counter.FlopCounterMode``
  (matmuls and attention; the CPU flash-attention kernel's formula is registered here, torch counts only the
  CUDA ones); ``<model>_flop_ratio`` (model ÷ text) and ``<model>_efficiency = step_ratio / flop_ratio``
  (1.0: the model's extra work runs as fast per FLOP as the encoder's);
* ``checkpoint_<what>_*``: what the engine's mid-epoch checkpoints cost: the measured seconds of one save
  (weights and AdamW moments, fsynced, as ``last/``) × the saves of one ``mosei-sim``-sized epoch (16 326
  training samples; one per ``--save-interval`` plus the epoch end) ÷ the epoch's measured training time, for
  ``mhmf`` and for a randomly initialised BERT-base-sized ``text`` model (``--checkpoint-models``);
* ``epoch_samples_per_s_dynamic`` / ``_fixed50`` / ``dynamic_over_fixed50``: ``mhmf`` training throughput through
  the real loader with dynamic padding and length bucketing vs. fixed padding to ``max_seq_length`` (50, MAG-BERT's
  loader); the two passes run batch by batch in lockstep;
* ``data_fraction``: time in the loader's ``next()`` (sampling, collation) over the whole dynamic pass;
* ``infer_ms_per_utterance`` / ``text_infer_ms_per_utterance`` / ``infer_latency_ratio`` (batch 1,
  ``--infer-threads`` intra-op threads, default 1; ``mhmf`` and ``text`` interleaved per utterance) and
  ``infer_utterances_per_s`` (batch 64): in eval mode under ``torch.inference_mode``;
* ``peak_rss_mb``: the process's peak resident memory; ``peak_gpu_mb`` on CUDA.

``--device cuda`` times steps with CUDA events; ``--precision`` autocasts forward and loss as the engine does.
``--bert-base`` uses a randomly initialised BERT-base configuration (12 layers, hidden 768, 12 heads; nothing is
downloaded) instead of the bundled MiniLM. The models are the registry's: ``mhmf`` at the paper's width
(``d_fusion`` = the encoder's width, its heads), ``mhmf_small`` at ``d_fusion=32, heads=2``.

The batches have MOSI's word-piece lengths (``mosi-sim``) when a data root is given (``--data-root`` or
``FUSIONKIT_DATA``), else those of ``synthetic``. ``OUT/speed.json`` holds these keys plus ``machine``;
``OUT/speed.md`` the same as a table. ``--levers`` instead times the before/after pair of each speed lever
(``OUT/levers.json``; see docs/performance.md).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_MODELS = "mhmf,mhmf_small"
MOSEI_TRAIN_SIZE = 16326  # CMU-MOSEI training split (MAG-BERT's pickle), the size of a mosei-sim epoch
CHECKPOINT_MODELS = ("mhmf", "bert-base")
CHECKPOINT_SAVES = 3  # timed saves per model (the median is used)
ENCODER = "text"  # the text encoder alone: BERT, masked mean pool, linear head
FIXED_LENGTH_NOTE = "fixed50"  # key suffix of the fixed-padding pass (padding to max_seq_length = 50)
INFER_BATCH = 64


class UsageError(Exception):
    """A bad command line: printed as ``error: …`` with exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        self.print_usage(sys.stderr)
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m benchmarks.speed", description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default=DEFAULT_MODELS,
                   help=f"comma-separated models to time against the encoder, or 'all' (default: {DEFAULT_MODELS})")
    p.add_argument("--text-model", default=None, help="text encoder: local path (default: the bundled MiniLM-L6)")
    p.add_argument("--batch-size", type=int, default=32, help="training batch size (default: 32)")
    p.add_argument("--dataset", choices=("mosi-sim", "synthetic"), default=None,
                   help="where the batches come from (default: mosi-sim with a data root, else synthetic)")
    p.add_argument("--data-root", default=None, help="directory holding mosi/ (default: $FUSIONKIT_DATA)")
    p.add_argument("--out", default="runs/speed", help="output directory (default: runs/speed)")
    p.add_argument("--steps", type=int, default=48, help="timed training steps per model (default: 48)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up steps per model (default: 2)")
    p.add_argument("--epoch-samples", type=int, default=320,
                   help="training samples per throughput pass; 0 = the whole training split (default: 320)")
    p.add_argument("--infer-utterances", type=int, default=40,
                   help="utterances timed one by one at batch 1, twice each (default: 40)")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's own)")
    p.add_argument("--infer-threads", type=int, default=1,
                   help="intra-op threads for the batch-1 latency (default: 1; as fast as 2 on a quiet machine, "
                        "and it does not collapse when other processes share the cores)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 … (default: cpu)")
    p.add_argument("--precision", choices=("auto", "fp32", "bf16", "fp16"), default="auto",
                   help="autocast precision of the training steps (default: auto = bf16 on CUDA, else fp32)")
    p.add_argument("--bert-base", action="store_true",
                   help="a randomly initialised BERT-base configuration as the text encoder (no download)")
    p.add_argument("--flop-batches", type=int, default=8,
                   help="timed batches whose training-step FLOPs are counted, evenly spaced (default: 8)")
    p.add_argument("--save-interval", type=float, default=300.0,
                   help="mid-epoch checkpoint interval in seconds for the checkpoint cost (default: 300)")
    p.add_argument("--checkpoint-models", default=",".join(CHECKPOINT_MODELS),
                   help="checkpoint costs to measure: mhmf, bert-base, or none (default: mhmf,bert-base)")
    p.add_argument("--levers", action="store_true",
                   help="instead: before/after measurements of each speed lever, written to OUT/levers.json")
    p.add_argument("--tiny-bert", action="store_true", help=argparse.SUPPRESS)  # tests: tiny random BERT
    return p


# -- helpers -----------------------------------------------------------------------------------------------
def peak_rss_mb() -> float:
    """Peak resident set size of this process in MiB (``ru_maxrss`` is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def machine_info() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None
    return {"cores": cores, "cpu": cpu, "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "platform": platform.platform(), "loadavg_1_5_15min": load}


class Timer:
    """Seconds of a region: ``time.perf_counter`` on CPU; CUDA events on a GPU (the region's kernels, not the
    host's launch time), read after a synchronisation."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def start(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def stop(self, started) -> float:
        if not self.cuda:
            return time.perf_counter() - started
        end = torch.cuda.Event(enable_timing=True)
        end.record()
        end.synchronize()
        return started.elapsed_time(end) / 1000.0


class TrainStep:
    """One training step of the engine (forward, MSE + loss terms, backward, clipping, AdamW) for a model,
    under the engine's autocast and (fp16) gradient scaler."""

    def __init__(self, model: torch.nn.Module, grad_clip: float = 1.0, fused: bool | None = None, *,
                 device: torch.device | str = "cpu", precision: str = "fp32") -> None:
        from fusionkit.training.optim import build_optimizer
        from fusionkit.training.precision import grad_scaler

        defaults = getattr(model, "train_defaults", {}) or {}
        self.device = torch.device(device)
        self.model = model.to(self.device).train()
        self.grad_clip = grad_clip
        self.precision = precision
        self.scaler = grad_scaler(precision, self.device)
        self.timer = Timer(self.device)
        self.optimizer = build_optimizer(model, lr=defaults.get("lr", 1e-4), encoder_lr=defaults.get("encoder_lr", 5e-5),
                                         weight_decay=0.01, fused=fused)

    def loss(self, batch) -> torch.Tensor:
        from fusionkit.training.precision import autocast

        with autocast(self.precision, self.device):
            out = self.model(batch)
            loss = F.mse_loss(out.prediction.float(), batch.label.float())
            if out.loss_terms:
                loss = loss + sum(out.loss_terms.values())
        return loss

    def __call__(self, batch) -> float:
        """Run the step on ``batch``; returns its seconds (CUDA-event time on a GPU)."""
        from fusionkit.training.precision import backward_and_step

        batch = batch.to(self.device, non_blocking=True)
        started = self.timer.start()
        loss = self.loss(batch)
        self.optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, self.model, self.optimizer, self.scaler, self.grad_clip)
        return self.timer.stop(started)

    def flops(self, batch) -> int:
        """FLOPs of forward + backward on ``batch`` (no optimizer step; the gradients are dropped)."""
        from torch.utils.flop_counter import FlopCounterMode

        register_cpu_attention_flops()
        batch = batch.to(self.device)
        with FlopCounterMode(display=False) as counter:
            self.loss(batch).backward()
        self.optimizer.zero_grad(set_to_none=True)
        return int(counter.get_total_flops())


def register_cpu_attention_flops() -> None:
    """Teach ``FlopCounterMode`` the CPU flash-attention kernels (torch registers only the CUDA ones), with the
    formulas torch uses for those: ``4·B·H·T·S·d`` forward (QKᵀ and PV), ``2.5×`` that backward."""
    import torch.utils.flop_counter as fc

    aten = torch.ops.aten
    forward, backward = aten._scaled_dot_product_flash_attention_for_cpu, \
        aten._scaled_dot_product_flash_attention_for_cpu_backward
    if forward not in fc.flop_registry:
        @fc.register_flop_formula(forward)
        def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_flop_count(query_shape, key_shape, value_shape)
    if backward not in fc.flop_registry:
        @fc.register_flop_formula(backward)
        def _backward(grad_out_shape, query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
            return fc.sdpa_backward_flop_count(grad_out_shape, query_shape, key_shape, value_shape)


def count_flops(steppers: dict, batches: list) -> dict:
    """Mean training-step FLOPs per model over ``batches``."""
    return {name: sum(step.flops(b) for b in batches) / len(batches) for name, step in steppers.items()}


def spaced(items: list, count: int) -> list:
    """``count`` items spread evenly over ``items`` (all of them when there are fewer)."""
    if count >= len(items):
        return list(items)
    return [items[(i * len(items)) // count] for i in range(count)]


def checkpoint_save_seconds(step: "TrainStep", directory: Path, saves: int = CHECKPOINT_SAVES) -> tuple[float, int]:
    """``(median seconds, bytes)`` of writing what the engine's ``last/`` holds for ``step``'s model and AdamW
    state (weights file and moments file, each atomically written and fsynced)."""
    from fusionkit.training import checkpoint as ckpt

    times, size = [], 0
    for number in range(saves):
        start = time.perf_counter()
        ckpt.save_model_weights(step.model, directory / f"model-{number}.safetensors")
        tensors, _ = ckpt.split_optimizer_state(step.optimizer)
        ckpt.atomic_write_tensors(directory / f"optim-{number}.safetensors", tensors)
        times.append(time.perf_counter() - start)
        size = sum(f.stat().st_size for f in directory.glob(f"*-{number}.safetensors"))
        for f in directory.glob(f"*-{number}.safetensors"):
            f.unlink()
    return statistics.median(times), size


def checkpoint_cost(save_s: float, step_s: float, *, train_size: int, batch_size: int, interval: float) -> dict:
    """Fraction of an epoch's training time spent on checkpoints: one save per ``interval`` seconds of training
    plus the epoch end (what the engine does), ``save_s`` each, against ``steps × step_s``."""
    steps = math.ceil(train_size / batch_size)
    epoch_s = steps * step_s
    saves = (math.floor(epoch_s / interval) if interval > 0 else 0) + 1
    return {"save_s": save_s, "epoch_s": epoch_s, "saves_per_epoch": saves,
            "fraction": saves * save_s / (epoch_s + saves * save_s)}


class PlainBlocks:
    """Runs a :class:`TrainStep` with the fusion blocks' plain forms, the "before" of their speed levers:
    ``nn.GRUCell`` itself in ``gru_memory`` and the SDPA key mask rebuilt by every adapter layer."""

    def __init__(self, step: "TrainStep") -> None:
        self.step = step
        self.model = step.model

    def __call__(self, batch) -> float:
        from fusionkit.components import adapters, memory

        saved = (memory.GRUMemory.gru_cell, adapters.SelfAttentionAdapter.forward,
                 adapters.CrossAttentionAdapter.forward)
        memory.GRUMemory.gru_cell = _plain_gru_cell
        adapters.SelfAttentionAdapter.forward = _plain_self_attention_adapter
        adapters.CrossAttentionAdapter.forward = _plain_cross_attention_adapter
        try:
            return self.step(batch)
        finally:
            (memory.GRUMemory.gru_cell, adapters.SelfAttentionAdapter.forward,
             adapters.CrossAttentionAdapter.forward) = saved


def _plain_gru_cell(self, x, h):
    return self.cell(x, h)


def _plain_self_attention_adapter(self, x, mask=None):
    from fusionkit.components.adapters import _zero_padding

    x = self.proj(x)
    for layer in self.layers:
        x = layer(x, target_mask=mask)
    return _zero_padding(self.norm(x), mask)


def _plain_cross_attention_adapter(self, target, source, target_mask=None, source_mask=None):
    from fusionkit.components.adapters import _zero_padding

    x = target
    for layer in self.layers:
        x = layer(x, source, source_mask=source_mask)
    return _zero_padding(self.norm(x), target_mask)


def round_robin_steps(steppers: dict, batches: list, warmup: int) -> dict:
    """Median step seconds per model; on every batch each model takes one step, in turn."""
    times = {name: [] for name in steppers}
    for index, batch in enumerate(batches):
        for name, step in steppers.items():
            seconds = step(batch)
            if index >= warmup:
                times[name].append(seconds)
    return {name: statistics.median(t) for name, t in times.items()}


def lockstep_epochs(steppers: dict, loaders: dict) -> dict:
    """One training pass per loader, batch by batch in lockstep; ``{name: (samples, data_s, step_s)}``.

    ``data_s`` is the time spent in the loader's ``next()`` (sampling and collation), ``step_s`` in the steps.
    """
    iterators = {name: iter(loader) for name, loader in loaders.items()}
    totals = {name: [0, 0.0, 0.0] for name in loaders}
    active = set(loaders)
    while active:
        for name in list(loaders):
            if name not in active:
                continue
            start = time.perf_counter()
            batch = next(iterators[name], None)
            fetched = time.perf_counter() - start
            if batch is None:
                active.discard(name)
                continue
            totals[name][0] += len(batch)
            totals[name][1] += fetched
            totals[name][2] += steppers[name](batch)
    return {name: tuple(t) for name, t in totals.items()}


def time_inference(model: torch.nn.Module, dataset, *, batch_size: int, count: int, warmup: int = 3,
                   grad_mode=torch.inference_mode, repeats: int = 1, device: torch.device | str = "cpu",
                   precision: str = "fp32") -> list:
    """``(seconds, size)`` per batch of ``model`` (eval mode, under ``grad_mode`` and the ``precision``'s
    autocast) over the first ``count`` batches of ``dataset`` (in order), ``repeats`` times."""
    from fusionkit.data import make_loader
    from fusionkit.training.precision import autocast

    device = torch.device(device)
    model.eval()
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, padding="dynamic", bucketing=False)
    batches = [b.to(device) for _, b in zip(range(count), loader)]
    timer = Timer(device)
    times = []
    with grad_mode(), autocast(precision, device):
        for batch in batches[:warmup]:
            model(batch)
        for batch in batches * repeats:
            started = timer.start()
            model(batch)
            times.append((timer.stop(started), len(batch)))
    return times


# -- the measurement ---------------------------------------------------------------------------------------
def _setup(args):
    """``(data, build)``: the loaded dataset and ``build(name, **kw)`` making a seeded model for it."""
    import fusionkit
    from fusionkit.data import load_splits
    from fusionkit.encoders.bert import load_tokenizer

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    tokenizer = load_tokenizer(None if args.tiny_bert else args.text_model)
    data = load_splits(args.dataset, data_root=args.data_root, tokenizer=tokenizer, seed=0)
    model_kwargs = {"d_acoustic": data.info.d_acoustic, "d_visual": data.info.d_visual}
    if args.tiny_bert:
        from fusionkit.testing import tiny_bert_config

        model_kwargs["bert_config"] = tiny_bert_config()
    elif args.bert_base:
        model_kwargs["bert_config"] = bert_base_config()
    elif args.text_model is not None:
        model_kwargs["text_model"] = args.text_model

    def build(name: str, **kw) -> torch.nn.Module:
        torch.manual_seed(0)
        return fusionkit.create(name, **model_kwargs, **kw)

    return data, build


def bert_base_config():
    """BERT-base's architecture (12 layers, hidden 768, 12 heads, FFN 3072, vocabulary 30 522 = the bundled
    tokenizer's), randomly initialised: nothing is downloaded."""
    from transformers import BertConfig

    return BertConfig(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                      intermediate_size=3072)


def _batches(dataset, args, count: int) -> list:
    """``count`` bucketed training batches (a small split is cycled; each pass reshuffles it)."""
    from fusionkit.data import make_loader

    loader = make_loader(dataset, batch_size=args.batch_size, shuffle=True, seed=0, padding="dynamic",
                         bucketing=True)
    batches: list = []
    while len(batches) < count:
        batches.extend(b for _, b in zip(range(count - len(batches)), loader))
    return batches


def _subset(train, args):
    return train if args.epoch_samples == 0 or args.epoch_samples >= len(train) else train.subset(
        range(args.epoch_samples))


def measure(args, log=print) -> dict:
    """All measurements of the module docstring; returns the ``speed.json`` content."""
    from fusionkit.data import make_loader

    data, build = _setup(args)
    machine = machine_info()  # before the measurement, so that the load average is the background load
    train = data.splits["train"]
    device, precision = args.device_resolved, args.precision_resolved
    results: dict = {}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)

    def stepper(model: torch.nn.Module) -> TrainStep:
        return TrainStep(model, device=device, precision=precision)

    # 1. training steps, round-robin over the same bucketed batches; FLOPs of the same batches
    batches = _batches(train, args, args.warmup + args.steps)
    steppers = {ENCODER: stepper(build(ENCODER))}
    for name in args.model_list:
        steppers[name] = stepper(build(name))
    log(f"timing {len(steppers)} training steps round-robin on {args.steps} batches of {args.batch_size} "
        f"(lengths {[int(b.input_ids.shape[1]) for b in batches[args.warmup:]]}), {device}, {precision}")
    medians = round_robin_steps(steppers, batches, args.warmup)
    flop_batches = spaced(batches[args.warmup:], args.flop_batches)
    log(f"counting training-step FLOPs on {len(flop_batches)} of those batches")
    flops = count_flops(steppers, flop_batches)
    results["encoder_step_s"] = medians[ENCODER]
    results["encoder_flops_per_step"] = flops[ENCODER]
    for name in args.model_list:
        results[f"{name}_step_s"] = medians[name]
        results[f"{name}_flops_per_step"] = flops[name]
        results[f"{name}_step_ratio"] = medians[name] / medians[ENCODER]
        results[f"{name}_flop_ratio"] = flops[name] / flops[ENCODER]
        results[f"{name}_efficiency"] = results[f"{name}_step_ratio"] / results[f"{name}_flop_ratio"]

    # 2. what the mid-epoch checkpoints cost, per mosei-sim-sized epoch
    if args.checkpoint_list:
        with tempfile.TemporaryDirectory(prefix="fusionkit-ckpt-", dir=args.out) as tmp:
            for what in args.checkpoint_list:
                if what == "mhmf":
                    step = steppers["mhmf"] if "mhmf" in steppers else stepper(build("mhmf"))
                    step_s = medians["mhmf"] if "mhmf" in medians else _median_step(step, batches, args.warmup)
                else:  # a BERT-base-sized text model: its own step time on the same batches
                    step = stepper(_build_bert_base_text(data))
                    log("timing a BERT-base-sized text model for its checkpoint cost")
                    step_s = _median_step(step, batches[:args.warmup + min(args.steps, 4)], args.warmup)
                save_s, size = checkpoint_save_seconds(step, Path(tmp))
                cost = checkpoint_cost(save_s, step_s, train_size=MOSEI_TRAIN_SIZE, batch_size=args.batch_size,
                                       interval=args.save_interval)
                key = what.replace("-", "_")
                results[f"checkpoint_{key}_mb"] = size / 2 ** 20
                for k, v in cost.items():
                    results[f"checkpoint_{key}_{k}"] = v
                del step
    mhmf = steppers["mhmf"].model if "mhmf" in steppers else build("mhmf").to(device)
    text = steppers[ENCODER].model
    del steppers, batches

    # 3. epoch throughput through the real loaders: dynamic padding + bucketing vs fixed padding to 50
    subset = _subset(train, args)
    pin = device.type == "cuda"
    loaders = {
        "dynamic": make_loader(subset, batch_size=args.batch_size, shuffle=True, seed=1, padding="dynamic",
                               bucketing=True, pin_memory=pin),
        FIXED_LENGTH_NOTE: make_loader(subset, batch_size=args.batch_size, shuffle=True, seed=1, padding="fixed",
                                       bucketing=False, pin_memory=pin),
    }
    log(f"timing a training pass over {len(subset)} samples per loader (dynamic+bucketing / fixed "
        f"{train.max_seq_length}), in lockstep")
    epoch_step = stepper(mhmf)
    passes = lockstep_epochs({name: epoch_step for name in loaders}, loaders)
    for name, (samples, data_s, step_s) in passes.items():
        results[f"epoch_samples_per_s_{name}"] = samples / (data_s + step_s)
    results["dynamic_over_fixed50"] = (results["epoch_samples_per_s_dynamic"]
                                       / results[f"epoch_samples_per_s_{FIXED_LENGTH_NOTE}"])
    _, data_s, step_s = passes["dynamic"]
    results["data_fraction"] = data_s / (data_s + step_s)
    del epoch_step

    # 4. inference: batch 1 (latency; mhmf and text interleaved per utterance) and batch 64 (throughput)
    test = data.splits["test"]
    log(f"timing inference: {args.infer_utterances} utterances at batch 1 (mhmf and text), batches of "
        f"{INFER_BATCH}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.infer_threads)
    try:
        single = time_inference_interleaved({"mhmf": mhmf, ENCODER: text}, test, count=args.infer_utterances,
                                            device=device, precision=precision, repeats=2)
    finally:
        torch.set_num_threads(threads)
    results["infer_ms_per_utterance"] = 1000 * statistics.median(single["mhmf"])
    results["text_infer_ms_per_utterance"] = 1000 * statistics.median(single[ENCODER])
    results["infer_latency_ratio"] = results["infer_ms_per_utterance"] / results["text_infer_ms_per_utterance"]
    full = time_inference(mhmf, test, batch_size=INFER_BATCH, count=4, device=device, precision=precision)
    results["infer_utterances_per_s"] = sum(n for _, n in full) / sum(s for s, _ in full)
    results["peak_rss_mb"] = peak_rss_mb()
    if device.type == "cuda":
        results["peak_gpu_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
    results["machine"] = {**machine, "infer_threads_batch1": args.infer_threads, "device": str(device),
                          "precision": precision, "text_model": _text_model_label(args), "dataset": args.dataset,
                          "batch_size": args.batch_size}
    return results


def _text_model_label(args) -> str:
    if args.tiny_bert:
        return "tiny random BERT (tests)"
    if args.bert_base:
        return "random BERT-base configuration (12 layers, hidden 768)"
    return args.text_model or "bundled MiniLM-L6"


def _median_step(step: TrainStep, batches: list, warmup: int) -> float:
    return round_robin_steps({"model": step}, batches, warmup)["model"]


def _build_bert_base_text(data) -> torch.nn.Module:
    import fusionkit

    torch.manual_seed(0)
    return fusionkit.create(ENCODER, bert_config=bert_base_config(), d_acoustic=data.info.d_acoustic,
                            d_visual=data.info.d_visual)


def time_inference_interleaved(models: dict, dataset, *, count: int, device: torch.device, precision: str,
                               warmup: int = 3, repeats: int = 1) -> dict:
    """Seconds per utterance at batch 1 for each model, the models taking turns on every utterance."""
    from fusionkit.data import make_loader
    from fusionkit.training.precision import autocast

    for model in models.values():
        model.eval()
    loader = make_loader(dataset, batch_size=1, shuffle=False, padding="dynamic", bucketing=False)
    batches = [b.to(device) for _, b in zip(range(count), loader)]
    timer = Timer(device)
    times: dict = {name: [] for name in models}
    with torch.inference_mode(), autocast(precision, device):
        for index, batch in enumerate(batches[:warmup] + batches * repeats):
            for name, model in models.items():
                started = timer.start()
                model(batch)
                seconds = timer.stop(started)
                if index >= min(warmup, len(batches)):
                    times[name].append(seconds)
    return times


def measure_levers(args, log=print) -> dict:
    """Before/after of each speed lever, every pair timed in one process on the same batches (interleaved)."""
    import recipes.mhmf_bert as recipe
    from fusionkit.data import load_splits, make_loader
    from fusionkit.training.encoder_cache import attach_encoder_cache
    data, build = _setup(args)
    train, test = data.splits["train"], data.splits["test"]
    levers: dict = {}
    batches = _batches(train, args, args.warmup + args.steps)

    log("lever: fusion width and heads, FFN hidden dropout, fused vs foreach AdamW, fused GRU gates and the key "
        "mask built once per adapter vs their plain forms; training steps round-robin")
    variants = {"d48_h4": dict(d_fusion=48, heads=4), "d64_h4": dict(d_fusion=64, heads=4),
                "h4": dict(heads=4), "ffn_dropout": dict(ffn_dropout=0.1)}  # against mhmf_small (32, 2 heads)
    steppers = {"text": TrainStep(build("text")), "mhmf": TrainStep(build("mhmf")),
                "mhmf_small": TrainStep(build("mhmf_small"))}
    steppers.update({f"mhmf_{key}": TrainStep(build("mhmf_small", **kw)) for key, kw in variants.items()})
    for name in ("text", "mhmf"):  # same models, AdamW's per-tensor loop instead of the fused kernel
        steppers[f"{name}_foreach_adamw"] = TrainStep(build(name), fused=False)
    for name in ("mhmf", "mhmf_small"):  # same models, the blocks' plain forms (what they computed before)
        steppers[f"{name}_plain_blocks"] = PlainBlocks(TrainStep(build(name)))
    med = round_robin_steps(steppers, batches, args.warmup)
    levers["step_s"] = med
    levers["mhmf_over_encoder"] = med["mhmf"] / med["text"]
    levers["mhmf_small_over_encoder"] = med["mhmf_small"] / med["text"]
    for name in ("mhmf", "mhmf_small"):
        levers[f"{name}_fast_blocks_speedup"] = med[f"{name}_plain_blocks"] / med[name]
    for key in variants:
        levers[f"mhmf_{key}_over_encoder"] = med[f"mhmf_{key}"] / med["text"]
    levers["fused_adamw_encoder_speedup"] = med["text_foreach_adamw"] / med["text"]
    levers["fused_adamw_mhmf_speedup"] = med["mhmf_foreach_adamw"] / med["mhmf"]
    levers["foreach_adamw_mhmf_over_encoder"] = med["mhmf_foreach_adamw"] / med["text_foreach_adamw"]
    mhmf = steppers["mhmf"].model
    del steppers

    log("lever: padding and bucketing, mhmf training passes in lockstep")
    subset = _subset(train, args)
    loaders = {
        "dynamic_bucketed": make_loader(subset, batch_size=args.batch_size, shuffle=True, seed=1, bucketing=True),
        "dynamic_random": make_loader(subset, batch_size=args.batch_size, shuffle=True, seed=1, bucketing=False),
        "fixed50": make_loader(subset, batch_size=args.batch_size, shuffle=True, seed=1, padding="fixed",
                               bucketing=False),
    }
    step = TrainStep(mhmf)
    passes = lockstep_epochs({name: step for name in loaders}, loaders)
    rate = {name: n / (d + s) for name, (n, d, s) in passes.items()}
    levers["epoch_samples_per_s"] = rate
    levers["dynamic_random_over_fixed50"] = rate["dynamic_random"] / rate["fixed50"]
    levers["bucketing_over_dynamic_random"] = rate["dynamic_bucketed"] / rate["dynamic_random"]

    log("lever: frozen-encoder cache, frozen mhmf training passes in lockstep (cache warmed by one pass)")
    frozen = {"uncached": TrainStep(build("mhmf", encoder_mode="frozen")),
              "cached": TrainStep(build("mhmf", encoder_mode="frozen"))}
    attach_encoder_cache(frozen["cached"].model)
    lockstep_epochs({"cached": frozen["cached"]}, {"cached": loaders["dynamic_bucketed"]})  # fills the cache
    passes = lockstep_epochs(frozen, {name: loaders["dynamic_bucketed"] for name in frozen})
    rate = {name: n / (d + s) for name, (n, d, s) in passes.items()}
    levers["frozen_epoch_samples_per_s"] = rate
    levers["frozen_cache_speedup"] = rate["cached"] / rate["uncached"]
    del frozen, step

    log("lever: mask-free fusion for batches without padding, inference_mode vs no_grad, threads (batch 1, 64)")
    timings: dict = {}
    full_masks = recipe._unless_full
    threads = torch.get_num_threads()

    def masks_always(mask):
        return mask

    variants = {"fast": (torch.inference_mode, True, args.infer_threads),
                "masks": (torch.inference_mode, False, args.infer_threads),
                "no_grad": (torch.no_grad, True, args.infer_threads),
                "batch1_all_threads": (torch.inference_mode, True, threads)}
    loaders = {1: make_loader(test, batch_size=1, shuffle=False), INFER_BATCH: make_loader(
        test, batch_size=INFER_BATCH, shuffle=False)}
    counts = {1: args.infer_utterances, INFER_BATCH: 3}
    mhmf.eval()
    for size, loader in loaders.items():
        batches = [b for _, b in zip(range(counts[size]), loader)]
        for index, batch in enumerate(batches * 2):  # every variant on each batch in turn, the first one untimed
            for name, (grad_mode, skip, batch1_threads) in variants.items():
                recipe._unless_full = full_masks if skip else masks_always
                torch.set_num_threads(batch1_threads if size == 1 else threads)
                try:
                    with grad_mode():
                        start = time.perf_counter()
                        mhmf(batch)
                        seconds = time.perf_counter() - start
                finally:
                    recipe._unless_full = full_masks
                    torch.set_num_threads(threads)
                if index:
                    timings.setdefault(name, {"b1": [], "b64": []})["b1" if size == 1 else "b64"].append(
                        seconds / len(batch))
    ms = {name: 1000 * statistics.median(t["b1"]) for name, t in timings.items()}
    per_s = {name: 1 / statistics.median(t["b64"]) for name, t in timings.items()}
    levers["infer_ms_per_utterance"] = ms
    levers["infer_utterances_per_s"] = per_s
    levers["mask_free_batch1_speedup"] = ms["masks"] / ms["fast"]
    levers["inference_mode_batch1_speedup"] = ms["no_grad"] / ms["fast"]
    levers["inference_mode_batch64_speedup"] = per_s["fast"] / per_s["no_grad"]
    levers["one_thread_batch1_speedup"] = ms["batch1_all_threads"] / ms["fast"]

    log("lever: tokenized-data cache (load_splits without vs with the on-disk cache)")
    from fusionkit.encoders.bert import load_tokenizer

    tokenizer = load_tokenizer(None if args.tiny_bert else args.text_model)
    seconds = {}
    for name, cache in (("tokenize", False), ("cached", True)):
        start = time.perf_counter()
        load_splits(args.dataset, data_root=args.data_root, tokenizer=tokenizer, seed=0, cache=cache)
        seconds[name] = time.perf_counter() - start
    levers["load_splits_s"] = seconds
    levers["data_cache_speedup"] = seconds["tokenize"] / seconds["cached"]
    levers["machine"] = {**machine_info(), "infer_threads_batch1": args.infer_threads}
    return levers


def render_markdown(results: dict, args) -> str:
    m = results["machine"]
    text_model = m.get("text_model") or _text_model_label(args)
    setting = (f"{args.dataset} batches of {args.batch_size}, text model {text_model}; {m['cores']} cores "
               f"({m['cpu']}), torch {m['torch']} with {m['threads']} threads ({m['infer_threads_batch1']} for the "
               f"batch-1 latency); device {m.get('device', 'cpu')}, precision {m.get('precision', 'fp32')}; load "
               f"average before the run {m.get('loadavg_1_5_15min')}. Step times are medians over {args.steps} "
               f"steps after {args.warmup} warm-up steps.")
    lines = ["# Speed", "", setting, "", "| quantity | value |", "|---|---|"]
    for key, value in results.items():
        if key == "machine" or not isinstance(value, (int, float)):
            continue
        lines.append(f"| {key} | {value:.4g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    try:
        return _main(argv)
    except UsageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def _main(argv) -> int:
    args = build_parser().parse_args(argv)
    for name in ("batch_size", "steps", "infer_utterances", "flop_batches"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("warmup", "epoch_samples"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(args, name)}")
    for name in ("threads", "infer_threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if sum(map(bool, (args.tiny_bert, args.bert_base, args.text_model is not None))) > 1:
        raise UsageError("--tiny-bert, --bert-base and --text-model are exclusive")
    if not (args.save_interval >= 0 and math.isfinite(args.save_interval)):
        raise UsageError(f"--save-interval must be ≥ 0 seconds, got {args.save_interval}")
    checkpoints = [c.strip() for c in args.checkpoint_models.split(",") if c.strip()]
    args.checkpoint_list = [] if checkpoints == ["none"] else checkpoints
    bad = [c for c in args.checkpoint_list if c not in CHECKPOINT_MODELS]
    if bad:
        raise UsageError(f"--checkpoint-models: unknown {bad[0]!r}; choose from {', '.join(CHECKPOINT_MODELS)} "
                         f"or none")
    from fusionkit.training.distributed import resolve_device
    from fusionkit.training.precision import resolve_precision

    try:
        args.device_resolved = resolve_device(args.device)
        args.precision_resolved = resolve_precision(args.precision, args.device_resolved)
    except (ValueError, RuntimeError) as e:
        raise UsageError(str(e)) from None
    if args.dataset is None:
        args.dataset = "mosi-sim" if args.data_root is not None or os.environ.get("FUSIONKIT_DATA") else "synthetic"

    import fusionkit
    from fusionkit.data import DataError
    from fusionkit.encoders.bert import TextModelNotFound

    registered = fusionkit.list_components("model")
    names = registered if args.models.strip() == "all" else [s.strip() for s in args.models.split(",") if s.strip()]
    if not names:
        raise UsageError("--models is empty; pass comma-separated model names or 'all'")
    unknown = [n for n in names if n not in registered]
    if unknown:
        raise UsageError(f"unknown model {unknown[0]!r}; registered models: {', '.join(registered)}")
    args.model_list = [n for n in dict.fromkeys(names) if n != ENCODER]
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create --out {str(out)!r} ({e.strerror or e}); choose a writable directory") \
            from None
    def log(message: str) -> None:
        print(message, file=sys.stderr)

    threads = torch.get_num_threads()
    try:
        if args.levers:
            levers = measure_levers(args, log=log)
            (out / "levers.json").write_text(json.dumps(levers, indent=2) + "\n")
            print(json.dumps(levers, indent=2))
            return 0
        results = measure(args, log=log)
    except (DataError, TextModelNotFound) as e:
        raise UsageError(str(e)) from None
    finally:
        torch.set_num_threads(threads)
    (out / "speed.json").write_text(json.dumps(results, indent=2) + "\n")
    markdown = render_markdown(results, args)
    (out / "speed.md").write_text(markdown)
    print(markdown)
    print(f"wrote {out / 'speed.json'} and {out / 'speed.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
