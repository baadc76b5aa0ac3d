"""Slots: the replaceable blocks of every model, and the contract a block must meet to fill one.

A model factory names each replaceable block as a *slot* (``mhmf``'s ``fusion``, ``tfn``'s ``audio_subnet``, …)
and builds it through the registry by name; the model itself keeps receiving built modules. A **slot value** is

* a registered block name, ``"gated_fusion"``, or
* a dict ``{"name": "gated_fusion", **kwargs}`` whose extra keys are passed to the block's constructor.

From Python: ``fusionkit.create("mhmf", fusion="my_fusion")`` or ``fusion={"name": "my_fusion", "k": 1}``;
from the command line: ``--set mhmf.fusion=my_fusion`` or ``--set 'mhmf.fusion={"name": "my_fusion", "k": 1}'``
(JSON).

Each :class:`Slot` is the one place where a slot's contract is written down: the registry kind of the blocks
that fit, the constructor keywords the model passes (``keywords``; a slot value may not override them), the
factory options the model forwards when the block takes them (``options``), and the forward signature with its
shapes. A model declares its slots **in its own module** (``baselines/tfn.py``, ``recipes/mhmf_bert.py``, a
plug-in's file), from the reusable contract kinds below (:func:`sequence_slot`, :func:`cross_attention_slot`,
:func:`vector_fusion_slot`, :func:`head_slot`, :func:`text_encoder_slot`; each kind is one call signature) or as a
:class:`Slot` of its own with its own dry run, written with the probe helpers (:func:`probe_seq`,
:func:`probe_mask`, :func:`shape_problem`, …). This module holds the mechanism only. Mask convention everywhere:
``mask (B, T)`` bool, ``True`` = real token (``None`` = all real).

A block other than the slot's default is dry-run once, at build time, on tiny tensors against the contract
(in eval mode, without gradients, with the global RNG state restored); a block that does not fit — wrong
kind, a missing keyword, a failing call, a wrong output shape — is one :class:`SlotError` naming the model,
the slot, the block, the plug-in that provided it and the contract. Defaults are built exactly as before,
without a dry run.

A model factory (built-in or from a plug-in) declares its slots with :func:`model_slots` — each slot is also a
keyword of the factory, defaulting to the slot's default block — and builds each block with :func:`build_block`::

    @register("my_model", kind="model")          # a plug-in adds the factory with registry.add(...) instead
    @model_slots("my_model", text_encoder_slot(), HEAD)
    @text_model_factory                            # the shared text_model, bert_config, ... (fusionkit.text_model)
    def build_my_model(text: TextModelArgs, *, dropout: float = 0.1, head: SlotValue = "regression_head"):
        encoder = text.build_encoder(build_my_model)
        head = build_block(build_my_model, "head", head, d_in=encoder.hidden_size, options=dict(dropout=dropout))
        return MyModel(encoder=encoder, head=head)
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import nn

from fusionkit.build import ModelBuildError, model_spec

SlotValue = Union[str, dict]

# dry-run sizes: small, distinct, and with padding in the second sample
PROBE_BATCH = 2
PROBE_LEN = 3
PROBE_SOURCE_LEN = 4


class SlotError(ModelBuildError):
    """A slot value names no fitting block (unknown, wrong kind, wrong keywords or wrong outputs)."""


@dataclass(frozen=True)
class Slot:
    """One replaceable block of a model.

    name: the slot (a keyword of the model's factory). kind: registry kind of the blocks that fit.
    default: the block the model is built with. keywords: constructor keywords the model always passes.
    options: factory options forwarded to the block when its constructor takes them. call / returns: the
    forward signature and its result, with shapes. dry_run: ``(block, keywords, context) -> problem | None``.
    """

    name: str
    kind: str
    default: str
    keywords: tuple[str, ...]
    call: str
    returns: str
    options: tuple[str, ...] = ()
    note: str = ""
    optional: bool = False  # the value may also be True (the default block) or False (no block)
    dry_run: Callable[[nn.Module, dict, dict], str | None] | None = field(default=None, compare=False, repr=False)

    def contract(self) -> str:
        """The contract on one line (used in every error)."""
        kw = ", ".join(f"{k}=…" for k in self.keywords)
        text = f"a block of kind {self.kind!r}, built as block({kw}) and called as {self.call} -> {self.returns}"
        return f"{text}; {self.note}" if self.note else text


# -- tiny inputs for dry runs -------------------------------------------------------------------------------
# A model's own contracts (in its module) write their dry runs with these helpers: every probe tensor is drawn
# from a fixed generator on the CPU and moved to the device of the block under test.
_probe_device = torch.device("cpu")  # "meta" when a model is built on the meta device (shapes only)


def probe_generator() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def probe_mask(length: int = PROBE_LEN) -> torch.Tensor:
    """``(PROBE_BATCH, length)`` bool, True = real; the second sample's last step is padding."""
    mask = torch.ones(PROBE_BATCH, length, dtype=torch.bool, device="cpu")
    mask[1, -1] = False
    return mask.to(_probe_device)


def probe_seq(d: int, length: int = PROBE_LEN) -> torch.Tensor:
    """``(PROBE_BATCH, length, d)`` random features."""
    return torch.randn(PROBE_BATCH, length, d, generator=probe_generator(), device="cpu").to(_probe_device)


def probe_vec(d: int) -> torch.Tensor:
    """``(PROBE_BATCH, d)`` random features."""
    return torch.randn(PROBE_BATCH, d, generator=probe_generator(), device="cpu").to(_probe_device)


def probe_tensor(*shape: int) -> torch.Tensor:
    """``(PROBE_BATCH, *shape)`` random values."""
    return torch.randn(PROBE_BATCH, *shape, generator=probe_generator(), device="cpu").to(_probe_device)


def probe_ids(length: int = PROBE_LEN) -> torch.Tensor:
    """``(PROBE_BATCH, length)`` token ids in 1000..1999."""
    return torch.randint(1000, 2000, (PROBE_BATCH, length), generator=probe_generator(), device="cpu").to(_probe_device)


def present_vec(d: int) -> torch.Tensor | None:
    """A probe vector, or ``None`` for an absent modality (width 0), as the models pass it."""
    return probe_vec(d) if d else None


def present_seq(d: int) -> torch.Tensor | None:
    """A probe sequence, or ``None`` for an absent modality (width 0)."""
    return probe_seq(d) if d else None


def shape_problem(out: Any, expected: tuple[int, ...], what: str = "output") -> str | None:
    """``None`` when ``out`` is a finite tensor of shape ``expected``; otherwise what is wrong with it."""
    if not isinstance(out, torch.Tensor):
        return f"its {what} is a {type(out).__name__}, not a tensor of shape {expected}"
    if tuple(out.shape) != expected:
        return f"its {what} has shape {tuple(out.shape)}, expected {expected}"
    if not out.is_meta and not torch.isfinite(out).all():
        return f"its {what} is not finite"
    return None


def width_attr(block: nn.Module, attr: str) -> int | str:
    """The block's positive int attribute ``attr``, or the problem (a string)."""
    value = getattr(block, attr, None)
    if not isinstance(value, int) or value <= 0:
        return f"it has no positive integer attribute {attr!r}"
    return value


# -- contract kinds: each is one call signature, with its dry run ----------------------------------------------
# A model declares its slots from these (or writes a Slot of its own, with its own dry run, in its module).
def sequence_slot(name: str, *, kind: str, default: str, keywords: tuple[str, str], call: str | None = None,
                  returns: str | None = None, options: tuple[str, ...] = (), note: str = "") -> Slot:
    """Sequence → sequence: ``forward(x (B, T, d_in), mask (B, T)) -> (B, T, d_out)``.

    ``keywords``: the names of the input and the output width among the constructor keywords, e.g.
    ``("d_in", "d_model")``."""
    d_in_key, d_out_key = keywords

    def run(block, kw, ctx):
        out = block(probe_seq(kw[d_in_key]), probe_mask())
        return shape_problem(out, (PROBE_BATCH, PROBE_LEN, kw[d_out_key]))

    call = call or f"forward(x (B, T, {d_in_key}), mask (B, T))"
    return Slot(name, kind, default, keywords, call, returns or f"(B, T, {d_out_key})", options=options, note=note,
                dry_run=run)


def cross_attention_slot(name: str, *, kind: str, default: str, d_key: str, call: str | None = None,
                         options: tuple[str, ...] = (), note: str = "") -> Slot:
    """Cross-attention: ``forward(target (B, T, d), source (B, S, d), target_mask (B, T), source_mask (B, S))
    -> (B, T, d)`` with ``d = kw[d_key]``."""

    def run(block, kw, ctx):
        d = kw[d_key]
        d_source = kw.get("d_source") or d
        out = block(probe_seq(d), probe_seq(d_source, PROBE_SOURCE_LEN), probe_mask(), probe_mask(PROBE_SOURCE_LEN))
        return shape_problem(out, (PROBE_BATCH, PROBE_LEN, d))

    call = call or (f"forward(x (B, T, {d_key}), source (B, S, {d_key}), mask (B, T), source_mask (B, S))")
    return Slot(name, kind, default, (d_key,), call, f"(B, T, {d_key})", options=options, note=note, dry_run=run)


def vector_fusion_slot(name: str, *, default: str, keywords: tuple[str, ...], call: str, returns: str,
                       out_key: str | None = None, options: tuple[str, ...] = (), note: str = "") -> Slot:
    """Vector fusion: ``forward(*vectors (B, d_m)) -> (B, D)`` with widths ``kw["dims"]`` and ``D = kw[out_key]``
    (``out_key=None``: the block's int attribute ``out_dim``)."""

    def run(block, kw, ctx):
        if out_key is None:
            width = width_attr(block, "out_dim")
            if isinstance(width, str):
                return width
        else:
            width = kw[out_key]
        return shape_problem(block(*(probe_vec(d) for d in kw["dims"])), (PROBE_BATCH, width))

    return Slot(name, "fusion", default, keywords, call, returns, options=options, note=note, dry_run=run)


def head_slot(name: str = "head", *, default: str = "regression_head", options: tuple[str, ...] = ("dropout",)) -> Slot:
    """Head: ``forward(x (B, d_in)) -> (B,)``."""

    def run(block, kw, ctx):
        return shape_problem(block(probe_vec(kw["d_in"])), (PROBE_BATCH,))

    return Slot(name, "head", default, ("d_in",), "forward(x (B, d_in))", "(B,)", options=options, dry_run=run)


ENCODER_CALL = "forward(input_ids (B, T), attention_mask (B, T), token_type_ids (B, T))"
ENCODER_RETURNS = "EncoderOutput(hidden_states: num_layers + 1 tensors (B, T, hidden_size), last_hidden_state)"
ENCODER_NOTE = "it has int attributes hidden_size and num_layers"


def _encoder(block, kw, ctx):
    for attr in ("hidden_size", "num_layers"):
        value = width_attr(block, attr)
        if isinstance(value, str):
            return value
    ids = probe_ids()
    extra = {}
    if kw.get("injection") is not None:
        extra["injection_inputs"] = {"acoustic": present_seq(ctx["d_acoustic"]),
                                     "visual": present_seq(ctx["d_visual"])}
    out = block(ids, probe_mask(), torch.zeros_like(ids), **extra)
    states = getattr(out, "hidden_states", None)
    if not isinstance(states, tuple) or len(states) != block.num_layers + 1:
        return f"its output has no 'hidden_states' tuple of num_layers + 1 = {block.num_layers + 1} tensors"
    return shape_problem(getattr(out, "last_hidden_state", None), (PROBE_BATCH, PROBE_LEN, block.hidden_size),
                         "field 'last_hidden_state'")


def text_encoder_slot(*, injection: bool = False) -> Slot:
    """Encoder: the text encoder slot of every model (``injection``: it also takes MAG's ``injection`` module)."""
    keywords = ("name_or_path", "mode", "config") + (("injection", "injection_layer") if injection else ())
    call = ENCODER_CALL[:-1] + ", injection_inputs={'acoustic', 'visual'})" if injection else ENCODER_CALL
    note = ENCODER_NOTE + (" and model.config (a transformers config: hidden_size, hidden_dropout_prob, "
                           "initializer_range); it applies injection to its hidden states" if injection else "")
    return Slot("text_encoder", "encoder", "bert_encoder", keywords, call, ENCODER_RETURNS, note=note,
                dry_run=_encoder)


HEAD = head_slot()


# -- per-model declarations ---------------------------------------------------------------------------------
def model_slots(model: str, *slots: Slot):
    """Decorator for the factory of model ``model``: declares its slots (each one a keyword of the factory)."""
    names = [s.name for s in slots]
    if len(set(names)) != len(names):
        raise ValueError(f"slot names must be distinct, got {names}")

    def deco(factory):
        factory.model_name = model
        factory.slots = {s.name: s for s in slots}
        return factory

    return deco


def slots_of(model: str) -> dict[str, Slot]:
    """``{slot name: Slot}`` of registered model ``model`` (empty for a model that declares none)."""
    factory = model_spec(model).factory
    while not hasattr(factory, "slots") and hasattr(factory, "variant_of"):  # register_variant's factories
        factory = factory.variant_of[0]
    return dict(getattr(factory, "slots", {}) or {})


def slot_defaults(model: str) -> dict[str, SlotValue]:
    """``{slot: default value}`` of model ``model`` (a variant may fix a slot to another block)."""
    params = inspect.signature(model_spec(model).factory).parameters
    defaults = {}
    for name, slot in slots_of(model).items():
        given = params[name].default if name in params else inspect.Parameter.empty
        defaults[name] = slot.default if given is inspect.Parameter.empty or given is True else given
    return defaults


def parse_value(model: str, slot: Slot, value: SlotValue) -> tuple[str | None, dict]:
    """``(block name, constructor kwargs)`` of a slot value; ``(None, {})`` for an empty optional slot."""
    if slot.optional and isinstance(value, bool):
        return (slot.default if value else None), {}
    if isinstance(value, str) and value:
        return value, {}
    if isinstance(value, dict) and isinstance(value.get("name"), str) and value["name"]:
        kwargs = {k: v for k, v in value.items() if k != "name"}
        fixed = sorted(set(kwargs) & set(slot.keywords))
        if fixed:
            raise SlotError(f"{model}.{slot.name}: {', '.join(fixed)} is set by model {model!r} itself "
                            f"(the slot's contract: {slot.contract()}); drop it from the slot value")
        return value["name"], kwargs
    raise SlotError(f"{model}.{slot.name}={value!r}: a slot value is a registered block name or a dict "
                    f'{{"name": NAME, **kwargs}} (on the command line: --set {model}.{slot.name}=NAME or '
                    f"--set '{model}.{slot.name}={{\"name\": \"NAME\", \"key\": 1}}')"
                    + ("; true or false for the default block or none" if slot.optional else ""))


def _spec_for(model: str, slot: Slot, name: str):
    from fusionkit.registry import get_registry

    registry = get_registry()
    try:
        spec = registry.get(name)
    except KeyError as e:  # its message lists close matches
        raise SlotError(f"{model}.{slot.name}: {e.args[0]}; blocks of kind {slot.kind!r}: "
                        f"{', '.join(registry.names(slot.kind))}") from None
    if spec.kind != slot.kind:
        raise SlotError(f"{model}.{slot.name}: block {name!r} (plug-in {spec.plugin!r}) is a {spec.kind!r}, but this "
                        f"slot takes {slot.contract()}; blocks of kind {slot.kind!r}: "
                        f"{', '.join(registry.names(slot.kind))}")
    return spec


def _accepts(factory: Callable) -> tuple[set, bool]:
    try:
        params = inspect.signature(factory).parameters.values()
    except (TypeError, ValueError):
        return set(), True
    var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params if p.kind in (inspect.Parameter.KEYWORD_ONLY,
                                                  inspect.Parameter.POSITIONAL_OR_KEYWORD)}
    return names, var_kw


