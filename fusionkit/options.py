"""Model options checked against their factory: the annotation's type and a generic range rule.

:func:`check_option` checks one option value (``--set model.key=value`` in ``benchmarks.run``, a checkpoint's
``model.json`` in :mod:`fusionkit.schemas`) against the factory parameter's annotation (``int``, ``float``,
``bool``, ``str``, ``None``, unions, ``Literal``, ``tuple[...]`` / ``Sequence[...]``; other annotations are left
to the factory) and a generic range rule: numbers are finite; an integer option whose default is at least 1 (or
``None``) must be at least 1, any other integer option at least 0; a float option whose default is at least 0
must be at least 0; an option whose name contains ``dropout`` is a probability in [0, 1); the entries of an
integer-list option named ``*layers`` are 1-based layer indices (at least 1).
"""
from __future__ import annotations

import collections.abc
import inspect
import math
import sys
import types
import typing

from fusionkit.cli import UsageError


def _hints(factory) -> dict:
    """The factory's parameter annotations as objects, from its signature (a registered variant carries its
    base's); one that cannot be resolved is left out, which only disables its own check."""
    try:
        hints = dict(typing.get_type_hints(factory))
    except Exception:  # noqa: BLE001
        hints = {}
    module = sys.modules.get(getattr(factory, "__module__", None) or "")
    namespace = {**getattr(factory, "__globals__", {}), **(vars(module) if module is not None else {})}
    for name, p in inspect.signature(factory).parameters.items():
        ann = p.annotation
        if name in hints or ann is inspect.Parameter.empty:
            continue
        if isinstance(ann, str):
            try:
                ann = eval(ann, namespace)  # noqa: S307 - the factory's own annotation text
            except Exception:  # noqa: BLE001
                continue
        hints[name] = ann
    return hints


def _is_union(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType)


def matches(value, hint) -> bool | None:
    """Whether a JSON value fits ``hint``; ``None`` when the annotation is not one this module understands."""
    if hint is typing.Any:
        return None
    if hint is None or hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        results = [matches(value, a) for a in args]
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if origin is typing.Literal:
        return value in args
    if origin in (tuple, list, collections.abc.Sequence) or hint in (tuple, list, collections.abc.Sequence):
        if not isinstance(value, list):
            return False
        if not args:
            return True
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            if len(value) != len(args):
                return False
            results = [matches(v, a) for v, a in zip(value, args)]
        else:
            results = [matches(v, args[0]) for v in value]
        if any(r is False for r in results):
            return False
        return None if any(r is None for r in results) else True
    return None


def describe(hint) -> str:
    """What ``hint`` allows, in words (``an integer``, ``a list of integers like [4, 6]``, ``null`` …)."""
    if hint is None or hint is type(None):
        return "null"
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
    if hint in simple:
        return simple[hint]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if _is_union(hint):
        return " or ".join(dict.fromkeys(describe(a) for a in args))
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args))
    if origin in (tuple, list, collections.abc.Sequence):
        if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
            return f"a list of {len(args)}: " + ", ".join(describe(a) for a in args)
        if args and args[0] is int:
            return "a list of integers like [4, 6]"
        return "a list" + (f" of {describe(args[0])}" if args else "")
    return getattr(hint, "__name__", str(hint))


def _shown(value) -> str:
    import json

    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)


def _range_problem(name: str, value, default) -> str | None:
    """The generic range rule of the module docstring, for one number (``None`` = fine)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value):
        return "must be a finite number"
    if "dropout" in name and isinstance(value, (int, float)):
        return None if 0 <= value < 1 else "is a dropout probability in [0, 1)"
    if isinstance(value, int):
        low = 1 if default is None or (isinstance(default, (int, float)) and not isinstance(default, bool)
                                       and default >= 1) else 0
        return None if value >= low else f"must be at least {low}"
    if isinstance(default, (int, float)) and not isinstance(default, bool) and default >= 0 and value < 0:
        return "must be at least 0"
    return None


def check_option(model: str, key: str, value, raw: str | None = None, *, where: str | None = None):
    """Check ``--set model.key=value`` (``value`` parsed as JSON, ``raw`` the text) against the factory's
    annotation and the range rule; returns the value to pass, or raises :class:`UsageError`. ``where``: how the
    message names the option (default ``--set model.key=value``)."""
    from fusionkit.build import model_spec

    factory = model_spec(model).factory
    param = inspect.signature(factory).parameters.get(key)
    if param is None:  # a factory taking **kwargs: nothing to check against
        return value
    hint = _hints(factory).get(key)
    if where is None:
        where = f"--set {model}.{key}={raw if raw is not None else _shown(value)}"
    if hint is not None:
        ok = matches(value, hint)
        if ok is False:
            raise UsageError(f"{where}: option {key} of model {model!r} takes {describe(hint)}, got "
                             f"{_kind(value)} {_shown(value)}")
    default = None if param.default is inspect.Parameter.empty else param.default
    items = value if isinstance(value, list) else [value]
    for item in items:
        if isinstance(value, list) and key.endswith("layers") and isinstance(item, int) \
                and not isinstance(item, bool) and item < 1:
            raise UsageError(f"{where}: layer {item} is below 1; {key} of model {model!r} holds 1-based encoder "
                             f"layer indices (1 = first transformer layer)")
        problem = _range_problem(key, item, default if not isinstance(value, list) else 1)
        if problem:
            raise UsageError(f"{where}: option {key} of model {model!r} {problem}, got {_shown(item)}")
    return value


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "the boolean", int: "the integer", float: "the number", str: "the string", list: "the list",
            dict: "the object"}.get(type(value), type(value).__name__)
