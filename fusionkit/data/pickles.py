"""Safe pickle loading and the MAG-BERT (``mosi.pkl``) and MMSA (``aligned_50.pkl``) readers.

Pickles are read with :class:`RestrictedUnpickler`, which only admits builtin containers/scalars and numpy
arrays, dtypes and scalars; any other global (e.g. ``os.system`` in a malicious ``__reduce__``) is refused
before it can run.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np

from fusionkit.data.errors import DataError, LoadReport
from fusionkit.data.segments import (SPLITS, RawSegment, check_label, check_segment_id, check_words,
                                     sanitize_features)

# What MAG-BERT and MMSA pickles (any protocol) need: containers, text, numbers. ``range`` and ``slice`` are
# not data, and only serve to make an allowed constructor build something large from a few bytes.
_BUILTINS = {"dict", "list", "tuple", "set", "frozenset", "str", "bytes", "bytearray", "int", "float", "complex",
             "bool"}
# The most elements (or bytes) one call of an allowed callable may be asked for: a pickle of N bytes can only
# describe data of about N bytes, but ``bytes(10**12)`` or ``list(range(...))`` would allocate far more.
MAX_ITEMS = 1 << 28
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
}
_DTYPE_CLASSES = ("numpy.dtypes", "numpy")  # numpy ≥ 1.25 pickles dtypes as numpy.dtypes.Float32DType etc.
_OTHER = {("collections", "OrderedDict"), ("_codecs", "encode")}  # py2-protocol numpy buffers use _codecs.encode


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that admits only builtin containers/scalars and numpy arrays/dtypes/scalars."""

    def find_class(self, module: str, name: str):
        allowed = (
            (module == "builtins" and name in _BUILTINS)
            or (module, name) in _NUMPY
            or (module, name) in _OTHER
            or (module in _DTYPE_CLASSES and name.endswith("DType"))
        )
        if not allowed:
            raise pickle.UnpicklingError(
                f"refusing to load {module}.{name}: only builtin containers/scalars and numpy arrays are allowed "
                f"in data pickles"
            )
        return _bounded(super().find_class(module, name), f"{module}.{name}")


class PickleTooLarge(pickle.UnpicklingError):
    """An allowed callable was asked for more than :data:`MAX_ITEMS` elements."""


