"""``mhmf`` — MHMF-BERT (Zou, Ding, Wang: "Utilizing BERT intermediate layers for multimodal sentiment
analysis"): audio and vision streams are fused, stage by stage, with *intermediate* BERT layers.

Architecture (per sample; ``mask (B, T) bool, True = real token`` everywhere; equation numbers are the paper's)::

    H_t^l        = BERT hidden state after layer l (bert_encoder)                                    (eq. 1)
    H_a, H_v     = self_attention_adapter(acoustic), self_attention_adapter(visual)                  (eq. 2)
    for m in {audio, vision}, G^0 = H_m (eq. 4), stages i = 1..D (own modules per stage and branch):
        C^i  = cross_attention_adapter(target=G^{i−1}, source=H_t^{list2[i]})                        (eq. 3)
        G̃^i  = gru_memory(C^i, G^{i−1})                                                              (eq. 5)
        G^i  = restitution(H_t^{list1[i]}, G̃^i).fused = G̃^i + a·(H_t^{list1[i]} − G̃^i)              (eq. 6–10)
    F            = gated_fusion(G_v^D, H_v, G_a^D, H_a)                                              (eq. 11–13)
    score        = regression_head(masked_mean([F; H_t^L]))                   (§2.2.4; H_t^L: last layer)
    loss         = MSE + Σ_i λ_i · restitution_loss(G̃^i, R+^i, R−^i) per branch and stage          (eq. 14–18)

The paper's layer lists: ``list2`` selects the BERT layer each stage's **cross-attention** reads (eq. 3; the
options ``audio_layers`` / ``vision_layers``), ``list1`` the layer its **restitution** subtracts G̃ from (eq. 6;
``restitution_layers_audio`` / ``restitution_layers_vision``, by default equal to list2 — the paper gives only
one list per modality in Table 3).

**The paper's model and the cheaper variant.** Eq. 6 subtracts G̃ from the BERT layer itself, so the SA/CA/GRU/
restitution stack runs at the text encoder's width with no projection of H_t: ``d_fusion`` defaults to BERT's
hidden size and ``heads`` to BERT's head count (head width = BERT's, 32 for the bundled MiniLM, 64 for
BERT-base). ``mhmf_small`` (registered below) fixes ``d_fusion=32, heads=2`` on the same builder: every BERT
layer used is then projected by one linear map to 32, shared by the cross-attentions and restitutions that read
it (``R = W_l H_t^l − G̃``). It is not the paper's model.

Choices where the paper leaves room (each an option of :func:`build_mhmf`):

* **Layers** (``audio_layers``, ``vision_layers``): the best row of Table 3 for 12-layer BERT, audio (7, 11),
  vision (6, 10), scaled to an encoder of depth L as ``round_half_up(l · L / 12)`` (the bundled 6-layer MiniLM:
  audio (4, 6), vision (3, 5)); see :func:`scale_layers`. Table 3's ``{12}`` is read as both CA stages on the
  last layer. A layer index outside ``1..L`` is a ``ValueError``.
* **Head count** (``heads``): BERT's, so attention heads have BERT's head width (12 × 32 on MiniLM). The paper
  gives none.
* **SA positional encoding**: none. SA's inputs are word-aligned acoustic/visual rows whose order is the word
  order; word position enters the fusion through the BERT hidden states (which carry position embeddings) that
  every cross-attention attends to. The paper shows SA as plain Transformer encoder layers (Fig. 3b).
* **Transformer layers**: pre-LN, GELU FFN of width ``ffn_ratio · d_fusion`` (4×, BERT's ratio and activation),
  MulT's crossmodal layer for CA (:mod:`fusionkit.components.adapters`); the paper cites [12] and [4] only.
* **Dropout**: ``dropout`` 0.1 (BERT's) on every residual branch of the adapters and before the regression head;
  ``attn_dropout`` 0 and ``ffn_dropout`` 0 (no dropout on attention weights or the FFN's hidden activations,
  as BERT's layers and MulT's audio/vision defaults). The paper gives no dropout.
* **Pooling** (§2.2.4 "pool them"): masked mean over the word pieces of ``[F; H_t^L]`` (aligned input). For
  unaligned input each stream is masked-mean pooled on its own before the gated fusion.
* **Absent modalities** (``modalities``, e.g. ``("t", "a")``): the absent modality's branch (adapter, stages,
  restitution losses) and its gate in the gated fusion drop out, so ``F = g_a ⊙ G_a`` without vision; with text
  alone ``F`` is absent and the head reads ``H_t^L`` only.
* **Restitution gate** (eq. 7): ``AvgPool`` is the masked mean over real tokens, so ``a`` is one channel gate per
  sample ``(B, d)``; ``W1: d → d/reduction``, ``W2: d/reduction → d`` with ``reduction`` 4 (a squeeze-and-
  excitation bottleneck, as in the SNR module the paper builds on [11]).
* **Loss weights** ``λ_i`` (``loss_weights``): 0.1 for every stage and branch. Each restitution loss starts at
  ``4 ln 2 ≈ 2.77`` and cannot fall below ``4 softplus(−1) ≈ 1.25`` (``d ∈ [0, 1]``), so with four terms
  λ = 0.1 keeps their sum (≈ 1.1) on the scale of the task loss instead of dominating it.
* **Triplets** (§2.3.1 "randomly drawn three samples from each mini-batch"): classes are polarity (``label ≥ 0``
  vs ``< 0``, ``loss_classes``); every valid anchor of the batch is used (``num_triplets=1`` restores a single
  triplet). Their generator is the module's own and is seeded by the training engine from the run's seed every
  epoch and saved in every checkpoint, so a resumed run draws the same triplets.
* **The gate's learning rate** (``gate_lr_scale`` 100): the restitution gate (W1, W2) trains at 100× the fusion
  learning rate (1e-2 with the default 1e-4). Why: at initialisation the gate sits at ``a ≈ 0.5``, where
  ``F+ = F−``; eq. 15–17 then reduce to ``softplus(x) + softplus(−x) + softplus(y) + softplus(−y) ≥ 4 ln 2`` for
  the same distance changes x = d(F+_a, F+_p) − d(F_a, F_p) and y = d(F_a, F_n) − d(F+_a, F+_n): through R the
  loss can only drive x and y to 0, i.e. to its floor 4 ln 2 — only moving the gate away from 0.5 lowers it. That gradient is small and AdamW moves a parameter by at most about its
  learning rate per step: 4 epochs of MOSI are 160 steps, so at 1e-4 (with warm-up and decay) the gate's
  logits move by ≲ 0.01 and ``a`` stays within ≈ 0.003 of where it started. Measured on ``mosi-sim`` (seed 0,
  validation-selected, the previous default ``gate_lr_scale=1``): every restitution loss stayed at 2.771–2.776
  (4 ln 2 = 2.773) for all 4 epochs and the gate's mean ``|a − 0.5|`` at 0.02–0.027, the initial spread, while
  the validation MAE fell from 0.959 to 0.844. The scale changes no computation, only the optimizer's step on
  those parameters; ``gate_init`` (bias of W2 at ``logit(gate_init)``) is available but left at PyTorch's
  default, since which side of 0.5 helps depends on whether the text residual separates the classes better
  than G̃ (on ``mosi-sim`` it does not: margins in docs/results.md, "The restitution at work").
* **Unaligned input** (``batch.aligned`` False: audio/vision with their own lengths and masks): the
  cross-attention adapters take separate target/source masks; the restitution needs a common time axis for
  ``H_t − G̃``, so it receives the masked mean of ``H_t^l`` (broadcast over the modality's time steps).
* **Features**: ``ModelOutput.features`` is the pooled head input ``[F; H_t^L]`` (``d_fusion + hidden``);
  ``ModelOutput.fused`` is the pooled ``F`` alone (what §4.3's t-SNE shows).

Fidelity: no public code by the authors was found, so this follows the paper's equations (1–18).

Training defaults (not given by the paper): AdamW, encoder lr 5e-5 (the usual BERT fine-tuning rate), lr 1e-4
for the fusion modules, batch 32, 4 epochs, 10 % linear warm-up, gradient clipping at 1.0.
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
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import (
    HEAD,
    PROBE_BATCH,
    PROBE_LEN,
    build_block,
    cross_attention_slot,
    model_slots,
    probe_mask,
    probe_seq,
    sequence_slot,
    shape_problem,
    Slot,
    SlotValue,
    text_encoder_slot,
)
from fusionkit.text_model import TextModelArgs, text_model_factory
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
    # The paper gives one setting and no grid: the text control's grid (Devlin et al. 2019 for the encoder) plus
    # the fusion dropout and the restitution-loss weight around their defaults (documented choice).
    search_space = SearchSpace(
        source="the paper reports no grid; Devlin et al. 2019 appendix A.3 for encoder_lr and batch_size (as "
               "`text`), documented choice around train_defaults for lr, dropout and loss_weights",
        params={"encoder_lr": Choice(2e-5, 3e-5, 5e-5), "lr": Choice(5e-5, 1e-4, 2e-4),
                "batch_size": Choice(16, 32), "dropout": Choice(0.0, 0.1, 0.2),
                "loss_weights": Choice(0.05, 0.1, 0.2)})

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        text_projections: nn.ModuleDict,
        audio_adapter: nn.Module | None,
        vision_adapter: nn.Module | None,
        audio_stages: nn.ModuleList,
        vision_stages: nn.ModuleList,
        gated_fusion: nn.Module | None,
        head: nn.Module,
        restitution_loss: nn.Module | None = None,
        loss_weights: Sequence[float] = (),
    ) -> None:
        super().__init__()
        if audio_adapter is not None and vision_adapter is not None and len(audio_stages) != len(vision_stages):
            raise ValueError(f"audio and vision need the same number of stages, got {len(audio_stages)} and {len(vision_stages)}")
        num_stages = max(len(audio_stages), len(vision_stages))
        if restitution_loss is not None and num_stages and len(loss_weights) != num_stages:
            raise ValueError(f"loss_weights needs one weight per stage ({num_stages}), got {len(loss_weights)}")
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
            if labels is None:
                continue
            key = f"restitution/{name}/{i}"
            if out.restitution is None:  # the ablation: how well G^i = G̃^i alone separates the classes
                margins = expected_margins(masked_mean(out.g_tilde, mask)[None], sentiment_classes(labels, "polarity"))
                if margins is not None:
                    diagnostics[f"{key}/margin_F"] = margins[0]
                continue
            diagnostics[f"{key}/gate_dev"] = (out.restitution.attention.detach() - 0.5).abs().mean()
            if self.training and self.restitution_loss is not None:
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
            (weighted by λ; only in training mode with labels and restitution); ``features (B, d_fusion + hidden)``;
            ``fused (B, d_fusion)`` (pooled F); ``diagnostics`` (with labels): per ``restitution/<branch>/<stage>``
            the gate's mean ``|a − 0.5|`` (``gate_dev``), the expected triplet margins of F, F+, F− (``margin_*``)
            and, in training, the unweighted loss (``loss``); without restitution only ``margin_F`` of G̃.
        """
        batch.require(("a",) * (self.audio_adapter is not None) + ("v",) * (self.vision_adapter is not None),
                      model="mhmf")
        hidden = self.encoder(batch.input_ids, batch.mask, batch.token_type_ids).hidden_states
        # a batch without padding (always so at batch size 1) needs no masking ops in the fusion
        text_mask = _unless_full(batch.mask)
        text = {int(layer): proj(hidden[int(layer)]) for layer, proj in self.text_projections.items()}
        pooled_text = None if batch.aligned else {l: masked_mean(t, text_mask) for l, t in text.items()}
        labels = batch.label
        loss_terms: dict = {}
        diagnostics: dict = {}

        a_mask, v_mask = text_mask, text_mask
        if not batch.aligned:
            a_mask, v_mask = _unless_full(batch.a_mask), _unless_full(batch.v_mask)
        if self.audio_adapter is None or self.vision_adapter is None:
            return self._forward_subset(batch, hidden, text, pooled_text, text_mask, a_mask, v_mask, labels)
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
            pooled_fused = features[:, : fused.shape[-1]]
        else:
            fused = self.gated_fusion(
                masked_mean(g_v, v_mask), masked_mean(h_v, v_mask), masked_mean(g_a, a_mask), masked_mean(h_a, a_mask)
            )
            features = torch.cat([fused, masked_mean(last, text_mask)], dim=-1)
            pooled_fused = fused
        if self.training and self.restitution_loss is not None and labels is not None:
            diagnostics["restitution/floor_at_gate_half"] = torch.tensor(RESTITUTION_FLOOR_AT_HALF)
        return ModelOutput(prediction=self.head(features), loss_terms=loss_terms, features=features,
                           diagnostics=diagnostics or None, fused=pooled_fused)

    def _forward_subset(self, batch, hidden, text, pooled_text, text_mask, a_mask, v_mask, labels) -> ModelOutput:
        """:meth:`forward` with a branch absent: it and its gate drop out (no fusion at all with text alone)."""
        loss_terms: dict = {}
        diagnostics: dict = {}
        branches = []  # (name in the gated fusion, G^D, H, mask) of the present branches
        for name, adapter, stages, x, mask in (("vision", self.vision_adapter, self.vision_stages, batch.visual, v_mask),
                                               ("audio", self.audio_adapter, self.audio_stages, batch.acoustic, a_mask)):
            if adapter is None:
                continue
            h = adapter(x, mask)
            g = self._branch(name, stages, h, mask, text, pooled_text, text_mask, labels, loss_terms, diagnostics)
            branches.append((name, g, h, mask))
        last = hidden[-1]
        if not branches:
            features = masked_mean(last, text_mask)
        elif batch.aligned:
            fused = self.gated_fusion(**{f"g_{n}": g for n, g, _, _ in branches}, **{f"h_{n}": h for n, _, h, _ in branches})
            features = masked_mean(torch.cat([fused, last], dim=-1), text_mask)
        else:
            fused = self.gated_fusion(**{f"g_{n}": masked_mean(g, m) for n, g, _, m in branches},
                                      **{f"h_{n}": masked_mean(h, m) for n, _, h, m in branches})
            features = torch.cat([fused, masked_mean(last, text_mask)], dim=-1)
        if diagnostics and self.training:
            diagnostics["restitution/floor_at_gate_half"] = torch.tensor(RESTITUTION_FLOOR_AT_HALF)
        return ModelOutput(prediction=self.head(features), loss_terms=loss_terms, features=features,
                           diagnostics=diagnostics or None)

