"""The training loop every fusionkit model shares.

``train_and_evaluate`` builds a registered model for a loaded dataset, trains it with AdamW (task loss
``MSE(prediction, label)``, or L1 with ``loss="l1"``, plus the model's already-weighted ``loss_terms``), selects the epoch on the
validation split only, and evaluates the test split once with the selected weights.

Reproducibility and resumption: every epoch ``e`` starts by re-seeding Python, NumPy and torch from
``(seed, e, rank)`` and the loader's shuffling from ``(seed, e)``. A checkpoint taken after ``k`` batches of
epoch ``e`` stores the generator states at that point; resuming re-seeds epoch ``e``, skips its first ``k``
batches, restores those states and continues, so the remaining batches, dropout masks, optimizer and
scheduler steps are exactly those of an uninterrupted run.
"""
from __future__ import annotations

import functools
import json
import os
import random
import signal
import sys
import threading
import time
import warnings
import zlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from fusionkit.metrics import compute_metrics
from fusionkit.planning import Plan, data_build_kwargs
from fusionkit.training import checkpoint as ckpt
from fusionkit.training import distributed as dist_utils
from fusionkit.training import stages
from fusionkit.training.build import build_model, model_description
from fusionkit.training.checkpointing import (BEST_DIR, CURVE_FILE, GENERATOR_PREFIX, LAST_DIR,
                                              LOG_FILE, PREDICTIONS_FILE, RESULT_FILE, RunState, checked_best,
                                              clear_run_dir, identity_config, load_last, module_generators,
                                              save_best, save_last)
from fusionkit.training.config import TrainConfig, select_lower_is_better
from fusionkit.training.encoder_cache import attach_encoder_cache
from fusionkit.training.optim import build_optimizer, build_scheduler
from fusionkit.training.precision import autocast, backward_and_step, grad_scaler, resolve_precision
from fusionkit.training.progress import RunProgress


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT or SIGTERM after writing a checkpoint; rerun with ``resume=True`` to continue.

    ``what``: where it stopped; ``checkpoint``: the ``last/`` directory written (``None`` without ``out_dir``);
    ``signum``: the signal that stopped it (a command exits with ``128 + signum``: 130 for SIGINT, 143 for
    SIGTERM).
    """

    signum: int = signal.SIGINT

    def __init__(self, what: str = "", checkpoint: Path | None = None) -> None:
        self.what, self.checkpoint = what, checkpoint
        super().__init__(what + (f"; checkpoint saved in {checkpoint}, rerun with resume=True to continue"
                                 if checkpoint is not None else ""))


@dataclass
class RunResult:
    """Outcome of one training run.

    best_epoch: 1-based epoch whose weights were selected on the validation split.
    valid / test: metric dicts (:data:`fusionkit.metrics.METRICS`) of the selected weights.
    history: one dict per finished epoch (what ``log.jsonl`` holds).
    checkpoint_dir: ``out_dir/best`` (``None`` when nothing was written).
    test_predictions / test_labels: ``(N,)`` arrays in test-split order; test_features: ``(N, d)``; test_ids.
    test_diagnostics: test-split means of the model's ``ModelOutput.diagnostics`` (empty when it has none).
    test_fused: ``(N, d_f)`` pooled fusion-block outputs (``ModelOutput.fused``), ``None`` when not defined.
    stage_results: for a model trained in stages (:mod:`fusionkit.training.stages`), every stage's result.
    """

    best_epoch: int
    valid: dict
    test: dict
    history: list
    checkpoint_dir: Path | None
    test_predictions: np.ndarray
    test_features: np.ndarray
    test_labels: np.ndarray = field(default_factory=lambda: np.zeros(0))
    test_ids: list = field(default_factory=list)
    test_diagnostics: dict = field(default_factory=dict)
    test_fused: np.ndarray | None = None
    stage_results: dict = field(default_factory=dict)  # staged models: {stage name: RunResult}, in order


@dataclass
class EvalOutput:
    predictions: np.ndarray
    labels: np.ndarray
    features: np.ndarray
    ids: list
    metrics: dict
    loss: float
    diagnostics: dict = field(default_factory=dict)
    fused: np.ndarray | None = None


# -- helpers -----------------------------------------------------------------------------------------------
def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def seed_module_generators(generators: dict[str, torch.Generator], seed: int) -> None:
    for name, generator in generators.items():
        generator.manual_seed(int(np.random.SeedSequence([seed, zlib.crc32(name.encode())]).generate_state(1)[0]))


def _configure_torch(cfg: TrainConfig, ctx: dist_utils.DistContext) -> None:
    threads = cfg.num_threads or max(1, (os.cpu_count() or 1) // ctx.world)
    torch.set_num_threads(threads)
    if cfg.deterministic:
        if ctx.device.type == "cuda":
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)


STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_clock = time.monotonic  # the save-interval clock (tests replace it)


class _SigintFlag:
    """Turns SIGINT and SIGTERM into a flag checked between steps (only in the main thread; restored on exit):
    the step in flight finishes, a checkpoint is written and the run stops with :class:`TrainingInterrupted`."""

    def __init__(self) -> None:
        self.raised = False
        self.signum = signal.SIGINT
        self._previous: dict = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in STOP_SIGNALS}
        return self

    def _handle(self, signum, frame) -> None:
        if self.raised:  # a second Ctrl-C aborts at once
            stop = TrainingInterrupted(f"a second {signal.Signals(signum).name} stopped the run at once, without "
                                       f"saving the step in flight; the last checkpoint is kept")
            stop.signum = signum
            raise stop
        self.raised, self.signum = True, signum

    def __exit__(self, *exc) -> None:
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)


def _interrupted(flag: _SigintFlag, what: str, checkpoint: Path | None) -> TrainingInterrupted:
    stop = TrainingInterrupted(what, checkpoint)
    stop.signum = flag.signum
    return stop


def _show_bars(cfg: TrainConfig, ctx: dist_utils.DistContext) -> bool:
    return not cfg.quiet and ctx.is_main and sys.stderr.isatty()


def _add_diagnostics(sums: dict, diagnostics: dict | None, n: int) -> None:
    """Accumulate a batch's ``ModelOutput.diagnostics`` into ``sums`` ``{name: [Σ value·n, Σ n]}`` (JSON-able,
    so it can sit in a checkpoint); a name missing from a batch (e.g. no valid triplet) does not count it."""
    for k, v in (diagnostics or {}).items():
        entry = sums.setdefault(k, [0.0, 0.0])
        entry[0] += float(v) * n
        entry[1] += n


def _merge_diagnostic_sums(parts) -> dict:
    merged: dict = {}
    for part in parts:
        for k, (total, count) in part.items():
            entry = merged.setdefault(k, [0.0, 0.0])
            entry[0] += total
            entry[1] += count
    return merged


def _gather_diagnostics(ctx, sums: dict) -> dict:
    """Epoch means of the training diagnostics over every rank's batches."""
    return _mean_diagnostics(_merge_diagnostic_sums(dist_utils.all_gather_objects(ctx, sums)))


