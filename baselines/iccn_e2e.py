"""``iccn_e2e`` — an end-to-end variant of ICCN(B), trained in one stage with the DCCA term added to the task loss.

This is fusionkit's earlier reading of ICCN from the paper's abstract, kept under its own name because it is a
reasonable model; it is **not** the authors' model. ``iccn`` (baselines/iccn.py) follows the first author's
published code (github.com/zsun227/ICCN): vector-level products, 3-channel CNNs with BatchNorm, a separate DCCA
stage and a downstream regressor on frozen embeddings. The text below describes this variant as first written.

Paper: Sun, Sarma, Sethares, Liang, "Learning Relationships between Text, Audio, and Video via Deep Canonical
Correlation for Multimodal Language Analysis", AAAI 2020. This variant follows the paper's description: the text representation forms an outer product with the audio representation
("text-based audio") and one with the video representation ("text-based video"); a CNN encodes each matrix
into a vector; deep canonical correlation analysis (DCCA, Andrew et al., 2013) makes the two vectors
maximally correlated; the two embeddings and the text features feed the downstream regressor.

Computation, per utterance (``mask (B, T)`` bool, True = real token; word-piece aligned audio/video)::

    H   = BERT(text)                                   (B, T, H)      shared ``bert_encoder``, fine-tuned
    h_t = temporal_conv(H)                             (B, T, d_t)    1-D CNN over the words, ReLU
    h_a = lstm_sequence_encoder(audio),  h_v = lstm_sequence_encoder(video)        (B, T, d_a), (B, T, d_v)
    F_ta = mean_t h_t ⊗ h_a,   F_tv = mean_t h_t ⊗ h_v (text_based_outer_product)  (B, d_t, d_a), (B, d_t, d_v)
    e_a = outer_product_cnn(F_ta),  e_v = outer_product_cnn(F_tv)                  (B, d_embed) each
    prediction = regression_head([e_a; e_v; masked_mean(H)])                      (B,)
    loss_terms = {"dcca": cca_weight · dcca_loss(e_a, e_v)}   (a negative correlation; added to the task loss)

Every block is a registered component built by name (``fusionkit.create``); the DCCA objective is
:class:`fusionkit.losses.cca.DCCALoss` (``dcca_loss``), tested against a closed-form CCA.

Points where the paper leaves room (or where its full method section could not be consulted while writing
this file) and what fusionkit chose — all are options of the factory:

* "(B)" text path: the shared ``bert_encoder`` (last layer, fine-tuned at ``encoder_lr``) is the text
  embedding, as for TFN(B)/LMF(B); the text features given to the regressor are its masked mean.
* Text, audio and video encoders before the outer product: a 1-D convolution over the words for the text
  (``d_text`` 32, kernel 3, ReLU), one unidirectional LSTM for each of audio and video (``d_audio`` =
  ``d_video`` 16), run on packed sequences so padding never changes a result.
* Outer products accumulated over the word-aligned steps and **averaged** over the real steps (not summed),
  so the matrices do not grow with the utterance length.
* CNN on each ``d_text × d_audio`` matrix: two stages ``Conv2d(3×3, same) → ReLU → MaxPool(2)`` with 8 and 16
  channels, then flatten → Dropout(``cnn_dropout`` 0.1) → Linear to ``d_embed`` = 8. ``d_embed`` is kept well
  below the batch size because DCCA estimates the two views' covariances on each mini-batch.
* DCCA objective: the sum of all ``d_embed`` canonical correlations (the trace norm of Andrew et al.),
  regularisation ``r1 = r2 = 1e-3``, divided by ``d_embed`` (``cca_mean=True``) so that the term lies in
  [−1, 0]; weight ``cca_weight`` 1.0. The term is computed on every training batch of ≥ 2 samples.
* Training: one stage, end to end — task loss + the weighted DCCA term — through the shared engine, instead
  of learning the embeddings first and fitting a separate downstream classifier on them. The embeddings
  themselves are used downstream (no separate linear CCA projection fitted on the training set).
* Downstream regressor: ``regression_head`` with one hidden layer (``head_hidden`` 64, GELU, dropout 0.1).
* Initialisation: PyTorch's defaults for every new layer.
* Defaults (not given in the text available to us): AdamW, lr 1e-3 (BERT 5e-5), no weight decay, 10 %
  warm-up then linear decay, gradient clipping 1.0, batch 32, 50 epochs, early stopping after 10 epochs.
* Audio/video must be word-piece aligned with the text (the outer product pairs the same word's rows).

Absent modalities (``modalities``, e.g. ``("t", "a")``): the absent modality's encoder, its text-based outer
product and CNN drop out, and so does the DCCA term, which correlates the two views and has no partner left;
the regressor reads ``[e_present; text]``. Text alone leaves no text-based product: refused (use ``text``).
"""
from __future__ import annotations

import torch
from torch import nn

