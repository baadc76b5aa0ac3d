"""``mag`` — MAG-BERT: BERT with a Multimodal Adaptation Gate after the embeddings.

Paper: Rahman, Hasan, Lee, Zadeh, Mao, Morency, Hoque, "Integrating Multimodal Information in Large Pretrained
Transformers", ACL 2020. Follows ``MAG_BertForSequenceClassification`` in ``bert.py`` / ``modeling.py`` and the
training script ``multimodal_driver.py`` of https://github.com/WasifurRahman/BERT_multimodal_transformer: the
word-piece aligned acoustic/visual features shift the embedding output through
:class:`~fusionkit.components.mag.MultimodalAdaptationGate`, the shifted sequence runs through the BERT layers,
and the prediction is ``classifier(Dropout(pooler([CLS])))`` with BERT's pooler (dense + tanh, pretrained
weights when the text model has them) and BERT's ``hidden_dropout_prob``. As in ``from_pretrained`` there, the
new layers (MAG's linears, the classifier) are initialised like BERT's (normal, std ``initializer_range``; zero
bias).

Defaults (authors' ``multimodal_driver.py``, CMU-MOSI): β (``beta_shift``) 1.0, MAG dropout 0.5, AdamW lr 1e-5
for every parameter with weight decay 0.01 (none on biases and LayerNorm), linear schedule with 10 % warm-up,
batch 48, 40 epochs, MSE loss, max sequence length 50, injection after the embeddings (``injection_layer=0``;
the paper also studies later layers, set ``injection_layer=k`` to inject after layer ``k``).

Departures from the authors' code, and why:

* Text model: the shared ``bert_encoder`` (bundled MiniLM-L6 by default; pass ``text_model`` for
  bert-base-uncased as in the paper) — the library's common text path.
* The pooler comes from the text model's checkpoint through ``transformers`` (``add_pooling_layer=True``), since
  the shared encoder drops it; with ``bert_config`` (tests) or ``encoder_mode="random"`` it is freshly
  initialised.
* Pooling (``pooling``): ``"cls"`` is the authors' head above. ``"mean"`` replaces ``pooler(h_[CLS])`` by the masked
  mean of the last layer (``classifier(Dropout(mean))``, as the ``text`` control). The default ``"auto"`` follows
  the text model: ``"mean"`` when its checkpoint declares mean pooling (a sentence-transformers model such as the
  bundled MiniLM, whose [CLS] pooler was never trained: zero bias, weights at their initial scale, so its pooled
  output is ~0.1 in magnitude and the head cannot reach the label scale at the authors' lr), ``"cls"`` otherwise
  (``bert-base-uncased`` and other plain BERT checkpoints: the authors' head). ``model.pooling`` says which.
* The MAG's LayerNorm starts at (γ = 1, β = 0) as theirs, re-normalising the embedding output; for the bundled
  MiniLM, whose embedding LayerNorm has γ ≈ 0.62, this rescales layer 1's input by ≈ 1.6 at the start of training
  (bert-base's γ is closer to 1). Left as the authors have it.

``mag_mmsa`` is the same model with the defaults of MMSA 2.2.1's ``bert_mag`` (``config_regression.json``,
CMU-MOSI row, and its trainer): MAG dropout (``dropout_prob``) 0.3, the [CLS] pooler head, batch 32, lr 2e-5
for every parameter, no weight decay, no warm-up, a constant learning rate, an L1 loss and early stopping on
the validation loss after 8 epochs without improvement. It exists so that results can be compared with
MMSA's published tables; ``mag`` keeps the authors' recipe. On ``mosi-sim`` (4 epochs, MiniLM-L6) the two
recipes differ by far more than the seed spread, see docs/results.md.

Absent modalities (``modalities``, e.g. ``("t", "a")``): the gate is built without the absent modality, whose
term of ``H`` is then absent (see :mod:`fusionkit.components.mag`). Text alone is refused (nothing shifts it).
"""
from __future__ import annotations

from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import parse_modalities
from fusionkit.encoders.bert import BertEncoder, auto_pooling, resolve_text_model
from fusionkit.registry import register, register_variant
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import (
    PROBE_BATCH,
    PROBE_LEN,
    build_block,
    model_slots,
    present_seq,
    probe_seq,
    shape_problem,
    Slot,
    SlotValue,
    text_encoder_slot,
)
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.types import ModelOutput