# -- slots: mhmf's replaceable blocks and their contracts ------------------------------------------------------
def _memory_fits(block, kw, ctx):
    d = kw["dim"]
    return shape_problem(block(probe_seq(d), probe_seq(d)), (PROBE_BATCH, PROBE_LEN, d))


def _restitution_fits(block, kw, ctx):
    d = kw["dim"]
    out = block(probe_seq(d), probe_seq(d), probe_mask())
    for name in ("fused", "relevant", "irrelevant"):
        if not hasattr(out, name):
            return f"its output has no field {name!r} (expected a NamedTuple with fused, relevant, irrelevant)"
        problem = shape_problem(getattr(out, name), (PROBE_BATCH, PROBE_LEN, d), f"field {name!r}")
        if problem:
            return problem
    if not hasattr(out, "attention"):
        return "its output has no field 'attention' (B, dim), the gate mhmf reports in its diagnostics"
    return shape_problem(out.attention, (PROBE_BATCH, d), "field 'attention'")


def _four_stream_fusion_fits(block, kw, ctx):
    d = kw["dim"]
    out = block(probe_seq(d), probe_seq(d), probe_seq(d), probe_seq(d))
    return shape_problem(out, (PROBE_BATCH, PROBE_LEN, d))


ADAPTER_OPTIONS = ("num_layers", "heads", "dropout", "attn_dropout", "ffn_dropout", "ffn_ratio")
MHMF_SELF_ATTENTION = sequence_slot("self_attention", kind="adapter", default="self_attention_adapter",
                                    keywords=("d_in", "d_model"), call="forward(x (B, T, d_in), mask (B, T) or None)",
                                    returns="(B, T, d_model), zero at padded steps", options=ADAPTER_OPTIONS,
                                    note="one block per modality (audio, vision)")
