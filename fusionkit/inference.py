"""Loading a trained checkpoint and scoring new utterances.

>>> model = fusionkit.load("runs/synthetic/mhmf/seed0/best")
>>> model.predict("the movie was really great")            # nonverbal channels missing → zeros + warning
0.93
>>> model.predict(["so", "boring"], acoustic=a, visual=v)   # a: (2, d_a), v: (2, d_v), one row per word
-1.41

Loading rebuilds the model from ``model.json`` (registry name + build arguments, including the block in each
slot; a block whose plug-in is not installed is refused with the plug-in named) and loads
``model.safetensors`` with ``safetensors.torch.load_file`` (never pickle) after checking every tensor name and
shape, so a checkpoint of a different model or configuration fails with one :class:`CheckpointError`.
"""
from __future__ import annotations

import logging
import os
import warnings
from pathlib import Path

import numpy as np
import torch

from fusionkit.slots import check_installed
from fusionkit.build import ModelBuildError, accepted_kwargs, from_json_kwargs, to_json_kwargs
from fusionkit.planning import Plan
from fusionkit.training.checkpoint import MODEL_JSON, MODEL_WEIGHTS, CheckpointError, load_model_weights, read_json

logger = logging.getLogger("fusionkit.inference")


def _find_checkpoint(path: str | os.PathLike) -> Path:
    path = Path(path)
    for candidate in (path, path / "best"):
        if (candidate / MODEL_JSON).is_file():
            return candidate
    raise CheckpointError(f"no checkpoint at {str(path)!r}: expected {MODEL_JSON} and {MODEL_WEIGHTS} there or in "
                          f"its best/ directory (written by fusionkit.training.train_and_evaluate)")


def _check_text(words: list[str], index: int) -> None:
    """Refuse text that is not valid Unicode (a lone surrogate, e.g. from bytes decoded with 'surrogateescape'):
    no tokenizer can encode it, and replacing it silently would change what is scored."""
    for j, word in enumerate(words):
        try:
            word.encode("utf-8")
        except UnicodeEncodeError as e:
            raise ValueError(f"utterance {index}, word {j} ({word!r}) holds {e.object[e.start:e.end]!r}, a lone "
                             f"surrogate that is not valid Unicode text; decode the text with errors='replace' (or "
                             f"drop the character) and predict again") from None


def _check_description(path: Path, description: dict) -> None:
    """``model.json`` against its schema and the ``--set`` typing of its options; a file edited by hand (its
    checksum differs) is allowed, with a warning, since the schema decides."""
    from fusionkit.schemas import check_model_json
    from fusionkit.training import integrity

    why = integrity.problem(path / MODEL_JSON)
    if why is not None:
        warnings.warn(f"{path / MODEL_JSON} was changed after it was written ({why}); using it as edited",
                      UserWarning, stacklevel=3)
    check_model_json(description, path / MODEL_JSON)


def _checked_weights(path: Path) -> Path:
    """``model.safetensors`` after its checksum; when damaged, the byte-identical copy in the run's ``last/``
    (if there is one) is read instead, with a warning; else one CheckpointError naming the file."""
    from fusionkit.training import integrity

    last = path.parent / "last"
    alternatives = sorted(last.glob("model-*.safetensors")) if path.name == "best" and last.is_dir() else []
    return integrity.verify_or_fallback(path / MODEL_WEIGHTS, alternatives, [], restore=False,
                                        log=lambda m: warnings.warn(m, UserWarning, stacklevel=4))


