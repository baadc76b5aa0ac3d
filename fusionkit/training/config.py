"""Training configuration: explicit values, then the model's ``train_defaults``, then :data:`GLOBAL_DEFAULTS`."""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields, replace

from fusionkit.data.loader import PADDING_MODES
from fusionkit.metrics import METRICS
from fusionkit.training.precision import AUTO as AUTO_PRECISION
from fusionkit.training.precision import PRECISIONS

# Used for every field that neither the caller nor the model's ``train_defaults`` sets.
GLOBAL_DEFAULTS: dict = {
    "lr": 1e-4,
    "encoder_lr": 5e-5,
    "weight_decay": 0.01,
    "batch_size": 32,
    "eval_batch_size": 64,
    "epochs": 10,
    "warmup": 0.1,
    "schedule": "linear",
    "loss": "mse",
    "grad_clip": 1.0,
    "patience": 5,
    "seed": 0,
    "max_train_samples": None,
    "padding": "dynamic",
    "out_dir": None,
    "resume": False,
    "select_metric": "mae",
    "log_every": 10,
    "save_every": 0,
    "save_interval": 300.0,
    "precision": "auto",
    "device": "auto",
    "num_threads": None,
    "deterministic": True,
    "quiet": False,
    "cache_encoder": True,
}

# Learning-rate schedules after the warm-up (fusionkit.training.optim.build_scheduler) and task losses.
SCHEDULES = ("linear", "constant", "cosine")
TASK_LOSSES = ("mse", "l1")

# Metrics model selection may use besides :data:`fusionkit.metrics.METRICS`.
SELECT_EXTRA = ("loss",)


@dataclass
class TrainConfig:
    """Hyperparameters and run options of :func:`fusionkit.training.train_and_evaluate`.

    A field left at ``None`` is filled by :meth:`resolve` from the model class's ``train_defaults`` dict, then
    from :data:`GLOBAL_DEFAULTS`.

    lr / encoder_lr: AdamW learning rates of the non-encoder parameters / of the BERT encoder's parameters.
    weight_decay: AdamW decoupled weight decay, not applied to biases and normalisation weights (1-D tensors).
    batch_size: training batch size *summed over all processes* (each DDP rank gets ``batch_size / world``).
    eval_batch_size: batch size for validation and test.
    epochs: maximum number of epochs; ``patience`` epochs without validation improvement stop early.
    warmup: fraction of all optimizer steps with a linear learning-rate warm-up (then ``schedule``).
    schedule: learning rate after the warm-up: ``linear`` (decay to 0 at the last step), ``constant`` (stays
        at ``lr``), ``cosine`` (half a cosine period down to 0 at the last step).
    loss: task loss between prediction and label: ``mse`` (mean squared error) or ``l1`` (mean absolute
        error); the model's ``loss_terms`` are added to it. The validation ``loss`` is the same quantity.
    grad_clip: max global gradient norm (``0`` disables clipping).
    seed: seeds Python, NumPy and torch; epoch ``e`` re-seeds with ``(seed, e)`` so a resumed run replays it.
    max_train_samples: train on the first N training examples (smoke runs, learning curves).
    padding: ``dynamic`` (pad to the longest in the batch) or ``fixed`` (to ``max_seq_length``).
    out_dir: where checkpoints, the JSONL log and ``best/`` go; ``None`` keeps everything in memory.
    resume: continue from ``out_dir/last`` (the latest mid-epoch or end-of-epoch checkpoint) if it exists.
    select_metric: validation quantity for model selection and early stopping: ``mae`` (default, lower is
        better), ``loss`` (validation task loss, lower is better) or any other metric name (higher is better).
        Only the validation split is used; the test split is evaluated once, with the selected weights.
    log_every: refresh the step progress bar's loss every N steps.
    save_every: also write ``last/`` every N optimizer steps (``0``, the default: no step-count saves).
    save_interval: also write ``last/`` mid-epoch once this many seconds of wall time have passed since the
        previous save (default 300; ``0``: none). Epoch ends, SIGINT and SIGTERM always save, so a killed run
        loses at most one interval of work.
    precision: ``fp32``, ``bf16`` or ``fp16`` autocast around forward and loss (:mod:`fusionkit.training.precision`);
        ``auto`` (default) is ``bf16`` on a CUDA device that supports it, else ``fp32``. Weights, optimizer
        state, metrics and checkpoints stay fp32; a run resumes only under the precision it was started with.
    device: ``auto`` (CUDA when available, else CPU), ``cpu``, ``cuda``, ``cuda:1`` …
    num_threads: torch intra-op threads; ``None`` → all cores (divided by the world size under DDP).
    deterministic: ``torch.use_deterministic_algorithms(True, warn_only=True)``.
    quiet: no progress bars (they are also off when stderr is not a terminal).
    cache_encoder: with a ``frozen`` text encoder (no injection module), encode each sample once and reuse its
        hidden states in later epochs and evaluations (:mod:`fusionkit.training.encoder_cache`).
    """

    lr: float | None = None
    encoder_lr: float | None = None
    weight_decay: float | None = None
    batch_size: int | None = None
    eval_batch_size: int | None = None
    epochs: int | None = None
    warmup: float | None = None
    schedule: str | None = None
    loss: str | None = None
    grad_clip: float | None = None
    patience: int | None = None
    seed: int | None = None
    max_train_samples: int | None = None
    padding: str | None = None
    out_dir: str | os.PathLike | None = None
    resume: bool | None = None
    select_metric: str | None = None
    log_every: int | None = None
    save_every: int | None = None
    save_interval: float | None = None
    precision: str | None = None
    device: str | None = None
    num_threads: int | None = None
    deterministic: bool | None = None
    quiet: bool | None = None
    cache_encoder: bool | None = None

    def resolve(self, model_defaults: dict | None = None) -> "TrainConfig":
        """A copy with every ``None`` field filled (model ``train_defaults`` first) and values validated."""
        model_defaults = dict(model_defaults or {})
        unknown = set(model_defaults) - {f.name for f in fields(self)}
        if unknown:
            raise ValueError(f"train_defaults has unknown keys {sorted(unknown)}; valid keys: "
                             f"{', '.join(f.name for f in fields(self))}")
        filled = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None:
                value = model_defaults.get(f.name, GLOBAL_DEFAULTS[f.name])
            filled[f.name] = value
        cfg = replace(self, **filled)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        for name, limit in LIMITS.items():
            if limit.choices is not None:
                continue  # the choices are checked below, with their own messages
            value = getattr(self, name)
            if value is None or value < limit.low or (value == limit.low and not limit.inclusive):
                raise ValueError(f"TrainConfig.{name} must be {'≥' if limit.inclusive else '>'} {limit.low:g}, "
                                 f"got {value!r}")
        if not 0.0 <= self.warmup < 1.0:
            raise ValueError(f"TrainConfig.warmup is a fraction of the optimizer steps in [0, 1), got {self.warmup!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule must be one of {', '.join(SCHEDULES)}, got {self.schedule!r}")
        if self.loss not in TASK_LOSSES:
            raise ValueError(f"TrainConfig.loss must be one of {', '.join(TASK_LOSSES)}, got {self.loss!r}")
        if self.max_train_samples is not None and self.max_train_samples < 1:
            raise ValueError(f"TrainConfig.max_train_samples must be ≥ 1 or None, got {self.max_train_samples!r}")
        if self.padding not in PADDING_MODES:
            raise ValueError(f"TrainConfig.padding must be one of {', '.join(PADDING_MODES)}, got {self.padding!r}")
        if self.precision not in (AUTO_PRECISION,) + PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {', '.join((AUTO_PRECISION,) + PRECISIONS)}, "
                             f"got {self.precision!r}")
        if self.select_metric not in METRICS + SELECT_EXTRA:
            raise ValueError(f"TrainConfig.select_metric {self.select_metric!r} is unknown; choose one of "
                             f"{', '.join(METRICS + SELECT_EXTRA)}")
        if self.resume and self.out_dir is None:
            raise ValueError("TrainConfig.resume=True needs out_dir (the directory of the interrupted run)")

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["out_dir"] is not None:
            d["out_dir"] = str(d["out_dir"])
        return d


