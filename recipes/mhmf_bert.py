"""``mhmf`` — MHMF-BERT (Zou, Ding, Wang: "Utilizing BERT intermediate layers for multimodal sentiment
analysis"): audio and vision streams are fused, stage by stage, with *intermediate* BERT layers.

Architecture (per sample; ``mask (B, T) bool, True = real token`` everywhere)::

    H_t^l        = BERT hidden state after layer l (bert_encoder), projected to d_fusion when widths differ
    H_a, H_v     = self_attention_adapter(acoustic), self_attention_adapter(visual)         (width d_fusion)
    for m in {audio, vision}, G^0 = H_m, stages i = 1..D (own modules per stage and branch):
        C^i  = cross_attention_adapter(target=G^{i−1}, source=H_t^{layers_m[i]})
        G̃^i  = gru_memory(C^i, G^{i−1})
        G^i  = restitution(H_t^{restitution_layers_m[i]}, G̃^i).fused          (restitution=False: G^i = G̃^i)
    F            = gated_fusion(G_v^D, H_v, G_a^D, H_a)
    score        = regression_head(masked_mean([F; H_t^L]))                    (H_t^L: last layer, unprojected)
    loss terms   = λ_i · restitution_loss(G̃^i, R+^i, R−^i) per branch and stage, keys "restitution/audio/1", …

Choices where the paper leaves room (documented here, all options of :func:`build_mhmf`):

* **Layers.** Defaults are the best row of the paper's Table 3 for a 12-layer BERT: audio layers (7, 11), vision
  layers (6, 10). For an encoder of depth L they are scaled as ``round_half_up(l · L / 12)`` (the bundled
  6-layer MiniLM: audio (4, 6), vision (3, 5)); see :func:`scale_layers`. ``restitution_layers_audio/vision``
  default to the same lists — the paper's two layer lists (list1 for the cross-attention, list2 for the
  restitution) are ambiguous, so both are exposed. A layer index outside ``1..L`` is a ``ValueError``.
* **Fusion width and heads.** ``d_fusion`` (default 32, MulT's per-modality width of 30 rounded to a multiple of
  the heads) is much smaller than BERT's width, and ``heads`` defaults to 2 (16 channels each). The fusion is 16
  attention layers (2 SA layers and 2 stages × 3 CA layers per branch); with the bundled MiniLM (hidden 384) they
  add about 3 % of the text encoder's FLOPs at width 32 (5 % at 48, 9 % at 64), but they run far below the
  encoder's efficiency: at MOSI's bucketed lengths (≈ 15 word pieces) their cost on CPU is per-operation
  overhead, and the fused attention kernel's cost grows with batch × heads rather than with FLOPs. On 2 CPU
  cores a training step of ``mhmf`` takes ≈ 1.15–1.2× the text model's at these defaults, ≈ 1.26× at
  ``d_fusion=48, heads=4`` and ≈ 1.31× at ``d_fusion=64, heads=4`` (``python -m benchmarks.speed --levers``,
  README section "Performance"). The wider fusion may score a little higher: on ``mosi-sim`` (3 seeds, 4
  epochs, same code) ``d_fusion=64, heads=4`` gives Acc2 non0 84.2 ± 0.6, MAE 0.808 ± 0.012, Corr 0.769 ± 0.006
  against 83.4 ± 0.3, 0.813 ± 0.017, 0.765 ± 0.006 at the defaults — within about 1.5 seed standard deviations,
  so not resolved; pass ``d_fusion=64, heads=4`` where the step cost does not matter.
  Every BERT layer that is used gets **one** linear projection to ``d_fusion``, shared by the cross-attention
  sources and the restitution inputs of both branches, so the residual of the restitution block is computed in
  the fusion width: ``R = W_l H_t^l − G̃``. When ``d_fusion`` equals BERT's width no projection is made.
* **Dropout.** ``dropout`` (0.1) acts on every residual branch of the adapters and before the regression head;
  the FFNs' hidden activations are not dropped (``ffn_dropout=0``, as BERT's layers), which also saves two
  thirds of the fusion's dropout-mask sampling, the costliest elementwise work on CPU.
* **Loss weights.** ``λ_i = 0.1`` for every stage and branch. The paper gives no value; each restitution loss
  starts near ``4 ln 2 ≈ 2.8`` and cannot fall below ``4 softplus(−1) ≈ 1.25`` (``d ∈ [0, 1]``), so with four
  terms λ = 0.1 keeps their sum (≈ 1.1 at the start) on the scale of the task loss instead of dominating it,
  and its gradient (not its value) is what shapes the restitution gate. Loss terms are only
  produced while training (``model.training``) and when ``batch.label`` is not ``None``: evaluation reports
  the task loss alone. Triplets: polarity classes (``label ≥ 0`` vs ``< 0``), every valid anchor of the batch
  (``num_triplets=1`` restores the paper's single triplet), see :mod:`fusionkit.losses.restitution`.
* **Unaligned input** (``batch.aligned`` False: audio/vision with their own lengths and masks). The
  cross-attention adapters take separate target/source masks, so stages run unchanged; the restitution needs a
  common time axis for ``H_t − G̃``, so it receives the masked mean of ``H_t^l`` (one vector per sample,
  broadcast over the modality's time steps); each stream (``G_v, H_v, G_a, H_a`` and the last text layer) is
  masked-mean pooled on its own before the gated fusion and the concatenation. For aligned input the gated
  fusion and concatenation run per word piece and the pooling comes last.
* **Features** returned for t-SNE/probing are the pooled head input ``[F; H_t^L]`` of width
  ``d_fusion + hidden``.

Fidelity: no public code by the authors was found, so this follows the paper's equations (5–17); the
cross-attention layers follow the MulT authors' crossmodal layer (see :mod:`fusionkit.components.adapters`).

Training defaults: AdamW, encoder lr 5e-5 (the usual BERT fine-tuning rate), lr 1e-4 for the fusion modules
(randomly initialised, so a larger step), batch 32, 4 epochs, 10 % linear warm-up, gradient clipping at 1.0.
"""
from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import torch
from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.components.restitution import RestitutionOutput
from fusionkit.data.batch import MultimodalBatch
from fusionkit.encoders.bert import BertEncoder
from fusionkit.losses.restitution import RestitutionLoss, expected_margins, sentiment_classes
from fusionkit.registry import register, register_variant
from fusionkit.slots import (
    HEAD,
    MHMF_CROSS_ATTENTION,
    MHMF_FUSION,
    MHMF_MEMORY,
    MHMF_RESTITUTION,
    MHMF_SELF_ATTENTION,
    SlotValue,
    build_block,
    model_slots,
    text_encoder_slot,
)
from fusionkit.types import ModelOutput

