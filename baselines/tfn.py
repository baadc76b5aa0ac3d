"""``tfn`` — TFN(B): Tensor Fusion Network with a fine-tuned BERT text path.

Paper: Zadeh, Chen, Poria, Cambria, Morency, "Tensor Fusion Network for Multimodal Sentiment Analysis",
EMNLP 2017. Follows the authors' PyTorch code, ``model.py`` / ``train.py`` of
https://github.com/Justin1904/TensorFusionNetworks: audio and video sub-networks (:class:`SubNet`) on
time-averaged features, the 3-way tensor fusion of ``[1; h_a] ⊗ [1; h_v] ⊗ [1; h_t]`` (in that order), and the
post-fusion network ``Dropout → Linear → ReLU → Linear → ReLU → Linear → sigmoid``, rescaled to (−3, 3) by the
fixed range 6 and shift −3. Module names follow theirs (``audio_subnet``, ``video_subnet``, ``text_subnet``,
``post_fusion_layer_1..3``).

Defaults (authors' ``train.py`` for CMU-MOSI): audio hidden 4, video hidden 16, text output 64, dropouts 0.3
(audio, video, text, post-fusion), post-fusion width 32; Adam at its default lr 1e-3, batch 32, 50 epochs with
early stopping on the validation MAE, L1 loss.

Departures from the authors' code, and why:

* "(B)" text path: the shared ``bert_encoder`` (fine-tuned, lr 5e-5) replaces GloVe → LSTM(128). Its last layer
  is pooled (masked mean by default, ``text_pooling="cls"`` for [CLS]) and passed through the authors'
  ``TextSubNet`` tail (Dropout → ``linear_1`` to 64), see :class:`fusionkit.components.subnet.TextSubNet`.
  This is the TFN(B) of the MHMF-BERT comparison.
* Audio/visual are averaged over the *real* time steps (``masked_mean`` with ``batch.a_mask`` / ``batch.v_mask``)
  instead of over the zero-padded window of 20 words; with word-piece aligned batches the zero rows at
  [CLS]/[SEP] are inside the mask and count in the average. The authors' per-dimension max-abs scaling of the
  visual features is a data-preparation step, not part of the model.
* BERT's fine-tuning gets its own learning rate (``encoder_lr`` 5e-5): lr 1e-3 would destroy pretrained BERT.
* Training: fusionkit's engine optimises the MSE with AdamW (here without weight decay, so Adam's update); the
  authors minimised the L1 loss with Adam.

Absent modalities (``modalities``, e.g. ``("t", "a")``): an absent modality has no sub-network and its factor
in the tensor product is the constant 1 of the ``[1; z]`` construction, i.e. the fusion is the outer product of
the present modalities only (same index order). Text alone leaves nothing to fuse: refused (use ``text``).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.components.subnet import SubNet, TextSubNet
from fusionkit.components.tensor_fusion import TensorFusion
from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import parse_modalities
from fusionkit.encoders.bert import BertEncoder
from fusionkit.registry import register
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import (
    PROBE_BATCH,
    build_block,
    model_slots,
    probe_mask,
    probe_seq,
    probe_vec,
    shape_problem,
    Slot,
    SlotValue,
    text_encoder_slot,
    vector_fusion_slot,
)
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.types import ModelOutput

OUTPUT_RANGE = 6.0  # sigmoid output rescaled to the CMU-MOSI label range (-3, 3)
OUTPUT_SHIFT = -3.0



def unimodal_vectors(model: nn.Module, batch: MultimodalBatch) -> tuple[torch.Tensor, ...]:
    """TFN/LMF unimodal stage: ``(audio_h, video_h, text_h)``, each ``(B, d_m)``, without the absent ones.

    ``model`` has ``encoder``, ``text_subnet``, ``audio_subnet`` and ``video_subnet`` (``None`` for an absent
    modality); audio/visual are averaged over their real steps (``batch.a_mask`` / ``batch.v_mask``, True = real)
    before their sub-networks.
    """
    batch.require(("a",) * (model.audio_subnet is not None) + ("v",) * (model.video_subnet is not None),
                  model=type(model).__name__.lower())
    hidden = model.encoder(batch.input_ids, batch.mask, batch.token_type_ids).last_hidden_state
    text_h = model.text_subnet(hidden, batch.mask)
    out = []
    for subnet, x, mask in ((model.audio_subnet, batch.acoustic, batch.acoustic_mask),
                            (model.video_subnet, batch.visual, batch.visual_mask)):
        if subnet is None:
            continue
        out.append(subnet(masked_mean(x, batch.mask if mask is None else mask)))
    return (*out, text_h)


def check_fusable(model: str, modalities: tuple) -> tuple:
    """``modalities`` parsed; text alone is refused (a fusion of one modality)."""
    modalities = parse_modalities(modalities)
    if modalities == ("t",):
        raise ValueError(f"{model} fuses modalities and text alone leaves nothing to fuse; use modalities with a or v "
                         f"(e.g. t,a), or the text-only model 'text'")
    return modalities


class TFN(nn.Module):
    """BERT text vector + audio/video sub-networks → tensor fusion → 3-layer post-fusion network."""

    train_defaults = {
        "lr": 1e-3,
        "encoder_lr": 5e-5,
        "batch_size": 32,
        "epochs": 50,
        "warmup": 0.0,
        "grad_clip": 0.0,
        "weight_decay": 0.0,
        "patience": 20,
    }
    # MMSA's tfn grid; hidden_dims [text, audio, video] → (audio_hidden, video_hidden) (the text side is BERT
    # here), dropouts [audio, video, text, post-fusion]. The BERT encoder keeps encoder_lr (MMSA: frozen features).
    search_space = SearchSpace(
        source="MMSA's src/MMSA/config/config_tune.json, tfn.debugParams (github.com/thuiar/MMSA)",
        params={"audio_hidden,video_hidden": Choice((16, 128), (16, 64), (32, 128), (32, 64)),
                "text_out": Choice(32, 64, 128, 256), "post_fusion_dim": Choice(16, 32, 64, 128),
                "audio_dropout,video_dropout,text_dropout,post_fusion_dropout": Choice(
                    (0.3, 0.3, 0.3, 0.3), (0.2, 0.2, 0.2, 0.2), (0.4, 0.4, 0.4, 0.4), (0.3, 0.3, 0.3, 0.5)),
                "batch_size": Choice(32, 64, 128), "lr": Choice(5e-4, 1e-3, 2e-3, 5e-3)})

    def __init__(
        self,
        *,
        encoder: BertEncoder,
        text_subnet: TextSubNet,
        audio_subnet: SubNet | None,
        video_subnet: SubNet | None,
        fusion: TensorFusion,
        post_fusion_dim: int,
        post_fusion_dropout: float,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.text_subnet = text_subnet
        self.audio_subnet = audio_subnet
        self.video_subnet = video_subnet
        self.fusion = fusion
        self.post_fusion_dropout = nn.Dropout(post_fusion_dropout)
        self.post_fusion_layer_1 = nn.Linear(fusion.out_dim, post_fusion_dim)
        self.post_fusion_layer_2 = nn.Linear(post_fusion_dim, post_fusion_dim)
        self.post_fusion_layer_3 = nn.Linear(post_fusion_dim, 1)
        self.register_buffer("output_range", torch.tensor([OUTPUT_RANGE]))
        self.register_buffer("output_shift", torch.tensor([OUTPUT_SHIFT]))

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T_a, d_a)``, visual
        ``(B, T_v, d_v)`` (``None`` when absent; the model is then built without it); masks ``(B, T)`` bool,
        True = real token.

        Returns :class:`ModelOutput`: ``prediction (B,)`` in (−3, 3), no loss terms, ``features (B,
        post_fusion_dim)`` (the second post-fusion layer).
        """
        fused = self.fusion(*unimodal_vectors(self, batch))
        y_1 = F.relu(self.post_fusion_layer_1(self.post_fusion_dropout(fused)))
        y_2 = F.relu(self.post_fusion_layer_2(y_1))
        y_3 = torch.sigmoid(self.post_fusion_layer_3(y_2))
        prediction = (y_3 * self.output_range + self.output_shift).squeeze(-1)
        return ModelOutput(prediction=prediction, loss_terms={}, features=y_2)