def _mean_diagnostics(sums: dict) -> dict:
    return {k: total / count for k, (total, count) in sorted(sums.items()) if count}


TASK_LOSS_FNS = {"mse": F.mse_loss, "l1": F.l1_loss}


def _task_loss(prediction: torch.Tensor, label: torch.Tensor, kind: str = "mse") -> torch.Tensor:
    return TASK_LOSS_FNS[kind](prediction.float(), label.float())


def _numpy_task_loss(preds: np.ndarray, labels: np.ndarray, kind: str) -> float:
    err = preds - labels
    return float(np.mean(np.abs(err)) if kind == "l1" else np.mean(err ** 2))


class _LossSums:
    """Per-step loss values kept on the device and added to the epoch sums in step order at :meth:`flush`.

    On a GPU reading a loss (``.item()``) waits for the step to finish, so the values are read in one transfer
    every ``log_every`` steps, before each checkpoint and at the epoch end; on CPU every step (free there, and it
    refuses a non-finite loss before the optimizer step). The sums are the same either way: each value is read
    exactly as ``.item()`` would and added in the same order.
    """

    def __init__(self) -> None:
        self.pending: list = []

    def add(self, step: int, loss: torch.Tensor, task: torch.Tensor, terms: dict, n: int,
            diagnostics: dict | None = None) -> None:
        self.pending.append((loss.detach(), task.detach(), {k: v.detach() for k, v in terms.items()}, n,
                             {k: v.detach() if isinstance(v, torch.Tensor) else float(v)
                              for k, v in (diagnostics or {}).items()}, step))

    def flush(self, sums: dict, describe: Callable[[int, float, dict], str]) -> None:
        """Add the pending values to ``sums``; a non-finite loss raises ``FloatingPointError(describe(step, task,
        terms))``."""
        if not self.pending:
            return
        flat = [t for loss, task, terms, _, diag, _ in self.pending
                for t in (loss, task, *terms.values(), *diag.values())]
        tensors = [t.double().reshape(()) for t in flat if isinstance(t, torch.Tensor)]
        read = iter(torch.stack(tensors).cpu().tolist() if tensors else [])
        values = iter([next(read) if isinstance(t, torch.Tensor) else t for t in flat])
        pending, self.pending = self.pending, []
        for _, _, terms, n, diag, step in pending:
            loss, task = next(values), next(values)
            term_values = {k: next(values) for k in terms}
            _add_diagnostics(sums.setdefault("diagnostics", {}), {k: next(values) for k in diag}, n)
            if not np.isfinite(loss):
                raise FloatingPointError(describe(step, task, term_values))
            sums["loss"] += loss * n
            sums["task"] += task * n
            sums["n"] += n
            for k, v in term_values.items():
                sums["terms"][k] = sums["terms"].get(k, 0.0) + v * n


