"""``iccn`` — ICCN(B), the Interaction Canonical Correlation Network, as its first author's code builds it.

Paper: Sun, Sarma, Sethares, Liang, "Learning Relationships between Text, Audio, and Video via Deep Canonical
Correlation for Multimodal Language Analysis", AAAI 2020. Reference: the first author's public research code,
github.com/zsun227/ICCN (``models.py``, ``objectives.py``, ``Get_CCA_embedding.ipynb`` and the exported MOSEI
notebook ``mosei_dcca_exp (2).html``, whose class ``MY`` and ``Regressor`` are the complete model). It has no
runnable pipeline and no licence; it was read to match the computation. docs/iccn.md lists every point.

Computation, per utterance (``mask (B, T)`` bool, True = real token; audio/video may be aligned or not)::

    t   = pool(BERT(text))                                       (B, H)   utterance-level text vector, frozen
    h_a = LSTM_50(Conv1d_{d_a→50, 1×1, no bias}(audio))[last]    (B, 50)  projected_lstm
    h_v = LSTM_50(Conv1d_{d_v→50, 1×1, no bias}(video))[last]    (B, 50)
    e_a = CNN_a(t ⊗ h_a),  e_v = CNN_v(t ⊗ h_v)                  (B, 50)  products (B, H, 50), iccn_product_cnn
    stage 1 "dcca":       minimise −Σ top-20 canonical correlations of (e_a, e_v)   (Andrew et al., r1=r2=1e-3)
    stage 2 "downstream": prediction = MLP([e_a; e_v; t])  (B,)  L1 loss; e_a, e_v, t frozen

CNN: two stages ``Conv2d(1→3, 3×3, stride 2, padding 1) → BatchNorm → ReLU → MaxPool(2, stride 1)``, then
flatten → Linear to 50; the flatten size follows from the product's shape (768 × 50 → 6303 as in their code;
384 × 50 → 3135 with the default MiniLM encoder). MLP: ``Linear(in → hd) → ReLU → Linear(hd → hd) → ReLU →
Dropout → Linear(hd → 1)``.

Training: two stages through the shared engine (``stages``; :mod:`fusionkit.training.stages`). Stage 1 trains
the projections, LSTMs and CNNs on the training split with the DCCA loss alone (RMSprop, as theirs) and keeps
the epoch with the lowest DCCA loss on the whole **validation** split; the authors train a fixed number of
epochs and select nothing. Stage 2 freezes all of that (parameters and BatchNorm statistics: those modules stay
in eval mode, as when the authors extract embeddings) and trains the regressor (Adam, L1, as theirs), keeping
the epoch with the lowest validation MAE (their early stopping). Stage 2 never updates stage 1's weights.

**Selection caveat.** The MOSEI notebook keeps the run with the lowest **test** MAE across its random
hyper-parameter settings, four seeds and the downstream (hd, lr) grid, and prints only those; the published
ICCN numbers may therefore have been selected on the test split. fusionkit selects on the validation split only
and does not search their grid; the defaults below are fixed values from it.

Choices where the code is incomplete or leaves room (each also at its place below):

* "(B)" text vector: the authors read 768-d BERT vectors from a pickle (``mosei_bert_inf``), computed
  outside the published code; here it is our ``bert_encoder`` (MiniLM by default), **frozen** (as a precomputed
  vector is; ``encoder_mode="finetune"`` makes it trainable in the DCCA stage only), pooled by masked mean
  (``text_pooling="cls"`` for [CLS]), as TFN(B)/LMF(B) pool it.
* Sizes: 50-d projections, LSTMs and embeddings, 3-channel CNNs, top-k 20 — the MOSEI notebook's ``MY(768, 74,
  35, 50, 6303, 50, …)`` and ``cca_loss(20, …)``. ``Get_CCA_embedding.ipynb`` runs the same DCCA on precomputed
  raw 768 × 74 / 768 × 35 products (``Conv_CCA``, ``fc_dim`` 9741 / 4584) with undefined data variables; the
  MOSEI notebook's end-to-end ``MY`` is the one implemented.
* Hyper-parameters (one fixed setting from the notebook's grids; the setting it printed last, test-selected on
  MOSEI by them, not by us): DCCA RMSprop lr 3e-4, batch 350, 10 epochs; regressor Adam lr 7e-4, batch 300,
  hd 512, dropout 0.1, up to 50 epochs, patience 5 in their counting (they stop after p + 1 epochs without
  improvement: ``patience`` 6 here). No warm-up, schedule, clipping or weight decay (they use none).
* DCCA loss: ``dcca_loss`` (Cholesky form, float64) gives the same value as their eigendecomposition: the top-k
  singular values of ``Σ11^-½ Σ12 Σ22^-½``; their ``eps`` 1e-9 drops eigenvalues below it, which the ``r``
  regularisation (1e-3) never produces, so it only guards here too. A batch of fewer than 2 samples contributes
  a zero term (their code would fail on it).
* The LSTMs run on packed sequences (their padded arrays run unpacked): padding never changes a result.
* Initialisation: PyTorch's defaults for every layer (their code sets none).
* Classification: their L1 logistic regression over C is not implemented; sentiment metrics come from the
  regressor as for every fusionkit model.

Absent modalities (``modalities``): an absent audio or video drops its encoder, its product and CNN, and the
DCCA stage, which has no pair left to correlate. Choice: the one remaining text-based branch would otherwise
stay at its random initialisation, so it is trained jointly with the regressor in the one remaining stage
(task loss only), and the regressor reads ``[e_present; t]``. Text alone leaves no product: refused (use
``text``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import inspect

import torch
from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import parse_modalities
from fusionkit.encoders.bert import BertEncoder
from fusionkit.registry import register
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import (
    PROBE_BATCH,
    PROBE_LEN,
    build_block,
    head_slot,
    model_slots,
    probe_generator,
    probe_mask,
    probe_seq,
    probe_tensor,
    probe_vec,
    shape_problem,
    Slot,
    SlotValue,
    text_encoder_slot,
)
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.training.stages import NO_EARLY_STOPPING, TrainingStage
from fusionkit.types import ModelOutput

MIN_CCA_BATCH = 2  # covariances need at least two samples
TEXT_POOLING = ("mean", "cls")
# The authors use none of the engine's extras: no warm-up, a constant rate, no clipping, no weight decay.
_PLAIN = {"warmup": 0.0, "schedule": "constant", "grad_clip": 0.0, "weight_decay": 0.0, "loss": "l1"}
DCCA_STAGE = TrainingStage(
    "dcca", "projections, LSTMs and CNNs by the DCCA loss of (e_a, e_v) alone; regressor untouched",
    defaults={**_PLAIN, "lr": 3e-4, "batch_size": 350, "epochs": 10},
    # no early stopping (they train a fixed number of epochs); the whole validation split in one batch, so its
    # DCCA loss is the split's, not an average over batches
    fixed={"patience": NO_EARLY_STOPPING, "eval_batch_size": 10 ** 6},
    optimizer="rmsprop", select="dcca")
DOWNSTREAM_STAGE = TrainingStage(
    "downstream", "regressor on [e_a; e_v; t] with the stage-1 weights frozen",
    defaults={**_PLAIN, "lr": 7e-4, "batch_size": 300, "epochs": 50, "patience": 6},
    optimizer="adam")
SINGLE_BRANCH_STAGE = TrainingStage(
    "downstream", "no DCCA pair (one of audio/video): the present branch and the regressor by the task loss",
    defaults=DOWNSTREAM_STAGE.defaults, optimizer="adam")


class ICCN(nn.Module):
    """Frozen text vector ⊗ projected-LSTM audio/video → CNN embeddings (DCCA stage) → regressor (second stage)."""

    train_defaults = DOWNSTREAM_STAGE.defaults | {"encoder_lr": 5e-5}
    # Tuning samples the authors' own grids (MOSEI notebook): regressor hd × lr and the batch sizes. As for any
    # explicit setting, lr and batch_size apply to both stages (their DCCA lr grid {1e-3, 5e-4, 3e-4, 2e-3}
    # overlaps the regressor's).
    search_space = SearchSpace(
        source="authors' MOSEI notebook grids (zsun227/ICCN): regressor hd {256, 512, 768} x lr {1e-3, 2e-3, "
               "5e-4, 7e-4}, batch {256, 300, 350, 400}; lr and batch_size apply to both stages",
        params={"lr": Choice(5e-4, 7e-4, 1e-3, 2e-3), "batch_size": Choice(256, 300, 350, 400),
                "head_hidden": Choice(256, 512, 768)})

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        audio_encoder: nn.Module | None,
        video_encoder: nn.Module | None,
        product: nn.Module,
        audio_cnn: nn.Module | None,
        video_cnn: nn.Module | None,
        head: nn.Module,
        cca_loss: nn.Module,
        text_pooling: str = "mean",
    ) -> None:
        super().__init__()
        if text_pooling not in TEXT_POOLING:
            raise ValueError(f"iccn text_pooling must be one of {', '.join(TEXT_POOLING)}, got {text_pooling!r}")
        if (audio_encoder is None) != (audio_cnn is None) or (video_encoder is None) != (video_cnn is None):
            raise ValueError("iccn: each of audio and video needs both its encoder and its CNN, or neither")
        if audio_encoder is None and video_encoder is None:
            raise ValueError("iccn needs audio or video: text alone leaves no text-based product")
        self.encoder = encoder
        self.audio_encoder = audio_encoder
        self.video_encoder = video_encoder
        self.product = product
        self.audio_cnn = audio_cnn
        self.video_cnn = video_cnn
        self.head = head
        self.cca_loss = cca_loss
        self.text_pooling = text_pooling
        self.stage: str | None = None  # None: plain forward (prediction from the regressor, no loss terms)
        self.stages = ((DCCA_STAGE, DOWNSTREAM_STAGE) if self.has_pair else (SINGLE_BRANCH_STAGE,))

    @property
    def has_pair(self) -> bool:
        return self.audio_encoder is not None and self.video_encoder is not None

    def embedding_modules(self) -> list[nn.Module]:
        """What the DCCA stage trains and the downstream stage freezes (the text encoder only when fine-tuned)."""
        return [m for m in (self.encoder, self.audio_encoder, self.video_encoder, self.audio_cnn, self.video_cnn)
                if m is not None]

    def enter_stage(self, name: str) -> None:
        """Set what trains and what the forward computes: ``dcca`` | ``downstream`` (called by the engine)."""
        if name not in {s.name for s in self.stages}:
            raise ValueError(f"iccn has the stages {[s.name for s in self.stages]}, not {name!r}")
        self.stage = name
        frozen_embeddings = name == "downstream" and self.has_pair
        for module in self.embedding_modules():
            for p in module.parameters():
                # a frozen text encoder keeps requires_grad False whatever the stage
                p.requires_grad_(not frozen_embeddings and getattr(module, "mode", None) != "frozen")
        for p in self.head.parameters():
            p.requires_grad_(name == "downstream")
        self.train(self.training)

    def train(self, mode: bool = True) -> "ICCN":
        super().train(mode)
        if self.stage == "downstream" and self.has_pair:  # frozen embeddings: BatchNorm statistics stay put
            for module in self.embedding_modules():
                module.eval()
        return self

    def text_vector(self, batch: MultimodalBatch) -> torch.Tensor:
        hidden = self.encoder(batch.input_ids, batch.mask, batch.token_type_ids).last_hidden_state
        return masked_mean(hidden, batch.mask) if self.text_pooling == "mean" else hidden[:, 0]

    def embeddings(self, batch: MultimodalBatch, text: torch.Tensor) -> list[torch.Tensor]:
        """``[e_a, e_v]`` (present ones), each ``(B, d_embed)``."""
        out = []
        for encoder, cnn, x, mask in ((self.audio_encoder, self.audio_cnn, batch.acoustic, batch.acoustic_mask),
                                      (self.video_encoder, self.video_cnn, batch.visual, batch.visual_mask)):
            if encoder is not None:
                out.append(cnn(self.product(text, encoder(x, batch.mask if mask is None else mask))))
        return out

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T_a, d_a)``, visual ``(B, T_v, d_v)``
        (aligned: ``T_a = T_v = T`` and ``mask`` covers them; unaligned: ``acoustic_mask`` / ``visual_mask``);
        masks ``(B, ·)`` bool, True = real step.

        Returns :class:`ModelOutput`. Stage ``dcca``: ``prediction`` zeros ``(B,)`` (the regressor is not trained
        yet), ``loss_terms`` and ``diagnostics`` ``{"dcca": −Σ top-k canonical correlations}``. Otherwise
        ``prediction (B,)`` from the regressor and no loss terms. ``features (B, 50·n + H)`` = ``[e_a; e_v; t]``.
        """
        batch.require(("a",) * (self.audio_encoder is not None) + ("v",) * (self.video_encoder is not None),
                      model="iccn")
        frozen = self.stage == "downstream" and self.has_pair
        with torch.no_grad() if frozen else contextlib.nullcontext():
            text = self.text_vector(batch)
            embeddings = self.embeddings(batch, text)
        features = torch.cat([*embeddings, text], dim=-1)
        if self.stage == "dcca":
            e_a, e_v = embeddings
            if e_a.shape[0] >= MIN_CCA_BATCH:
                dcca = self.cca_loss(e_a, e_v)
            else:  # no covariance from one sample: a zero term that keeps the graph
                dcca = (e_a.sum() + e_v.sum()) * 0.0
            prediction = torch.zeros(e_a.shape[0], dtype=e_a.dtype, device=e_a.device)
            return ModelOutput(prediction=prediction, loss_terms={"dcca": dcca}, features=features,
                               diagnostics={"dcca": dcca.detach()})
        return ModelOutput(prediction=self.head(features), loss_terms={}, features=features)