class Predictor:
    """A trained model plus its tokenizer; see :func:`load`."""

    def __init__(self, model: torch.nn.Module, description: dict, tokenizer, device: torch.device) -> None:
        self.model = model.eval()
        self.description = description
        self.tokenizer = tokenizer
        self.device = device
        self.d_acoustic = int(description["d_acoustic"])
        self.d_visual = int(description["d_visual"])
        self.max_seq_length = int(description.get("max_seq_length") or 50)
        self.aligned = bool(description.get("aligned", True))

    @property
    def name(self) -> str:
        return self.description["model"]

    def __repr__(self) -> str:
        return f"Predictor(model={self.name!r}, d_acoustic={self.d_acoustic}, d_visual={self.d_visual})"

    @torch.no_grad()
    def __call__(self, batch):
        """Run the model on a :class:`~fusionkit.data.MultimodalBatch`; returns its ``ModelOutput``."""
        self._check_dims(0 if batch.acoustic is None else batch.acoustic.shape[-1],
                         0 if batch.visual is None else batch.visual.shape[-1], "the batch")
        return self.model(batch.to(self.device))

    def evaluate(self, dataset, *, batch_size: int = 64):
        """Predictions and metrics on a labelled :class:`~fusionkit.data.MultimodalDataset`."""
        from fusionkit.training import evaluate

        self._check_dims(dataset.d_acoustic, dataset.d_visual, f"dataset {getattr(dataset, 'name', '') or ''!r}")
        return evaluate(self.model, dataset, batch_size=batch_size)

    # -- raw inputs ---------------------------------------------------------------------------------------
    def _features(self, given, n_rows: int, dim: int, what: str, index: int) -> np.ndarray:
        if given is not None and dim == 0:
            raise ValueError(f"this {self.name!r} model was trained without the {what} modality; do not pass {what} "
                             f"features")
        if given is None:
            return np.zeros((n_rows if self.aligned or dim else 0, dim), dtype=np.float32)
        arr = np.asarray(given, dtype=np.float32)
        if arr.ndim != 2 or arr.shape[1] != dim or (self.aligned and arr.shape[0] != n_rows):
            rows = f"{n_rows} rows (one per word)" if self.aligned else "any number of rows"
            raise ValueError(f"{what} of sample {index} has shape {arr.shape}; this {self.name!r} model expects "
                             f"{rows} of {dim} features")
        bad = ~np.isfinite(arr)
        if bad.any():  # sanitized as the data loader does (COVAREP writes -inf), and said
            warnings.warn(f"{what} of sample {index}: {int(bad.sum())} NaN/inf values set to 0", UserWarning,
                          stacklevel=3)
            arr = np.where(bad, np.float32(0.0), arr)
        return arr

    def _check_dims(self, d_acoustic: int, d_visual: int, what: str) -> None:
        if (d_acoustic, d_visual) != (self.d_acoustic, self.d_visual):
            raise ValueError(f"{what} has {d_acoustic}-d acoustic and {d_visual}-d visual features, but this "
                             f"{self.name!r} model was trained with {self.d_acoustic}-d and {self.d_visual}-d; use "
                             f"features of the training dataset's kind or a checkpoint trained on this data")

    def predict(self, words, acoustic=None, visual=None, *, batch: bool | None = None, batch_size: int = 64):
        """Sentiment score(s) in about [-3, 3].

        words: one utterance as a string (split on whitespace) or a list of words, or a batch: a list of
            utterances (strings or word lists). A list of strings is read as *one* utterance's words unless
            ``batch=True``.
        acoustic / visual: per-word feature arrays ``(n_words, d)`` (a list of them for a batch); unaligned
            checkpoints take ``(T, d)`` sequences. Missing channels are zeros, with a warning.
        batch_size: utterances per forward pass; a batch is length-bucketed as in training and evaluation
            (:func:`fusionkit.data.loader.length_buckets`), the scores come back in input order.
        Returns a float for one utterance, a list of floats for a batch (also for one string with ``batch=True``).
        Text that is not valid Unicode (a lone surrogate) is refused with a ValueError naming the word.
        """
        from fusionkit.data import build_dataset, collate
        from fusionkit.data.errors import LoadReport
        from fusionkit.data.loader import length_buckets
        from fusionkit.data.segments import RawSegment

        if isinstance(words, str):
            samples, single = [words], not batch  # batch=True: a batch of one utterance, so a list back
        elif isinstance(words, (list, tuple)) and words and all(isinstance(w, str) for w in words) and not batch:
            samples, single = [list(words)], True
        elif isinstance(words, (list, tuple)) and words and all(isinstance(w, (str, list, tuple)) for w in words):
            samples, single = list(words), False
        else:
            raise TypeError("words must be a string, a list of words, or a non-empty list of those")
        samples = [s.split() if isinstance(s, str) else [str(w) for w in s] for s in samples]
        for i, s in enumerate(samples):
            if not s:
                raise ValueError(f"utterance {i} has no words")
            _check_text(s, i)

        def per_sample(value, what):
            if value is None:
                return [None] * len(samples)
            if single:
                return [value]
            if len(value) != len(samples):
                raise ValueError(f"{what}: {len(value)} arrays for {len(samples)} utterances")
            return list(value)

        acoustic_l, visual_l = per_sample(acoustic, "acoustic"), per_sample(visual, "visual")
        dims = {"acoustic": self.d_acoustic, "visual": self.d_visual}
        missing = [what for what, given in (("acoustic", acoustic), ("visual", visual)) if given is None and dims[what]]
        if missing:
            warnings.warn(f"no {' or '.join(missing)} features given: using zeros, so the prediction rests on the "
                          f"other channels (pass per-word arrays for a multimodal prediction)", UserWarning,
                          stacklevel=2)
        segments = []
        for i, ws in enumerate(samples):
            segments.append(RawSegment(
                id=f"input_{i}", words=ws, label=0.0, aligned=self.aligned,
                acoustic=self._features(acoustic_l[i], len(ws), self.d_acoustic, "acoustic", i),
                visual=self._features(visual_l[i], len(ws), self.d_visual, "visual", i)))
        dataset = build_dataset(segments, tokenizer=self.tokenizer, max_seq_length=self.max_seq_length,
                                split="predict", report=LoadReport(), d_acoustic=self.d_acoustic,
                                d_visual=self.d_visual)
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        scores = [0.0] * len(dataset)
        for indices in length_buckets(dataset.lengths, batch_size=batch_size):
            batch_ = collate([dataset[i] for i in indices], max_seq_length=self.max_seq_length,
                             pad_token_id=dataset.pad_token_id, aligned=self.aligned)
            for i, x in zip(indices, self(batch_).prediction.float().cpu().tolist()):
                scores[i] = float(x)
        return scores[0] if single else scores