# -- evaluation --------------------------------------------------------------------------------------------
@torch.no_grad()
def evaluate(model: torch.nn.Module, dataset, *, batch_size: int = 64, padding: str = "dynamic",
             ctx: dist_utils.DistContext | None = None, loss: str = "mse",
             precision: str = "fp32") -> EvalOutput:
    """Predict every example of ``dataset`` and compute the metrics (in fp32/fp64) on the whole split; ``loss``
    names the task loss (``mse`` | ``l1``) reported as ``EvalOutput.loss``.

    Batches are length-bucketed as in training (:func:`fusionkit.data.loader.length_buckets`: buckets of the
    dataset order sorted by length), so dynamic padding stays small; the outputs are returned in dataset order.
    ``precision``: autocast of the forward (:mod:`fusionkit.training.precision`).
    Under DDP each rank predicts every ``world``-th batch and the predictions are gathered, so every rank
    returns the same, complete result.
    """
    from fusionkit.data import make_loader
    from fusionkit.data.loader import length_buckets

    ctx = ctx or dist_utils.DistContext(rank=0, world=1, local_rank=0, device=next(model.parameters()).device)
    net = dist_utils.unwrap(model)
    was_training = net.training
    net.eval()
    mine = []
    batches = length_buckets(dataset.lengths, batch_size=batch_size)
    loader = make_loader(dataset, batch_size=batch_size, shuffle=False, padding=padding, index_batches=batches,
                         pin_memory=ctx.device.type == "cuda")
    for index, batch in enumerate(loader):
        if index % ctx.world != ctx.rank:
            continue
        with autocast(precision, ctx.device):
            out = net(batch.to(ctx.device, non_blocking=True))
        diag: dict = {}
        _add_diagnostics(diag, getattr(out, "diagnostics", None), len(batch))
        fused = getattr(out, "fused", None)
        mine.append((index, out.prediction.float().cpu().numpy(), out.features.float().cpu().numpy(),
                     batch.label.numpy(), list(batch.ids), diag,
                     None if fused is None else fused.float().cpu().numpy()))
    net.train(was_training)
    parts = sorted((p for rank_parts in dist_utils.all_gather_objects(ctx, mine) for p in rank_parts),
                   key=lambda p: p[0])
    order = np.argsort(np.concatenate([batches[p[0]] for p in parts]), kind="stable")  # back to dataset order
    preds = np.concatenate([p[1] for p in parts]).astype(np.float64)[order]
    feats = np.concatenate([p[2] for p in parts])[order]
    labels = np.concatenate([p[3] for p in parts]).astype(np.float64)[order]
    batch_ids = [i for p in parts for i in p[4]]
    ids = [batch_ids[j] for j in order]
    diag_sums = _merge_diagnostic_sums(p[5] for p in parts)
    fused = None if any(p[6] is None for p in parts) else np.concatenate([p[6] for p in parts])[order]
    return EvalOutput(predictions=preds, labels=labels, features=feats, ids=ids, fused=fused,
                      metrics=compute_metrics(preds, labels), loss=_numpy_task_loss(preds, labels, loss),
                      diagnostics=_mean_diagnostics(diag_sums))



# -- the run -----------------------------------------------------------------------------------------------
_build_kwargs = data_build_kwargs  # the former private name
_Run = RunState  # the former private name
# the checkpoint steps, called through these names (tests replace them to watch or interrupt a run)
_identity_config, _clear_run_dir, _save_last, _load_last, _checked_best = (
    identity_config, clear_run_dir, save_last, load_last, checked_best)


@dataclass
class TrainerState:
    """What a :class:`TrainerCallback` sees at the end of an epoch (HF Trainer style).

    epoch: epochs finished (1-based count). global_step: optimizer steps so far. history: the ``log.jsonl``
    entries so far (the last one is this epoch's). best_epoch / best_value: the selected epoch and its
    ``select_metric`` value. should_stop: set it to ``True`` to stop after this epoch, like early stopping (the
    checkpoint then records the stop, so a resumed run does not continue).
    """

    model_name: str
    epoch: int
    global_step: int
    history: list
    best_epoch: int
    best_value: float | None
    should_stop: bool = False


class TrainerCallback:
    """Hooks of the training loop; subclass and override what you need. Called on every process (under DDP a
    ``should_stop`` decision must be the same on every rank)."""

    def on_epoch_end(self, state: TrainerState) -> None:
        """After validation and model selection, before the epoch's checkpoint is written."""