import fusionkit
from fusionkit.components.attention import masked_mean
from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import parse_modalities
from fusionkit.encoders.bert import BertEncoder
from fusionkit.registry import register
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import (
    PROBE_BATCH,
    build_block,
    head_slot,
    model_slots,
    probe_mask,
    probe_seq,
    probe_tensor,
    sequence_slot,
    shape_problem,
    Slot,
    SlotValue,
    text_encoder_slot,
)
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.types import ModelOutput

MIN_CCA_BATCH = 2  # covariances need at least two samples


class ICCNEndToEnd(nn.Module):
    """BERT + text-based audio/video outer products → CNN embeddings tied by DCCA → regressor."""

    train_defaults = {
        "lr": 1e-3,
        "encoder_lr": 5e-5,
        "batch_size": 32,
        "epochs": 50,
        "warmup": 0.1,
        "grad_clip": 1.0,
        "weight_decay": 0.0,
        "patience": 10,
    }
    # Neither its authors nor MMSA publish a grid for this end-to-end model: documented choice around
    # train_defaults.
    search_space = SearchSpace(
        source="no published grid (end-to-end variant; MMSA has no iccn): fusionkit's documented choice around "
               "train_defaults",
        params={"lr": Choice(5e-4, 1e-3, 2e-3), "batch_size": Choice(32, 64), "cca_weight": Choice(0.1, 0.5, 1.0),
                "head_dropout": Choice(0.0, 0.1, 0.3)})

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        text_conv: nn.Module,
        audio_encoder: nn.Module | None,
        video_encoder: nn.Module | None,
        outer_product: nn.Module,
        audio_cnn: nn.Module | None,
        video_cnn: nn.Module | None,
        head: nn.Module,
        cca_loss: nn.Module,
        cca_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if cca_weight < 0:
            raise ValueError(f"ICCN cca_weight must be ≥ 0, got {cca_weight}")
        self.encoder = encoder
        self.text_conv = text_conv
        self.audio_encoder = audio_encoder
        self.video_encoder = video_encoder
        self.outer_product = outer_product
        self.audio_cnn = audio_cnn
        self.video_cnn = video_cnn
        self.head = head
        self.cca_loss = cca_loss
        self.cca_weight = cca_weight

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: word-piece aligned :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T, d_a)``,
        visual ``(B, T, d_v)``; ``mask (B, T)`` bool, True = real token.

        Returns :class:`ModelOutput`: ``prediction (B,)``; ``loss_terms`` ``{"dcca"}`` (weighted negative mean
        canonical correlation of the two embeddings; empty without labels or with fewer than 2 samples);
        ``features (B, 2 · d_embed + H)`` = ``[e_a; e_v; text]``.
        """
        if not batch.aligned:
            raise ValueError(
                "ICCN forms the outer product of each word's text and audio/video rows: it needs word-piece "
                "aligned batches (acoustic_mask and visual_mask None); use an aligned dataset for model 'iccn_e2e'"
            )
        batch.require(("a",) * (self.audio_encoder is not None) + ("v",) * (self.video_encoder is not None),
                      model="iccn_e2e")
        mask = batch.mask
        hidden = self.encoder(batch.input_ids, mask, batch.token_type_ids).last_hidden_state
        h_t = self.text_conv(hidden, mask)
        if self.audio_encoder is None or self.video_encoder is None:
            return self._forward_subset(batch, hidden, h_t, mask)
        h_a = self.audio_encoder(batch.acoustic, mask)
        h_v = self.video_encoder(batch.visual, mask)
        e_a = self.audio_cnn(self.outer_product(h_t, h_a, mask))
        e_v = self.video_cnn(self.outer_product(h_t, h_v, mask))
        features = torch.cat([e_a, e_v, masked_mean(hidden, mask)], dim=-1)
        prediction = self.head(features)
        loss_terms = {}
        if batch.label is not None and self.cca_weight > 0 and e_a.shape[0] >= MIN_CCA_BATCH:
            loss_terms["dcca"] = self.cca_weight * self.cca_loss(e_a, e_v)
        return ModelOutput(prediction=prediction, loss_terms=loss_terms, features=features)

    def _forward_subset(self, batch, hidden, h_t, mask) -> ModelOutput:
        """:meth:`forward` with one of audio/video absent: one text-based embedding, no DCCA term."""
        for encoder, cnn, x in ((self.audio_encoder, self.audio_cnn, batch.acoustic),
                                (self.video_encoder, self.video_cnn, batch.visual)):
            if encoder is None:
                continue
            embedding = cnn(self.outer_product(h_t, encoder(x, mask), mask))
        features = torch.cat([embedding, masked_mean(hidden, mask)], dim=-1)
        return ModelOutput(prediction=self.head(features), loss_terms={}, features=features)


# -- slots: iccn_e2e's replaceable blocks and their contracts ------------------------------------------------------
def _outer_product(block, kw, ctx):
    d_t, d_o = ctx["d_text"], ctx["d_other"]
    return shape_problem(block(probe_seq(d_t), probe_seq(d_o), probe_mask()), (PROBE_BATCH, d_t, d_o))


def _matrix_cnn(block, kw, ctx):
    matrix = probe_tensor(kw["height"], kw["width"])
    return shape_problem(block(matrix), (PROBE_BATCH, kw["d_out"]))


ICCN_TEXT_CONV = sequence_slot("text_conv", kind="adapter", default="temporal_conv", keywords=("d_in", "d_out"),
                               returns="(B, T, d_out), zero at padded steps", options=("kernel_size",))


def iccn_sequence_slot(name: str) -> Slot:
    return sequence_slot(name, kind="adapter", default="lstm_sequence_encoder", keywords=("d_in", "d_hidden"),
                         returns="(B, T, d_hidden), word-aligned with the text")


ICCN_OUTER_PRODUCT = Slot("outer_product", "fusion", "text_based_outer_product", (),
                          "forward(text (B, T, d_t), other (B, T, d_o), mask (B, T))", "(B, d_t, d_o)",
                          note="one block, used for audio and for video", dry_run=_outer_product)


def iccn_cnn_slot(name: str) -> Slot:
    return Slot(name, "adapter", "outer_product_cnn", ("height", "width", "d_out"),
                "forward(matrix (B, height, width))", "(B, d_out)", options=("channels", "dropout"),
                dry_run=_matrix_cnn)


ICCN_HEAD = head_slot(options=("d_hidden", "dropout"))


@register("iccn_e2e", kind="model")
@model_slots("iccn_e2e", text_encoder_slot(), ICCN_TEXT_CONV, iccn_sequence_slot("audio_encoder"),
             iccn_sequence_slot("video_encoder"), ICCN_OUTER_PRODUCT, iccn_cnn_slot("audio_cnn"),
             iccn_cnn_slot("video_cnn"), ICCN_HEAD)
@text_model_factory
def build_iccn_e2e(
    text: TextModelArgs,
    *,
    d_text: int = 32,
    d_audio: int = 16,
    d_video: int = 16,
    text_kernel: int = 3,
    cnn_channels: tuple[int, ...] = (8, 16),
    cnn_dropout: float = 0.1,
    d_embed: int = 8,
    head_hidden: int = 64,
    head_dropout: float = 0.1,
    cca_weight: float = 1.0,
    cca_r: float = 1e-3,
    cca_mean: bool = True,
    text_conv: SlotValue = "temporal_conv",
    audio_encoder: SlotValue = "lstm_sequence_encoder",
    video_encoder: SlotValue = "lstm_sequence_encoder",
    outer_product: SlotValue = "text_based_outer_product",
    audio_cnn: SlotValue = "outer_product_cnn",
    video_cnn: SlotValue = "outer_product_cnn",
    head: SlotValue = "regression_head",
) -> ICCNEndToEnd:
    """End-to-end ICCN variant (after Sun et al., 2020; not the authors' two-stage model): text-based audio/video outer products, CNN embeddings tied by deep CCA.

    ``modalities``: the present ones (an absent modality's product, CNN and the DCCA term drop out).
    """
    present = parse_modalities(text.modalities)
    if present == ("t",):
        raise ValueError("iccn_e2e forms text-based audio/video outer products and text alone leaves none; use "
                         "modalities with a or v (e.g. t,a), or the text-only model 'text'")
    has_a, has_v = "a" in present, "v" in present
    encoder = text.build_encoder(build_iccn_e2e)

    def matrix_cnn(slot: str, value: SlotValue, width: int) -> nn.Module:
        return build_block(build_iccn_e2e, slot, value, height=d_text, width=width, d_out=d_embed,
                           options=dict(channels=tuple(cnn_channels), dropout=cnn_dropout),
                           sources=dict(channels="cnn_channels", dropout="cnn_dropout"))

    return ICCNEndToEnd(
        encoder=encoder,
        text_conv=build_block(build_iccn_e2e, "text_conv", text_conv, d_in=encoder.hidden_size, d_out=d_text,
                              options=dict(kernel_size=text_kernel), sources=dict(kernel_size="text_kernel")),
        audio_encoder=build_block(build_iccn_e2e, "audio_encoder", audio_encoder, d_in=text.d_acoustic,
                                  d_hidden=d_audio) if has_a else None,
        video_encoder=build_block(build_iccn_e2e, "video_encoder", video_encoder, d_in=text.d_visual,
                                  d_hidden=d_video) if has_v else None,
        outer_product=build_block(build_iccn_e2e, "outer_product", outer_product,
                                  context=dict(d_text=d_text, d_other=d_audio if has_a else d_video)),
        audio_cnn=matrix_cnn("audio_cnn", audio_cnn, d_audio) if has_a else None,
        video_cnn=matrix_cnn("video_cnn", video_cnn, d_video) if has_v else None,
        head=build_block(build_iccn_e2e, "head", head, d_in=(has_a + has_v) * d_embed + encoder.hidden_size,
                         options=dict(d_hidden=head_hidden, dropout=head_dropout),
                         sources=dict(d_hidden="head_hidden", dropout="head_dropout")),
        cca_loss=fusionkit.create("dcca_loss", r1=cca_r, r2=cca_r, mean=cca_mean),
        cca_weight=cca_weight,
    )
