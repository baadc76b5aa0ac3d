from fusionkit.encoders.bert import (
    ENCODER_MODES,
    BertEncoder,
    EncoderOutput,
    TextModelNotFound,
    build_bert_encoder,
    default_text_model,
    load_tokenizer,
    resolve_text_model,
)
from fusionkit.registry import register

register("bert_encoder", kind="encoder")(build_bert_encoder)

__all__ = [
    "ENCODER_MODES",
    "BertEncoder",
    "EncoderOutput",
    "TextModelNotFound",
    "build_bert_encoder",
    "default_text_model",
    "load_tokenizer",
    "resolve_text_model",
]