def train_and_evaluate(
    model_name: str | Plan,
    data,
    config: TrainConfig | None = None,
    model_kwargs: dict | None = None,
    *,
    on_step: Callable[[dict], None] | None = None,
    on_epoch: Callable[[dict], None] | None = None,
    callbacks: Sequence[TrainerCallback] = (),
) -> RunResult:
    """Train registered model ``model_name`` on ``data`` (a :class:`fusionkit.data.LoadedData`) and test it.

    ``model_name`` may be a :class:`fusionkit.planning.Plan` (``fusionkit.plan(name, data, **options)``), whose
    checked arguments are used as they are (then ``model_kwargs`` must be empty).

    ``model_kwargs`` go to the model factory (``text_model``, ``bert_config``, ``encoder_mode``, hyper-
    parameters); ``d_acoustic`` / ``d_visual`` are taken from the dataset. ``on_step`` is called after every
    optimizer step with ``{"epoch", "step", "batch", "loss", "samples_seen"}`` (progress hooks, tests);
    ``callbacks``: :class:`TrainerCallback` objects whose ``on_epoch_end`` runs after every epoch.
    ``on_epoch`` is called after every epoch's validation with that epoch's ``log.jsonl`` entry; an exception it
    raises (e.g. ``optuna.TrialPruned``) stops training and propagates. Data without a ``test`` split (tuning
    data, :mod:`benchmarks.tune`) is never tested: ``RunResult.test`` is then ``{}``.
    Returns a :class:`RunResult`; with ``config.out_dir`` it also writes checkpoints, ``log.jsonl``,
    ``result.json``, ``test_predictions.csv`` and ``curve.png`` there (rank 0 only).
    """
    threads = torch.get_num_threads()
    deterministic = (torch.are_deterministic_algorithms_enabled(),
                     torch.is_deterministic_algorithms_warn_only_enabled())
    try:
        return _train_and_evaluate(model_name, data, config, model_kwargs, on_step, on_epoch,
                                   callbacks=tuple(callbacks))
    finally:  # leave the process as we found it (tests and notebooks run several things in one process)
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])


def _train_and_evaluate(model_name, data, config, model_kwargs, on_step, on_epoch=None, model=None,
                        stage=None, callbacks=()) -> RunResult:
    """Build the model (a staged model trains stage by stage, each through here), then one :class:`Trainer`."""
    config = config or TrainConfig()
    if isinstance(model_name, Plan):
        if model_kwargs:
            raise ValueError("pass the model options to fusionkit.plan(...), not model_kwargs, when training a Plan")
        build_kwargs = dict(data_build_kwargs(data, model_name.kwargs, model_name.model))  # refuses other data sizes
        model_name = model_name.model
    else:
        build_kwargs = data_build_kwargs(data, model_kwargs or {}, model_name)
    ctx = dist_utils.setup(config.device or "auto")
    seed = config.seed if config.seed is not None else 0
    seed_everything(seed)
    if model is None:
        model = build_model(model_name, build_kwargs)
        if stages.model_stages(model):  # trained stage by stage, each through this loop
            # the stages get the merged build arguments (a Plan's included), so each stage's model.json is the model's
            return stages.run_stages(functools.partial(_train_and_evaluate, callbacks=callbacks),
                                     model_name, data, config, build_kwargs, on_step, model)
    trainer = Trainer(model_name=model_name, model=model, data=data, config=config, build_kwargs=build_kwargs,
                      ctx=ctx, seed=seed, stage=stage, on_step=on_step, on_epoch=on_epoch, callbacks=callbacks)
    trainer.resume()
    return trainer.fit()


