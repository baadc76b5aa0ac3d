"""``misa`` — MISA(B): modality-invariant and -specific representations, BERT text path.

Paper: Hazarika, Zimmermann, Poria, "MISA: Modality-Invariant and -Specific Representations for Multimodal
Sentiment Analysis", ACM MM 2020. Follows ``src/models.py`` (``MISA`` with ``use_bert=True``),
``src/solver.py`` and ``src/config.py`` of https://github.com/declare-lab/MISA:

* text: BERT's last layer, masked mean over the word pieces; visual / acoustic: two stacked bidirectional LSTMs
  with a LayerNorm between them on packed sequences (:class:`MISASequenceEncoder`, LSTM size = feature size);
* projection of each utterance vector to ``hidden`` (Linear → ReLU → LayerNorm), private encoders and one shared
  encoder (Linear → sigmoid), reconstruction of ``private + shared`` (:class:`MISASharedPrivate`);
* the 6-token transformer fusion and its MLP (:class:`MISAFusion`), whose output is the prediction;
* losses: task + ``diff_weight`` · Σ diff over the 6 pairs (each private vs its shared, the 3 private pairs) +
  ``sim_weight`` · mean CMD (5 moments) over the 3 shared pairs + ``recon_weight`` · mean reconstruction MSE. With
  ``use_cmd_sim=False`` the similarity term is instead the cross-entropy of the gradient-reversal modality
  discriminator (:class:`ModalityDiscriminator`), as in the authors' code (off by default, like theirs).

Defaults (authors' ``config.py``, CMU-MOSI): hidden 128, dropout 0.5, ReLU, diff 0.3, sim 1.0 (CMD), recon 1.0,
Adam lr 1e-4 on every parameter (BERT included), batch 64, gradient clipping 1.0, early stopping with
patience 6 (up to 500 epochs).

Departures from the authors' code, and why:

* Text model: the shared ``bert_encoder`` (bundled MiniLM-L6 by default; bert-base-uncased via ``text_model``).
* Sequences: MISA's nonverbal streams are word-level aligned and packed with the word count; here they are the
  batch's own sequences packed with ``batch.a_mask`` / ``batch.v_mask`` (word-piece aligned batches include the
  zero rows at [CLS]/[SEP]; unaligned batches work too).
* Clipping: the authors clip each gradient *value* to ±1.0 (``clip_grad_value_``); fusionkit's engine clips the
  global gradient norm at 1.0. The engine's AdamW with weight decay 0 is Adam; the task loss is MSE as theirs.
* ``sp_discriminator`` (the shared/private discriminator) is built by the authors but never enters their loss
  (``sp_weight`` 0, no such term in ``solver.py``); it is left out. The authors' halving of the learning rate
  when patience runs out (with one trial) is not reproduced: training stops there.
* CMD uses a gradient-safe norm (same value), see :mod:`fusionkit.losses.misa`.
* ``features`` (for probing) is the concatenated fusion-transformer output ``(B, 6 · hidden)``.

Absent modalities (``modalities``, e.g. ``("t", "a")``): an absent modality has no sequence encoder, projection,
private encoder or decoder, and its terms drop out of the losses (the diff pairs, CMD pairs and reconstruction
terms that involve it; the similarity term is the mean over the remaining shared pairs, absent with text
alone). The fusion transformer sees the private and shared tokens of the present modalities.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.components.misa import (
    MODALITIES,
    MISAFusion,
    MISASequenceEncoder,
    MISASharedPrivate,
    ModalityDiscriminator,
    SharedPrivateOutput,
)
from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import parse_modalities
from fusionkit.encoders.bert import BertEncoder
from fusionkit.losses.misa import CMDLoss, DiffLoss, ReconLoss
from fusionkit.registry import register
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import (
    PROBE_BATCH,
    build_block,
    model_slots,
    present_vec,
    probe_mask,
    probe_seq,
    probe_vec,
    shape_problem,
    Slot,
    SlotValue,
    text_encoder_slot,
    width_attr,
)
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.types import ModelOutput


class MISA(nn.Module):
    """BERT + BiLSTM utterance encoders → shared/private subspaces → 6-token transformer fusion."""

    train_defaults = {
        "lr": 1e-4,
        "encoder_lr": 1e-4,
        "batch_size": 64,
        "epochs": 500,
        "patience": 6,
        "warmup": 0.0,
        "grad_clip": 1.0,
        "weight_decay": 0.0,
    }
    # MMSA's misa grid (the MISA authors' repository fixes one config); its one learning rate drives the BERT
    # encoder too (lr = encoder_lr, as in train_defaults); grad_clip -1 (off) → 0; sp_weight has no counterpart.
    search_space = SearchSpace(
        source="MMSA's src/MMSA/config/config_tune.json, misa.debugParams (github.com/thuiar/MMSA)",
        params={"batch_size": Choice(16, 32, 64), "lr,encoder_lr": Choice((1e-4, 1e-4), (1e-3, 1e-3), (5e-4, 5e-4)),
                "hidden": Choice(64, 128, 256), "dropout": Choice(0.5, 0.2, 0.0),
                "reverse_grad_weight": Choice(0.5, 0.8, 1.0), "diff_weight": Choice(0.1, 0.3, 0.5),
                "sim_weight": Choice(0.5, 0.8, 1.0), "recon_weight": Choice(0.5, 0.8, 1.0),
                "grad_clip": Choice(0.0, 0.8, 1.0), "weight_decay": Choice(0.0, 5e-5, 0.002)})

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        visual_encoder: MISASequenceEncoder | None,
        acoustic_encoder: MISASequenceEncoder | None,
        shared_private: MISASharedPrivate,
        fusion: MISAFusion,
        discriminator: ModalityDiscriminator | None = None,
        diff_weight: float = 0.3,
        sim_weight: float = 1.0,
        recon_weight: float = 1.0,
        cmd_moments: int = 5,
    ) -> None:
        super().__init__()
        if min(diff_weight, sim_weight, recon_weight) < 0:
            raise ValueError(
                f"MISA loss weights must be ≥ 0, got diff={diff_weight}, sim={sim_weight}, recon={recon_weight}"
            )
        self.encoder = encoder
        self.visual_encoder = visual_encoder
        self.acoustic_encoder = acoustic_encoder
        self.shared_private = shared_private
        # the present modalities in MISA's (t, v, a) order, as the shared/private tuples hold them
        self.modalities = tuple(m for m, enc in zip(MODALITIES, (True, visual_encoder, acoustic_encoder))
                                if enc is not None)
        self.fusion = fusion
        self.discriminator = discriminator
        self.diff_weight, self.sim_weight, self.recon_weight = diff_weight, sim_weight, recon_weight
        self.cmd = CMDLoss(n_moments=cmd_moments)
        self.diff = DiffLoss()
        self.recon = ReconLoss()

    def auxiliary_losses(self, sp: SharedPrivateOutput) -> dict:
        """Unweighted ``diff``, ``sim`` and ``recon`` losses of MISA's solver (``get_*_loss``); with an absent
        modality its terms drop out (no ``sim`` with text alone)."""
        present = self.modalities
        if present == MODALITIES:
            (p_t, p_v, p_a), (s_t, s_v, s_a) = sp.private, sp.shared
            diff = (
                self.diff(p_t, s_t) + self.diff(p_v, s_v) + self.diff(p_a, s_a)
                + self.diff(p_a, p_t) + self.diff(p_a, p_v) + self.diff(p_t, p_v)
            )
            sim = None
            if self.discriminator is None:
                sim = (self.cmd(s_t, s_v) + self.cmd(s_t, s_a) + self.cmd(s_a, s_v)) / 3.0
        else:
            p, s = dict(zip(present, sp.private)), dict(zip(present, sp.shared))
            # the authors' pairs, in their order, without those of an absent modality
            private_pairs = [(x, y) for x, y in (("a", "t"), ("a", "v"), ("t", "v")) if x in p and y in p]
            shared_pairs = [(x, y) for x, y in (("t", "v"), ("t", "a"), ("a", "v")) if x in s and y in s]
            diff = sum(self.diff(p[m], s[m]) for m in present) + sum(self.diff(p[x], p[y]) for x, y in private_pairs)
            sim = None
            if self.discriminator is None and shared_pairs:
                sim = sum(self.cmd(s[x], s[y]) for x, y in shared_pairs) / float(len(shared_pairs))
        if self.discriminator is not None and len(sp.shared) > 1:
            logits = torch.cat([self.discriminator(s) for s in sp.shared], dim=0)
            domains = torch.arange(len(sp.shared), device=logits.device).repeat_interleave(sp.shared[0].shape[0])
            sim = F.cross_entropy(logits, domains)
        recon = sum(self.recon(r, u) for r, u in zip(sp.recon, sp.projected)) / float(len(present))
        out = {"diff": diff, "sim": sim, "recon": recon}
        return {k: v for k, v in out.items() if v is not None}

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T_a, d_a)``, visual
        ``(B, T_v, d_v)`` (``None`` when absent; the model is then built without it); masks ``(B, T)`` bool, True =
        real token (right padding).

        Returns :class:`ModelOutput`: ``prediction (B,)``; ``loss_terms`` ``diff``, ``sim``, ``recon`` (weighted;
        empty without labels; no ``sim`` with text alone); ``features (B, 2 · n · hidden)`` (``n`` present
        modalities, 3 when all are).
        """
        batch.require(self.modalities, model="misa")
        hidden = self.encoder(batch.input_ids, batch.mask, batch.token_type_ids).last_hidden_state
        text = masked_mean(hidden, batch.mask)
        streams = []
        for encoder, x, mask in ((self.visual_encoder, batch.visual, batch.v_mask),
                                 (self.acoustic_encoder, batch.acoustic, batch.a_mask)):
            streams.append(None if encoder is None else encoder(x, mask))
        sp = self.shared_private(text, *streams)
        fused = self.fusion(sp.private, sp.shared)
        loss_terms = {}
        if batch.label is not None:
            raw = self.auxiliary_losses(sp)
            weights = {"diff": self.diff_weight, "sim": self.sim_weight, "recon": self.recon_weight}
            loss_terms = {name: weights[name] * value for name, value in raw.items()}
        return ModelOutput(prediction=fused.prediction.squeeze(-1), loss_terms=loss_terms, features=fused.fused)