@dataclass(frozen=True)
class Limit:
    """The values a numeric training setting accepts (``low``, ``inclusive``) or its ``choices``; ``settable``: a
    per-model setting of the command line (``--set MODEL.KEY=VALUE``)."""

    kind: type
    low: float = 0
    inclusive: bool = True
    choices: tuple[str, ...] | None = None
    settable: bool = False


# The one table of training-setting limits: :meth:`TrainConfig.validate` checks them and the command line's
# settable keys (``benchmarks.run``'s ``--set``) derive from it (:func:`settable`). The integer settings that
# count something start at 1 ("> 0" for an int).
LIMITS: dict[str, Limit] = {
    "lr": Limit(float, 0.0, inclusive=False, settable=True),
    "encoder_lr": Limit(float, 0.0, settable=True),
    "weight_decay": Limit(float, 0.0, settable=True),
    "epochs": Limit(int, 0, inclusive=False, settable=True),
    "batch_size": Limit(int, 0, inclusive=False, settable=True),
    "warmup": Limit(float, 0.0, settable=True),  # and below 1: a fraction of the steps (validate)
    "grad_clip": Limit(float, 0.0, settable=True),
    "patience": Limit(int, 0, inclusive=False, settable=True),
    "schedule": Limit(str, choices=SCHEDULES, settable=True),
    "loss": Limit(str, choices=TASK_LOSSES, settable=True),
    "eval_batch_size": Limit(int, 0, inclusive=False),
    "log_every": Limit(int, 0, inclusive=False),
    "save_every": Limit(int, 0.0),
    "save_interval": Limit(float, 0.0),
}


def settable() -> dict[str, tuple]:
    """``{key: (type, smallest allowed value, inclusive)}`` (numbers; an int's smallest value is 1) or
    ``{key: (str, choices, None)}`` for every training setting the command line may set per model."""
    out = {}
    for name, limit in LIMITS.items():
        if not limit.settable:
            continue
        if limit.choices is not None:
            out[name] = (str, limit.choices, None)
        elif limit.kind is int and not limit.inclusive:
            out[name] = (int, int(limit.low) + 1, True)
        else:
            out[name] = (limit.kind, limit.low, limit.inclusive)
    return out


def select_lower_is_better(metric: str) -> bool:
    """Whether a smaller value of the selection quantity is better (``mae``, ``loss``)."""
    return metric in ("mae", "loss")