class Trainer:
    """One run of the shared loop, in named steps.

    ``Trainer(...)`` sets the run up (settings, optimizer, scheduler, output directory identity); :meth:`resume`
    restores ``last/`` or clears the output directory; :meth:`fit` then repeats :meth:`fit_epoch`,
    :meth:`validate`, :meth:`select` (which writes ``best/``) and :meth:`end_epoch` (hooks, ``log.jsonl``,
    :meth:`checkpoint` to ``last/``) until the last epoch or an early stop, and :meth:`finish` tests the selected
    weights once and writes the results. The order of these steps fixes every random draw, so it must not change.
    """

    def __init__(self, *, model_name: str, model: torch.nn.Module, data, config: TrainConfig, build_kwargs: dict,
                 ctx: dist_utils.DistContext, seed: int, stage: stages.TrainingStage | None = None,
                 on_step: Callable[[dict], None] | None = None, on_epoch: Callable[[dict], None] | None = None,
                 callbacks: Sequence[TrainerCallback] = ()) -> None:
        from fusionkit.data import make_loader

        self.model_name, self.model, self.data, self.ctx, self.stage = model_name, model, data, ctx, stage
        self.on_step, self.on_epoch, self.callbacks = on_step, on_epoch, tuple(callbacks)
        defaults = {k: v for k, v in dict(getattr(model, "train_defaults", {}) or {}).items() if k != "seed"}
        if stage is not None:
            config, defaults = stages.stage_config(config, stage, defaults)
        cfg = TrainConfig(**{**config.to_dict(), "seed": seed}).resolve(defaults)
        self.cfg = cfg = replace(cfg, precision=resolve_precision(cfg.precision, ctx.device))
        _configure_torch(cfg, ctx)
        model.to(ctx.device)
        if cfg.cache_encoder and getattr(getattr(model, "encoder", None), "hidden_state_cache", None) is None:
            attach_encoder_cache(model)

        train_ds = data.splits["train"]
        if cfg.max_train_samples is not None and cfg.max_train_samples < len(train_ds):
            train_ds = train_ds.subset(range(cfg.max_train_samples))
        if cfg.batch_size % ctx.world:
            raise ValueError(f"batch_size={cfg.batch_size} must be divisible by the number of processes ({ctx.world})")
        self.train_ds = train_ds
        self.make_loader = functools.partial(
            make_loader, train_ds, batch_size=cfg.batch_size // ctx.world, shuffle=True, seed=cfg.seed,
            padding=cfg.padding, distributed=ctx.enabled, pin_memory=ctx.device.type == "cuda")
        self.steps_per_epoch = len(self.train_loader(0))
        if self.steps_per_epoch == 0:
            raise ValueError(f"the training split of {data.info.name!r} is empty")
        total_steps = self.steps_per_epoch * cfg.epochs
        if stage is not None:
            self.optimizer = stages.build_stage_optimizer(model, stage, cfg)
        else:
            self.optimizer = build_optimizer(model, lr=cfg.lr, encoder_lr=cfg.encoder_lr,
                                             weight_decay=cfg.weight_decay)
        self.scheduler = build_scheduler(self.optimizer, total_steps=total_steps, warmup=cfg.warmup,
                                         schedule=cfg.schedule)
        self.scaler = grad_scaler(cfg.precision, ctx.device)
        self.net = model
        if ctx.enabled:
            self.net = torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
                find_unused_parameters=True)

        self.out_dir = Path(cfg.out_dir) if cfg.out_dir is not None else None
        self.writes = self.out_dir is not None and ctx.is_main
        self.description = model_description(model_name, build_kwargs, dataset=data.info.name,
                                             max_seq_length=getattr(train_ds, "max_seq_length", None),
                                             aligned=getattr(data.info, "aligned", True))
        self.identity = {"model": model_name, "model_json": self.description, "config": _identity_config(cfg),
                         "train_size": len(train_ds), "world_size": ctx.world}
        if stage is not None:
            self.identity["stage"] = stage.name
        self.generators = module_generators(model)
        self.state = RunState()
        self.progress = RunProgress(model_name, seed=cfg.seed, epochs=cfg.epochs, metric=cfg.select_metric,
                                    enabled=ctx.is_main)
        self.best_state: dict | None = None  # the selected weights, on the CPU
        self.resume_rng: tuple | None = None  # generator states of a mid-epoch checkpoint, until its epoch starts
        self.lower = True if stage is not None and stage.select else select_lower_is_better(cfg.select_metric)
        self.show = _show_bars(cfg, ctx)
        self.sums_on_device = _LossSums()
        self.read_every_step = ctx.device.type != "cuda"
        self.last_save = 0.0  # the save-interval clock at the last save (set by resume)
        self.sigint: _SigintFlag | None = None
        self.epoch_bar = None

    def train_loader(self, epoch: int):
        loader = self.make_loader()
        loader.set_epoch(epoch)
        return loader

    # -- resume ------------------------------------------------------------------------------------------
    def resume(self) -> None:
        """With ``resume=True`` and a ``last/`` checkpoint: restore the run, model, optimizer, scheduler and
        scaler (the generator states wait for :meth:`fit_epoch`) and the selected weights; otherwise start a fresh
        output directory."""
        out_dir, state = self.out_dir, self.state
        if self.cfg.resume and out_dir is not None and (out_dir / LAST_DIR / "state.json").is_file():
            self.resume_rng = _load_last(out_dir, self.identity, state, self.model, self.optimizer, self.scheduler,
                                         self.ctx.rank, self.scaler)
            self.progress.resumed(epoch=state.epoch, batches_done=state.batches_done,
                                  steps_per_epoch=self.steps_per_epoch, global_step=state.global_step)
            if state.best_epoch:
                best_weights = ckpt.read_model_weights(_checked_best(out_dir, state, restore=self.writes))
                self.best_state = {k: v.clone() for k, v in best_weights.items()}
        elif out_dir is not None and self.writes:
            _clear_run_dir(out_dir)
        dist_utils.barrier(self.ctx)
        self.last_save = _clock()

    # -- the epochs ----------------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        """Train until the last epoch or an early stop, then :meth:`finish`."""
        state, cfg = self.state, self.cfg
        with _SigintFlag() as sigint:
            self.sigint = sigint
            self.epoch_bar = tqdm(total=cfg.epochs, initial=state.epoch, desc=self.model_name, unit="epoch",
                                  disable=not self.show, dynamic_ncols=True)
            while not state.finished and state.epoch < cfg.epochs and not state.stopped_early:
                self.fit_epoch()
                valid, value, improved = self.validate()
                self.select(valid, value, improved)
                self.end_epoch(value)
            self.epoch_bar.close()
        return self.finish()

    def fit_epoch(self) -> None:
        """Train the epoch in progress (its remaining batches after a mid-epoch resume): seed it, skip the batches
        done, restore the checkpoint's generator states, then one :meth:`train_step` per batch."""
        state, cfg, ctx = self.state, self.cfg, self.ctx
        epoch = state.epoch
        seed_everything(epoch_seed(cfg.seed, epoch, ctx.rank))
        seed_module_generators(self.generators, epoch_seed(cfg.seed, epoch, ctx.rank))
        iterator = iter(self.train_loader(epoch))
        for _ in range(state.batches_done):
            next(iterator)
        if self.resume_rng is not None:
            if state.batches_done:  # mid-epoch: continue the generators; at an epoch start the seed rules
                ckpt.restore_rng(*self.resume_rng)
                for name, generator in self.generators.items():
                    generator.set_state(self.resume_rng[0][GENERATOR_PREFIX + name])
            self.resume_rng = None
        if state.batches_done == 0:
            state.epoch_sums = {"loss": 0.0, "task": 0.0, "n": 0.0, "terms": {}, "diagnostics": {}}
            state.epoch_seconds_before = 0.0
        state.epoch_started = time.perf_counter()
        unsynced = 0  # samples of this rank since the ranks last agreed
        self.net.train()
        step_bar = tqdm(total=self.steps_per_epoch, initial=state.batches_done, desc=f"epoch {epoch + 1}",
                        unit="step", leave=False, disable=not self.show, dynamic_ncols=True)
        for batch in iterator:
            loss, n = self.train_step(batch)
            unsynced += n
            state.global_step += 1
            state.batches_done += 1
            step_bar.update(1)
            last_batch = state.batches_done == self.steps_per_epoch
            step_save = bool(cfg.save_every) and state.global_step % cfg.save_every == 0
            # the ranks agree on stopping, saving and the samples seen: every step on CPU; on a GPU every
            # log_every steps, at step-count saves and the epoch's last batch (a collective waits for the host)
            stop = due = False
            if self.read_every_step or self.on_step is not None or last_batch or step_save \
                    or state.global_step % cfg.log_every == 0:
                due = bool(cfg.save_interval) and _clock() - self.last_save >= cfg.save_interval
                seen, stop, due = dist_utils.all_sum(ctx, [float(unsynced), float(self.sigint.raised),
                                                           float(due and ctx.is_main)])  # rank 0's clock rules
                state.samples_seen += int(seen)
                unsynced = 0
            if state.global_step % cfg.log_every == 0:
                self.sums_on_device.flush(state.epoch_sums, self._non_finite)
                step_bar.set_postfix(loss=f"{loss.item():.4f}")
            if self.on_step is not None:
                self.on_step({"epoch": epoch, "step": state.global_step, "batch": state.batches_done,
                              "loss": loss.item(), "samples_seen": state.samples_seen})
                stop = dist_utils.all_sum(ctx, [float(self.sigint.raised)])[0]
            if self.out_dir is not None and not last_batch and (stop or due or step_save):
                self.sums_on_device.flush(state.epoch_sums, self._non_finite)
                self.checkpoint()
            if stop and not last_batch:
                step_bar.close()
                self.epoch_bar.close()
                raise self._interrupted(f"interrupted at epoch {epoch + 1}, step {state.global_step}")
        step_bar.close()
        self.sums_on_device.flush(state.epoch_sums, self._non_finite)

    def train_step(self, batch) -> tuple[torch.Tensor, int]:
        """Forward, loss, backward, optimizer and scheduler step on one batch; returns the loss and batch size."""
        cfg, ctx = self.cfg, self.ctx
        batch = batch.to(ctx.device, non_blocking=True)
        with autocast(cfg.precision, ctx.device):
            out = self.net(batch)
            task = _task_loss(out.prediction, batch.label, cfg.loss)
            terms = dict(out.loss_terms or {})
            loss = task + sum(terms.values()) if terms else task
        n = len(batch)
        self.sums_on_device.add(self.state.global_step + 1, loss, task, terms, n, getattr(out, "diagnostics", None))
        if self.read_every_step:  # refuses a non-finite loss before the update
            self.sums_on_device.flush(self.state.epoch_sums, self._non_finite)
        self.optimizer.zero_grad(set_to_none=True)
        backward_and_step(loss, self.model, self.optimizer, self.scaler, cfg.grad_clip)
        self.scheduler.step()
        return loss, n

    def _non_finite(self, step: int, task: float, terms: dict) -> str:
        cfg = self.cfg
        return (f"non-finite training loss at epoch {self.state.epoch + 1}, step {step} "
                f"(task {task:.4g}, terms {terms}); lower the learning rate (lr={cfg.lr}, "
                f"encoder_lr={cfg.encoder_lr}) or check the data")

    def _interrupted(self, where: str) -> TrainingInterrupted:
        return _interrupted(self.sigint, f"training of {self.model_name!r} {where}",
                            self.out_dir / LAST_DIR if self.out_dir is not None else None)

    # -- validation and selection ------------------------------------------------------------------------
    def validate(self) -> tuple[EvalOutput, float, bool]:
        """Evaluate the validation split and append the epoch's ``log.jsonl`` entry (training losses summed over
        the ranks); returns the evaluation, its selection value and whether it improves on the best so far."""
        state, cfg, ctx, stage = self.state, self.cfg, self.ctx, self.stage
        sums = {k: v for k, v in state.epoch_sums.items() if k not in ("terms", "diagnostics")}
        # a rank may not have seen every loss term (e.g. terms that need both classes in a batch)
        term_names = sorted({k for names in dist_utils.all_gather_objects(ctx, sorted(state.epoch_sums["terms"]))
                             for k in names})
        totals = dist_utils.all_sum(ctx, [sums["loss"], sums["task"], sums["n"]]
                                    + [state.epoch_sums["terms"].get(k, 0.0) for k in term_names])
        count = max(totals[2], 1.0)
        valid = evaluate(self.model, self.data.splits["valid"], batch_size=cfg.eval_batch_size, padding=cfg.padding,
                         ctx=ctx, loss=cfg.loss, precision=cfg.precision)
        if stage is not None and stage.select:
            value = stages.selection_value(stage, valid.diagnostics)
        else:
            value = valid.loss if cfg.select_metric == "loss" else valid.metrics[cfg.select_metric]
        improved = state.best_value is None or (value < state.best_value if self.lower else value > state.best_value)
        seconds = state.epoch_seconds_before + time.perf_counter() - state.epoch_started
        state.history.append({
            "epoch": state.epoch + 1,
            "step": state.global_step,
            "samples_seen": state.samples_seen,
            "train_loss": totals[0] / count,
            "train_task_loss": totals[1] / count,
            "train_terms": {k: totals[3 + i] / count for i, k in enumerate(term_names)},
            "valid_loss": valid.loss,
            "valid": valid.metrics,
            "lr": {g.get("name", str(i)): g["lr"] for i, g in enumerate(self.optimizer.param_groups)},
            "seconds": round(seconds, 3),
            "improved": bool(improved),
            **({"stage": stage.name} if stage is not None else {}),
        })
        train_diagnostics = _gather_diagnostics(ctx, state.epoch_sums.get("diagnostics", {}))
        if train_diagnostics or valid.diagnostics:
            state.history[-1].update(train_diagnostics=train_diagnostics, valid_diagnostics=valid.diagnostics)
        return valid, value, improved

    def select(self, valid: EvalOutput, value: float, improved: bool) -> None:
        """Keep an improving epoch's weights (in memory and in ``best/``); count the others for early stopping."""
        state = self.state
        if improved:
            state.best_value, state.best_epoch, state.best_valid = value, state.epoch + 1, valid.metrics
            state.bad_epochs = 0
            self.best_state = {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()}
            if self.writes:
                state.best_sha256 = save_best(self.out_dir, self.model, self.description)
        else:
            state.bad_epochs += 1
            state.stopped_early = state.bad_epochs >= self.cfg.patience

    def end_epoch(self, value: float) -> None:
        """Close the epoch: callbacks, progress, ``log.jsonl``, the ``last/`` checkpoint, ``on_epoch``; a stop
        signal received during the epoch ends the run here (:class:`TrainingInterrupted`)."""
        state, cfg = self.state, self.cfg
        epoch = state.epoch
        state.epoch += 1
        state.batches_done = 0
        if self.callbacks:
            shared = TrainerState(model_name=self.model_name, epoch=state.epoch, global_step=state.global_step,
                                  history=list(state.history), best_epoch=state.best_epoch,
                                  best_value=state.best_value)
            for callback in self.callbacks:
                callback.on_epoch_end(shared)
            state.stopped_early = state.stopped_early or shared.should_stop
        self.progress.epoch_end(state.history, value=value, best_value=state.best_value, best_epoch=state.best_epoch)
        if state.stopped_early:
            self.progress.stopped_early(epoch=epoch + 1, patience=cfg.patience)
        if self.writes:
            ckpt.atomic_write_bytes(self.out_dir / LOG_FILE, "".join(json.dumps(h, sort_keys=True) + "\n"
                                                                     for h in state.history).encode())
        if self.out_dir is not None:
            self.checkpoint()
        self.epoch_bar.update(1)
        self.epoch_bar.set_postfix({cfg.select_metric: f"{value:.4f}", "best": state.best_epoch})
        if self.on_epoch is not None:
            self.on_epoch(dict(state.history[-1], select_value=value))
        if dist_utils.all_sum(self.ctx, [float(self.sigint.raised)])[0] and state.epoch < cfg.epochs \
                and not state.stopped_early:
            self.epoch_bar.close()
            raise self._interrupted(f"interrupted after epoch {epoch + 1}")

    # -- checkpoint ----------------------------------------------------------------------------------------
    def checkpoint(self, with_optimizer: bool = True) -> None:
        """Write ``last/`` (``with_optimizer=False``: the finished run, counters and generators only)."""
        _save_last(self.out_dir, self.ctx, self.identity, self.state, self.model,
                   self.optimizer if with_optimizer else None, self.scheduler if with_optimizer else None,
                   self.scaler)
        self.last_save = _clock()

    # -- finish --------------------------------------------------------------------------------------------
    def finish(self) -> RunResult:
        """Load the selected weights and test them once (not in a stage before the last, nor without a test
        split); mark ``last/`` finished and write ``result.json``, the test predictions and the curve."""
        state, cfg, ctx, out_dir, stage = self.state, self.cfg, self.ctx, self.out_dir, self.stage
        if self.best_state is None:
            raise RuntimeError("no epoch finished, so no weights were selected")
        self.model.load_state_dict(self.best_state)
        if stage is not None and stage is not stages.model_stages(self.model)[-1]:  # an earlier stage: no test split
            self._mark_finished()
            dist_utils.barrier(ctx)
            if self.writes:
                ckpt.atomic_write_json(out_dir / RESULT_FILE,
                                       stages.intermediate_record(state, self.model_name, stage, cfg))
            return RunResult(best_epoch=state.best_epoch, valid=state.best_valid, test={}, history=state.history,
                             checkpoint_dir=out_dir / BEST_DIR if out_dir is not None else None,
                             test_predictions=np.zeros(0), test_features=np.zeros((0, 0)))
        if "test" not in self.data.splits:  # tuning data holds train and valid only: nothing to test, nothing written
            dist_utils.barrier(ctx)
            return RunResult(best_epoch=state.best_epoch, valid=state.best_valid, test={}, history=state.history,
                             checkpoint_dir=None, test_predictions=np.zeros(0), test_features=np.zeros((0, 0)))
        test = evaluate(self.model, self.data.splits["test"], batch_size=cfg.eval_batch_size, padding=cfg.padding,
                        ctx=ctx, loss=cfg.loss, precision=cfg.precision)
        result = RunResult(best_epoch=state.best_epoch, valid=state.best_valid, test=test.metrics,
                           history=state.history, checkpoint_dir=out_dir / BEST_DIR if out_dir is not None else None,
                           test_predictions=test.predictions, test_features=test.features, test_labels=test.labels,
                           test_ids=test.ids, test_diagnostics=test.diagnostics, test_fused=test.fused)
        self.progress.finished(best_epoch=state.best_epoch, valid=state.best_valid, test=test.metrics,
                               history=state.history)
        self._mark_finished()
        if self.writes:
            _write_outputs(out_dir, self.model_name, cfg, result, test)
        dist_utils.barrier(ctx)
        return result

    def _mark_finished(self) -> None:
        if self.out_dir is not None and not self.state.finished:
            self.state.finished = True
            self.checkpoint(with_optimizer=False)