POOLINGS = ("auto", "cls", "mean")


class MAGBert(nn.Module):
    """BERT with MAG injected into its hidden states; ``classifier(Dropout(pooler(h_[CLS])))``, or with
    ``pooler=None`` ``classifier(Dropout(masked_mean(h)))`` (``pooling == "mean"``)."""

    train_defaults = {
        "lr": 1e-5,
        "encoder_lr": 1e-5,
        "batch_size": 48,
        "epochs": 40,
        "warmup": 0.1,
        "grad_clip": 0.0,
        "weight_decay": 0.01,
    }
    # MMSA's bert_mag grid: one learning rate for BERT and the new layers (lr = encoder_lr), dropout_prob →
    # dropout, beta_shift fixed at 1 there and so here.
    search_space = SearchSpace(
        source="MMSA's src/MMSA/config/config_tune.json, bert_mag.debugParams (github.com/thuiar/MMSA)",
        params={"batch_size": Choice(32, 48, 64), "lr,encoder_lr": Choice((2e-5, 2e-5), (5e-5, 5e-5), (1e-4, 1e-4),
                                                                          (1e-5, 1e-5)),
                "beta_shift": Choice(1.0), "dropout": Choice(0.1, 0.2, 0.3, 0.4)})

    def __init__(self, *, encoder: BertEncoder, pooler: nn.Module | None, dropout: float) -> None:
        super().__init__()
        if getattr(encoder, "injection", None) is None:
            raise ValueError(
                "MAG-BERT needs a bert_encoder built with injection=MultimodalAdaptationGate(...) (see build_mag_bert)"
            )
        self.encoder = encoder
        self.pooler = pooler
        self.pooling = "mean" if pooler is None else "cls"
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(encoder.hidden_size, 1)

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: word-piece aligned :class:`MultimodalBatch` — text ``(B, T)``, acoustic ``(B, T, d_a)``,
        visual ``(B, T, d_v)``; ``mask (B, T)`` bool, True = real token.

        Returns :class:`ModelOutput`: ``prediction (B,)``, no loss terms, ``features (B, H)`` (pooled [CLS], or the
        masked mean of the last layer).
        """
        if not batch.aligned:
            raise ValueError(
                "MAG-BERT shifts each word piece by its own nonverbal features: it needs word-piece aligned "
                "batches (acoustic_mask and visual_mask None); use an aligned dataset for model 'mag'"
            )
        out = self.encoder(
            batch.input_ids,
            batch.mask,
            batch.token_type_ids,
            injection_inputs={"acoustic": batch.acoustic, "visual": batch.visual},
        )
        last = out.last_hidden_state
        pooled = masked_mean(last, batch.mask) if self.pooler is None else self.pooler(last)
        prediction = self.classifier(self.dropout(pooled)).squeeze(-1)
        return ModelOutput(prediction=prediction, loss_terms={}, features=pooled)


def bert_pooler(*, text_model: str | None, config, pretrained: bool) -> nn.Module:
    """BERT's pooler (dense + tanh on the first token); pretrained weights when ``pretrained``."""
    from transformers import AutoModel
    from transformers.models.bert.modeling_bert import BertPooler

    if not pretrained:
        return BertPooler(config)
    model = AutoModel.from_pretrained(resolve_text_model(text_model), local_files_only=True)
    if getattr(model, "pooler", None) is None:
        raise ValueError(
            f"text model {text_model!r} has no pooler, which MAG-BERT's head needs; use a BERT checkpoint or "
            f"encoder_mode='random'"
        )
    return model.pooler


def _init_like_bert(module: nn.Module, std: float) -> None:
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


# MMSA 2.2.1 config_regression.json, bert_mag / mosi, and its trainer: batch 32, lr 2e-5 for every parameter,
# no weight decay, no warm-up, a constant rate (plain Adam(W) without a scheduler), L1 loss, early stop after
# 8 epochs without a lower validation loss.
MMSA_TRAIN_DEFAULTS = {
    "lr": 2e-5,
    "encoder_lr": 2e-5,
    "batch_size": 32,
    "epochs": 40,
    "warmup": 0.0,
    "schedule": "constant",
    "loss": "l1",
    "grad_clip": 0.0,
    "weight_decay": 0.0,
    "patience": 8,
    "select_metric": "loss",
}

