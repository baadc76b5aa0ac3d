"""``mult`` — MulT: Multimodal Transformer, with BERT features as its text sequence.

Paper: Tsai, Bai, Liang, Kolter, Morency, Salakhutdinov, "Multimodal Transformer for Unaligned Multimodal
Language Sequences", ACL 2019. Follows ``MULTModel`` in ``src/models.py`` (with ``modules/``) of
https://github.com/yaohungt/Multimodal-Transformer:

* text input dropout (``embed_dropout``), then 1-D conv projections of language / audio / vision to ``d``
  (:class:`TemporalConvProjection`, skipped when a modality already has width ``d``);
* for each target modality two crossmodal transformers (e.g. A → L and V → L,
  :class:`~fusionkit.components.crossmodal.CrossmodalTransformer`), their outputs concatenated (``2d``) and fed to
  a self-attention memory transformer with ``max(layers, 3)`` layers;
* the last step of each memory output, concatenated (``6d``), a residual block
  ``proj2(Dropout(ReLU(proj1(h)))) + h`` and ``out_layer`` to the score.
As in the authors' ``get_network``, a crossmodal transformer's attention dropout is that of its *source*
modality (``attn_dropout`` for language, ``attn_dropout_a`` for audio, ``attn_dropout_v`` for vision) and the
memory transformers use ``attn_dropout``. ``targets`` selects the authors' partial modes (``lonly`` …).

Defaults for CMU-MOSI: ``d = 30`` and conv kernel 1 are hard-coded in the authors' ``src/models.py``; the values
``main.py`` takes as flags come from the paper's Table 5 for CMU-MOSI (``main.py``'s own defaults are for
unaligned CMU-MOSEI: 5 layers, 5 heads, embedding dropout 0.25, output dropout 0): 4 crossmodal layers, 10
heads, textual embedding dropout 0.2, crossmodal attention dropout 0.2, output dropout 0.1, with ``main.py``'s
``attn_dropout_a = attn_dropout_v = 0``, ``relu_dropout = res_dropout = 0.1`` and the future mask on
(``--attn_mask`` defaults to True); Adam lr 1e-3, batch 128, gradient-norm clip 0.8, 100 epochs.

Departures from the authors' code, and why:

* Text: the shared ``bert_encoder``'s last layer (fine-tuned, ``encoder_lr`` 5e-5) is the language sequence
  (``orig_d_l`` = BERT width) instead of GloVe vectors — the library's common text path.
* Variable lengths: the authors' sequences have a fixed length and no padding mask (their position table treats
  steps whose first feature is exactly 0 as padding). Here padded keys are masked (``batch.mask``,
  ``batch.a_mask``, ``batch.v_mask``; unaligned audio/vision work), padded steps get no position, and "the last
  step" is each sample's last *real* step (the authors take index −1 of their left-padded arrays, i.e. the last
  word). Padded steps enter the temporal convolution as zero rows (the authors' padding rows are zero vectors),
  so with a kernel wider than 1 a real step never reads BERT's states at [PAD].
* During training the authors draw separate embedding-dropout masks for keys and values of the source (two
  copies of one tensor); here one dropout mask serves both, as keys and values come from one tensor.
* Training: fusionkit's engine optimises MSE (the authors: L1) with AdamW without weight decay and a linear
  schedule (the authors: Adam with ReduceLROnPlateau, patience 20, factor 0.1).
* ``features`` (for probing) is the concatenated last steps ``(B, 6d)`` (the authors' ``last_hs``).

Absent modalities (``modalities``, e.g. ``("t", "a")``): the crossmodal transformers whose source or target is
absent drop out, so each present target gets one crossmodal transformer per other present modality and its
memory transformer is ``d · (n − 1)`` wide (``n`` present modalities); an absent modality is no target.
Text alone leaves no crossmodal pair: refused (use ``text``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.components.crossmodal import TemporalConvProjection
from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import parse_modalities
from fusionkit.encoders.bert import BertEncoder
from fusionkit.registry import register
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import (
    PROBE_BATCH,
    PROBE_LEN,
    build_block,
    cross_attention_slot,
    model_slots,
    probe_mask,
    probe_seq,
    shape_problem,
    Slot,
    SlotValue,
    text_encoder_slot,
)
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.types import ModelOutput

MODALITIES = ("l", "a", "v")
BATCH_MODALITY = {"l": "t", "a": "a", "v": "v"}  # MulT's names → fusionkit's (t, a, v)


def last_real_step(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``x``: ``(B, T, d)``, ``mask``: ``(B, T)`` bool, True = real (right padding) → ``(B, d)`` at each last real step."""
    last = (mask.long().sum(dim=1) - 1).clamp(min=0)
    return x[torch.arange(x.shape[0], device=x.device), last]


