"""Slots: the replaceable blocks of every model, and the contract a block must meet to fill one.

A model factory names each replaceable block as a *slot* (``mhmf``'s ``fusion``, ``tfn``'s ``audio_subnet``, …)
and builds it through the registry by name; the model itself keeps receiving built modules. A **slot value** is

* a registered block name, ``"gated_fusion"``, or
* a dict ``{"name": "gated_fusion", **kwargs}`` whose extra keys are passed to the block's constructor.

From Python: ``fusionkit.create("mhmf", fusion="my_fusion")`` or ``fusion={"name": "my_fusion", "k": 1}``;
from the command line: ``--set mhmf.fusion=my_fusion`` or ``--set 'mhmf.fusion={"name": "my_fusion", "k": 1}'``
(JSON).

Each :class:`Slot` below is the one place where a slot's contract is written down: the registry kind of the
blocks that fit, the constructor keywords the model passes (``keywords``; a slot value may not override them),
the factory options the model forwards when the block takes them (``options``), and the forward signature with
its shapes. Mask convention everywhere: ``mask (B, T)`` bool, ``True`` = real token (``None`` = all real).

A block other than the slot's default is dry-run once, at build time, on tiny tensors against the contract
(in eval mode, without gradients, with the global RNG state restored); a block that does not fit — wrong
kind, a missing keyword, a failing call, a wrong output shape — is one :class:`SlotError` naming the model,
the slot, the block, the plug-in that provided it and the contract. Defaults are built exactly as before,
without a dry run.

A model factory (built-in or from a plug-in) declares its slots with :func:`model_slots` — each slot is also a
keyword of the factory, defaulting to the slot's default block — and builds each block with :func:`build_block`::

    @register("my_model", kind="model")
    @model_slots("my_model", text_encoder_slot(), HEAD)
    def build_my_model(*, text_model=None, bert_config=None, encoder_mode="finetune", dropout=0.1,
                       text_encoder: SlotValue = "bert_encoder", head: SlotValue = "regression_head"):
        encoder = build_block(build_my_model, "text_encoder", text_encoder, name_or_path=text_model,
                              mode=encoder_mode, config=bert_config)
        head = build_block(build_my_model, "head", head, d_in=encoder.hidden_size, options=dict(dropout=dropout))
        return MyModel(encoder=encoder, head=head)
"""
from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Union

import torch
from torch import nn

from fusionkit.training.build import ModelBuildError

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
# the device of the block under test: "meta" when a model is built on the meta device (shapes only)
_probe_device = torch.device("cpu")


def _gen() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _mask(length: int) -> torch.Tensor:
    mask = torch.ones(PROBE_BATCH, length, dtype=torch.bool, device="cpu")
    mask[1, -1] = False
    return mask.to(_probe_device)


def _seq(d: int, length: int = PROBE_LEN) -> torch.Tensor:
    return torch.randn(PROBE_BATCH, length, d, generator=_gen(), device="cpu").to(_probe_device)


def _vec(d: int) -> torch.Tensor:
    return torch.randn(PROBE_BATCH, d, generator=_gen(), device="cpu").to(_probe_device)


def _shape_problem(out: Any, expected: tuple[int, ...], what: str = "output") -> str | None:
    if not isinstance(out, torch.Tensor):
        return f"its {what} is a {type(out).__name__}, not a tensor of shape {expected}"
    if tuple(out.shape) != expected:
        return f"its {what} has shape {tuple(out.shape)}, expected {expected}"
    if not out.is_meta and not torch.isfinite(out).all():
        return f"its {what} is not finite"
    return None


def _width_attr(block: nn.Module, attr: str) -> int | str:
    value = getattr(block, attr, None)
    if not isinstance(value, int) or value <= 0:
        return f"it has no positive integer attribute {attr!r}"
    return value


# -- dry runs, one per contract -----------------------------------------------------------------------------
def _sequence_to_sequence(d_in_key: str | None, d_out_key: str, with_mask: bool = True):
    """``forward(x (B, T, d_in), mask) -> (B, T, d_out)``; ``d_in_key=None``: input width = output width."""

    def run(block, kw, ctx):
        d_out = kw[d_out_key]
        x = _seq(kw[d_in_key] if d_in_key else d_out)
        out = block(x, _mask(PROBE_LEN)) if with_mask else block(x)
        return _shape_problem(out, (PROBE_BATCH, PROBE_LEN, d_out))

    return run


