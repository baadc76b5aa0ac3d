"""Checks ``benchmarks.run`` makes before anything is trained or written.

Every model option is checked by the model factory itself (no per-model tables here):

1. :func:`check_option` (:mod:`fusionkit.options`) — each ``--set`` value as it is parsed, before the data is
   loaded, named as the user wrote it: against the factory parameter's annotation (``int``, ``float``,
   ``bool``, ``str``, ``None``, unions, ``Literal``, ``tuple[...]`` / ``Sequence[...]``; other annotations are
   left to the factory) and a generic range rule: numbers are finite; an integer option whose default is at
   least 1 (or ``None``) must be at least 1, any other integer option at least 0; a float option whose default
   is at least 0 must be at least 0; an option whose name contains ``dropout`` is a probability in [0, 1); the
   entries of an integer-list option named ``*layers`` are 1-based layer indices (at least 1).
2. :func:`preflight` — every table row is planned once (:func:`fusionkit.planning.plan`: the dataset's feature
   sizes merged, every option name and value checked as above, the model built once on the ``meta`` device
   with the text encoder in use, so the factory's own checks (divisibility, layer indices vs the encoder's
   depth, choices) run); its training settings are resolved with the model's ``train_defaults`` and checked
   by :class:`fusionkit.training.TrainConfig`. A failure becomes one :class:`UsageError` naming the model,
   the options given and the factory's reason. The row is trained with that plan.
"""
from __future__ import annotations

import typing
from dataclasses import dataclass

from fusionkit.cli import UsageError
from fusionkit.options import _hints, _shown, check_option, describe, matches  # noqa: F401 - re-exported

# Exceptions a factory raises for arguments it cannot build with (torch raises RuntimeError for e.g. a
# negative layer size, Python ZeroDivisionError / OverflowError for a zero or huge count).
TRAINING_COPIES = 4  # weights + gradients + AdamW's exp_avg and exp_avg_sq
BUILD_ERRORS = (ValueError, TypeError, RuntimeError, ZeroDivisionError, OverflowError, IndexError, KeyError,
                AssertionError)


@dataclass
class Checked:
    """What :func:`preflight` learned about one table row."""

    label: str
    model: str
    train: dict  # the resolved training settings (TrainConfig fields that change the result)
    train_defaults: dict  # the model's own ``train_defaults``
    plan: typing.Any = None  # the fusionkit.planning.Plan the row is trained with


def preflight(variants, *, data, model_kwargs: dict, train_overrides: dict, per_model: dict, sources: dict,
              world_size: int = 1) -> list[Checked]:
    """Build every variant's model once and resolve its training settings; raise :class:`UsageError` on the
    first that fails. ``sources[model][key]``: how the user gave option ``key`` (``--set mhmf.heads=3``)."""
    from fusionkit.training import ModelBuildError, TrainConfig
    from fusionkit.planning import plan

    checked = []
    for variant in variants:
        given = dict(sources.get(variant.model, {}))
        for key, value in variant.kwargs.items():
            given.setdefault(key, f"{key}={_shown(value)}")
        modalities = tuple(getattr(data.info, "modalities", ("t", "a", "v")))
        try:
            # the data's feature sizes (and modalities) merged, options checked, one build on the meta device
            planned = plan(variant.model, data, **{**model_kwargs, **variant.kwargs})
        except (ModelBuildError, ValueError) as e:
            if modalities != ("t", "a", "v"):  # a model that cannot run on this subset of the modalities
                raise UsageError(f"{variant.label} on modalities {','.join(modalities)}: {e}") from None
            if isinstance(e, ModelBuildError):
                raise UsageError(str(e)) from None
            if not given:
                raise  # the model fails with its own defaults: a bug, not a usage error
            row = "" if variant.label == variant.model else f" ({variant.label})"
            raise UsageError(f"model {variant.model!r}{row} cannot be built with "
                             f"{', '.join(given.values())}: {e}") from None
        except BUILD_ERRORS as e:
            if not given:
                raise  # the model fails with its own defaults: a bug, not a usage error
            row = "" if variant.label == variant.model else f" ({variant.label})"
            raise UsageError(f"model {variant.model!r}{row} cannot be built with "
                             f"{', '.join(given.values())}: {e}") from None
        # training holds weights, gradients and AdamW's two moments: about 4x the weights
        needed = TRAINING_COPIES * planned.parameter_bytes
        memory = _physical_memory()
        if given and memory and needed > memory:  # e.g. a width of 10**6: fine on meta, not in RAM
            raise UsageError(f"model {variant.model!r} with {', '.join(given.values())} needs about "
                             f"{needed / 2 ** 30:.1f} GiB to train (weights, gradients, AdamW state), more than this "
                             f"machine's {memory / 2 ** 30:.1f} GiB of memory; choose smaller sizes")
        defaults = dict(planned.train_defaults)
        train = {**train_overrides, **per_model.get(variant.model, {})}
        try:
            cfg = TrainConfig(**train).resolve(defaults)
        except (ValueError, TypeError) as e:
            shown = [sources.get(variant.model, {}).get(k, f"--{k.replace('_', '-')} {v}") for k, v in train.items()]
            row = "" if variant.label == variant.model else f" ({variant.label})"
            raise UsageError(f"model {variant.model!r}{row}: training settings "
                             f"{', '.join(shown) or '(defaults)'} rejected: "
                             f"{str(e).replace('TrainConfig.', '')}") from None
        if cfg.batch_size % world_size:
            raise UsageError(f"model {variant.model!r}: batch size {cfg.batch_size} is not divisible by the "
                             f"{world_size} processes; pass --batch-size or --set {variant.model}.batch_size=N "
                             f"with N a multiple of {world_size}")
        checked.append(Checked(label=variant.label, model=variant.model, train=_result_settings(cfg),
                               train_defaults=defaults, plan=planned))
    return checked


def _physical_memory() -> int | None:
    import os

    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _result_settings(cfg) -> dict:
    return {k: getattr(cfg, k) for k in ("epochs", "lr", "encoder_lr", "batch_size", "patience")}
