"""The text-model arguments every model factory shares, as one bundle.

Every model of fusionkit reads BERT-encoded text plus acoustic and visual features, so every factory takes the
same seven keywords: ``text_model``, ``bert_config``, ``encoder_mode``, ``d_acoustic``, ``d_visual``,
``modalities`` and the ``text_encoder`` slot. :func:`text_model_factory` writes them once: the decorated function
receives them as one :class:`TextModelArgs` and declares only its own options::

    @register("my_model", kind="model")
    @model_slots("my_model", text_encoder_slot(), HEAD)
    @text_model_factory
    def build_my_model(text: TextModelArgs, *, dropout: float = 0.1, head: SlotValue = "regression_head"):
        encoder = text.build_encoder(build_my_model)
        ...

The returned factory takes the bundle's fields as keyword-only arguments (its signature lists them first, then
the function's own), so ``fusionkit.create``, ``--set``, ``model.json`` and variants see one flat set of options.
"""
from __future__ import annotations

import dataclasses
import functools
import inspect
from dataclasses import dataclass
from typing import Any, Callable, Literal

from torch import nn

from fusionkit.slots import SlotValue, build_block


@dataclass(frozen=True)
class TextModelArgs:
    """The shared arguments of every model factory.

    text_model: a Hugging Face model name or path (``None``: the bundled MiniLM-L6). bert_config: a
    ``transformers`` config for a randomly initialised encoder (tests). encoder_mode: ``finetune`` | ``frozen``
    | ``random``. d_acoustic / d_visual: feature widths. modalities: the present ones (``t``, ``a``, ``v``).
    text_encoder: the slot value of the text encoder.
    """

    text_model: str | None = None
    bert_config: Any = None
    encoder_mode: Literal["finetune", "frozen", "random"] = "finetune"
    d_acoustic: int = 74
    d_visual: int = 47
    modalities: tuple[str, ...] = ("t", "a", "v")
    text_encoder: SlotValue = "bert_encoder"

    def build_encoder(self, factory: Callable, **keywords) -> nn.Module:
        """The model's ``text_encoder`` slot, built through :func:`fusionkit.slots.build_block` (``keywords``: the
        extra contract keywords of an encoder slot with an injection)."""
        return build_block(factory, "text_encoder", self.text_encoder, name_or_path=self.text_model,
                           mode=self.encoder_mode, config=self.bert_config, **keywords)


FIELDS = tuple(f.name for f in dataclasses.fields(TextModelArgs))


def text_model_factory(fn: Callable | None = None, /, **defaults: Any) -> Callable:
    """Decorator: ``fn(text: TextModelArgs, *, own options)`` becomes a factory of keyword arguments only.

    ``@text_model_factory(encoder_mode="frozen")``: the model's own default for a shared field (it shows in the
    factory's signature like any default).
    """
    if fn is None:
        return functools.partial(text_model_factory, **defaults)
    unknown = sorted(set(defaults) - set(FIELDS))
    if unknown:
        raise TypeError(f"text_model_factory: {', '.join(unknown)} is not a field of TextModelArgs "
                        f"({', '.join(FIELDS)})")
    params = list(inspect.signature(fn).parameters.values())
    own = params[1:]
    clash = sorted(set(FIELDS) & {p.name for p in own})
    if clash:
        raise TypeError(f"{fn.__name__} declares {', '.join(clash)}, which TextModelArgs already holds")
    shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=defaults.get(f.name, f.default),
                                annotation=f.type) for f in dataclasses.fields(TextModelArgs)]

    @functools.wraps(fn)
    def factory(**kwargs):
        text = TextModelArgs(**{**defaults, **{k: kwargs.pop(k) for k in FIELDS if k in kwargs}})
        return fn(text, **kwargs)

    del factory.__wrapped__  # the factory's signature is the flat one below, not fn's
    factory.__signature__ = inspect.Signature(shared + own, return_annotation=inspect.signature(fn).return_annotation)
    return factory
