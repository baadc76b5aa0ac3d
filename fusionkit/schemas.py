"""Schemas of every JSON file fusionkit reads back, and the one validator that checks them.

A file that is valid JSON of the wrong shape (a missing key, a string where a number belongs, a negative
dimension, an unknown precision) is refused with one :class:`~fusionkit.training.checkpoint.CheckpointError`
that names the file and the key, before anything uses it.

The schema language is small on purpose: :class:`Num`, :class:`Int`, :class:`Str`, :class:`Bool`,
:data:`ANY`, :class:`List`, :class:`Map` (string keys, one value schema) and :class:`Obj` (required and
optional keys, other keys allowed). Any of them may be ``nullable``.
"""
from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path


def _error(path, where: str, problem: str):
    from fusionkit.training.atomic import CheckpointError

    key = f"key {where!r}" if where else "the top level"
    return CheckpointError(f"{path}: {key} {problem}; the file is damaged or was not written by this fusionkit "
                           f"(restore it, or rerun into a new output directory)")


def _kind(value) -> str:
    if value is None:
        return "null"
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(value), type(value).__name__)


@dataclass(frozen=True)
class Schema:
    nullable: bool = field(default=False, kw_only=True)

    def check(self, value, path, where: str) -> None:
        if value is None:
            if not self.nullable:
                raise _error(path, where, f"is null, expected {self.describe()}")
            return
        self._check(value, path, where)

    def _check(self, value, path, where: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:
        return "a value"


@dataclass(frozen=True)
class _Any(Schema):
    nullable: bool = field(default=True, kw_only=True)

    def _check(self, value, path, where):
        return None


ANY = _Any()


@dataclass(frozen=True)
class Num(Schema):
    """A number (an integer is a number); finite unless ``finite=False``; within ``[lo, hi]``."""

    lo: float | None = None
    hi: float | None = None
    finite: bool = True

    def describe(self):
        return "a number" + (f" ≥ {self.lo}" if self.lo is not None else "") + (f" ≤ {self.hi}" if self.hi is not None
                                                                              else "")

    def _check(self, value, path, where):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _error(path, where, f"is {_kind(value)}, expected {self.describe()}")
        if isinstance(value, float) and not math.isfinite(value):
            if self.finite:
                raise _error(path, where, f"is {value}, expected a finite number")
            return
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise _error(path, where, f"is {value}, expected {self.describe()}")


@dataclass(frozen=True)
class Int(Schema):
    lo: int | None = None
    hi: int | None = None

    def describe(self):
        return "an integer" + (f" ≥ {self.lo}" if self.lo is not None else "") + (f" ≤ {self.hi}" if self.hi is not None
                                                                               else "")

    def _check(self, value, path, where):
        if isinstance(value, bool) or not isinstance(value, int):
            raise _error(path, where, f"is {_kind(value)}, expected {self.describe()}")
        if (self.lo is not None and value < self.lo) or (self.hi is not None and value > self.hi):
            raise _error(path, where, f"is {value}, expected {self.describe()}")


@dataclass(frozen=True)
class Str(Schema):
    choices: tuple = ()
    pattern: str | None = None

    def describe(self):
        return f"one of {', '.join(map(repr, self.choices))}" if self.choices else "a string"

    def _check(self, value, path, where):
        if not isinstance(value, str):
            raise _error(path, where, f"is {_kind(value)}, expected {self.describe()}")
        if self.choices and value not in self.choices:
            raise _error(path, where, f"is {value!r}, expected {self.describe()}")
        if self.pattern is not None and not re.fullmatch(self.pattern, value):
            raise _error(path, where, f"is {value!r}, not of the form {self.pattern}")


@dataclass(frozen=True)
class Bool(Schema):
    def describe(self):
        return "true or false"

    def _check(self, value, path, where):
        if not isinstance(value, bool):
            raise _error(path, where, f"is {_kind(value)}, expected true or false")


@dataclass(frozen=True)
class List(Schema):
    item: Schema = ANY
    min_len: int = 0
    max_len: int | None = None

    def describe(self):
        return "a list"

    def _check(self, value, path, where):
        if not isinstance(value, list):
            raise _error(path, where, f"is {_kind(value)}, expected a list")
        if len(value) < self.min_len or (self.max_len is not None and len(value) > self.max_len):
            size = (f"{self.min_len}" if self.max_len == self.min_len else
                    f"at least {self.min_len}" + (f" and at most {self.max_len}" if self.max_len is not None else ""))
            raise _error(path, where, f"has {len(value)} entries, expected {size}")
        for i, v in enumerate(value):
            self.item.check(v, path, f"{where}[{i}]")


@dataclass(frozen=True)
class Map(Schema):
    value: Schema = ANY

    def describe(self):
        return "an object"

    def _check(self, value, path, where):
        if not isinstance(value, dict):
            raise _error(path, where, f"is {_kind(value)}, expected an object")
        for k, v in value.items():
            self.value.check(v, path, f"{where}.{k}" if where else k)


@dataclass(frozen=True)
class Obj(Schema):
    required: dict = field(default_factory=dict)
    optional: dict = field(default_factory=dict)

    def describe(self):
        return "an object"

    def _check(self, value, path, where):
        if not isinstance(value, dict):
            raise _error(path, where, f"is {_kind(value)}, expected an object")
        for k, schema in self.required.items():
            sub = f"{where}.{k}" if where else k
            if k not in value:
                raise _error(path, sub, "is missing")
            schema.check(value[k], path, sub)
        for k, schema in self.optional.items():
            if k in value:
                schema.check(value[k], path, f"{where}.{k}" if where else k)


# -- the files -----------------------------------------------------------------------------------------------
SHA256 = Str(pattern=r"[0-9a-f]{64}")
SIDECAR = Obj({"file": Str(pattern=r"[^/\\]+"),
               "versions": List(Obj({"sha256": SHA256, "size": Int(lo=0)}), min_len=1, max_len=2)})

METRIC_VALUES = Map(Num(finite=False))  # Corr is NaN for a constant predictor
HISTORY_ENTRY = Obj({"epoch": Int(lo=1), "step": Int(lo=0), "samples_seen": Int(lo=0),
                     "train_loss": Num(), "train_task_loss": Num(), "valid_loss": Num(finite=False),
                     "valid": METRIC_VALUES, "seconds": Num(lo=0), "improved": Bool()},
                    {"train_terms": Map(Num()), "lr": Map(Num(lo=0)), "train_diagnostics": Map(Num(finite=False)),
                     "valid_diagnostics": Map(Num(finite=False))})
CHECKPOINT_FILE = r"(model|optim)-\d{6}\.safetensors"
_U32 = Int(lo=0, hi=2 ** 32 - 1)
RNG_JSON = Obj({"python": List(ANY, min_len=3, max_len=3), "numpy": List(ANY, min_len=4, max_len=4)})
RNG_PYTHON = (Int(lo=1, hi=3), List(_U32, min_len=625, max_len=625), Num(nullable=True))
RNG_NUMPY = (Str(choices=("MT19937",)), Int(lo=0, hi=624), Int(lo=0, hi=1), Num())
STATE = Obj(
    {"format": Int(lo=1, hi=1), "save_number": Int(lo=1),
     "identity": Obj({"model": Str(), "model_json": Map(), "config": Map(), "train_size": Int(lo=1),
                      "world_size": Int(lo=1)}),
     "run": Obj({"epoch": Int(lo=0), "batches_done": Int(lo=0), "global_step": Int(lo=0), "samples_seen": Int(lo=0),
                 "history": List(HISTORY_ENTRY), "best_value": Num(nullable=True, finite=False),
                 "best_epoch": Int(lo=0), "best_valid": METRIC_VALUES, "bad_epochs": Int(lo=0),
                 "stopped_early": Bool(), "finished": Bool(),
                 "epoch_sums": Obj({}, {"loss": Num(), "task": Num(), "n": Num(lo=0), "terms": Map(Num()),
                                        "diagnostics": Map(List(Num(), min_len=2, max_len=2))})}),
     "rng": List(RNG_JSON, min_len=1),
     "epoch_seconds": Num(lo=0),
     "files": Obj({"state": Str(pattern=CHECKPOINT_FILE)}, {"model": Str(pattern=CHECKPOINT_FILE)})},
    {"optimizer": Obj({"param_groups": List(Obj({"params": List(Int(lo=0)), "lr": Num(lo=0)}), min_len=1),
                       "scalars": Map(Map())}),
     "scheduler": Obj({"last_epoch": Int(lo=-1), "base_lrs": List(Num(lo=0))}),
     "scaler": ANY, "best_sha256": Str(pattern=r"[0-9a-f]{64}", nullable=True), "sha256": Map(SHA256)})
RUN_SPEC = Obj({"model": Str(), "kwargs": Map(), "seed": Int(lo=0), "dataset": Str(), "train": Map(),
                "max_samples": Int(lo=1, nullable=True)},
               {"precision": Str(choices=("fp32", "bf16", "fp16")), "composition": Map(), "modalities": Str(),
                "features": List(Str()), "cue_strength": Num(lo=0)})
RESULT = Obj({"model": Str(), "seed": Int(lo=0), "best_epoch": Int(lo=1), "valid": METRIC_VALUES,
              "test": METRIC_VALUES, "config": Map()},
             {"epochs_run": Int(lo=1), "test_prediction_std": Num(lo=0), "test_label_std": Num(lo=0),
              "test_diagnostics": Map(Num(finite=False))})
MODEL_JSON = Obj({"model": Str(pattern=r"[A-Za-z0-9_.\-\[\]]+"), "kwargs": Map(), "d_acoustic": Int(lo=0),
                  "d_visual": Int(lo=0)},
                 {"format": Int(lo=1, hi=1), "composition": Map(Map(), nullable=True),
                  "text_model": Str(nullable=True), "dataset": Str(nullable=True),
                  "max_seq_length": Int(lo=1, hi=100_000, nullable=True), "aligned": Bool()})


# a text encoder's config as model.json stores it (fusionkit.training.build.to_json_kwargs); transformers checks
# the rest when it builds the config
BERT_CONFIG = Obj({"__transformers_config__": Obj(
    {"model_type": Str(pattern=r"[a-z0-9_\-]+")},
    {"hidden_size": Int(lo=1, hi=1 << 16), "num_attention_heads": Int(lo=1, hi=1024),
     "num_hidden_layers": Int(lo=0, hi=1024), "intermediate_size": Int(lo=1, hi=1 << 18),
     "vocab_size": Int(lo=1, hi=1 << 22), "max_position_embeddings": Int(lo=1, hi=1 << 20),
     "type_vocab_size": Int(lo=1, hi=1 << 10), "hidden_dropout_prob": Num(lo=0, hi=1),
     "attention_probs_dropout_prob": Num(lo=0, hi=1), "layer_norm_eps": Num(lo=0, hi=1),
     "initializer_range": Num(lo=0, hi=10)})})


def validate(doc, schema: Schema, path) -> object:
    schema.check(doc, path, "")
    return doc


def load_checked(path: str | os.PathLike, schema: Schema):
    """Read the JSON file at ``path`` and check it against ``schema``; returns the parsed document."""
    from fusionkit.training.atomic import read_json

    return validate(read_json(path), schema, path)


def check_result(doc: dict, path) -> dict:
    """``result.json``: the schema, and every metric of :data:`fusionkit.metrics.METRICS` in valid and test."""
    from fusionkit.metrics import METRICS

    validate(doc, RESULT, path)
    for split in ("valid", "test"):
        for m in METRICS:
            if m not in doc[split]:
                raise _error(path, f"{split}.{m}", "is missing")
    if "epochs_run" in doc and doc["best_epoch"] > doc["epochs_run"]:
        raise _error(path, "best_epoch", f"is {doc['best_epoch']}, after the last epoch run ({doc['epochs_run']})")
    return doc


def check_state(doc: dict, path) -> dict:
    """``last/state.json``: the schema plus the cross-field rules (RNG per process, best epoch not ahead)."""
    validate(doc, STATE, path)
    run = doc["run"]
    if run["best_epoch"] > run["epoch"]:
        raise _error(path, "run.best_epoch", f"is {run['best_epoch']}, after the epochs done ({run['epoch']})")
    if len(doc["rng"]) != doc["identity"]["world_size"]:
        raise _error(path, "rng", f"has {len(doc['rng'])} entries for {doc['identity']['world_size']} processes")
    for i, rng in enumerate(doc["rng"]):
        for name, schemas in (("python", RNG_PYTHON), ("numpy", RNG_NUMPY)):
            for j, (value, schema) in enumerate(zip(rng[name], schemas)):
                schema.check(value, path, f"rng[{i}].{name}[{j}]")
    if ("model" in doc["files"]) != ("optimizer" in doc and "scheduler" in doc):
        raise _error(path, "files.model", "and the optimizer/scheduler state must come together")
    return doc


def check_model_json(doc: dict, path) -> dict:
    """``model.json``: the schema, and each build option typed like ``--set`` (:mod:`fusionkit.options`): its
    factory's annotation and the generic range rule (a negative dimension is refused here)."""
    validate(doc, MODEL_JSON, path)
    if doc["kwargs"].get("bert_config") is not None:
        BERT_CONFIG.check(doc["kwargs"]["bert_config"], path, "kwargs.bert_config")
        cfg = doc["kwargs"]["bert_config"]["__transformers_config__"]
        heads, hidden = cfg.get("num_attention_heads"), cfg.get("hidden_size")
        if heads and hidden and hidden % heads:
            raise _error(path, "kwargs.bert_config.__transformers_config__.num_attention_heads",
                         f"is {heads}, which does not divide hidden_size {hidden}")
    from fusionkit.cli import UsageError
    from fusionkit.options import check_option
    from fusionkit.training.build import model_spec

    try:
        model_spec(doc["model"])
    except Exception:  # noqa: BLE001 - an unknown name: the build names it, with the registry's suggestions
        return doc
    for key, value in doc["kwargs"].items():
        if key in ("bert_config", "text_model", "d_acoustic", "d_visual") or isinstance(value, dict):
            continue  # encoder config and slot specs are checked by the build
        try:
            check_option(doc["model"], key, value)
        except UsageError as e:
            raise _error(path, f"kwargs.{key}", str(e).split(": ", 1)[-1]) from None
    for key in ("d_acoustic", "d_visual"):
        if key in doc["kwargs"] and doc["kwargs"][key] != doc[key]:
            raise _error(path, f"kwargs.{key}", f"is {doc['kwargs'][key]!r} but {key} is {doc[key]!r}")
    return doc


def read_jsonl(path: str | os.PathLike, schema: Schema) -> list:
    """A JSON-lines file, each line checked against ``schema``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                doc = json.loads(line)
            except json.JSONDecodeError as e:
                raise _error(Path(path), f"line {i}", f"is not valid JSON ({e})") from None
            out.append(validate(doc, schema, f"{path} line {i}"))
    return out
