"""The ``model.json`` that records how a model was built (its composition included).

The building itself lives in :mod:`fusionkit.build`, below the slots; this module sits above them.
"""
from __future__ import annotations

from fusionkit.build import (BERT_CONFIG_KEY, ModelBuildError, accepted_kwargs, build_model, from_json_kwargs,
                             model_spec, to_json_kwargs)
from fusionkit.slots import resolve_composition

__all__ = ["BERT_CONFIG_KEY", "ModelBuildError", "accepted_kwargs", "build_model", "from_json_kwargs",
           "model_description", "model_spec", "to_json_kwargs"]


def model_description(name: str, kwargs: dict, *, dataset: str | None = None, max_seq_length: int | None = None,
                      aligned: bool = True) -> dict:
    """The content of ``model.json``: enough to rebuild the model and feed it text.

    ``composition``: the block in each slot of the model, ``{slot: {"block", "plugin", "args"}}``
    (:func:`fusionkit.slots.resolve_composition`), so that loading can name a missing plug-in.
    """
    return {
        "format": 1,
        "model": name,
        "kwargs": to_json_kwargs(kwargs),
        "composition": resolve_composition(name, kwargs),
        "text_model": kwargs.get("text_model"),
        "d_acoustic": kwargs.get("d_acoustic"),
        "d_visual": kwargs.get("d_visual"),
        "dataset": dataset,
        "max_seq_length": max_seq_length,
        "aligned": aligned,
    }