def _write_outputs(out_dir: Path, model_name: str, cfg: TrainConfig, result: RunResult, test: EvalOutput) -> None:
    ckpt.atomic_write_json(out_dir / RESULT_FILE, {
        "model": model_name, "seed": cfg.seed, "best_epoch": result.best_epoch, "epochs_run": len(result.history),
        "valid": result.valid, "test": result.test, "config": cfg.to_dict(),
        # spread of the selected weights' test predictions vs the labels': near 0 means a constant predictor
        "test_prediction_std": float(np.std(test.predictions)), "test_label_std": float(np.std(test.labels)),
        **({"test_diagnostics": result.test_diagnostics} if result.test_diagnostics else {})})
    lines = ["id,label,prediction"] + [f"{i},{y:.6g},{p:.6g}" for i, y, p in zip(test.ids, test.labels,
                                                                                 test.predictions)]
    ckpt.atomic_write_bytes(out_dir / PREDICTIONS_FILE, ("\n".join(lines) + "\n").encode())
    try:
        from fusionkit.training.plots import plot_history

        plot_history(result.history, out_dir / CURVE_FILE, title=f"{model_name} (seed {cfg.seed})")
    except Exception as e:  # noqa: BLE001 - a plotting failure must not lose a finished run
        from fusionkit.diskfull import DiskFullError

        if isinstance(e, DiskFullError):
            raise
        warnings.warn(f"could not draw the training curve: {e}", RuntimeWarning, stacklevel=2)