def _summary() -> str:
    """The stages and the authors' sizes, for ``python -m fusionkit show iccn``."""
    d = {k: p.default for k, p in inspect.signature(build_iccn).parameters.items()}
    return "\n".join([
        "stages (trained in order by the shared engine; each validation-selected, the test split untouched):",
        *(f"  {i}. {s.summary()}" for i, s in enumerate((DCCA_STAGE, DOWNSTREAM_STAGE), 1)),
        "sizes (the authors' MOSEI notebook):",
        f"  audio/video: Conv1d 1×1 no bias → {d['d_project']}-d, LSTM({d['d_project']}) last hidden state",
        f"  products t⊗a, t⊗v: (H × {d['d_project']}), H = text encoder width (768 for BERT-base)",
        f"  CNN per product: {d['cnn_stages']} × [Conv2d(→{d['cnn_channels']}, 3×3, stride 2, pad 1) → BatchNorm "
        f"→ ReLU → MaxPool(2, stride 1)] → flatten (6303 for 768×50) → Linear → {d['d_embed']}-d embedding",
        f"  DCCA: top-k {d['cca_top_k']} canonical correlations, r1 = r2 = {d['cca_r']}, eps {d['cca_eps']}",
        f"  regressor: [e_a; e_v; t] → {d['head_hidden']} → {d['head_hidden']} → 1, ReLU, dropout "
        f"{d['head_dropout']}, L1",
        f"  text: {d['encoder_mode']} encoder, {d['text_pooling']}-pooled",
    ])