# -- slots: mag's replaceable blocks and their contracts -------------------------------------------------------
def _gate(block, kw, ctx):
    d = kw["d_model"]
    out = block(probe_seq(d), present_seq(kw["d_acoustic"]), present_seq(kw["d_visual"]))  # width 0: absent, None
    return shape_problem(out, (PROBE_BATCH, PROBE_LEN, d))


MAG_GATE = Slot("gate", "fusion", "multimodal_adaptation_gate", ("d_model", "d_acoustic", "d_visual"),
                "forward(z (B, T, d_model), acoustic (B, T, d_acoustic), visual (B, T, d_visual))", "(B, T, d_model)",
                options=("beta_shift", "dropout", "layer_norm_eps"),
                note="it runs inside the text encoder on its hidden states (injection); an absent modality has "
                     "width 0 and comes as None", dry_run=_gate)


@register("mag", kind="model")
@model_slots("mag", text_encoder_slot(injection=True), MAG_GATE)
@text_model_factory
def build_mag_bert(
    text: TextModelArgs,
    *,
    beta_shift: float = 1.0,
    dropout: float = 0.5,
    injection_layer: int = 0,
    pooling: str = "auto",
    gate: SlotValue = "multimodal_adaptation_gate",
) -> MAGBert:
    """MAG-BERT (Rahman et al., 2020): Multimodal Adaptation Gate injected into a fine-tuned BERT.

    ``pooling``: ``"cls"`` (the authors' pooler head), ``"mean"``, or ``"auto"`` (the text model's declared
    pooling: ``"mean"`` for the bundled MiniLM, ``"cls"`` for plain BERT checkpoints); see the module docstring.
    ``modalities``: the present ones; an absent modality's term of the gate is absent. MAG shifts the text by the
    nonverbal channels, so text alone is refused (use ``text``).
    """
    present = parse_modalities(text.modalities)
    if present == ("t",):
        raise ValueError("MAG-BERT shifts the text by the nonverbal channels and text alone leaves no shift; use "
                         "modalities with a or v (e.g. t,a), or the text-only model 'text'")
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r} for MAG-BERT; expected one of {', '.join(POOLINGS)}")
    if pooling == "auto":
        pooling = auto_pooling(text.text_model) if text.bert_config is None else "cls"
    if text.bert_config is not None:
        config = text.bert_config
    else:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(resolve_text_model(text.text_model), local_files_only=True)
    gate_block = build_block(
        build_mag_bert, "gate", gate, d_model=config.hidden_size, d_acoustic=text.d_acoustic if "a" in present else 0,
        d_visual=text.d_visual if "v" in present else 0,
        options=dict(beta_shift=beta_shift, dropout=dropout, layer_norm_eps=1e-5),
    )
    encoder = text.build_encoder(
        build_mag_bert, injection=gate_block, injection_layer=injection_layer,
        context=dict(d_acoustic=text.d_acoustic if "a" in present else 0, d_visual=text.d_visual if "v" in present else 0),
    )
    pretrained = text.bert_config is None and text.encoder_mode != "random"
    pooler = None
    if pooling == "cls":
        pooler = bert_pooler(text_model=text.text_model, config=encoder.model.config, pretrained=pretrained)
    model = MAGBert(
        encoder=encoder,
        pooler=pooler,
        dropout=encoder.model.config.hidden_dropout_prob,
    )
    std = encoder.model.config.initializer_range
    if gate == MAG_GATE.default:  # the authors' MAG layers start like BERT's; a swapped gate keeps its own init
        _init_like_bert(gate_block, std)
    _init_like_bert(model.classifier, std)
    if pooler is not None and not pretrained:
        _init_like_bert(pooler, std)
    return model


build_mag_mmsa = register_variant(
    "mag_mmsa", build_mag_bert, dropout=0.3, pooling="cls", train_defaults=MMSA_TRAIN_DEFAULTS,
    doc="MAG-BERT as MMSA 2.2.1's ``bert_mag`` runs it: the ``mag`` model with MAG dropout 0.3 and the [CLS] "
        "pooler head, trained with batch 32, lr 2e-5, no weight decay, no warm-up, a constant rate and an L1 loss "
        "(``MMSA_TRAIN_DEFAULTS``). Only the defaults differ from ``mag`` (same computation; compare with MMSA's "
        "published tables).",
)