# -- slots: tfn and lmf's replaceable blocks and their contracts -----------------------------------------------
def _vector_subnet(block, kw, ctx):
    return shape_problem(block(probe_vec(kw["d_in"])), (PROBE_BATCH, kw["d_hidden"]))


def _text_subnet(block, kw, ctx):
    return shape_problem(block(probe_seq(kw["d_in"]), probe_mask()), (PROBE_BATCH, kw["d_out"]))


# the text and vector sub-networks are shared by tfn and lmf (lmf imports them from here)
TEXT_SUBNET = Slot("text_subnet", "adapter", "text_subnet", ("d_in", "d_out"),
                   "forward(hidden (B, T, d_in), mask (B, T))", "(B, d_out)", options=("dropout", "pooling"),
                   dry_run=_text_subnet)


def vector_subnet_slot(name: str) -> Slot:
    return Slot(name, "adapter", "subnet", ("d_in", "d_hidden"), "forward(x (B, d_in)) on the masked time average",
                "(B, d_hidden)", options=("dropout",), dry_run=_vector_subnet)


TFN_FUSION = vector_fusion_slot(
    "fusion", default="tensor_fusion", keywords=("dims",),
    call="forward(audio (B, d_a), video (B, d_v), text (B, d_t)) with dims=(d_a, d_v, d_t)", returns="(B, out_dim)",
    note="it has an int attribute out_dim (the post-fusion network's input width)")