# -- slots: iccn's replaceable blocks and their contracts ------------------------------------------------------
def _vector_encoder(block, kw, ctx):
    return shape_problem(block(probe_seq(kw["d_in"]), probe_mask(PROBE_LEN)), (PROBE_BATCH, kw["d_hidden"]))


def _vector_outer_product(block, kw, ctx):
    d_t, d_o = ctx["d_text"], ctx["d_other"]
    return shape_problem(block(probe_vec(d_t), probe_vec(d_o)), (PROBE_BATCH, d_t, d_o))


def _matrix_cnn(block, kw, ctx):
    return shape_problem(block(probe_tensor(kw["height"], kw["width"])), (PROBE_BATCH, kw["d_out"]))


def _two_view_loss(block, kw, ctx):
    d = ctx["d_embed"]
    device = probe_vec(1).device  # the probe device (meta when the model is built on the meta device)
    out = block(torch.randn(4, d, generator=probe_generator()).to(device),
                torch.randn(4, d, generator=torch.Generator().manual_seed(1)).to(device))
    return shape_problem(out, ())


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


ICCN_REGRESSOR = dataclasses.replace(head_slot(default="iccn_regressor", options=("d_hidden", "dropout")),
                                     call="forward(x (B, d_in)) with x = [e_a; e_v; text]",
                                     note="trained in the downstream stage only")