def build_block(
    factory: Callable,
    slot_name: str,
    value: SlotValue,
    *,
    options: dict | None = None,
    sources: dict | None = None,
    context: dict | None = None,
    **keywords,
) -> nn.Module:
    """Build the block that fills ``slot_name`` of the model whose factory is ``factory``.

    ``value``: the slot value; ``keywords``: the contract keywords the model passes; ``options``: block
    keyword → value of the factory's settings for the block, forwarded when the block takes the keyword;
    ``sources``: block keyword → the factory parameter it comes from (default: the same name). An option whose
    factory parameter was changed from its default, for a block that does not take it, is an error (never
    dropped silently). ``context``: extra sizes a dry run needs (``d_acoustic``, ``d_visual`` for an encoder
    with an injection).
    """
    from fusionkit.registry import building_variant

    slot = factory.slots[slot_name]
    model, signature = building_variant(factory) or (factory.model_name, inspect.signature(factory))
    if set(keywords) != set(slot.keywords):
        raise TypeError(f"{model}.{slot_name}: the factory passes {sorted(keywords)}, the contract {slot.keywords}")
    name, user = parse_value(model, slot, value)
    if name is None:
        raise TypeError(f"{model}.{slot_name} is empty: the factory builds no block for it")
    spec = _spec_for(model, slot, name)
    accepted, var_kw = _accepts(spec.factory)
    where = f"{model}.{slot.name}: block {name!r} (plug-in {spec.plugin!r})"
    missing = [k for k in slot.keywords if k not in accepted and not var_kw]
    if missing:
        raise SlotError(f"{where} does not take the keyword{'s' if len(missing) > 1 else ''} {', '.join(missing)}; "
                        f"this slot takes {slot.contract()}")
    unknown = sorted(k for k in user if k not in accepted and not var_kw)
    if unknown:
        raise SlotError(f"{where} does not take {', '.join(unknown)} (its keywords: {', '.join(sorted(accepted))})")
    kwargs = dict(keywords)
    defaults = {p.name: p.default for p in signature.parameters.values()}
    for key, option in (options or {}).items():
        param = (sources or {}).get(key, key)
        if var_kw or key in accepted:
            kwargs[key] = option
        elif param in defaults and option != defaults[param]:
            raise SlotError(f"{where} does not take {key!r}, which {model!r}'s {param}={option!r} sets for the "
                            f"default block {slot.default!r}; leave {param} at its default or pass the block's own "
                            f"settings in the slot value")
    kwargs.update(user)
    try:
        block = spec.factory(**kwargs)
    except Exception as e:  # noqa: BLE001 - re-raised with the slot and the contract named
        raise SlotError(f"{where} failed to build with {_fmt_kwargs(kwargs)}: {type(e).__name__}: {e}; this slot "
                        f"takes {slot.contract()}") from None
    if not isinstance(block, nn.Module):
        raise SlotError(f"{where} built a {type(block).__name__}, not an nn.Module; this slot takes {slot.contract()}")
    if value not in (slot.default, True) and slot.dry_run is not None:
        problem = _dry_run(slot, block, kwargs, context or {})
        if problem:
            raise SlotError(f"{where} does not fit: {problem}; this slot takes {slot.contract()}")
    return block