@register("tfn", kind="model")
@model_slots("tfn", text_encoder_slot(), TEXT_SUBNET, vector_subnet_slot("audio_subnet"),
             vector_subnet_slot("video_subnet"), TFN_FUSION)
@text_model_factory
def build_tfn(
    text: TextModelArgs,
    *,
    audio_hidden: int = 4,
    video_hidden: int = 16,
    text_out: int = 64,
    audio_dropout: float = 0.3,
    video_dropout: float = 0.3,
    text_dropout: float = 0.3,
    post_fusion_dropout: float = 0.3,
    post_fusion_dim: int = 32,
    text_pooling: str = "mean",
    text_subnet: SlotValue = "text_subnet",
    audio_subnet: SlotValue = "subnet",
    video_subnet: SlotValue = "subnet",
    fusion: SlotValue = "tensor_fusion",
) -> TFN:
    """TFN(B): Tensor Fusion Network (Zadeh et al., 2017) with a fine-tuned BERT text path.

    ``modalities``: the present ones (an absent modality's factor is the constant 1, see the module docstring).
    """
    if post_fusion_dim <= 0:
        raise ValueError(f"post_fusion_dim must be positive, got {post_fusion_dim}")
    modalities = check_fusable("tfn", text.modalities)
    has_a, has_v = "a" in modalities, "v" in modalities
    dims = (audio_hidden,) * has_a + (video_hidden,) * has_v + (text_out,)
    return TFN(
        **unimodal_blocks(build_tfn, text, locals()),
        fusion=build_block(build_tfn, "fusion", fusion, dims=dims),
        post_fusion_dim=post_fusion_dim,
        post_fusion_dropout=post_fusion_dropout,
    )


def unimodal_blocks(factory, text: TextModelArgs, args: dict) -> dict:
    """TFN/LMF unimodal stage, in construction order: the text encoder, text / audio / video sub-networks from
    the shared ``text`` arguments and the factory's own ``args`` (its slot values, sizes and parsed
    ``modalities``; an absent one: ``None``)."""
    encoder = text.build_encoder(factory)
    return dict(
        encoder=encoder,
        text_subnet=build_block(factory, "text_subnet", args["text_subnet"], d_in=encoder.hidden_size,
                                d_out=args["text_out"], options=dict(dropout=args["text_dropout"],
                                                                     pooling=args["text_pooling"]),
                                sources=dict(dropout="text_dropout", pooling="text_pooling")),
        audio_subnet=build_block(factory, "audio_subnet", args["audio_subnet"], d_in=text.d_acoustic,
                                 d_hidden=args["audio_hidden"], options=dict(dropout=args["audio_dropout"]),
                                 sources=dict(dropout="audio_dropout")) if "a" in args["modalities"] else None,
        video_subnet=build_block(factory, "video_subnet", args["video_subnet"], d_in=text.d_visual,
                                 d_hidden=args["video_hidden"], options=dict(dropout=args["video_dropout"]),
                                 sources=dict(dropout="video_dropout")) if "v" in args["modalities"] else None,
    )