def load(checkpoint_dir: str | os.PathLike, *, device: str = "cpu", plan=None) -> Predictor:
    """Rebuild the model saved in ``checkpoint_dir`` (a ``best/`` directory or the run directory above it).

    The model is built as a :class:`fusionkit.planning.Plan` (the object the engine and the benchmarks train):
    the one of ``model.json`` (its options checked as :func:`fusionkit.plan` checks them), or ``plan``, a plan of
    the same model whose weights are the checkpoint's (e.g. ``fusionkit.plan(name, data, **options)``).
    """
    from fusionkit.encoders.bert import resolve_text_model
    from fusionkit.training.distributed import resolve_device

    try:
        dev = resolve_device(device)
    except RuntimeError as e:  # torch's message for a malformed device string
        raise ValueError(f"unknown device {device!r} ({e}); use cpu, cuda or cuda:N") from None
    path = _find_checkpoint(checkpoint_dir)
    description = read_json(path / MODEL_JSON)
    for key in ("model", "kwargs", "d_acoustic", "d_visual"):
        if not isinstance(description, dict) or key not in description:
            raise CheckpointError(f"{path / MODEL_JSON} lacks {key!r}; it was not written by fusionkit")
    if not isinstance(description["kwargs"], dict) or not isinstance(description["model"], str):
        raise CheckpointError(f"{path / MODEL_JSON} is malformed ('model' must be a name and 'kwargs' an object); "
                              f"it was not written by fusionkit")
    _check_description(path, description)
    lite = _lite_config(description)
    try:
        kwargs = from_json_kwargs(description["kwargs"] if lite is None else {**description["kwargs"], "bert_config": lite})
    except Exception as e:  # noqa: BLE001 - transformers' config classes raise several types for bad values
        raise CheckpointError(f"{path / MODEL_JSON}: key 'kwargs.bert_config' cannot be read by transformers "
                              f"({type(e).__name__}: {str(e).splitlines()[0][:300]}); restore the file") from None
    name = description["model"]
    try:
        # a block from a plug-in that is not installed: say which, before building anything
        check_installed(name, description.get("composition") or {})
        if plan is None:
            accepted = accepted_kwargs(name)
            if kwargs.get("bert_config") is None and (accepted is None or "bert_config" in accepted):
                # every weight comes from the checkpoint: build the text encoder from its config, skip loading it
                kwargs["bert_config"] = _text_model_config(description, resolve_text_model(kwargs.get("text_model")))
                if kwargs.get("pooling", _default(name, "pooling")) == "auto":
                    # "auto" follows the text model's declared pooling, which a model built from a bare config
                    # cannot see: resolve it as training did (MAG-BERT with the bundled MiniLM: "mean")
                    from fusionkit.encoders.bert import auto_pooling

                    kwargs["pooling"] = auto_pooling(kwargs.get("text_model"))
            plan = Plan(model=name, kwargs=kwargs, composition=description.get("composition") or {})
        elif plan.model != name:
            raise ModelBuildError(f"the plan is for model {plan.model!r}, the checkpoint holds {name!r}")
        else:  # the plan's options are the model's: another value would build (or tokenize) another model
            given = {k: v for k, v in to_json_kwargs(plan.kwargs).items() if k != "bert_config"}
            recorded = {k: v for k, v in description["kwargs"].items() if k != "bert_config"}
            differ = sorted(k for k in given.keys() | recorded.keys() if given.get(k) != recorded.get(k))
            if differ:
                raise ModelBuildError(f"the plan's options differ from the checkpoint's in {', '.join(differ)}; "
                                      f"plan with the options in model.json, or load without a plan")
        model = plan.build()
    except ModelBuildError as e:
        raise CheckpointError(f"cannot rebuild the model described by {path / MODEL_JSON}: {e}") from None
    load_model_weights(model, _checked_weights(path), what=f"{name!r} described by {path / MODEL_JSON}")
    model.to(dev)
    tokenizer = _tokenizer(plan.kwargs.get("text_model"))
    return Predictor(model, description, tokenizer, dev)