def _fmt_kwargs(kwargs: dict) -> str:
    shown = {k: (type(v).__name__ if isinstance(v, nn.Module) or hasattr(v, "to_dict") else v)
             for k, v in kwargs.items()}
    return ", ".join(f"{k}={v!r}" for k, v in shown.items()) or "no arguments"


def _dry_run(slot: Slot, block: nn.Module, kwargs: dict, context: dict) -> str | None:
    global _probe_device
    training = block.training
    block.eval()
    tensors = [*block.parameters(), *block.buffers()]
    _probe_device = tensors[0].device if tensors else torch.device("cpu")
    try:
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            return slot.dry_run(block, kwargs, context)
    except Exception as e:  # noqa: BLE001 - the block's own failure, reported against the contract
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        return f"calling it on tiny inputs raised {type(e).__name__}" + (f": {first}" if first else "")
    finally:
        block.train(training)
        _probe_device = torch.device("cpu")


# -- records ------------------------------------------------------------------------------------------------
def resolve_composition(model: str, kwargs: dict) -> dict:
    """``{slot: {"block", "plugin", "args"}}`` for model ``model`` built with ``kwargs`` (no model is built;
    unknown or wrong-kind blocks raise :class:`SlotError`). ``args`` are the slot value's own keywords."""
    composition = {}
    defaults = slot_defaults(model)
    for name, slot in slots_of(model).items():
        block, args = parse_value(model, slot, kwargs.get(name, defaults[name]))
        plugin = None if block is None else _spec_for(model, slot, block).plugin
        composition[name] = {"block": block, "plugin": plugin, "args": args}
    return composition