MHMF_CROSS_ATTENTION = cross_attention_slot(
    "cross_attention", kind="adapter", default="cross_attention_adapter", d_key="d_model",
    call="forward(target (B, T, d_model), source (B, S, d_model) a projected BERT layer, target_mask (B, T) or None, "
         "source_mask (B, S) or None)", options=ADAPTER_OPTIONS, note="one block per branch and stage")
MHMF_MEMORY = Slot("memory", "memory", "gru_memory", ("dim",), "forward(x (B, T, dim), state (B, T, dim))",
                   "(B, T, dim) the new state", note="one block per branch and stage", dry_run=_memory_fits)
MHMF_RESTITUTION = Slot(
    "restitution", "fusion", "restitution", ("dim",),
    "forward(text (B, T, dim) or (B, dim) when unaligned, memory (B, T, dim), mask (B, T) or None)",
    "NamedTuple(fused, relevant, irrelevant: (B, T, dim), attention: (B, dim))", options=("reduction",),
    note="one block per branch and stage; false: the ablation without restitution", optional=True,
    dry_run=_restitution_fits,
)
MHMF_FUSION = Slot("fusion", "fusion", "gated_fusion", ("dim",),
                   "forward(g_vision, h_vision, g_audio, h_audio), each (B, T, dim) (aligned) or (B, dim) (unaligned, "
                   "pooled)", "(B, T, dim) (or (B, dim))", dry_run=_four_stream_fusion_fits)