# -- slots: misa's replaceable blocks and their contracts ------------------------------------------------------
def _sequence_encoder(block, kw, ctx):
    width = width_attr(block, "out_dim")
    if isinstance(width, str):
        return width
    return shape_problem(block(probe_seq(kw["d_in"]), probe_mask()), (PROBE_BATCH, width))


def _shared_private(block, kw, ctx):
    visual, acoustic = present_vec(kw["d_visual"]), present_vec(kw["d_acoustic"])
    count = 1 + (visual is not None) + (acoustic is not None)
    out = block(probe_vec(kw["d_text"]), visual, acoustic)
    for name in ("projected", "private", "shared", "recon"):
        parts = getattr(out, name, None)
        if not isinstance(parts, tuple) or len(parts) != count:
            return f"its output has no field {name!r} holding a tuple of the {count} present modalities (t, v, a order)"
        for part in parts:
            problem = shape_problem(part, (PROBE_BATCH, kw["hidden"]), f"field {name!r}")
            if problem:
                return problem
    return None


def _misa_fusion(block, kw, ctx):
    h, count = kw["hidden"], ctx.get("num_modalities", 3)
    out = block(tuple(probe_vec(h) for _ in range(count)), tuple(probe_vec(h) for _ in range(count)))
    if not hasattr(out, "prediction") or not hasattr(out, "fused"):
        return "its output has no fields 'prediction' and 'fused'"
    problem = shape_problem(out.prediction, (PROBE_BATCH, kw["d_out"]), "field 'prediction'")
    if problem:
        return problem
    fused = out.fused
    if not isinstance(fused, torch.Tensor) or fused.dim() != 2 or fused.shape[0] != PROBE_BATCH:
        return f"its field 'fused' should be (B, F), got {getattr(fused, 'shape', type(fused).__name__)}"
    return None


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


