"""One plan from options to a built model: :func:`plan` and the :class:`Plan` it returns.

``fusionkit.plan(model, data, **options)`` does, once and before any training:

1. merges the data's sizes into the build arguments (``d_acoustic``, ``d_visual`` and, for data with fewer
   modalities than ``t,a,v``, ``modalities``), refusing arguments that contradict the data;
2. checks every option against the factory's accepted keywords (one :class:`~fusionkit.build.ModelBuildError`
   naming the option and the accepted ones);
3. resolves the composition (the block in every slot, and the plug-in that provides it);
4. builds the model once on the meta device (shapes only; a block other than a slot's default is dry-run against
   its contract there), with the global RNG state left as it was, to read the model's ``train_defaults`` and
   size.

The engine (:func:`fusionkit.training.train_and_evaluate`), the benchmarks and :meth:`Plan.build` accept the plan,
so the arguments are merged and checked in one place. Imports: this module sits above :mod:`fusionkit.slots` and
below :mod:`fusionkit.training`.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from fusionkit.build import ModelBuildError, accepted_kwargs, build_model
from fusionkit.slots import resolve_composition

ALL_MODALITIES = ("t", "a", "v")
# what a build on the meta device may raise for a model that needs real tensors (then it is built on the CPU)
_META_ERRORS = (NotImplementedError, RuntimeError, ValueError, TypeError, IndexError, KeyError, AssertionError,
                ZeroDivisionError, OverflowError)


def data_build_kwargs(data, model_kwargs: dict, model_name: str | None = None) -> dict:
    """``model_kwargs`` with the sizes of ``data`` (a :class:`fusionkit.data.LoadedData`) merged in.

    ``d_acoustic`` / ``d_visual`` come from the data; ``modalities`` too when the data lacks one (with every
    modality the arguments stay as they were, so the default build is unchanged). A contradicting value, or a
    model without a ``modalities`` option on data that lacks a modality, raises before anything is built.
    """
    kwargs = dict(model_kwargs)
    kwargs.setdefault("d_acoustic", data.info.d_acoustic)
    kwargs.setdefault("d_visual", data.info.d_visual)
    if kwargs["d_acoustic"] != data.info.d_acoustic or kwargs["d_visual"] != data.info.d_visual:
        raise ValueError(f"model_kwargs set d_acoustic={kwargs['d_acoustic']}, d_visual={kwargs['d_visual']} but "
                         f"dataset {data.info.name!r} has {data.info.d_acoustic} and {data.info.d_visual}")
    modalities = tuple(getattr(data.info, "modalities", ALL_MODALITIES))
    if modalities != ALL_MODALITIES:
        kwargs.setdefault("modalities", modalities)
        if tuple(kwargs["modalities"]) != modalities:
            raise ValueError(f"model_kwargs set modalities={kwargs['modalities']} but the data has {modalities}")
        if model_name is not None:
            accepted = accepted_kwargs(model_name)
            if accepted is not None and "modalities" not in accepted:
                raise ModelBuildError(f"model {model_name!r} cannot run without the "
                                      f"{' and '.join(m for m in ALL_MODALITIES if m not in modalities)} modality: it "
                                      f"has no 'modalities' option; use data with every modality (t,a,v)")
    return kwargs


@dataclass(frozen=True)
class Plan:
    """A checked recipe for one model: build it with :meth:`build`, train it with ``train_and_evaluate(plan, data)``.

    model: the registered model name. kwargs: the factory's arguments, data sizes merged. composition:
    ``{slot: {"block", "plugin", "args"}}``. train_defaults: the model's own training recipe (without ``seed``).
    num_parameters / parameter_bytes: the model's parameter count and size (from the meta build). dataset: the name of the data planned for.
    """

    model: str
    kwargs: dict
    composition: dict
    train_defaults: dict = field(default_factory=dict)
    num_parameters: int = 0
    parameter_bytes: int = 0
    dataset: str | None = None

    def build(self) -> nn.Module:
        """The model, built for real (the caller seeds the RNG first, as the engine does)."""
        return build_model(self.model, self.kwargs)


def _build_on_meta(model: str, kwargs: dict) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        try:
            with torch.device("meta"):
                return build_model(model, kwargs)
        except ModelBuildError:
            raise
        except _META_ERRORS:
            pass  # the meta device lacks some operations (and from_pretrained): decide on a real build
        return build_model(model, kwargs)


def plan(model: str, data=None, **options) -> Plan:
    """Merge ``data``'s sizes into ``options``, check them, resolve the composition and dry-run the model once.

    ``data``: a loaded dataset (its feature sizes and modalities are merged), or ``None`` (then pass
    ``d_acoustic`` / ``d_visual`` yourself). Raises :class:`~fusionkit.build.ModelBuildError` (an unknown model or
    option, a misfit block: :class:`~fusionkit.slots.SlotError`) or the factory's own ``ValueError`` before any
    real build.
    """
    kwargs = data_build_kwargs(data, options, model) if data is not None else dict(options)
    accepted = accepted_kwargs(model)  # an unknown model raises here
    if accepted is not None:
        bad = sorted(set(kwargs) - accepted)
        if bad:
            raise ModelBuildError(f"model {model!r} does not accept {', '.join(bad)}; its options are "
                                  f"{', '.join(sorted(accepted))}")
    composition = resolve_composition(model, kwargs)
    built = _build_on_meta(model, kwargs)
    defaults = {k: v for k, v in dict(getattr(built, "train_defaults", {}) or {}).items() if k != "seed"}
    count = sum(p.numel() for p in built.parameters())
    size = sum(p.numel() * p.element_size() for p in built.parameters())
    del built
    return Plan(model=model, kwargs=kwargs, composition=composition, train_defaults=defaults, num_parameters=count,
                parameter_bytes=size, dataset=getattr(getattr(data, "info", None), "name", None))