def _default(model: str, option: str):
    """The default of ``option`` in the factory of ``model`` (a variant's fixed value included); ``None`` when the
    factory has no such keyword."""
    import inspect

    from fusionkit.build import model_spec

    param = inspect.signature(model_spec(model).factory).parameters.get(option)
    return None if param is None or param.default is inspect.Parameter.empty else param.default


# -- without transformers' model code where it can (fusionkit.encoders.bert_lite) -------------------------------
def _lite_encoder(description: dict) -> bool:
    """Whether the model's text encoder is the built-in ``bert_encoder`` (the block LiteBertModel stands in for)."""
    entry = (description.get("composition") or {}).get("text_encoder")
    if entry is None:
        return description["kwargs"].get("text_encoder", "bert_encoder") == "bert_encoder"
    return isinstance(entry, dict) and entry.get("block") == "bert_encoder" and entry.get("plugin") in (None, "fusionkit")


def _lite_config(description: dict):
    """The recorded ``bert_config`` as a LiteBertConfig when LiteBertModel reproduces it, else ``None``."""
    from fusionkit.build import BERT_CONFIG_KEY
    from fusionkit.encoders.bert_lite import LiteBertConfig, unsupported

    recorded = description["kwargs"].get("bert_config")
    if not isinstance(recorded, dict) or not isinstance(recorded.get(BERT_CONFIG_KEY), dict):
        return None
    why = "the text encoder is not the built-in bert_encoder" if not _lite_encoder(description) else \
        unsupported(recorded[BERT_CONFIG_KEY])
    if why is not None:
        logger.debug("text encoder through transformers' BertModel: %s", why)
        return None
    return LiteBertConfig(recorded[BERT_CONFIG_KEY])


def _text_model_config(description: dict, path: str):
    """The text model's config: a LiteBertConfig when LiteBertModel reproduces it, else transformers'."""
    from fusionkit.encoders.bert_lite import LiteBertConfig, unsupported

    if Path(path).is_dir() and (Path(path) / "config.json").is_file():
        config = LiteBertConfig.from_dir(path)
        why = "the text encoder is not the built-in bert_encoder" if not _lite_encoder(description) else \
            unsupported(config)
        if why is None:
            return config
        logger.debug("text encoder through transformers' BertModel: %s", why)
    from transformers import AutoConfig

    return AutoConfig.from_pretrained(path, local_files_only=True)


def _tokenizer(text_model):
    """The text model's tokenizer: a LiteTokenizer when it reproduces transformers' exactly, else transformers'."""
    from fusionkit.encoders.bert import load_tokenizer, resolve_text_model
    from fusionkit.encoders.bert_lite import lite_tokenizer

    path = Path(resolve_text_model(text_model))
    if path.is_dir():
        tokenizer, why = lite_tokenizer(path)
        if tokenizer is not None:
            return tokenizer
        logger.debug("tokenizer through transformers: %s", why)
    return load_tokenizer(text_model)