def _cross(d_key: str):
    """``forward(target (B, T, d), source (B, S, d_source), target_mask, source_mask) -> (B, T, d)``."""

    def run(block, kw, ctx):
        d = kw[d_key]
        d_source = kw.get("d_source") or d
        out = block(_seq(d), _seq(d_source, PROBE_SOURCE_LEN), _mask(PROBE_LEN), _mask(PROBE_SOURCE_LEN))
        return _shape_problem(out, (PROBE_BATCH, PROBE_LEN, d))

    return run


def _memory(block, kw, ctx):
    d = kw["dim"]
    return _shape_problem(block(_seq(d), _seq(d)), (PROBE_BATCH, PROBE_LEN, d))


def _self_memory(block, kw, ctx):
    d = kw["dim"]
    return _shape_problem(block(_seq(d), mask=_mask(PROBE_LEN)), (PROBE_BATCH, PROBE_LEN, d))


def _restitution(block, kw, ctx):
    d = kw["dim"]
    out = block(_seq(d), _seq(d), _mask(PROBE_LEN))
    for name in ("fused", "relevant", "irrelevant"):
        if not hasattr(out, name):
            return f"its output has no field {name!r} (expected a NamedTuple with fused, relevant, irrelevant)"
        problem = _shape_problem(getattr(out, name), (PROBE_BATCH, PROBE_LEN, d), f"field {name!r}")
        if problem:
            return problem
    return None


def _mhmf_restitution(block, kw, ctx):
    problem = _restitution(block, kw, ctx)
    if problem:
        return problem
    out = block(_seq(kw["dim"]), _seq(kw["dim"]), _mask(PROBE_LEN))
    if not hasattr(out, "attention"):
        return "its output has no field 'attention' (B, dim), the gate mhmf reports in its diagnostics"
    return _shape_problem(out.attention, (PROBE_BATCH, kw["dim"]), "field 'attention'")


def _four_stream_fusion(block, kw, ctx):
    d = kw["dim"]
    out = block(_seq(d), _seq(d), _seq(d), _seq(d))
    return _shape_problem(out, (PROBE_BATCH, PROBE_LEN, d))


def _head(block, kw, ctx):
    return _shape_problem(block(_vec(kw["d_in"])), (PROBE_BATCH,))


def _vector_subnet(block, kw, ctx):
    return _shape_problem(block(_vec(kw["d_in"])), (PROBE_BATCH, kw["d_hidden"]))


def _text_subnet(block, kw, ctx):
    return _shape_problem(block(_seq(kw["d_in"]), _mask(PROBE_LEN)), (PROBE_BATCH, kw["d_out"]))


def _vector_fusion(out_key: str | None):
    """``forward(*vectors (B, d_m)) -> (B, D)`` with ``D = kw[out_key]`` or the block's ``out_dim``."""

    def run(block, kw, ctx):
        if out_key is None:
            width = _width_attr(block, "out_dim")
            if isinstance(width, str):
                return width
        else:
            width = kw[out_key]
        out = block(*(_vec(d) for d in kw["dims"]))
        return _shape_problem(out, (PROBE_BATCH, width))

    return run


def _sequence_encoder(block, kw, ctx):
    width = _width_attr(block, "out_dim")
    if isinstance(width, str):
        return width
    return _shape_problem(block(_seq(kw["d_in"]), _mask(PROBE_LEN)), (PROBE_BATCH, width))


def _present_vec(d: int) -> torch.Tensor | None:
    """A probe vector, or ``None`` for an absent modality (width 0), as the models pass it."""
    return _vec(d) if d else None


def _present_seq(d: int) -> torch.Tensor | None:
    return _seq(d) if d else None


def _shared_private(block, kw, ctx):
    visual, acoustic = _present_vec(kw["d_visual"]), _present_vec(kw["d_acoustic"])
    count = 1 + (visual is not None) + (acoustic is not None)
    out = block(_vec(kw["d_text"]), visual, acoustic)
    for name in ("projected", "private", "shared", "recon"):
        parts = getattr(out, name, None)
        if not isinstance(parts, tuple) or len(parts) != count:
            return f"its output has no field {name!r} holding a tuple of the {count} present modalities (t, v, a order)"
        for part in parts:
            problem = _shape_problem(part, (PROBE_BATCH, kw["hidden"]), f"field {name!r}")
            if problem:
                return problem
    return None