REFERENCE_DEPTH = 12  # the paper's BERT-base
PAPER_AUDIO_LAYERS = (7, 11)  # Table 3, best row, 12-layer encoder
PAPER_VISION_LAYERS = (6, 10)
BRANCHES = ("audio", "vision")
MARGIN_VIEWS = ("F", "F+", "F-")
# eq. 15–17 with the gate at 0.5 (F+ = F−): softplus(x) + softplus(−x) ≥ 2 ln 2 for each of the two pairs
RESTITUTION_FLOOR_AT_HALF = 4 * math.log(2)


def scale_layers(layers: Sequence[int], num_layers: int, reference_depth: int = REFERENCE_DEPTH) -> tuple[int, ...]:
    """Map layer indices chosen for a ``reference_depth``-layer encoder to one with ``num_layers`` layers:
    ``round_half_up(l · num_layers / reference_depth)``, at least 1 (e.g. 12 → 6: (7, 11) → (4, 6)).

    Python's ``round`` rounds halves to even (3.5 → 4 but 5.5 → 6 and 4.5 → 4), so the rounding is done in
    integers: ``floor(x + 1/2) = (2·l·L + R) // (2·R)``.
    """
    if num_layers <= 0 or reference_depth <= 0:
        raise ValueError(f"depths must be positive, got num_layers={num_layers}, reference_depth={reference_depth}")
    return tuple(max(1, (2 * l * num_layers + reference_depth) // (2 * reference_depth)) for l in layers)


def _check_layers(name: str, layers: Sequence[int], num_layers: int, num_stages: int) -> tuple[int, ...]:
    layers = tuple(int(l) for l in layers)
    if len(layers) != num_stages:
        raise ValueError(
            f"{name}={layers} has {len(layers)} entries but num_stages={num_stages}; give one BERT layer per stage"
        )
    for layer in layers:
        if not 1 <= layer <= num_layers:
            raise ValueError(
                f"{name} contains layer {layer}, but the text encoder has {num_layers} layers; use layer indices "
                f"1..{num_layers} (1 = first transformer layer, {num_layers} = last)"
            )
    return layers


def _unless_full(mask: torch.Tensor) -> torch.Tensor | None:
    """``None`` when ``mask`` (bool, True = real) has no padding: every block reads ``mask=None`` as all real."""
    return None if bool(mask.all()) else mask


class StageOutput(NamedTuple):
    """state: ``(B, T, d)`` ``G^i``; g_tilde: ``(B, T, d)`` ``G̃^i``; restitution: its output or ``None``."""

    state: torch.Tensor
    g_tilde: torch.Tensor
    restitution: RestitutionOutput | None


class FusionStage(nn.Module):
    """One stage of a branch: cross-attention to BERT layer ``layer`` → GRU memory → restitution with BERT layer
    ``restitution_layer`` (``restitution=None``: the ablation without restitution, ``G^i = G̃^i``)."""

    def __init__(
        self,
        *,
        cross_attention: nn.Module,
        memory: nn.Module,
        restitution: nn.Module | None,
        layer: int,
        restitution_layer: int,
    ) -> None:
        super().__init__()
        self.cross_attention = cross_attention
        self.memory = memory
        self.restitution = restitution
        self.layer = layer
        self.restitution_layer = restitution_layer

    def forward(
        self,
        state: torch.Tensor,
        source: torch.Tensor,
        text: torch.Tensor,
        state_mask: torch.Tensor,
        source_mask: torch.Tensor,
    ) -> StageOutput:
        """
        Args:
            state: ``(B, T, d)`` ``G^{i−1}``.
            source: ``(B, S, d)`` projected BERT layer for the cross-attention.
            text: ``(B, T, d)`` (aligned) or ``(B, d)`` (pooled, unaligned) projected BERT layer for the restitution.
            state_mask: ``(B, T)`` / source_mask ``(B, S)``: bool, True = real token.
        Returns:
            :class:`StageOutput`.
        """
        cross = self.cross_attention(state, source, state_mask, source_mask)
        g_tilde = self.memory(cross, state)
        if self.restitution is None:
            return StageOutput(state=g_tilde, g_tilde=g_tilde, restitution=None)
        out = self.restitution(text, g_tilde, state_mask)
        return StageOutput(state=out.fused, g_tilde=g_tilde, restitution=out)


class MHMFBert(nn.Module):
    """MHMF-BERT; built by :func:`build_mhmf` (see the module docstring for the architecture and choices)."""

    train_defaults = {"lr": 1e-4, "encoder_lr": 5e-5, "batch_size": 32, "epochs": 4, "warmup": 0.1, "grad_clip": 1.0}

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        text_projections: nn.ModuleDict,
        audio_adapter: nn.Module,
        vision_adapter: nn.Module,
        audio_stages: nn.ModuleList,
        vision_stages: nn.ModuleList,
        gated_fusion: nn.Module,
        head: nn.Module,
        restitution_loss: nn.Module | None = None,
        loss_weights: Sequence[float] = (),
    ) -> None:
        super().__init__()
        if len(audio_stages) != len(vision_stages):
            raise ValueError(f"audio and vision need the same number of stages, got {len(audio_stages)} and {len(vision_stages)}")
        if restitution_loss is not None and len(loss_weights) != len(audio_stages):
            raise ValueError(f"loss_weights needs one weight per stage ({len(audio_stages)}), got {len(loss_weights)}")
        self.encoder = encoder
        self.text_projections = text_projections
        self.audio_adapter = audio_adapter
        self.vision_adapter = vision_adapter
        self.audio_stages = audio_stages
        self.vision_stages = vision_stages
        self.gated_fusion = gated_fusion
        self.head = head
        self.restitution_loss = restitution_loss
        self.loss_weights = tuple(float(w) for w in loss_weights)

    @property
    def encoder_layers_used(self) -> tuple[int, ...]:
        """Hidden-state indices the forward reads (the projected layers and the last one); a frozen-encoder
        cache keeps only these."""
        return tuple(sorted({int(layer) for layer in self.text_projections} | {self.encoder.num_layers}))

    def _branch(
        self,
        name: str,
        stages: nn.ModuleList,
        h: torch.Tensor,
        mask: torch.Tensor,
        text: dict[int, torch.Tensor],
        pooled_text: dict[int, torch.Tensor] | None,
        text_mask: torch.Tensor,
        labels: torch.Tensor | None,
        loss_terms: dict,
        diagnostics: dict,
    ) -> torch.Tensor:
        state = h
        for i, stage in enumerate(stages, start=1):
            restitution_text = text[stage.restitution_layer] if pooled_text is None else pooled_text[stage.restitution_layer]
            out = stage(state, text[stage.layer], restitution_text, mask, text_mask)
            state = out.state
            if labels is None or out.restitution is None:
                continue
            key = f"restitution/{name}/{i}"
            diagnostics[f"{key}/gate_dev"] = (out.restitution.attention.detach() - 0.5).abs().mean()
            if self.training:
                loss = self.restitution_loss(out.g_tilde, out.restitution.relevant, out.restitution.irrelevant, labels, mask)
                loss_terms[key] = self.loss_weights[i - 1] * loss.total
                diagnostics[f"{key}/loss"] = loss.total.detach()
                margins = loss.margins
            else:  # evaluation draws no triplets (the loss's generator belongs to training)
                views = self.restitution_loss.pooled_views(
                    out.g_tilde, out.restitution.relevant, out.restitution.irrelevant, mask)
                margins = expected_margins(torch.stack(views), sentiment_classes(labels, self.restitution_loss.classes))
            if margins is not None:
                for view, margin in zip(MARGIN_VIEWS, margins):
                    diagnostics[f"{key}/margin_{view}"] = margin
        return state

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """
        Args:
            batch: :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T_a, d_a)``, visual ``(B, T_v, d_v)``;
                masks ``(B, ·)`` bool, True = real token (``T_a = T_v = T`` with the text mask when aligned).
        Returns:
            :class:`ModelOutput`: ``prediction (B,)``; ``loss_terms`` ``{"restitution/<branch>/<stage>": scalar}``
            (weighted; empty in eval mode, without labels, or with ``restitution=False``);
            ``features (B, d_fusion + hidden)``.
        """
        hidden = self.encoder(batch.input_ids, batch.mask, batch.token_type_ids).hidden_states
        # a batch without padding (always so at batch size 1) needs no masking ops in the fusion
        text_mask = _unless_full(batch.mask)
        text = {int(layer): proj(hidden[int(layer)]) for layer, proj in self.text_projections.items()}
        pooled_text = None if batch.aligned else {l: masked_mean(t, text_mask) for l, t in text.items()}
        labels = batch.label if self.restitution_loss is not None else None
        loss_terms: dict = {}
        diagnostics: dict = {}

        a_mask, v_mask = text_mask, text_mask
        if not batch.aligned:
            a_mask, v_mask = _unless_full(batch.a_mask), _unless_full(batch.v_mask)
        h_a = self.audio_adapter(batch.acoustic, a_mask)
        h_v = self.vision_adapter(batch.visual, v_mask)
        g_a = self._branch("audio", self.audio_stages, h_a, a_mask, text, pooled_text, text_mask, labels, loss_terms,
                           diagnostics)
        g_v = self._branch("vision", self.vision_stages, h_v, v_mask, text, pooled_text, text_mask, labels, loss_terms,
                           diagnostics)

        last = hidden[-1]
        if batch.aligned:
            fused = self.gated_fusion(g_v, h_v, g_a, h_a)
            features = masked_mean(torch.cat([fused, last], dim=-1), text_mask)
        else:
            fused = self.gated_fusion(
                masked_mean(g_v, v_mask), masked_mean(h_v, v_mask), masked_mean(g_a, a_mask), masked_mean(h_a, a_mask)
            )
            features = torch.cat([fused, masked_mean(last, text_mask)], dim=-1)
        if diagnostics and self.training:
            diagnostics["restitution/floor_at_gate_half"] = torch.tensor(RESTITUTION_FLOOR_AT_HALF)
        return ModelOutput(prediction=self.head(features), loss_terms=loss_terms, features=features,
                           diagnostics=diagnostics or None)


@register("mhmf", kind="model")
@model_slots("mhmf", text_encoder_slot(), MHMF_SELF_ATTENTION, MHMF_CROSS_ATTENTION, MHMF_MEMORY, MHMF_RESTITUTION,
             MHMF_FUSION, HEAD)
def build_mhmf(
    *,
    text_model: str | None = None,
    bert_config=None,
    encoder_mode: str = "finetune",
    d_acoustic: int = 74,
    d_visual: int = 47,
    d_fusion: int | None = None,
    heads: int | None = None,
    dropout: float = 0.1,
    attn_dropout: float = 0.0,
    ffn_dropout: float = 0.0,
    ffn_ratio: float = 4.0,
    num_stages: int = 2,
    sa_layers: int = 2,
    ca_layers: int = 3,
    audio_layers: Sequence[int] | None = None,
    vision_layers: Sequence[int] | None = None,
    restitution_layers_audio: Sequence[int] | None = None,
    restitution_layers_vision: Sequence[int] | None = None,
    restitution: bool | SlotValue = True,
    reduction: int = 4,
    loss_weights: float | Sequence[float] = 0.1,
    loss_classes: str = "polarity",
    num_triplets: int | None = None,
    text_encoder: SlotValue = "bert_encoder",
    self_attention: SlotValue = "self_attention_adapter",
    cross_attention: SlotValue = "cross_attention_adapter",
    memory: SlotValue = "gru_memory",
    fusion: SlotValue = "gated_fusion",
    head: SlotValue = "regression_head",
) -> MHMFBert:
    """MHMF-BERT: audio/vision fused stage by stage with intermediate BERT layers (CA → GRU → restitution).

    ``audio_layers`` / ``vision_layers``: BERT layer (1-based) per stage for the cross-attention; default the
    paper's (7, 11) / (6, 10) for 12 layers, scaled to the encoder's depth (:func:`scale_layers`); with
    ``num_stages != 2`` they must be given. ``restitution_layers_*`` default to the same lists.
    ``restitution=False``: ablation without restitution (``G^i = G̃^i``, no loss terms).
    Slots (:mod:`fusionkit.slots`; a registered name or ``{"name": ..., **kwargs}``): ``text_encoder``,
    ``self_attention``, ``cross_attention``, ``memory``, ``restitution`` (also ``True`` / ``False``), ``fusion``,
    ``head``.
    ``loss_weights``: λ for every stage (a float) or one per stage. ``loss_classes`` / ``num_triplets`` /
    ``seed``: triplet sampling of the restitution loss.
    """
    for name, value in dict(d_acoustic=d_acoustic, d_visual=d_visual, d_fusion=d_fusion, heads=heads,
                            num_stages=num_stages).items():
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, got {name}={value}")
    encoder = build_block(build_mhmf, "text_encoder", text_encoder, name_or_path=text_model, mode=encoder_mode,
                          config=bert_config)
    depth, width = encoder.num_layers, encoder.hidden_size
    # the paper's model: the fusion runs at BERT's width (eq. 6 subtracts G̃ from the BERT layer itself), with
    # BERT's head width
    d_fusion = width if d_fusion is None else d_fusion
    if heads is None:
        heads = encoder.num_heads if d_fusion == width else max(1, d_fusion // encoder.head_dim)
    if d_fusion % heads:
        raise ValueError(f"d_fusion={d_fusion} is not divisible by heads={heads}; choose heads that divide the "
                         f"fusion width")

    def layers_for(name: str, given: Sequence[int] | None, paper: Sequence[int]) -> tuple[int, ...]:
        if given is None:
            if num_stages != len(paper):
                raise ValueError(
                    f"the paper's default {name} have {len(paper)} stages but num_stages={num_stages}; "
                    f"pass {name} with {num_stages} BERT layer indices"
                )
            given = scale_layers(paper, depth)
        return _check_layers(name, given, depth, num_stages)

    audio_layers = layers_for("audio_layers", audio_layers, PAPER_AUDIO_LAYERS)
    vision_layers = layers_for("vision_layers", vision_layers, PAPER_VISION_LAYERS)
    restitution_audio = _check_layers(
        "restitution_layers_audio", audio_layers if restitution_layers_audio is None else restitution_layers_audio,
        depth, num_stages,
    )
    restitution_vision = _check_layers(
        "restitution_layers_vision", vision_layers if restitution_layers_vision is None else restitution_layers_vision,
        depth, num_stages,
    )
    if isinstance(loss_weights, (int, float)):
        loss_weights = (float(loss_weights),) * num_stages
    loss_weights = tuple(loss_weights)
    if len(loss_weights) != num_stages:
        raise ValueError(f"loss_weights={loss_weights} needs one weight per stage (num_stages={num_stages})")

    with_restitution = restitution is not False
    used = set(audio_layers) | set(vision_layers)
    if with_restitution:
        used |= set(restitution_audio) | set(restitution_vision)
    text_projections = nn.ModuleDict(
        {str(l): nn.Identity() if width == d_fusion else nn.Linear(width, d_fusion) for l in sorted(used)}
    )

    adapter_options = dict(heads=heads, dropout=dropout, attn_dropout=attn_dropout, ffn_dropout=ffn_dropout,
                           ffn_ratio=ffn_ratio)

    def stages(layers: tuple[int, ...], restitution_layers: tuple[int, ...]) -> nn.ModuleList:
        return nn.ModuleList(
            FusionStage(
                cross_attention=build_block(
                    build_mhmf, "cross_attention", cross_attention, d_model=d_fusion,
                    options=dict(num_layers=ca_layers, **adapter_options), sources=dict(num_layers="ca_layers"),
                ),
                memory=build_block(build_mhmf, "memory", memory, dim=d_fusion),
                restitution=build_block(build_mhmf, "restitution", restitution, dim=d_fusion,
                                        options=dict(reduction=reduction)) if with_restitution else None,
                layer=layer,
                restitution_layer=res_layer,
            )
            for layer, res_layer in zip(layers, restitution_layers)
        )

    def adapter(d_in: int) -> nn.Module:
        return build_block(build_mhmf, "self_attention", self_attention, d_in=d_in, d_model=d_fusion,
                           options=dict(num_layers=sa_layers, **adapter_options), sources=dict(num_layers="sa_layers"))

    return MHMFBert(
        encoder=encoder,
        text_projections=text_projections,
        audio_adapter=adapter(d_acoustic),
        vision_adapter=adapter(d_visual),
        audio_stages=stages(audio_layers, restitution_audio),
        vision_stages=stages(vision_layers, restitution_vision),
        gated_fusion=build_block(build_mhmf, "fusion", fusion, dim=d_fusion),
        head=build_block(build_mhmf, "head", head, d_in=d_fusion + width, options=dict(dropout=dropout)),
        restitution_loss=RestitutionLoss(classes=loss_classes, num_triplets=num_triplets) if with_restitution else None,
        loss_weights=loss_weights,
    )


build_mhmf_small = register_variant(
    "mhmf_small", build_mhmf, d_fusion=32, heads=2,
    doc="MHMF-BERT with a narrow fusion (``d_fusion=32``, 2 heads; every used BERT layer linearly projected to 32): "
        "not the paper's model, a cheaper variant of the same builder.",
)