@register("mhmf", kind="model")
@model_slots("mhmf", text_encoder_slot(), MHMF_SELF_ATTENTION, MHMF_CROSS_ATTENTION, MHMF_MEMORY, MHMF_RESTITUTION,
             MHMF_FUSION, HEAD)
@text_model_factory
def build_mhmf(
    text: TextModelArgs,
    *,
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
    gate_init: float | None = None,
    gate_lr_scale: float = 100.0,
    loss_weights: float | Sequence[float] = 0.1,
    loss_classes: str = "polarity",
    num_triplets: int | None = None,
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
    ``d_fusion`` / ``heads``: ``None`` = the paper's model (BERT's width and head count, no projection).
    ``restitution=False``: ablation without restitution (``G^i = G̃^i``, no loss terms).
    ``loss_weights``: λ for every stage (a float) or one per stage. ``loss_classes`` / ``num_triplets``:
    triplet sampling of the restitution loss (its generator is seeded by the engine from the run's seed).
    ``gate_init`` / ``gate_lr_scale``: the restitution gate's initial centre and learning-rate multiplier
    (module docstring). ``modalities: the present ones (an absent modality's
    branch and gate drop out).
    Slots (:mod:`fusionkit.slots`; a registered name or ``{"name": ..., **kwargs}``): ``text_encoder``,
    ``self_attention``, ``cross_attention``, ``memory``, ``restitution`` (also ``True`` / ``False``), ``fusion``,
    ``head``.
    """
    from fusionkit.data.dataset import parse_modalities

    present = parse_modalities(text.modalities)
    has_a, has_v = "a" in present, "v" in present
    for name, value in dict(d_acoustic=text.d_acoustic if has_a else None, d_visual=text.d_visual if has_v else None,
                            d_fusion=d_fusion, heads=heads, num_stages=num_stages).items():
        if value is not None and value <= 0:
            raise ValueError(f"{name} must be positive, got {name}={value}")
    encoder = text.build_encoder(build_mhmf)
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
    used = (set(audio_layers) if has_a else set()) | (set(vision_layers) if has_v else set())
    if with_restitution:
        used |= (set(restitution_audio) if has_a else set()) | (set(restitution_vision) if has_v else set())
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
                restitution=build_block(
                    build_mhmf, "restitution", restitution, dim=d_fusion,
                    options=dict(reduction=reduction, gate_init=gate_init, gate_lr_scale=gate_lr_scale),
                ) if with_restitution else None,
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
        audio_adapter=adapter(text.d_acoustic) if has_a else None,
        vision_adapter=adapter(text.d_visual) if has_v else None,
        audio_stages=stages(audio_layers, restitution_audio) if has_a else nn.ModuleList(),
        vision_stages=stages(vision_layers, restitution_vision) if has_v else nn.ModuleList(),
        gated_fusion=build_block(
            build_mhmf, "fusion", fusion, dim=d_fusion,
            options=dict(branches=tuple(b for b, on in (("vision", has_v), ("audio", has_a)) if on)),
        ) if has_a or has_v else None,
        head=build_block(build_mhmf, "head", head, d_in=d_fusion * (has_a or has_v) + width,
                         options=dict(dropout=dropout)),
        restitution_loss=RestitutionLoss(classes=loss_classes, num_triplets=num_triplets)
        if with_restitution and (has_a or has_v) else None,
        loss_weights=loss_weights,
    )


build_mhmf_small = register_variant(
    "mhmf_small", build_mhmf, d_fusion=32, heads=2,
    doc="MHMF-BERT with a narrow fusion (``d_fusion=32``, 2 heads; every used BERT layer linearly projected to 32): "
        "not the paper's model, a cheaper variant of the same builder.",
)
