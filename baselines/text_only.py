"""``text`` — the text-only control: BERT encoder, masked mean pool over word pieces, linear regression.

No published MSA table reports it, yet on CMU-MOSI a fine-tuned BERT alone is a strong baseline, and every
fusion model should be measured against it. The nonverbal channels of the batch are ignored.

Training defaults follow the usual BERT fine-tuning recipe: AdamW, lr 5e-5, batch 32, 4 epochs, 10 %
linear warm-up, model selected on the validation split.
"""
from __future__ import annotations

from torch import nn

from fusionkit.components.attention import masked_mean
from fusionkit.data.batch import MultimodalBatch
from fusionkit.encoders.bert import BertEncoder
from fusionkit.registry import register
from fusionkit.search import Choice, SearchSpace
from fusionkit.slots import HEAD, SlotValue, build_block, model_slots, text_encoder_slot
from fusionkit.text_model import TextModelArgs, text_model_factory
from fusionkit.types import ModelOutput


class TextOnly(nn.Module):
    train_defaults = {"lr": 5e-5, "encoder_lr": 5e-5, "batch_size": 32, "epochs": 4, "warmup": 0.1, "grad_clip": 1.0}
    # BERT fine-tuning grid of Devlin et al. (2019), appendix A.3 (lr {2, 3, 5}e-5, batch {16, 32}) for the
    # encoder; head lr and dropout: documented choice spanning train_defaults (the same values as mhmf's).
    search_space = SearchSpace(
        source="Devlin et al. 2019 (BERT) appendix A.3 fine-tuning grid for encoder_lr and batch_size; lr of the "
               "head and dropout: fusionkit's documented choice around train_defaults, shared with mhmf",
        params={"encoder_lr": Choice(2e-5, 3e-5, 5e-5), "lr": Choice(5e-5, 1e-4, 2e-4),
                "batch_size": Choice(16, 32), "dropout": Choice(0.0, 0.1, 0.2)})

    def __init__(self, *, encoder: BertEncoder, head: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = head

    def forward(self, batch: MultimodalBatch) -> ModelOutput:
        """``batch``: :class:`MultimodalBatch` (text fields ``(B, T)``; mask True = real token).

        Returns :class:`ModelOutput` with ``prediction (B,)``, no loss terms, ``features (B, H)``.
        """
        hidden = self.encoder(batch.input_ids, batch.mask, batch.token_type_ids).last_hidden_state
        pooled = masked_mean(hidden, batch.mask)
        return ModelOutput(prediction=self.head(pooled), loss_terms={}, features=pooled)


@register("text", kind="model")
@model_slots("text", text_encoder_slot(), HEAD)
@text_model_factory
def build_text(
    text: TextModelArgs,
    *,
    dropout: float = 0.1,
    head: SlotValue = "regression_head",
) -> TextOnly:
    """Text-only control: fine-tuned BERT, masked mean pool, linear. ``modalities`` does not change it (it reads
    the text only, which every subset has)."""
    encoder = text.build_encoder(build_text)
    return TextOnly(encoder=encoder, head=build_block(build_text, "head", head, d_in=encoder.hidden_size,
                                                      options=dict(dropout=dropout)))