@register("misa", kind="model")
@model_slots("misa", text_encoder_slot(), misa_encoder_slot("visual_encoder"), misa_encoder_slot("acoustic_encoder"),
             MISA_SHARED_PRIVATE, MISA_FUSION)
@text_model_factory
def build_misa(
    text: TextModelArgs,
    *,
    hidden: int = 128,
    dropout: float = 0.5,
    diff_weight: float = 0.3,
    sim_weight: float = 1.0,
    recon_weight: float = 1.0,
    use_cmd_sim: bool = True,
    reverse_grad_weight: float = 1.0,
    cmd_moments: int = 5,
    visual_encoder: SlotValue = "misa_sequence_encoder",
    acoustic_encoder: SlotValue = "misa_sequence_encoder",
    shared_private: SlotValue = "misa_shared_private",
    fusion: SlotValue = "misa_fusion",
) -> MISA:
    """MISA(B) (Hazarika et al., 2020): shared/private subspaces with CMD, difference and reconstruction losses.

    ``modalities``: the present ones; an absent modality's encoders and loss terms drop out.
    """
    present = parse_modalities(text.modalities)
    misa_order = tuple(m for m in MODALITIES if m in present)  # MISA's (t, v, a) order
    encoder = text.build_encoder(build_misa)
    visual = build_block(build_misa, "visual_encoder", visual_encoder, d_in=text.d_visual) if "v" in present else None
    acoustic = build_block(build_misa, "acoustic_encoder", acoustic_encoder, d_in=text.d_acoustic) \
        if "a" in present else None
    discriminator = None
    if not use_cmd_sim:
        discriminator = ModalityDiscriminator(hidden=hidden, dropout=dropout, reverse_grad_weight=reverse_grad_weight,
                                              num_modalities=len(present))
    return MISA(
        encoder=encoder,
        visual_encoder=visual,
        acoustic_encoder=acoustic,
        shared_private=build_block(
            build_misa, "shared_private", shared_private, d_text=encoder.hidden_size,
            d_visual=visual.out_dim if visual else 0, d_acoustic=acoustic.out_dim if acoustic else 0, hidden=hidden,
            # only a subset is forwarded: with every modality present a block need not take ``modalities``
            options=dict(modalities=misa_order) if len(present) < len(MODALITIES) else {},
        ),
        fusion=build_block(build_misa, "fusion", fusion, hidden=hidden, d_out=1,
                           options=dict(dropout=dropout, num_modalities=len(present)),
                           context=dict(num_modalities=len(present))),
        discriminator=discriminator,
        diff_weight=diff_weight,
        sim_weight=sim_weight,
        recon_weight=recon_weight,
        cmd_moments=cmd_moments,
    )
