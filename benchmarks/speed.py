"""Training and inference speed of the fusion models against their text encoder: ``python -m benchmarks.speed``.

Examples::

    python -m benchmarks.speed                                  # mhmf, bundled MiniLM, batch 32
    python -m benchmarks.speed --data-root /data --models mhmf,mag,misa --out runs/speed

Everything is measured in one process, on the same batches, after warm-up, as medians over repeated steps:

* ``encoder_step_s``: one training step (forward, MSE, backward, gradient clipping, AdamW — the engine's
  optimizer groups) of the text encoder alone with the ``text`` model's head;
* ``<model>_step_s`` / ``<model>_over_encoder``: the same for each model, and its ratio to the encoder step. The
  models' steps run round-robin on each batch, so load drifts on a shared machine hit all of them equally;
* ``epoch_samples_per_s_dynamic`` / ``_fixed50`` / ``dynamic_over_fixed50``: ``mhmf`` training throughput through
  the real loader with dynamic padding and length bucketing vs. fixed padding to ``max_seq_length`` (50, MAG-BERT's
  loader); the two passes run batch by batch in lockstep;
* ``data_fraction``: time in the loader's ``next()`` (sampling, collation) over the whole dynamic pass;
* ``infer_ms_per_utterance`` (batch 1, ``--infer-threads`` intra-op threads, default 1) and
  ``infer_utterances_per_s`` (batch 64): ``mhmf`` in eval mode under ``torch.inference_mode``;
* ``peak_rss_mb``: the process's peak resident memory.

The batches have MOSI's word-piece lengths (``mosi-sim``) when a data root is given (``--data-root`` or
``FUSIONKIT_DATA``), else those of ``synthetic``. ``OUT/speed.json`` holds these keys plus ``machine``;
``OUT/speed.md`` the same as a table. ``--levers`` instead times the before/after pair of each speed lever
(``OUT/levers.json``; see the README section "Performance").
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_MODELS = "mhmf"
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


class TrainStep:
    """One training step of the engine (forward, MSE + loss terms, backward, clipping, AdamW) for a model."""

    def __init__(self, model: torch.nn.Module, grad_clip: float = 1.0, fused: bool | None = None) -> None:
        from fusionkit.training.optim import build_optimizer

        defaults = getattr(model, "train_defaults", {}) or {}
        self.model = model.train()
        self.grad_clip = grad_clip
        self.optimizer = build_optimizer(model, lr=defaults.get("lr", 1e-4), encoder_lr=defaults.get("encoder_lr", 5e-5),
                                         weight_decay=0.01, fused=fused)

    def __call__(self, batch) -> float:
        """Run the step on ``batch``; returns its wall-clock seconds."""
        start = time.perf_counter()
        out = self.model(batch)
        loss = F.mse_loss(out.prediction.float(), batch.label.float())
        if out.loss_terms:
            loss = loss + sum(out.loss_terms.values())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        self.optimizer.step()
        return time.perf_counter() - start


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
                   grad_mode=torch.inference_mode, repeats: int = 1) -> list:
    """``(seconds, size)`` per batch of ``model`` (eval mode, under ``grad_mode``) over the first ``count`` batches
    of ``dataset`` (in order), ``repeats`` times."""
    from fusionkit.data import make_loader

    model.eval()
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, padding="dynamic", bucketing=False)
    batches = [b for _, b in zip(range(count), loader)]
    times = []
    with grad_mode():
        for batch in batches[:warmup]:
            model(batch)
        for batch in batches * repeats:
            start = time.perf_counter()
            model(batch)
            times.append((time.perf_counter() - start, len(batch)))
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
    elif args.text_model is not None:
        model_kwargs["text_model"] = args.text_model

    def build(name: str, **kw) -> torch.nn.Module:
        torch.manual_seed(0)
        return fusionkit.create(name, **model_kwargs, **kw)

    return data, build


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
    results: dict = {}

    # 1. training steps, round-robin over the same bucketed batches
    batches = _batches(train, args, args.warmup + args.steps)
    steppers = {ENCODER: TrainStep(build(ENCODER))}
    for name in args.model_list:
        steppers[name] = TrainStep(build(name))
    log(f"timing {len(steppers)} training steps round-robin on {args.steps} batches of {args.batch_size} "
        f"(lengths {[int(b.input_ids.shape[1]) for b in batches[args.warmup:]]})")
    medians = round_robin_steps(steppers, batches, args.warmup)
    results["encoder_step_s"] = medians[ENCODER]
    for name in args.model_list:
        results[f"{name}_step_s"] = medians[name]
        results[f"{name}_over_encoder"] = medians[name] / medians[ENCODER]
    mhmf = steppers["mhmf"].model if "mhmf" in steppers else build("mhmf")
    del steppers, batches

    # 2. epoch throughput through the real loaders: dynamic padding + bucketing vs fixed padding to 50
    subset = _subset(train, args)
    loaders = {
        "dynamic": make_loader(subset, batch_size=args.batch_size, shuffle=True, seed=1, padding="dynamic",
                               bucketing=True),
        FIXED_LENGTH_NOTE: make_loader(subset, batch_size=args.batch_size, shuffle=True, seed=1, padding="fixed",
                                       bucketing=False),
    }
    log(f"timing a training pass over {len(subset)} samples per loader (dynamic+bucketing / fixed "
        f"{train.max_seq_length}), in lockstep")
    epoch_step = TrainStep(mhmf)
    passes = lockstep_epochs({name: epoch_step for name in loaders}, loaders)
    for name, (samples, data_s, step_s) in passes.items():
        results[f"epoch_samples_per_s_{name}"] = samples / (data_s + step_s)
    results["dynamic_over_fixed50"] = (results["epoch_samples_per_s_dynamic"]
                                       / results[f"epoch_samples_per_s_{FIXED_LENGTH_NOTE}"])
    _, data_s, step_s = passes["dynamic"]
    results["data_fraction"] = data_s / (data_s + step_s)
    del epoch_step

    # 3. inference: batch 1 (latency) and batch 64 (throughput)
    test = data.splits["test"]
    log(f"timing inference: {args.infer_utterances} utterances at batch 1, batches of {INFER_BATCH}")
    threads = torch.get_num_threads()
    torch.set_num_threads(args.infer_threads)
    try:
        single = time_inference(mhmf, test, batch_size=1, count=args.infer_utterances, repeats=2)
    finally:
        torch.set_num_threads(threads)
    results["infer_ms_per_utterance"] = 1000 * statistics.median(s for s, _ in single)
    full = time_inference(mhmf, test, batch_size=INFER_BATCH, count=4)
    results["infer_utterances_per_s"] = sum(n for _, n in full) / sum(s for s, _ in full)
    results["peak_rss_mb"] = peak_rss_mb()
    results["machine"] = {**machine, "infer_threads_batch1": args.infer_threads}
    return results


def measure_levers(args, log=print) -> dict:
    """Before/after of each speed lever, every pair timed in one process on the same batches (interleaved)."""
    import recipes.mhmf_bert as recipe
    from fusionkit.data import load_splits, make_loader
    from fusionkit.training.encoder_cache import attach_encoder_cache
    data, build = _setup(args)
    train, test = data.splits["train"], data.splits["test"]
    levers: dict = {}
    batches = _batches(train, args, args.warmup + args.steps)

    log("lever: fusion width and heads, FFN hidden dropout, fused vs foreach AdamW; training steps round-robin")
    variants = {"d48_h4": dict(d_fusion=48, heads=4), "d64_h4": dict(d_fusion=64, heads=4),
                "h4": dict(heads=4), "ffn_dropout": dict(ffn_dropout=0.1)}
    steppers = {"text": TrainStep(build("text")), "mhmf": TrainStep(build("mhmf"))}
    steppers.update({f"mhmf_{key}": TrainStep(build("mhmf", **kw)) for key, kw in variants.items()})
    for name in ("text", "mhmf"):  # same models, AdamW's per-tensor loop instead of the fused kernel
        steppers[f"{name}_foreach_adamw"] = TrainStep(build(name), fused=False)
    med = round_robin_steps(steppers, batches, args.warmup)
    levers["step_s"] = med
    levers["mhmf_over_encoder"] = med["mhmf"] / med["text"]
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
    text_model = "tiny random BERT (tests)" if args.tiny_bert else (args.text_model or "bundled MiniLM-L6")
    setting = (f"{args.dataset} batches of {args.batch_size}, text model {text_model}; {m['cores']} cores "
               f"({m['cpu']}), torch {m['torch']} with {m['threads']} threads ({m['infer_threads_batch1']} for the "
               f"batch-1 latency). Step times are medians over {args.steps} steps after {args.warmup} warm-up "
               f"steps.")
    lines = ["# Speed", "", setting, "", "| quantity | value |", "|---|---|"]
    for key, value in results.items():
        if key == "machine":
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
    for name in ("batch_size", "steps", "infer_utterances"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}")
    for name in ("warmup", "epoch_samples"):
        if getattr(args, name) < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be ≥ 0, got {getattr(args, name)}")
    for name in ("threads", "infer_threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.tiny_bert and args.text_model is not None:
        raise UsageError("--tiny-bert and --text-model are exclusive")
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
