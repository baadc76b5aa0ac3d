"""Models trained in stages: a model declares ``stages`` and the engine trains them in order.

A model whose instance has a non-empty ``stages`` tuple of :class:`TrainingStage` (e.g. ``iccn``: an
unsupervised DCCA stage, then a downstream regressor on frozen embeddings) is trained by
:func:`fusionkit.training.train_and_evaluate` one stage after the other, on the same model object:

1. ``model.enter_stage(stage.name)`` — the model freezes what the stage must not update and says what its
   forward computes in that stage;
2. the shared loop runs with the stage's settings: explicit :class:`TrainConfig` values first, then the
   stage's ``defaults``, then the model's ``train_defaults``, then the global defaults; ``fixed`` values always
   hold (e.g. the selection rule of an unsupervised stage). The optimizer is the stage's (``adamw``, ``adam``
   or ``rmsprop``) over the parameters that require gradients;
3. selection is on the validation split only: ``select`` names a validation diagnostic of the model's output
   (lower is better), or ``None`` for ``select_metric`` as usual. The selected weights are loaded before the
   next stage starts.

Outputs and resumption: stage ``i`` of ``n`` writes its log, checkpoints and result to
``out_dir/stage<i>-<name>/``; the last stage writes to ``out_dir`` itself, so the run's ``log.jsonl``,
``result.json`` and ``best/`` are where they always are, and they describe the final model. Each stage keeps
the engine's checkpoints, so ``resume=True`` replays an interrupted run exactly: finished stages reload their
selected weights from their ``best/`` (and re-evaluate, without training), the interrupted stage continues from
its ``last/`` (mid-epoch included), later stages start fresh.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import torch

OPTIMIZERS = ("adamw", "adam", "rmsprop")
NO_EARLY_STOPPING = 10 ** 6  # a stage's patience at least this large: it trains every epoch


@dataclass(frozen=True)
class TrainingStage:
    """One stage of a staged model.

    name: short identifier (also the ``model.enter_stage`` argument and part of the stage's output folder).
    description: one line for ``python -m fusionkit show`` and the logs.
    defaults: :class:`TrainConfig` fields of this stage (explicit config values still win).
    fixed: :class:`TrainConfig` fields this stage always uses, whatever the config says.
    optimizer: ``adamw`` | ``adam`` | ``rmsprop`` (torch's defaults otherwise; ``weight_decay`` from the config).
    select: a validation diagnostic (``ModelOutput.diagnostics`` key) to select the epoch on, lower is better;
        ``None``: the config's ``select_metric``.
    """

    name: str
    description: str
    defaults: dict = field(default_factory=dict)
    fixed: dict = field(default_factory=dict)
    optimizer: str = "adamw"
    select: str | None = None

    def __post_init__(self) -> None:
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"stage {self.name!r}: optimizer must be one of {', '.join(OPTIMIZERS)}, "
                             f"got {self.optimizer!r}")

    def summary(self) -> str:
        settings = {**self.defaults, **self.fixed}
        if settings.get("patience", 0) >= NO_EARLY_STOPPING:
            settings["patience"] = "none (no early stopping)"
        shown = ", ".join(f"{k}={v}" for k, v in settings.items() if k != "eval_batch_size")
        selection = (f"validation {self.select} (lower is better)" if self.select
                     else "validation select_metric (mae unless set)")
        return f"{self.name}: {self.description}; {self.optimizer}, {shown}; selected on {selection}"


def model_stages(model: torch.nn.Module) -> tuple[TrainingStage, ...]:
    return tuple(getattr(model, "stages", None) or ())


def stage_config(config, stage: TrainingStage, model_defaults: dict):
    """``(config, defaults)`` for the shared loop: ``fixed`` over the explicit config, ``defaults`` under it."""
    config = replace(config, **stage.fixed)
    return config, {**model_defaults, **stage.defaults}


def build_stage_optimizer(model: torch.nn.Module, stage: TrainingStage, cfg) -> torch.optim.Optimizer:
    """The stage's optimizer over the trainable parameters (:func:`param_groups`: encoder at ``encoder_lr``)."""
    from fusionkit.training.optim import build_optimizer, param_groups

    if stage.optimizer == "adamw":
        return build_optimizer(model, lr=cfg.lr, encoder_lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    groups = param_groups(model, lr=cfg.lr, encoder_lr=cfg.encoder_lr, weight_decay=cfg.weight_decay)
    if not groups:
        raise ValueError(f"stage {stage.name!r} has no trainable parameters; nothing to optimise")
    cls = torch.optim.Adam if stage.optimizer == "adam" else torch.optim.RMSprop
    return cls(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)


def stage_dir(out_dir, index: int, count: int, stage: TrainingStage) -> Path | None:
    if out_dir is None:
        return None
    return Path(out_dir) if index == count - 1 else Path(out_dir) / f"stage{index + 1}-{stage.name}"


def run_stages(train_one: Callable, model_name: str, data, config, model_kwargs, on_step, model):
    """Train ``model``'s stages in order with ``train_one`` (the engine's loop); returns the last stage's
    :class:`RunResult` with ``stage_results`` ``{name: RunResult}`` of every stage."""
    stages = model_stages(model)
    results = {}
    for index, stage in enumerate(stages):
        model.enter_stage(stage.name)
        cfg = replace(config, out_dir=stage_dir(config.out_dir, index, len(stages), stage))
        with warnings.catch_warnings():
            if stage.select:  # a stage selected on a diagnostic may predict a constant (e.g. zeros): no warning
                warnings.filterwarnings("ignore", message="Pearson correlation is undefined")
            results[stage.name] = train_one(model_name, data, cfg, model_kwargs, on_step, model=model, stage=stage)
    final = results[stages[-1].name]
    final.stage_results = results
    return final


def selection_value(stage: TrainingStage, diagnostics: dict) -> float:
    if stage.select not in diagnostics:
        raise ValueError(f"stage {stage.name!r} selects on the validation diagnostic {stage.select!r}, but the "
                         f"model's evaluation reported only {sorted(diagnostics) or 'none'}; the model's forward "
                         f"must return it in ModelOutput.diagnostics during this stage")
    return float(diagnostics[stage.select])


def intermediate_record(run, model_name: str, stage: TrainingStage, cfg) -> dict:
    """The ``result.json`` of a stage before the last: validation only (the test split is not touched)."""
    best = run.history[run.best_epoch - 1] if run.best_epoch else {}
    return {"model": model_name, "stage": stage.name, "seed": cfg.seed, "best_epoch": run.best_epoch,
            "epochs_run": len(run.history), "valid_diagnostics": best.get("valid_diagnostics", {}),
            "config": cfg.to_dict()}
