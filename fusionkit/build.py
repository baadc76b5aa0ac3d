"""Building a registered model from keyword arguments, and the JSON form of those arguments.

This module sits below :mod:`fusionkit.slots` (which uses :class:`ModelBuildError` and :func:`model_spec`) and
below :mod:`fusionkit.training`; it imports only the registry. ``model.json`` itself is written by
:func:`fusionkit.training.build.model_description`, above the slots, because it records the composition."""
from __future__ import annotations

import inspect

from torch import nn

BERT_CONFIG_KEY = "__transformers_config__"


class ModelBuildError(ValueError):
    """The requested model is unknown, not a ``model`` component, or rejects the given arguments."""


def model_spec(name: str):
    """The registry entry of model ``name``; an unknown name or another kind raises :class:`ModelBuildError`."""
    from fusionkit.registry import get_registry

    registry = get_registry()
    models = registry.names("model")
    if name not in registry:
        hint = ("" if models else "; fusionkit's own models register through the entry points of its installed "
                "distribution: install the project (pip install -e .)")
        raise ModelBuildError(f"unknown model {name!r}; registered models: {', '.join(models) or '(none)'}{hint}")
    spec = registry.get(name)
    if spec.kind != "model":
        raise ModelBuildError(f"{name!r} is a {spec.kind}, not a model; registered models: {', '.join(models)}")
    return spec


def accepted_kwargs(name: str) -> set | None:
    """Keyword names the factory of model ``name`` accepts (``None``: it takes ``**kwargs``)."""
    params = inspect.signature(model_spec(name).factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    return {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)}


def build_model(name: str, kwargs: dict) -> nn.Module:
    """``fusionkit.create(name, **kwargs)`` for a ``model`` component, with a clear error for bad kwargs."""
    spec = model_spec(name)
    accepted = accepted_kwargs(name)
    if accepted is not None:
        bad = sorted(set(kwargs) - accepted)
        if bad:
            raise ModelBuildError(f"model {name!r} does not accept {', '.join(bad)}; its options are "
                                  f"{', '.join(sorted(accepted))}")
    return spec.factory(**kwargs)


def to_json_kwargs(kwargs: dict) -> dict:
    """``kwargs`` as JSON values: a ``transformers`` config becomes its dict, tuples become lists."""

    def convert(key, value):
        if hasattr(value, "to_dict") and hasattr(value, "model_type"):
            return {BERT_CONFIG_KEY: value.to_dict()}
        if isinstance(value, (list, tuple)):
            return [convert(key, v) for v in value]
        if isinstance(value, dict):
            return {str(k): convert(key, v) for k, v in value.items()}
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        raise ModelBuildError(f"model argument {key}={value!r} cannot be recorded in model.json; pass plain "
                              f"numbers, strings, lists or a transformers config")

    return {k: convert(k, v) for k, v in kwargs.items()}


def from_json_kwargs(kwargs: dict) -> dict:
    """Inverse of :func:`to_json_kwargs` (lists come back as tuples)."""

    def convert(value):
        if isinstance(value, dict) and BERT_CONFIG_KEY in value:
            from transformers import AutoConfig

            cfg = dict(value[BERT_CONFIG_KEY])
            return AutoConfig.for_model(cfg.pop("model_type"), **cfg)
        if isinstance(value, list):
            return tuple(convert(v) for v in value)
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        return value

    return {k: convert(v) for k, v in kwargs.items()}