def _misa_fusion(block, kw, ctx):
    h, count = kw["hidden"], ctx.get("num_modalities", 3)
    out = block(tuple(_vec(h) for _ in range(count)), tuple(_vec(h) for _ in range(count)))
    if not hasattr(out, "prediction") or not hasattr(out, "fused"):
        return "its output has no fields 'prediction' and 'fused'"
    problem = _shape_problem(out.prediction, (PROBE_BATCH, kw["d_out"]), "field 'prediction'")
    if problem:
        return problem
    fused = out.fused
    if not isinstance(fused, torch.Tensor) or fused.dim() != 2 or fused.shape[0] != PROBE_BATCH:
        return f"its field 'fused' should be (B, F), got {getattr(fused, 'shape', type(fused).__name__)}"
    return None


def _gate(block, kw, ctx):
    d = kw["d_model"]
    out = block(_seq(d), _present_seq(kw["d_acoustic"]), _present_seq(kw["d_visual"]))  # width 0: absent, None
    return _shape_problem(out, (PROBE_BATCH, PROBE_LEN, d))


def _encoder(block, kw, ctx):
    for attr in ("hidden_size", "num_layers"):
        value = _width_attr(block, attr)
        if isinstance(value, str):
            return value
    ids = torch.randint(1000, 2000, (PROBE_BATCH, PROBE_LEN), generator=_gen(), device="cpu").to(_probe_device)
    mask = _mask(PROBE_LEN)
    extra = {}
    if kw.get("injection") is not None:
        extra["injection_inputs"] = {"acoustic": _present_seq(ctx["d_acoustic"]),
                                     "visual": _present_seq(ctx["d_visual"])}
    out = block(ids, mask, torch.zeros_like(ids), **extra)
    states = getattr(out, "hidden_states", None)
    if not isinstance(states, tuple) or len(states) != block.num_layers + 1:
        return f"its output has no 'hidden_states' tuple of num_layers + 1 = {block.num_layers + 1} tensors"
    return _shape_problem(getattr(out, "last_hidden_state", None), (PROBE_BATCH, PROBE_LEN, block.hidden_size),
                          "field 'last_hidden_state'")


# -- the contracts ------------------------------------------------------------------------------------------
ENCODER_CALL = "forward(input_ids (B, T), attention_mask (B, T), token_type_ids (B, T))"
ENCODER_RETURNS = "EncoderOutput(hidden_states: num_layers + 1 tensors (B, T, hidden_size), last_hidden_state)"
ENCODER_NOTE = "it has int attributes hidden_size and num_layers"


def text_encoder_slot(*, injection: bool = False) -> Slot:
    """The text encoder slot of every model (``injection``: also takes MAG's ``injection`` module)."""
    keywords = ("name_or_path", "mode", "config") + (("injection", "injection_layer") if injection else ())
    call = ENCODER_CALL[:-1] + ", injection_inputs={'acoustic', 'visual'})" if injection else ENCODER_CALL
    note = ENCODER_NOTE + (" and model.config (a transformers config: hidden_size, hidden_dropout_prob, "
                           "initializer_range); it applies injection to its hidden states" if injection else "")
    return Slot("text_encoder", "encoder", "bert_encoder", keywords, call, ENCODER_RETURNS, note=note,
                dry_run=_encoder)


HEAD = Slot("head", "head", "regression_head", ("d_in",), "forward(x (B, d_in))", "(B,)", options=("dropout",),
            dry_run=_head)

# TFN and LMF
TEXT_SUBNET = Slot("text_subnet", "adapter", "text_subnet", ("d_in", "d_out"),
                   "forward(hidden (B, T, d_in), mask (B, T))", "(B, d_out)", options=("dropout", "pooling"),
                   dry_run=_text_subnet)


def vector_subnet_slot(name: str) -> Slot:
    return Slot(name, "adapter", "subnet", ("d_in", "d_hidden"), "forward(x (B, d_in)) on the masked time average",
                "(B, d_hidden)", options=("dropout",), dry_run=_vector_subnet)


TFN_FUSION = Slot("fusion", "fusion", "tensor_fusion", ("dims",),
                  "forward(audio (B, d_a), video (B, d_v), text (B, d_t)) with dims=(d_a, d_v, d_t)", "(B, out_dim)",
                  note="it has an int attribute out_dim (the post-fusion network's input width)",
                  dry_run=_vector_fusion(None))
LMF_FUSION = Slot("fusion", "fusion", "low_rank_fusion", ("dims", "d_out"),
                  "forward(audio (B, d_a), video (B, d_v), text (B, d_t)) with dims=(d_a, d_v, d_t)",
                  "(B, d_out) with d_out=1, the prediction itself", options=("rank",), dry_run=_vector_fusion("d_out"))

