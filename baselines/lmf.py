"""``lmf`` — LMF(B): Low-rank Multimodal Fusion with a fine-tuned BERT text path.

Paper: Liu, Shen, Lakshminarasimhan, Liang, Zadeh, Morency, "Efficient Low-rank Multimodal Fusion with
Modality-Specific Factors", ACL 2018. Follows ``LMF`` in ``model.py`` / ``train_mosi.py`` of
https://github.com/Justin1904/Low-rank-Multimodal-Fusion: the TFN sub-networks (:class:`SubNet` for the
time-averaged audio and video, a text sub-network), then :class:`LowRankFusion` over ``(audio, video, text)``
whose output (``d_out = 1`` for CMU-MOSI) *is* the prediction — no post-fusion network, no output squashing.

Defaults for CMU-MOSI: the repository's ``hyperparams.txt`` has no MOSI row (the authors report in their issue
#1 that the sentiment search record was lost), so sizes and rank come from the paper — audio 32, video 32, text
64, rank 4, output 1 — and the rest from the authors' MOSI script and TFN: dropouts 0.3, Adam with lr 1e-3 for
both the factors and the other parameters (their grid: 3e-4 … 3e-3), batch 32, L1 loss, and ``train_mosi.py``'s
own defaults of 500 epochs with early stopping after 20 epochs without improvement (patience 20).

Departures from the authors' code, and why:

* "(B)" text path: the shared ``bert_encoder`` (fine-tuned, lr 5e-5) replaces GloVe → LSTM; its pooled last layer
  (masked mean by default, or [CLS]) goes through the authors' ``TextSubNet`` tail, Dropout → ``linear_1`` to the
  text size (:class:`fusionkit.components.subnet.TextSubNet`). This is the LMF(B) of the MHMF-BERT comparison.
* The authors build a ``post_fusion_dropout`` (p = 0.5) that their ``forward`` never applies; it is left out.
* Audio/visual are averaged over the real time steps (``masked_mean``) instead of a zero-padded window.
* BERT has its own learning rate (``encoder_lr`` 5e-5), see TFN; the factors share ``lr`` with the other layers
  (the authors allow a separate factor learning rate, equal to it in these defaults).
* Training: the engine optimises the MSE with AdamW (weight decay 0); the authors minimised L1 with Adam.
* ``features`` (for probing) is the concatenation of the three sub-network outputs, the representation LMF fuses.

Absent modalities (``modalities``, e.g. ``("t", "a")``): an absent modality has no sub-network and no factor;
its factor in the rank-wise product is the constant 1, i.e. the low-rank fusion runs over the present modalities
only. Text alone leaves nothing to fuse: refused (use ``text``).
"""
from __future__ import annotations

import torch
from torch import nn

from baselines.tfn import TEXT_SUBNET, check_fusable, unimodal_blocks, unimodal_vectors, vector_subnet_slot
from fusionkit.components.low_rank_fusion import LowRankFusion
from fusionkit.components.subnet import SubNet, TextSubNet
from fusionkit.data.batch import MultimodalBatch
from fusionkit.encoders.bert import BertEncoder
from fusionkit.registry import register
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import build_block, model_slots, SlotValue, text_encoder_slot, vector_fusion_slot
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.types import ModelOutput


class LMF(nn.Module):
    """BERT text vector + audio/video sub-networks → low-rank fusion straight to the sentiment score."""

    train_defaults = {
        "lr": 1e-3,
        "encoder_lr": 5e-5,
        "batch_size": 32,
        "epochs": 500,
        "warmup": 0.0,
        "grad_clip": 0.0,
        "weight_decay": 0.0,
        "patience": 20,
    }
    # MMSA's lmf grid; hidden_dims [text, audio, video] → (audio_hidden, video_hidden), dropouts [audio, video,
    # text] (its fourth, post-fusion entry has no counterpart here), factor_lr has none either (one lr).
    search_space = SearchSpace(
        source="MMSA's src/MMSA/config/config_tune.json, lmf.debugParams (github.com/thuiar/MMSA)",
        params={"audio_hidden,video_hidden": Choice((16, 128), (16, 64), (32, 128), (32, 256), (32, 64)),
                "audio_dropout,video_dropout,text_dropout": Choice((0.3, 0.3, 0.3), (0.2, 0.2, 0.2),
                                                                   (0.4, 0.4, 0.4)),
                "rank": Choice(3, 4, 5, 6), "batch_size": Choice(32, 64, 128),
                "lr": Choice(5e-4, 1e-3, 2e-3, 5e-3), "weight_decay": Choice(0.0, 1e-4, 1e-3, 5e-3)})

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        text_subnet: TextSubNet,
        audio_subnet: SubNet | None,
        video_subnet: SubNet | None,
        fusion: LowRankFusion,
    ) -> None:
        super().__init__()
        if getattr(fusion, "d_out", 1) != 1:
            raise ValueError(f"LMF regresses one score: build its low_rank_fusion with d_out=1, got {fusion.d_out}")
        self.encoder = encoder
        self.text_subnet = text_subnet
        self.audio_subnet = audio_subnet
        self.video_subnet = video_subnet
        self.fusion = fusion

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T_a, d_a)``, visual
        ``(B, T_v, d_v)`` (``None`` when absent; the model is then built without it); masks ``(B, T)`` bool, True =
        real token.

        Returns :class:`ModelOutput`: ``prediction (B,)``, no loss terms, ``features (B, d_a' + d_v' + d_t')``
        (present modalities only).
        """
        vectors = unimodal_vectors(self, batch)
        prediction = self.fusion(*vectors).squeeze(-1)
        return ModelOutput(prediction=prediction, loss_terms={}, features=torch.cat(vectors, -1))

# -- slots: lmf's replaceable blocks and their contracts -------------------------------------------------------
LMF_FUSION = vector_fusion_slot(
    "fusion", default="low_rank_fusion", keywords=("dims", "d_out"), out_key="d_out",
    call="forward(audio (B, d_a), video (B, d_v), text (B, d_t)) with dims=(d_a, d_v, d_t)",
    returns="(B, d_out) with d_out=1, the prediction itself", options=("rank",))


@register("lmf", kind="model")
@model_slots("lmf", text_encoder_slot(), TEXT_SUBNET, vector_subnet_slot("audio_subnet"),
             vector_subnet_slot("video_subnet"), LMF_FUSION)
@text_model_factory
def build_lmf(
    text: TextModelArgs,
    *,
    audio_hidden: int = 32,
    video_hidden: int = 32,
    text_out: int = 64,
    rank: int = 4,
    audio_dropout: float = 0.3,
    video_dropout: float = 0.3,
    text_dropout: float = 0.3,
    text_pooling: str = "mean",
    text_subnet: SlotValue = "text_subnet",
    audio_subnet: SlotValue = "subnet",
    video_subnet: SlotValue = "subnet",
    fusion: SlotValue = "low_rank_fusion",
) -> LMF:
    """LMF(B): Low-rank Multimodal Fusion (Liu et al., 2018) with a fine-tuned BERT text path.

    ``modalities``: the present ones (an absent modality's factor is the constant 1, see the module docstring).
    """
    modalities = check_fusable("lmf", text.modalities)
    has_a, has_v = "a" in modalities, "v" in modalities
    dims = (audio_hidden,) * has_a + (video_hidden,) * has_v + (text_out,)
    return LMF(
        **unimodal_blocks(build_lmf, text, locals()),
        fusion=build_block(build_lmf, "fusion", fusion, dims=dims, d_out=1, options=dict(rank=rank)),
    )
