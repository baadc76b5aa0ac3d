"""One plan from options to a built model: :func:`plan` and the :class:`Plan` it returns.

``fusionkit.plan(model, data, **options)`` does, once and before any training:

1. merges the data's sizes into the build arguments (``d_acoustic``, ``d_visual`` and, for data with fewer
   modalities than ``t,a,v``, ``modalities``), refusing arguments that contradict the data;
2. checks every option against the factory's accepted keywords (one :class:`~fusionkit.build.ModelBuildError`
   naming the option and the accepted ones) and every option value against the factory parameter's annotation
   and the generic range rule (:func:`fusionkit.options.check_option`, the check of ``--set`` and of a
   checkpoint's ``model.json``);
3. resolves the composition (the block in every slot, and the plug-in that provides it);
4. builds the model once on the meta device (shapes only; a block other than a slot's default is dry-run against
   its contract there), with the global RNG state left as it was, to read the model's ``train_defaults`` and
   size.

The engine (:func:`fusionkit.training.train_and_evaluate`), the benchmarks and the inference loader
(:func:`fusionkit.inference.load`) take the plan and build the model with :meth:`Plan.build`, so the arguments
are merged and checked in one place. Imports: this module sits above :mod:`fusionkit.slots` and
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
    stages: the names of its training stages, for a model trained stage by stage (:mod:`fusionkit.training.stages`).
    """

    model: str
    kwargs: dict
    composition: dict
    train_defaults: dict = field(default_factory=dict)
    num_parameters: int = 0
    parameter_bytes: int = 0
    dataset: str | None = None
    stages: tuple[str, ...] = ()

    def build(self) -> nn.Module:
        """The model, built for real (the caller seeds the RNG first, as the engine does)."""
        return build_model(self.model, self.kwargs)


# options that are not checked by value here: the encoder config (an object) and the data's sizes (0 = absent)
_UNCHECKED = ("bert_config", "d_acoustic", "d_visual")
_OPAQUE = object()


def _json_view(value):
    """``value`` as ``--set`` would give it (tuples as lists), or ``_OPAQUE`` for an object, a dict (a slot's
    block with its arguments, checked by the build) or anything else JSON does not hold."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        items = [_json_view(v) for v in value]
        return _OPAQUE if any(v is _OPAQUE for v in items) else items
    return _OPAQUE


def check_options(model: str, kwargs: dict) -> None:
    """Every option value of ``kwargs`` against ``model``'s factory (:func:`fusionkit.options.check_option`);
    one :class:`~fusionkit.build.ModelBuildError` naming the option, what it takes and the value given."""
    from fusionkit.cli import UsageError
    from fusionkit.options import _shown, check_option

    for key, value in kwargs.items():
        shown = _json_view(value)
        if key in _UNCHECKED or shown is _OPAQUE:
            continue
        try:
            check_option(model, key, shown, where=f"plan({model!r}, {key}={_shown(shown)})")
        except UsageError as e:
            raise ModelBuildError(str(e)) from None


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
    option, a value the option does not take, a misfit block: :class:`~fusionkit.slots.SlotError`) or the
    factory's own ``ValueError`` before any real build.
    """
    kwargs = data_build_kwargs(data, options, model) if data is not None else dict(options)
    accepted = accepted_kwargs(model)  # an unknown model raises here
    if accepted is not None:
        bad = sorted(set(kwargs) - accepted)
        if bad:
            raise ModelBuildError(f"model {model!r} does not accept {', '.join(bad)}; its options are "
                                  f"{', '.join(sorted(accepted))}")
    check_options(model, kwargs)
    composition = resolve_composition(model, kwargs)
    built = _build_on_meta(model, kwargs)
    defaults = {k: v for k, v in dict(getattr(built, "train_defaults", {}) or {}).items() if k != "seed"}
    count = sum(p.numel() for p in built.parameters())
    size = sum(p.numel() * p.element_size() for p in built.parameters())
    from fusionkit.training.stages import model_stages

    stage_names = tuple(stage.name for stage in model_stages(built))
    del built
    return Plan(model=model, kwargs=kwargs, composition=composition, train_defaults=defaults, num_parameters=count,
                parameter_bytes=size, dataset=getattr(getattr(data, "info", None), "name", None), stages=stage_names)