# MulT
MULT_OPTIONS = ("heads", "layers", "attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "attn_mask")
MULT_CROSSMODAL = Slot("crossmodal", "adapter", "crossmodal_transformer", ("dim",),
                       "forward(x (B, T, dim), source (B, S, dim), mask (B, T), source_mask (B, S))", "(B, T, dim)",
                       options=MULT_OPTIONS, note="one block per (target, source) pair", dry_run=_cross("dim"))
MULT_MEMORY = Slot("memory", "adapter", "crossmodal_transformer", ("dim",),
                   "forward(x (B, T, dim), mask=mask (B, T)) with dim = (present modalities − 1) · d_model", "(B, T, dim)",
                   options=MULT_OPTIONS + ("self_attention",), note="one block per target modality",
                   dry_run=_self_memory)

# MISA
def misa_encoder_slot(name: str) -> Slot:
    return Slot(name, "adapter", "misa_sequence_encoder", ("d_in",), "forward(x (B, T, d_in), mask (B, T))",
                "(B, out_dim)", note="it has an int attribute out_dim", dry_run=_sequence_encoder)


MISA_SHARED_PRIVATE = Slot("shared_private", "adapter", "misa_shared_private",
                           ("d_text", "d_visual", "d_acoustic", "hidden"),
                           "forward(text (B, d_text), visual (B, d_visual), acoustic (B, d_acoustic))",
                           "SharedPrivateOutput(projected, private, shared, recon: (t, v, a) tuples of (B, hidden))",
                           options=("modalities",),
                           note="an absent modality has width 0 and comes as None; the tuples hold the present "
                                "ones only", dry_run=_shared_private)
MISA_FUSION = Slot("fusion", "fusion", "misa_fusion", ("hidden", "d_out"),
                   "forward(private (t, v, a) of (B, hidden), shared (t, v, a) of (B, hidden))",
                   "(prediction (B, d_out), fused (B, F)) with d_out=1", options=("dropout",),
                   note="the tuples hold the present modalities only", dry_run=_misa_fusion)

# MAG-BERT
MAG_GATE = Slot("gate", "fusion", "multimodal_adaptation_gate", ("d_model", "d_acoustic", "d_visual"),
                "forward(z (B, T, d_model), acoustic (B, T, d_acoustic), visual (B, T, d_visual))", "(B, T, d_model)",
                options=("beta_shift", "dropout", "layer_norm_eps"),
                note="it runs inside the text encoder on its hidden states (injection); an absent modality has "
                     "width 0 and comes as None", dry_run=_gate)


# MHMF-BERT
ADAPTER_OPTIONS = ("num_layers", "heads", "dropout", "attn_dropout", "ffn_dropout", "ffn_ratio")
MHMF_SELF_ATTENTION = Slot("self_attention", "adapter", "self_attention_adapter", ("d_in", "d_model"),
                           "forward(x (B, T, d_in), mask (B, T) or None)", "(B, T, d_model), zero at padded steps",
                           options=ADAPTER_OPTIONS, note="one block per modality (audio, vision)",
                           dry_run=_sequence_to_sequence("d_in", "d_model"))
MHMF_CROSS_ATTENTION = Slot("cross_attention", "adapter", "cross_attention_adapter", ("d_model",),
                            "forward(target (B, T, d_model), source (B, S, d_model) a projected BERT layer, "
                            "target_mask (B, T) or None, source_mask (B, S) or None)",
                            "(B, T, d_model)", options=ADAPTER_OPTIONS, note="one block per branch and stage",
                            dry_run=_cross("d_model"))
MHMF_MEMORY = Slot("memory", "memory", "gru_memory", ("dim",), "forward(x (B, T, dim), state (B, T, dim))",
                   "(B, T, dim) the new state", note="one block per branch and stage", dry_run=_memory)
MHMF_RESTITUTION = Slot(
    "restitution", "fusion", "restitution", ("dim",),
    "forward(text (B, T, dim) or (B, dim) when unaligned, memory (B, T, dim), mask (B, T) or None)",
    "NamedTuple(fused, relevant, irrelevant: (B, T, dim), attention: (B, dim))", options=("reduction",),
    note="one block per branch and stage; false: the ablation without restitution", optional=True,
    dry_run=_mhmf_restitution,
)
MHMF_FUSION = Slot("fusion", "fusion", "gated_fusion", ("dim",),
                   "forward(g_vision, h_vision, g_audio, h_audio), each (B, T, dim) (aligned) or (B, dim) (unaligned, "
                   "pooled)", "(B, T, dim) (or (B, dim))", dry_run=_four_stream_fusion)


# ICCN
def _outer_product(block, kw, ctx):
    d_t, d_o = ctx["d_text"], ctx["d_other"]
    return _shape_problem(block(_seq(d_t), _seq(d_o), _mask(PROBE_LEN)), (PROBE_BATCH, d_t, d_o))


def _matrix_cnn(block, kw, ctx):
    matrix = torch.randn(PROBE_BATCH, kw["height"], kw["width"], generator=_gen(), device="cpu").to(_probe_device)
    return _shape_problem(block(matrix), (PROBE_BATCH, kw["d_out"]))


ICCN_TEXT_CONV = Slot("text_conv", "adapter", "temporal_conv", ("d_in", "d_out"),
                      "forward(x (B, T, d_in), mask (B, T))", "(B, T, d_out), zero at padded steps",
                      options=("kernel_size",), dry_run=_sequence_to_sequence("d_in", "d_out"))


def iccn_sequence_slot(name: str) -> Slot:
    return Slot(name, "adapter", "lstm_sequence_encoder", ("d_in", "d_hidden"), "forward(x (B, T, d_in), mask (B, T))",
                "(B, T, d_hidden), word-aligned with the text", dry_run=_sequence_to_sequence("d_in", "d_hidden"))


ICCN_OUTER_PRODUCT = Slot("outer_product", "fusion", "text_based_outer_product", (),
                          "forward(text (B, T, d_t), other (B, T, d_o), mask (B, T))", "(B, d_t, d_o)",
                          note="one block, used for audio and for video", dry_run=_outer_product)


def iccn_cnn_slot(name: str) -> Slot:
    return Slot(name, "adapter", "outer_product_cnn", ("height", "width", "d_out"),
                "forward(matrix (B, height, width))", "(B, d_out)", options=("channels", "dropout"),
                dry_run=_matrix_cnn)


ICCN_HEAD = dataclasses.replace(HEAD, options=("d_hidden", "dropout"))


# ICCN as its authors built it (model iccn; the slots above are iccn_e2e's)
def _vector_encoder(block, kw, ctx):
    return _shape_problem(block(_seq(kw["d_in"]), _mask(PROBE_LEN)), (PROBE_BATCH, kw["d_hidden"]))


def _vector_outer_product(block, kw, ctx):
    d_t, d_o = ctx["d_text"], ctx["d_other"]
    return _shape_problem(block(_vec(d_t), _vec(d_o)), (PROBE_BATCH, d_t, d_o))


def _two_view_loss(block, kw, ctx):
    d = ctx["d_embed"]
    out = block(torch.randn(4, d, generator=_gen()).to(_probe_device),
                torch.randn(4, d, generator=torch.Generator().manual_seed(1)).to(_probe_device))
    return _shape_problem(out, ())


def iccn_vector_encoder_slot(name: str) -> Slot:
    return Slot(name, "adapter", "projected_lstm", ("d_in", "d_hidden"), "forward(x (B, T, d_in), mask (B, T))",
                "(B, d_hidden), one vector per utterance", dry_run=_vector_encoder)


ICCN_VECTOR_PRODUCT = Slot("product", "fusion", "vector_outer_product", (),
                           "forward(text (B, d_t), other (B, d_o))", "(B, d_t, d_o)",
                           note="one block, used for t⊗a and t⊗v", dry_run=_vector_outer_product)


def iccn_product_cnn_slot(name: str) -> Slot:
    return Slot(name, "adapter", "iccn_product_cnn", ("height", "width", "d_out"),
                "forward(matrix (B, height, width))", "(B, d_out)", options=("channels", "stages"),
                dry_run=_matrix_cnn)


ICCN_REGRESSOR = Slot("head", "head", "iccn_regressor", ("d_in",), "forward(x (B, d_in)) with x = [e_a; e_v; text]",
                      "(B,)", options=("d_hidden", "dropout"), note="trained in the downstream stage only",
                      dry_run=_head)
ICCN_CCA_LOSS = Slot("cca_loss", "loss", "dcca_loss", (), "forward(h1 (N, d_embed), h2 (N, d_embed))",
                     "() scalar, lower = more correlated", options=("r1", "r2", "top_k", "eps"),
                     note="the DCCA stage's objective", dry_run=_two_view_loss)


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
    from fusionkit.training.build import model_spec

    factory = model_spec(model).factory
    while not hasattr(factory, "slots") and hasattr(factory, "variant_of"):  # register_variant's factories
        factory = factory.variant_of[0]
    return dict(getattr(factory, "slots", {}) or {})


def slot_defaults(model: str) -> dict[str, SlotValue]:
    """``{slot: default value}`` of model ``model`` (a variant may fix a slot to another block)."""
    from fusionkit.training.build import model_spec

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