class MulT(nn.Module):
    """Directional crossmodal transformers into each target modality, memory transformers, residual head."""

    train_defaults = {
        "lr": 1e-3,
        "encoder_lr": 5e-5,
        "batch_size": 128,
        "epochs": 100,
        "warmup": 0.0,
        "grad_clip": 0.8,
        "weight_decay": 0.0,
    }
    # MMSA's mult grid (the MulT paper lists one setting per dataset, no grid); dst_feature_dim_nheads →
    # (d_model, heads), nlevels → layers, output_dropout → out_dropout; its three conv1d kernel sizes are one
    # kernel_size here; text_dropout (its BERT) and patience (the study's budget) are left out.
    search_space = SearchSpace(
        source="MMSA's src/MMSA/config/config_tune.json, mult.debugParams (github.com/thuiar/MMSA)",
        params={"attn_dropout_a": Choice(0.0, 0.1, 0.2), "attn_dropout_v": Choice(0.0, 0.1, 0.2),
                "relu_dropout": Choice(0.0, 0.1, 0.2), "embed_dropout": Choice(0.0, 0.1, 0.2),
                "res_dropout": Choice(0.0, 0.1, 0.2),
                "d_model,heads": Choice((30, 6), (30, 10), (32, 8), (36, 6), (40, 5), (40, 8), (40, 10), (50, 10)),
                "batch_size": Choice(4, 8, 16), "lr": Choice(5e-4, 1e-3, 2e-3, 5e-3), "layers": Choice(2, 4, 6),
                "kernel_size": Choice(1, 3, 5), "attn_dropout": Choice(0.1, 0.2, 0.3, 0.4, 0.5),
                "out_dropout": Choice(0.1, 0.2, 0.3, 0.4, 0.5), "grad_clip": Choice(0.6, 0.8, 1.0),
                "weight_decay": Choice(0.0, 0.001, 0.005)})

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        projections: nn.ModuleDict,
        crossmodal: nn.ModuleDict,
        memory: nn.ModuleDict,
        embed_dropout: float,
        out_dropout: float,
        memory_dim: int | None = None,
        modalities: tuple[str, ...] = MODALITIES,
    ) -> None:
        super().__init__()
        self.modalities = tuple(m for m in MODALITIES if m in modalities)
        targets = tuple(m for m in self.modalities if m in memory)
        if not targets or set(memory) - set(self.modalities):
            raise ValueError(f"memory must map some of {self.modalities} to transformers, got {sorted(memory)}")
        for target in targets:
            for source in self.modalities:
                if source != target and f"{target}_with_{source}" not in crossmodal:
                    raise ValueError(f"crossmodal transformer {target}_with_{source} is missing")
        self.targets = targets
        self.encoder = encoder
        self.proj = projections
        self.trans = crossmodal
        self.mem = memory
        self.embed_dropout = embed_dropout
        self.out_dropout = out_dropout
        # memory_dim: width of each memory transformer's output (default: its ``dim`` attribute)
        combined = sum(memory[t].dim if memory_dim is None else memory_dim for t in targets)
        self.proj1 = nn.Linear(combined, combined)
        self.proj2 = nn.Linear(combined, combined)
        self.out_layer = nn.Linear(combined, 1)

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T_a, d_a)``, visual
        ``(B, T_v, d_v)`` (aligned or not; ``None`` when absent, the model then built without it); masks ``(B, T*)``
        bool, True = real step (right padding).

        Returns :class:`ModelOutput`: ``prediction (B,)``, no loss terms, ``features (B, (n − 1)d · len(targets))``
        (``n`` present modalities).
        """
        batch.require([BATCH_MODALITY[m] for m in self.modalities], model="mult")
        text = self.encoder(batch.input_ids, batch.mask, batch.token_type_ids).last_hidden_state
        text = F.dropout(text, p=self.embed_dropout, training=self.training)
        inputs = {"l": text, "a": batch.acoustic, "v": batch.visual}
        masks = {"l": batch.mask, "a": batch.a_mask, "v": batch.v_mask}
        seqs = {m: self.proj[m](inputs[m], masks[m]) for m in self.modalities}
        last = []
        for target in self.targets:
            crossed = [
                self.trans[f"{target}_with_{source}"](seqs[target], seqs[source], masks[target], masks[source])
                for source in self.modalities
                if source != target
            ]
            h = self.mem[target](torch.cat(crossed, dim=-1), mask=masks[target])
            last.append(last_real_step(h, masks[target]))
        last_hs = torch.cat(last, dim=-1)
        hidden = self.proj2(F.dropout(F.relu(self.proj1(last_hs)), p=self.out_dropout, training=self.training))
        prediction = self.out_layer(hidden + last_hs).squeeze(-1)
        return ModelOutput(prediction=prediction, loss_terms={}, features=last_hs)

# -- slots: mult's replaceable blocks and their contracts ------------------------------------------------------
def _self_memory(block, kw, ctx):
    d = kw["dim"]
    return shape_problem(block(probe_seq(d), mask=probe_mask()), (PROBE_BATCH, PROBE_LEN, d))


MULT_OPTIONS = ("heads", "layers", "attn_dropout", "relu_dropout", "res_dropout", "embed_dropout", "attn_mask")
MULT_CROSSMODAL = cross_attention_slot("crossmodal", kind="adapter", default="crossmodal_transformer", d_key="dim",
                                       options=MULT_OPTIONS, note="one block per (target, source) pair")
MULT_MEMORY = Slot("memory", "adapter", "crossmodal_transformer", ("dim",),
                   "forward(x (B, T, dim), mask=mask (B, T)) with dim = (present modalities − 1) · d_model", "(B, T, dim)",
                   options=MULT_OPTIONS + ("self_attention",), note="one block per target modality",
                   dry_run=_self_memory)


@register("mult", kind="model")
@model_slots("mult", text_encoder_slot(), MULT_CROSSMODAL, MULT_MEMORY)
@text_model_factory
def build_mult(
    text: TextModelArgs,
    *,
    d_model: int = 30,
    heads: int = 10,
    layers: int = 4,
    kernel_size: int = 1,
    attn_dropout: float = 0.2,
    attn_dropout_a: float = 0.0,
    attn_dropout_v: float = 0.0,
    relu_dropout: float = 0.1,
    res_dropout: float = 0.1,
    embed_dropout: float = 0.2,
    out_dropout: float = 0.1,
    attn_mask: bool = True,
    targets: tuple[str, ...] = MODALITIES,
    crossmodal: SlotValue = "crossmodal_transformer",
    memory: SlotValue = "crossmodal_transformer",
) -> MulT:
    """MulT (Tsai et al., 2019): crossmodal transformers over BERT, audio and vision sequences.

    ``modalities``: the present ones (fusionkit's ``t``, ``a``, ``v``); pairs with an absent one drop out.
    """
    targets = tuple(targets)
    if not targets or any(t not in MODALITIES for t in targets) or len(set(targets)) != len(targets):
        raise ValueError(f"targets must be distinct modalities among {MODALITIES} ('l' text, 'a' audio, 'v' vision), got {targets}")
    present = parse_modalities(text.modalities)
    if present == ("t",):
        raise ValueError("mult pairs modalities in crossmodal transformers and text alone leaves no pair; use "
                         "modalities with a or v (e.g. t,a), or the text-only model 'text'")
    present = tuple(m for m in MODALITIES if BATCH_MODALITY[m] in present)
    absent_targets = [t for t in targets if t not in present]
    if absent_targets and targets != MODALITIES:
        raise ValueError(f"targets {targets} include {absent_targets}, which modalities={text.modalities} lacks")
    targets = tuple(t for t in targets if t in present)
    encoder = text.build_encoder(build_mult)
    d_in = {"l": encoder.hidden_size, "a": text.d_acoustic, "v": text.d_visual}
    source_dropout = {"l": attn_dropout, "a": attn_dropout_a, "v": attn_dropout_v}
    source_param = {"l": "attn_dropout", "a": "attn_dropout_a", "v": "attn_dropout_v"}
    common = dict(relu_dropout=relu_dropout, res_dropout=res_dropout, embed_dropout=embed_dropout, attn_mask=attn_mask)
    projections = nn.ModuleDict(
        {m: TemporalConvProjection(d_in=d_in[m], d_out=d_model, kernel_size=kernel_size) for m in present}
    )
    crossmodal_blocks = nn.ModuleDict(
        {
            f"{t}_with_{s}": build_block(
                build_mult, "crossmodal", crossmodal, dim=d_model,
                options=dict(heads=heads, layers=layers, attn_dropout=source_dropout[s], **common),
                sources=dict(attn_dropout=source_param[s]),
            )
            for t in targets
            for s in present
            if s != t
        }
    )
    memory_layers = max(layers, 3)
    memory_blocks = nn.ModuleDict(
        {
            t: build_block(
                build_mult, "memory", memory, dim=(len(present) - 1) * d_model,
                options=dict(heads=heads, layers=memory_layers, attn_dropout=attn_dropout, self_attention=True,
                             **common),
            )
            for t in targets
        }
    )
    return MulT(
        encoder=encoder,
        projections=projections,
        crossmodal=crossmodal_blocks,
        memory=memory_blocks,
        embed_dropout=embed_dropout,
        out_dropout=out_dropout,
        memory_dim=(len(present) - 1) * d_model,
        modalities=present,
    )