def _too_large(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return abs(value) > MAX_ITEMS
    if isinstance(value, (tuple, list)) and len(value) <= 64:  # a shape
        sizes = [v for v in value if isinstance(v, int) and not isinstance(v, bool)]
        total = 1
        for v in sizes:
            if v < 0 or v > MAX_ITEMS:
                return True
            total *= v
        return total > MAX_ITEMS
    return False


def _bounded(fn, name: str):
    """``fn`` behind a size check of its arguments (ints, shapes): a pickle cannot request gigabytes."""
    if isinstance(fn, type) and issubclass(fn, np.generic):  # numpy scalar types as used by dtype(...)
        return fn

    def call(*args, **kwargs):
        for value in (*args, *kwargs.values()):
            if _too_large(value):
                raise PickleTooLarge(f"refusing {name}{tuple(type(a).__name__ for a in args)}: it asks for more "
                                     f"than {MAX_ITEMS} elements")
        return fn(*args, **kwargs)

    call.__name__ = getattr(fn, "__name__", name)
    if name == "numpy.ndarray" or name.endswith("DType") or name == "numpy.dtype" or name.endswith("_frombuffer"):
        # classes that numpy's own pickles pass around, and _frombuffer, whose shape numpy checks against the
        # buffer already read from the file
        return fn
    return call


def safe_load(path) -> object:
    """Unpickle ``path`` with :class:`RestrictedUnpickler`; unsafe, truncated or corrupt files → DataError."""
    path = Path(path)
    try:
        with open(path, "rb") as fh:
            return RestrictedUnpickler(fh, encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        msg = str(exc)
        if msg.startswith("refusing"):
            raise DataError.at(f"unsafe pickle: {msg}", file=path) from None
        raise DataError.at(f"corrupt pickle ({msg})", file=path) from None
    except OSError as exc:
        raise DataError.at(f"cannot read ({exc})", file=path) from None
    except Exception as exc:  # noqa: BLE001 - whatever an allowed callable raises on hostile arguments
        raise DataError.at(f"truncated or corrupt pickle ({type(exc).__name__}: {str(exc)[:200]})",
                           file=path) from None


def pickle_format(data, path) -> str:
    """``mag_pickle`` (splits train/dev/test of examples) or ``mmsa_pickle`` (splits of array dicts)."""
    if isinstance(data, dict):
        if "dev" in data and isinstance(data.get("train"), (list, tuple)):
            return "mag_pickle"
        if isinstance(data.get("train"), dict):
            return "mmsa_pickle"
    raise DataError.at("unrecognised pickle layout: expected MAG-BERT's {'train','dev','test': [examples]} or "
                       "MMSA's {'train','valid','test': {raw_text, id, audio, vision, regression_labels}}", file=path)


def _split_dims(dims):
    return (None, None) if dims is None else dims


def read_pickle(path, *, dims=None, mag_dims=None, report: LoadReport) -> tuple[str, dict]:
    """``(format, {split: [RawSegment]})`` for a MAG-BERT or MMSA pickle (loaded once, layout detected).

    ``mag_dims``: feature sizes required when the file turns out to be a MAG-BERT pickle (else ``dims``).
    """
    data = safe_load(path)
    fmt = pickle_format(data, path)
    if fmt == "mag_pickle":
        return fmt, read_mag_pickle(path, dims=mag_dims or dims, report=report, data=data)
    return fmt, read_mmsa_pickle(path, dims=dims, report=report, data=data)


def read_mag_pickle(path, *, dims=None, report: LoadReport, data=None) -> dict:
    """MAG-BERT's ``mosi.pkl`` / ``mosei.pkl``: ``{'train'|'dev'|'test': [((words, visual, acoustic), label,
    segment_id)]}`` with ``label`` shaped (1, 1). ``dev`` becomes ``valid``."""
    path = Path(path)
    data = safe_load(path) if data is None else data
    if not isinstance(data, dict):
        raise DataError.at(f"expected a dict of splits, got {type(data).__name__}", file=path)
    missing = [s for s in ("train", "dev", "test") if s not in data]
    if missing:
        raise DataError.at(f"missing split(s) {', '.join(missing)}; MAG-BERT pickles hold train, dev and test",
                           file=path)
    d_a, d_v = _split_dims(dims)
    out, seen = {}, set()
    for src, split in (("train", "train"), ("dev", "valid"), ("test", "test")):
        segments = []
        for k, example in enumerate(data[src]):
            try:
                (words, visual, acoustic), label, seg_id = example
            except (TypeError, ValueError):
                raise DataError.at(f"example {k} is not ((words, visual, acoustic), label, segment_id)",
                                   file=path, split=src) from None
            seg_id = check_segment_id(seg_id, seen=seen, file=path, split=src)
            words = check_words(words, file=path, split=src, segment=seg_id)
            label = check_label(label, file=path, split=src, segment=seg_id)
            visual = sanitize_features(visual, name="visual", dim=d_v, rows=len(words), file=path, split=src,
                                       segment=seg_id, report=report, count_as=split)
            acoustic = sanitize_features(acoustic, name="acoustic", dim=d_a, rows=len(words), file=path, split=src,
                                         segment=seg_id, report=report, count_as=split)
            d_a, d_v = acoustic.shape[1], visual.shape[1]  # every later example must match the first
            segments.append(RawSegment(id=seg_id, words=words, acoustic=acoustic, visual=visual, label=label))
        out[split] = segments
    return out


MMSA_KEYS = ("raw_text", "id", "audio", "vision", "regression_labels")


def _mmsa_padding_side(seqs: np.ndarray) -> str:
    """``front`` when most samples are zero-padded at the start (MulT-style), else ``back``."""
    if seqs.ndim != 3 or seqs.shape[1] < 2:
        return "back"
    first_zero = ~seqs[:, 0].any(axis=-1)
    last_zero = ~seqs[:, -1].any(axis=-1)
    return "front" if np.sum(first_zero & ~last_zero) > np.sum(last_zero & ~first_zero) else "back"


def read_mmsa_pickle(path, *, dims=None, report: LoadReport, data=None) -> dict:
    """MMSA's ``aligned_50.pkl`` / ``unaligned_50.pkl``: ``{'train'|'valid'|'test': {raw_text, id, audio,
    vision, regression_labels[, audio_lengths, vision_lengths]}}``.

    aligned: words = ``raw_text.split()``, one feature row per word taken from the padded 50-step sequence
    (padding side detected per split). unaligned (``*_lengths`` present): sequences stay at their own rate,
    the batch carries ``acoustic_mask`` / ``visual_mask`` (MMSA stores no word intervals to average over).
    """
    path = Path(path)
    data = safe_load(path) if data is None else data
    if not isinstance(data, dict):
        raise DataError.at(f"expected a dict of splits, got {type(data).__name__}", file=path)
    missing = [s for s in SPLITS if s not in data]
    if missing:
        raise DataError.at(f"missing split(s) {', '.join(missing)}; MMSA pickles hold train, valid and test",
                           file=path)
    d_a, d_v = _split_dims(dims)
    out, seen = {}, set()
    for split in SPLITS:
        part = data[split]
        if not isinstance(part, dict):
            raise DataError.at(f"expected a dict of arrays, got {type(part).__name__}", file=path, split=split)
        absent = [k for k in MMSA_KEYS if k not in part]
        if absent:
            raise DataError.at(f"missing key(s) {', '.join(absent)}", file=path, split=split)
        unaligned = "audio_lengths" in part or "vision_lengths" in part
        if unaligned and not ("audio_lengths" in part and "vision_lengths" in part):
            raise DataError.at("unaligned data needs both audio_lengths and vision_lengths", file=path, split=split)
        n = len(part["id"])
        for key in MMSA_KEYS[2:] + (("audio_lengths", "vision_lengths") if unaligned else ()):
            if len(part[key]) != n:
                raise DataError.at(f"{key} has {len(part[key])} entries but id has {n}", file=path, split=split)
        audio, vision = np.asarray(part["audio"]), np.asarray(part["vision"])
        sides = (_mmsa_padding_side(audio), _mmsa_padding_side(vision))
        segments = []
        for i in range(n):
            raw_id = part["id"][i]
            raw_id = raw_id.item() if isinstance(raw_id, np.generic) else raw_id
            seg_id = check_segment_id(raw_id.replace("$_$", "_") if isinstance(raw_id, str) else raw_id, seen=seen,
                                      file=path, split=split)
            text = part["raw_text"][i]
            text = text.decode("utf-8", "replace") if isinstance(text, bytes) else str(text)
            words = check_words(text.split(), file=path, split=split, segment=seg_id)
            label = check_label(part["regression_labels"][i], file=path, split=split, segment=seg_id)
            feats = []
            for name, arr, dim, side, length_key in (("acoustic", audio, d_a, sides[0], "audio_lengths"),
                                                     ("visual", vision, d_v, sides[1], "vision_lengths")):
                seq = sanitize_features(arr[i], name=name, dim=dim, file=path, split=split, segment=seg_id,
                                        report=report)
                if unaligned:
                    given = part[length_key][i]
                    try:
                        length = int(given)
                        integral = float(given) == length
                    except (TypeError, ValueError, OverflowError):
                        integral = False
                    if not integral:
                        raise DataError.at(f"{length_key} = {given!r} is not a whole number of steps", file=path,
                                           split=split, segment=seg_id)
                    if not 0 < length <= len(seq):
                        raise DataError.at(f"{length_key} = {length} is outside [1, {len(seq)}]", file=path,
                                           split=split, segment=seg_id)
                    seq = seq[:length]
                else:
                    if len(words) > len(seq):
                        report.fallbacks["words_beyond_aligned_length"] += 1
                        words = words[: len(seq)]
                    seq = seq[len(seq) - len(words):] if side == "front" else seq[: len(words)]
                feats.append(seq)
            acoustic, visual = feats
            d_a, d_v = acoustic.shape[1], visual.shape[1]
            segments.append(RawSegment(id=seg_id, words=words, acoustic=acoustic, visual=visual, label=label,
                                       aligned=not unaligned))
        out[split] = segments
    return out


def dump_pickle(path, data) -> Path:
    """Write ``data`` (builtin containers and numpy arrays only, so :func:`safe_load` reads it back) atomically."""
    import os

    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as fh:
        pickle.dump(data, fh, protocol=4)
    os.replace(tmp, path)
    return path
