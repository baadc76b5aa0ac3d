"""Search spaces that models declare next to their ``train_defaults`` (``search_space = SearchSpace(...)``).

A space lists, for each name, the values tuning may choose: a training setting (:data:`TRAIN_KEYS`, e.g.
``lr``) or an option of the model's factory (e.g. ``dropout``). A name with commas (``"d_model,heads"``) is a
joint choice whose values are tuples, one entry per name (authors' grids that move several settings together).
Tuning only chooses among these declared values; it never changes what the model computes, and the epoch cap
and early-stopping patience are the study's budget, not part of any space.

``python -m fusionkit show MODEL`` prints a model's space with its source; :mod:`benchmarks.tune` samples it
with Optuna.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Mapping

# Training settings a space may choose (TrainConfig fields that change the result, minus the budget).
TRAIN_KEYS = ("lr", "encoder_lr", "weight_decay", "batch_size", "warmup", "grad_clip", "schedule", "loss")
BUDGET_KEYS = ("epochs", "patience")


@dataclass(frozen=True)
class Choice:
    """One of the listed values (Optuna categorical)."""

    values: tuple

    def __init__(self, *values) -> None:
        if not values:
            raise ValueError("Choice needs at least one value")
        object.__setattr__(self, "values", tuple(values))

    def describe(self) -> str:
        return "{" + ", ".join(json.dumps(list(v) if isinstance(v, tuple) else v) for v in self.values) + "}"


@dataclass(frozen=True)
class Float:
    """A float in ``[low, high]``, log-uniform with ``log=True``."""

    low: float
    high: float
    log: bool = False

    def describe(self) -> str:
        return f"[{self.low:g}, {self.high:g}]" + (" log" if self.log else "")


@dataclass(frozen=True)
class SearchSpace:
    """``params``: name → :class:`Choice` | :class:`Float`; ``source``: where the values come from (an authors'
    grid, MMSA's ``config_tune.json``, or the reason for a documented choice)."""

    source: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, spec in self.params.items():
            keys = name.split(",")
            bad = [k for k in keys if k in BUDGET_KEYS]
            if bad:
                raise ValueError(f"search space entry {name!r}: {bad[0]} is the study's budget, not a tunable setting")
            if len(keys) > 1 and not (isinstance(spec, Choice) and all(isinstance(v, tuple) and len(v) == len(keys)
                                                                       for v in spec.values)):
                raise ValueError(f"joint search space entry {name!r} needs a Choice of {len(keys)}-tuples")

    def suggest(self, trial) -> dict:
        """Sample one configuration with an Optuna ``trial``; returns ``{setting or option: value}``."""
        out: dict = {}
        for name, spec in self.params.items():
            if isinstance(spec, Float):
                value = trial.suggest_float(name, spec.low, spec.high, log=spec.log)
            elif all(v is None or isinstance(v, (bool, int, float, str)) for v in spec.values):
                value = trial.suggest_categorical(name, list(spec.values))
            else:  # Optuna's categoricals hold scalars: tuples and lists are chosen by their JSON text
                texts = [json.dumps(list(v) if isinstance(v, tuple) else v) for v in spec.values]
                value = spec.values[texts.index(trial.suggest_categorical(name, texts))]
            out.update(self.expand(name, value))
        return out

    @staticmethod
    def expand(name: str, value) -> dict:
        keys = name.split(",")
        if len(keys) == 1:
            return {name: list(value) if isinstance(value, tuple) else value}
        return dict(zip(keys, value))

    def from_params(self, params: Mapping[str, Any]) -> dict:
        """An Optuna trial's ``params`` (JSON text for tuple choices) → ``{setting or option: value}``."""
        out: dict = {}
        for name, spec in self.params.items():
            value = params[name]
            if isinstance(spec, Choice) and isinstance(value, str) and value not in spec.values:
                value = json.loads(value)
                value = tuple(value) if isinstance(value, list) else value
            out.update(self.expand(name, value))
        return out

    def describe(self) -> list[str]:
        lines = [f"search space (source: {self.source}):"]
        if not self.params:
            lines.append("  (empty: the model runs with its train_defaults)")
        width = max((len(name) for name in self.params), default=0)
        for name, spec in self.params.items():
            kind = "training" if all(k in TRAIN_KEYS for k in name.split(",")) else "option"
            lines.append(f"  {name:<{width}}  {kind:<8}  {spec.describe()}")
        return lines


def split_settings(values: Mapping[str, Any]) -> tuple[dict, dict]:
    """``{name: value}`` → (training settings, model options)."""
    train = {k: v for k, v in values.items() if k in TRAIN_KEYS}
    return train, {k: v for k, v in values.items() if k not in TRAIN_KEYS}


def search_space_of(model: str) -> SearchSpace | None:
    """The ``search_space`` a registered model declares (``None`` when it declares none); the model is built
    once on the meta device with a tiny random encoder config to read it (no weights, no files)."""
    import torch

    from fusionkit.testing import tiny_bert_config
    from fusionkit.training.build import build_model

    with torch.device("meta"):
        built = build_model(model, {"bert_config": tiny_bert_config()})
    return getattr(built, "search_space", None)