ICCN_CCA_LOSS = Slot("cca_loss", "loss", "dcca_loss", (), "forward(h1 (N, d_embed), h2 (N, d_embed))",
                     "() scalar, lower = more correlated", options=("r1", "r2", "top_k", "eps"),
                     note="the DCCA stage's objective", dry_run=_two_view_loss)


@register("iccn", kind="model")
@model_slots("iccn", text_encoder_slot(), iccn_vector_encoder_slot("audio_encoder"),
             iccn_vector_encoder_slot("video_encoder"), ICCN_VECTOR_PRODUCT, iccn_product_cnn_slot("audio_cnn"),
             iccn_product_cnn_slot("video_cnn"), ICCN_REGRESSOR, ICCN_CCA_LOSS)
@text_model_factory(encoder_mode="frozen")  # the authors' text vector is precomputed, so frozen
def build_iccn(
    text: TextModelArgs,
    *,
    text_pooling: str = "mean",
    d_project: int = 50,
    cnn_channels: int = 3,
    cnn_stages: int = 2,
    d_embed: int = 50,
    head_hidden: int = 512,
    head_dropout: float = 0.1,
    cca_top_k: int = 20,
    cca_r: float = 1e-3,
    cca_eps: float = 1e-9,
    audio_encoder: SlotValue = "projected_lstm",
    video_encoder: SlotValue = "projected_lstm",
    product: SlotValue = "vector_outer_product",
    audio_cnn: SlotValue = "iccn_product_cnn",
    video_cnn: SlotValue = "iccn_product_cnn",
    head: SlotValue = "iccn_regressor",
    cca_loss: SlotValue = "dcca_loss",
) -> ICCN:
    """ICCN(B) (Sun et al., 2020) as the first author's code builds it: a DCCA stage, then a regressor.

    Two stages (DCCA on the training split, then the regressor on frozen embeddings), both selected on
    validation; the published numbers may have been selected on test (see the module docstring).

    ``modalities``: the present ones (an absent audio/video drops its product, its CNN and the DCCA stage).
    """
    present = parse_modalities(text.modalities)
    if present == ("t",):
        raise ValueError("iccn forms text-based audio/video outer products and text alone leaves none; use "
                         "modalities with a or v (e.g. t,a), or the text-only model 'text'")
    if text_pooling not in TEXT_POOLING:
        raise ValueError(f"iccn text_pooling must be one of {', '.join(TEXT_POOLING)}, got {text_pooling!r}")
    has_a, has_v = "a" in present, "v" in present
    if has_a and has_v and cca_top_k > d_embed:
        raise ValueError(f"iccn cca_top_k={cca_top_k} exceeds the {d_embed} canonical correlations of two "
                         f"{d_embed}-d embeddings; use cca_top_k ≤ d_embed")
    encoder = text.build_encoder(build_iccn)
    height = encoder.hidden_size

    def vector_encoder(slot: str, value: SlotValue, d_in: int) -> nn.Module:
        return build_block(build_iccn, slot, value, d_in=d_in, d_hidden=d_project)

    def product_cnn(slot: str, value: SlotValue) -> nn.Module:
        return build_block(build_iccn, slot, value, height=height, width=d_project, d_out=d_embed,
                           options=dict(channels=cnn_channels, stages=cnn_stages),
                           sources=dict(channels="cnn_channels", stages="cnn_stages"))

    # built in the authors' order within each branch: projection and LSTM, then the CNN
    audio = vector_encoder("audio_encoder", audio_encoder, text.d_acoustic) if has_a else None
    video = vector_encoder("video_encoder", video_encoder, text.d_visual) if has_v else None
    return ICCN(
        encoder=encoder,
        audio_encoder=audio,
        video_encoder=video,
        product=build_block(build_iccn, "product", product, context=dict(d_text=height, d_other=d_project)),
        audio_cnn=product_cnn("audio_cnn", audio_cnn) if has_a else None,
        video_cnn=product_cnn("video_cnn", video_cnn) if has_v else None,
        head=build_block(build_iccn, "head", head, d_in=(has_a + has_v) * d_embed + height,
                         options=dict(d_hidden=head_hidden, dropout=head_dropout),
                         sources=dict(d_hidden="head_hidden", dropout="head_dropout")),
        cca_loss=build_block(build_iccn, "cca_loss", cca_loss, options=dict(r1=cca_r, r2=cca_r, top_k=cca_top_k,
                                                                              eps=cca_eps),
                             sources=dict(r1="cca_r", r2="cca_r", top_k="cca_top_k", eps="cca_eps"),
                             context=dict(d_embed=d_embed)),
        text_pooling=text_pooling,
    )


build_iccn.summary = _summary