def non_default(model: str, kwargs: dict) -> dict:
    """The slots of ``kwargs`` that hold another block than their default (``True`` / ``False`` of an optional
    slot are its default block and no block)."""
    defaults = slot_defaults(model)
    return {n: v for n, v in kwargs.items() if n in defaults and v != defaults[n] and not isinstance(v, bool)}


def check_installed(model: str, composition: dict) -> None:
    """Raise :class:`SlotError` when a recorded block is not registered now, or by another plug-in."""
    from fusionkit.registry import get_registry

    registry = get_registry()
    for slot, entry in (composition or {}).items():
        block, plugin = entry.get("block"), entry.get("plugin")
        if block is None:
            continue
        if not isinstance(block, str):  # a hand-edited model.json
            raise SlotError(f"{model}.{slot} records block {block!r}, which is not a block name; record the "
                            f"registered name of the block the model was built with")
        if block not in registry:
            raise SlotError(f"{model}.{slot} was built with block {block!r} from plug-in {plugin!r}, which is not "
                            f"installed here; install the package that provides plug-in {plugin!r} (entry-point "
                            f"group 'fusionkit') to rebuild this model")
        now = registry.get(block).plugin
        if now != plugin:
            raise SlotError(f"{model}.{slot} was built with block {block!r} from plug-in {plugin!r}, but {block!r} "
                            f"now comes from plug-in {now!r}; install {plugin!r} or block {now!r} with "
                            f"FUSIONKIT_DISABLE_PLUGINS={now}")


def describe_composition(composition: dict, defaults_too: bool = False, model: str | None = None) -> str:
    """``"fusion=my_fusion (plug-in my_blocks, k=1), …"``; without ``defaults_too`` only non-default slots."""
    slots = slots_of(model) if model is not None else {}
    parts = []
    for name, entry in composition.items():
        if not defaults_too and name in slots and entry["block"] == slots[name].default and not entry["args"]:
            continue
        if entry["block"] is None:
            parts.append(f"{name}=none")
            continue
        extra = [f"plug-in {entry['plugin']}"] + [f"{k}={v!r}" for k, v in entry["args"].items()]
        parts.append(f"{name}={entry['block']} ({', '.join(extra)})")
    return ", ".join(parts)
