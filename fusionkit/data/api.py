"""``load_splits``: datasets by name or path, tokenized and aligned, with an on-disk cache."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fusionkit.data import cache as cache_mod
from fusionkit.data.dataset import DatasetInfo, LoadedData, MultimodalDataset, build_dataset
from fusionkit.data.errors import DataError, LoadReport
from fusionkit.data.probes import PROBE_NAMES
from fusionkit.data.probes import fingerprint as probe_fingerprint
from fusionkit.data.readers import DIMS  # noqa: F401 - re-exported
from fusionkit.data.segments import SPLITS, sanitize_features
from fusionkit.data.simulate import fingerprint as sim_fingerprint
from fusionkit.data.tokenizers import get_tokenizer, tokenizer_identity

# fusionkit's own datasets (fusionkit.data.builtin_datasets, registered in the dataset registry), in this order
DATASET_NAMES = ("synthetic", "mosi", "mosei", "mosi-sim", "mosei-sim", "mosi-covarep") + PROBE_NAMES
COVAREP_MEANS = "mosi_covarep_utterance_mean.csv"
COVAREP_DESCRIPTION = (
    "CMU-MOSI transcripts, labels and official split; acoustic channel read from " + COVAREP_MEANS + ": the "
    "per-segment mean of 73 COVAREP dimensions (one vector per segment, {layout}; not word-aligned); NO visual "
    "channel"
)
LAYOUT_WORDS = {"repeat": "repeated for every word piece", "step": "a one-step sequence"}
SIM_DESCRIPTION = (
    "{corpus} transcripts, labels and official split with SIMULATED nonverbal channels (74-d acoustic, "
    "{d_v}-d visual): seeded per segment, a weak label-correlated signal in a few dims, AR(1) noise across words "
    "and COVAREP-like -inf artifacts; not COVAREP/FACET features"
)


def data_root(data_root=None) -> Path:
    """``data_root`` argument > env ``FUSIONKIT_DATA`` > ``./data``."""
    if data_root is not None:
        return Path(data_root).expanduser()
    env = os.environ.get("FUSIONKIT_DATA")
    return Path(env).expanduser() if env else Path("data")


@dataclass
class Source:
    """A resolved dataset: where it comes from and how to read it."""

    name: str
    format: str
    path: Path | None
    simulated: bool
    description: str
    dims: tuple | None = None  # required (d_acoustic, d_visual); None = taken from the data
    extra: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)  # modality → segment-level feature table (joined by id)
    channels: dict = field(default_factory=dict)  # modality → "file" / "simulated" / "absent" (known up front)
    dataset: str | None = None  # the registered dataset it was resolved as (None: a path); read by its ``read``

    def checksum(self, seed: int) -> str:
        if self.path is None:
            from fusionkit.data.synthetic import fingerprint

            return f"{self.name}-seed{seed}-{fingerprint()}"
        files = sorted(self.path.iterdir()) if self.path.is_dir() else [self.path]
        files += [Path(p) for _, p in sorted(self.features.items())]
        h = hashlib.sha256()
        for f in files:
            if f.is_file():
                h.update(f.name.encode())
                with open(f, "rb") as fh:
                    for chunk in iter(lambda: fh.read(1 << 20), b""):
                        h.update(chunk)
        return h.hexdigest()


def _missing(name: str, tried: list, what: str) -> DataError:
    paths = "\n  ".join(str(p) for p in tried)
    return DataError(
        f"dataset {name!r} not found; tried:\n  {paths}\n{what} (set the data root with --data-root or FUSIONKIT_DATA)"
    )


def _with_features(source: Source, features: dict | None) -> Source:
    """``source`` (a segment table) with real segment-level feature tables for some modalities, the others absent."""
    if not features:
        return source
    unknown = sorted(set(features) - {"acoustic", "visual"})
    if unknown:
        raise DataError(f"features: unknown modality {', '.join(map(repr, unknown))}; give acoustic and/or visual "
                        f"feature tables, e.g. features={{'acoustic': 'egemaps.csv'}}")
    if source.format != "segments_csv":
        raise DataError(f"features: segment-level feature tables join a segment table (a *_segments.csv with "
                        f"segment_id, label, split and words/transcript), not {source.name!r} ({source.format})")
    for name, path in features.items():
        if not Path(path).expanduser().is_file():
            raise DataError.at(f"{name} feature table does not exist", file=path)
    source.features = {k: Path(v).expanduser() for k, v in features.items()}
    source.simulated = False
    source.format = "feature_table"
    source.dims = None
    source.channels = {"text": "file", **{m: "file" if m in features else "absent" for m in ("acoustic", "visual")}}
    given = ", ".join(f"{m} from {Path(p).name}" for m, p in sorted(features.items()))
    absent = [m for m in ("acoustic", "visual") if m not in features]
    source.description = (f"transcripts, labels and split of {source.path.name} with segment-level feature tables "
                          f"({given}; one vector per segment)" + (f"; NO {' or '.join(absent)} channel" if absent
                                                                  else ""))
    return source


def resolve_source(name_or_path, *, data_root_dir=None, features: dict | None = None) -> Source:
    """Map a dataset name or a file path to a :class:`Source`; errors list the paths tried and what to add.

    ``features``: ``{"acoustic" | "visual": path}`` segment-level feature tables joined to a segment-table path.
    """
    source = _resolve_source(name_or_path, data_root_dir=data_root_dir, features=features)
    return _with_features(source, features) if features else source


def _resolve_source(name_or_path, *, data_root_dir=None, features=None) -> Source:
    from fusionkit.data import readers

    text = str(name_or_path)
    key = text.lower()
    datasets = _datasets()
    if features and (key in DATASET_NAMES or datasets.get(key) is not None):
        raise DataError(f"features: dataset {key!r} comes with its own channels; pass a segment table's path "
                        f"(e.g. <root>/mosi/mosi_segments.csv) to join feature tables to it")
    spec = datasets.get(key)
    if spec is not None and spec.builtin:  # fusionkit's own (fusionkit.data.builtin_datasets)
        source = spec.resolve(data_root(data_root_dir))
        source.dataset = key
        return source
    path = Path(text).expanduser()
    if path.exists():
        fmt = readers.detect_format(path)
        simulated = fmt == "segments_csv"
        dims = (74, 35) if simulated and "mosei" in path.name.lower() else (74, 47) if simulated else None
        description = (SIM_DESCRIPTION.format(corpus=path.name, d_v=dims[1]) if simulated
                       else f"features read from {path.name}")
        return Source(name=path.stem, format=fmt, path=path, simulated=simulated, dims=dims, description=description)
    if spec is not None:  # a dataset a plug-in added (hook fusionkit_register_datasets)
        from fusionkit.data.readers import FORMAT_READERS

        source = spec.resolve(data_root(data_root_dir))
        if source.format not in FORMAT_READERS:  # a format of the plug-in's own, read by its ``read`` alone
            source.format = PLUGIN_FORMAT
        source.extra, source.dataset = {**source.extra, "dataset": key}, key
        return source
    names = ", ".join(datasets.names())
    if "/" in text or os.sep in text or Path(text).suffix:
        raise DataError(f"data file {text!r} does not exist; pass an existing file or one of the dataset names: "
                        f"{names}")
    raise DataError(f"unknown dataset {text!r}; expected one of {names} or a path to a data file")


PLUGIN_FORMAT = "plugin"


def _datasets():
    """The dataset registry: fusionkit's own datasets and the plug-ins'."""
    from fusionkit.registry import get_registry

    return get_registry().datasets


def _read_segments(source: Source, *, seed: int, report: LoadReport) -> tuple[dict, bool]:
    """``({split: [RawSegment]}, aligned)`` with features sanitized (counted in ``report``)."""
    from fusionkit.data import readers

    spec = _datasets().get(source.dataset) if source.dataset is not None else None
    # a named dataset's own read; a path: the reader of its format
    raw = (spec.read if spec is not None else readers.read_source)(source, seed=seed, report=report)
    if source.simulated:  # generated features may carry the simulated -inf artifacts
        for split, segments in raw.items():
            for seg in segments:
                seg.acoustic = sanitize_features(seg.acoustic, name="acoustic", dim=None, file=source.path,
                                                 split=split, segment=seg.id, report=report)
                seg.visual = sanitize_features(seg.visual, name="visual", dim=None, file=source.path,
                                               split=split, segment=seg.id, report=report)
    missing = [s for s in SPLITS if s not in raw]
    if missing:
        raise DataError.at(f"missing split(s) {', '.join(missing)}", file=source.path)
    aligned = all(seg.aligned for segs in raw.values() for seg in segs)
    return raw, aligned


def channel_kinds(source: Source, d_acoustic: int, d_visual: int) -> dict:
    """``{"text", "acoustic", "visual"}`` → ``"file"`` / ``"simulated"`` / ``"absent"`` for a loaded source: what the
    reader produced (channels read from the data file, or generated by :mod:`fusionkit.data.simulate`)."""
    if source.channels:
        return dict(source.channels)
    kind = "simulated" if source.simulated else "file"
    return {"text": "simulated" if source.format == "synthetic" else "file",
            "acoustic": kind if d_acoustic else "absent", "visual": kind if d_visual else "absent"}


def _subsample(ds: MultimodalDataset, max_samples: int | None, seed: int, split: str,
               report: LoadReport) -> MultimodalDataset:
    if max_samples is None or len(ds) <= max_samples:
        return ds
    rng = np.random.default_rng([seed, SPLITS.index(split), 7])
    keep = np.sort(rng.choice(len(ds), size=max_samples, replace=False))
    report.dropped[f"max_samples:{split}"] += len(ds) - max_samples
    return ds.subset(keep)


def load_splits(
    name_or_path,
    *,
    data_root=None,
    tokenizer=None,
    max_seq_length: int = 50,
    max_samples: int | None = None,
    seed: int = 0,
    cache: bool = True,
    features: dict | None = None,
    segment_features: str = "repeat",
) -> LoadedData:
    """Load a dataset by name (``synthetic``, ``mosi``, ``mosei``, ``mosi-sim``, ``mosei-sim``, ``mosi-covarep``)
    or file path.

    Returns :class:`LoadedData` with splits ``train`` / ``valid`` / ``test`` of :class:`MultimodalDataset`
    (pre-tokenized, word-piece aligned as MAG-BERT) and a :class:`DatasetInfo`.

    tokenizer: ``None`` (bundled MiniLM), a name/path, or a tokenizer object.
    max_samples: keep at most this many examples per split (a seeded random subset, counted as dropped).
    seed: seeds ``synthetic`` generation and the ``max_samples`` subset (simulated channels depend only on
        the segment id).
    cache: reuse/store the tokenized splits under ``FUSIONKIT_CACHE`` (default ``~/.cache/fusionkit``).
    features: ``{"acoustic" | "visual": path}`` segment-level feature tables (CSV or ``.npz``, one row per
        segment id) joined to the segment table ``name_or_path``; a modality without a table is absent
        (:mod:`fusionkit.data.feature_tables`). ``mosi-covarep`` is such a dataset.
    segment_features: how segment-level vectors enter batches: ``"repeat"`` (aligned: the vector on every word
        piece) or ``"step"`` (unaligned: a one-step sequence with its own mask).
    """
    from fusionkit.data.feature_tables import LAYOUTS

    if segment_features not in LAYOUTS:
        raise ValueError(f"unknown segment_features {segment_features!r}; expected one of {', '.join(LAYOUTS)}")
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for a word piece; use at least 3")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be ≥ 1 or None, got {max_samples}")
    source = resolve_source(name_or_path, data_root_dir=data_root, features=features)
    if source.format == "feature_table":
        source.extra["segment_features"] = segment_features
        source.description = source.description.replace(LAYOUT_WORDS["repeat"], LAYOUT_WORDS[segment_features])
    key = None
    loaded = None
    if cache:
        key = cache_mod.cache_key(
            name=source.name, format=source.format, checksum=source.checksum(seed),
            tokenizer=tokenizer_identity(tokenizer), max_seq_length=max_seq_length,
            simulation=(probe_fingerprint() if source.format == "probe" else sim_fingerprint()) if source.simulated
            else None,
            **({"features": {m: str(p) for m, p in sorted(source.features.items())},
                "segment_features": segment_features} if source.features else {}),
        )
        loaded = cache_mod.load(key)
    if loaded is None:
        report = LoadReport()
        raw, aligned = _read_segments(source, seed=seed, report=report)
        tok = get_tokenizer(tokenizer)
        splits = {
            split: build_dataset(raw[split], tokenizer=tok, max_seq_length=max_seq_length, split=split,
                                 report=report, name=source.name)
            for split in SPLITS
        }
        d_a, d_v = splits["train"].d_acoustic, splits["train"].d_visual
        info = DatasetInfo(name=source.name, format=source.format, d_acoustic=d_a, d_visual=d_v,
                           simulated=source.simulated, description=source.description, report=report,
                           aligned=aligned, sources=([str(source.path)] if source.path else [])
                           + [str(p) for _, p in sorted(source.features.items())],
                           channels=channel_kinds(source, d_a, d_v),
                           feature_names=source.extra.get("feature_names", {}))
        loaded = LoadedData(splits=splits, info=info)
        if cache:
            cache_mod.save(key, loaded)
    empty = [s for s in SPLITS if len(loaded.splits[s]) == 0]
    if empty:  # training, model selection and testing each need examples
        raise DataError.at(f"split(s) {', '.join(empty)} hold no segments; train, valid and test each need at least "
                           f"one", file=source.path)
    report = loaded.info.report
    loaded.splits = {s: _subsample(ds, max_samples, seed, s, report) for s, ds in loaded.splits.items()}
    return loaded
