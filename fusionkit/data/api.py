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
from fusionkit.data.segments import SPLITS, sanitize_features
from fusionkit.data.simulate import fingerprint as sim_fingerprint
from fusionkit.data.tokenizers import get_tokenizer, tokenizer_identity

DATASET_NAMES = ("synthetic", "mosi", "mosei", "mosi-sim", "mosei-sim", "mosi-covarep") + PROBE_NAMES
DIMS = {"mosi": (74, 47), "mosei": (74, 35)}
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
    if features and key in DATASET_NAMES:
        raise DataError(f"features: dataset {key!r} comes with its own channels; pass a segment table's path "
                        f"(e.g. <root>/mosi/mosi_segments.csv) to join feature tables to it")
    if key in PROBE_NAMES:  # fusion probes (fusionkit.data.probes)
        from fusionkit.data import probes

        return probes.resolve(key, root=data_root(data_root_dir))
    if key == "mosi-covarep":
        root = data_root(data_root_dir)
        path, table = root / "mosi" / "mosi_segments.csv", root / "mosi" / COVAREP_MEANS
        missing = [p for p in (path, table) if not p.is_file()]
        if missing:
            raise _missing(key, missing, f"put the CMU-MOSI segment table mosi_segments.csv and the COVAREP "
                                         f"utterance means {COVAREP_MEANS} in {root / 'mosi'}")
        return Source(name=key, format="feature_table", path=path, simulated=False, dims=None,
                      description=COVAREP_DESCRIPTION.format(layout=LAYOUT_WORDS["repeat"]), features={"acoustic": table},
                      channels={"text": "file", "acoustic": "file", "visual": "absent"})
    if key == "synthetic":
        return Source(
            name="synthetic", format="synthetic", path=None, simulated=True, dims=(74, 47),
            description="generated review sentences from a small sentiment lexicon with SIMULATED, "
                        "label-correlated nonverbal channels (74-d acoustic, 47-d visual); no files",
        )
    if key in ("mosi-sim", "mosei-sim"):
        corpus = key.split("-")[0]
        root = data_root(data_root_dir)
        path = root / corpus / f"{corpus}_segments.csv"
        if not path.is_file():
            raise _missing(key, [path], f"put the {corpus.upper()} segment table {corpus}_segments.csv (columns "
                                        f"segment_id, video_id, clip_id, start, end, label, split, transcript, words) "
                                        f"in {root / corpus}")
        d_v = DIMS[corpus][1]
        return Source(name=key, format="segments_csv", path=path, simulated=True, dims=(74, d_v),
                      description=SIM_DESCRIPTION.format(corpus=f"CMU-{corpus.upper()}", d_v=d_v))
    if key in ("mosi", "mosei"):
        root = data_root(data_root_dir)
        candidates = readers.candidate_paths(key, root)
        for path in candidates:
            if readers.holds_data(path):
                fmt = readers.detect_format(path)
                # the channels are what the reader produces (read from this file), not what the name promises
                return Source(name=key, format=fmt, path=path, simulated=False, dims=None,
                              description=f"features read from {path}", extra={"corpus": key})
        tried = [*candidates[:-1], f"{candidates[-1]}/*.csd"]
        raise _missing(key, tried, f"put real {key.upper()} features there in one of the supported formats: "
                                        f"MAG-BERT's {key}.pkl, MMSA's aligned_50.pkl / unaligned_50.pkl, or a "
                                        f"directory of CMU-MultimodalSDK .csd files (words, COVAREP, FACET, labels); "
                                        f"or use '{key}-sim' (real transcripts, simulated nonverbal channels)")
    path = Path(text).expanduser()
    if path.exists():
        fmt = readers.detect_format(path)
        simulated = fmt == "segments_csv"
        dims = (74, 35) if simulated and "mosei" in path.name.lower() else (74, 47) if simulated else None
        description = (SIM_DESCRIPTION.format(corpus=path.name, d_v=dims[1]) if simulated
                       else f"features read from {path.name}")
        return Source(name=path.stem, format=fmt, path=path, simulated=simulated, dims=dims, description=description)
    added = _plugin_datasets()
    spec = added.get(key) if key not in DATASET_NAMES else None
    if spec is not None:  # a dataset a plug-in added (hook fusionkit_register_datasets)
        source = spec.resolve(data_root(data_root_dir))
        source.format, source.extra = PLUGIN_FORMAT, {**source.extra, "dataset": key}
        return source
    names = ", ".join((*DATASET_NAMES, *added.names()))
    if "/" in text or os.sep in text or Path(text).suffix:
        raise DataError(f"data file {text!r} does not exist; pass an existing file or one of the dataset names: "
                        f"{names}")
    raise DataError(f"unknown dataset {text!r}; expected one of {names} or a path to a data file")


PLUGIN_FORMAT = "plugin"


def _plugin_datasets():
    from fusionkit.registry import get_registry

    return get_registry().datasets


def _read_segments(source: Source, *, seed: int, report: LoadReport) -> tuple[dict, bool]:
    """``({split: [RawSegment]}, aligned)`` with features sanitized (counted in ``report``)."""
    from fusionkit.data import readers

    if source.format == "synthetic":
        raw = readers.read_synthetic(seed=seed)
    elif source.format == PLUGIN_FORMAT:
        raw = _plugin_datasets().get(source.extra["dataset"]).read(source, seed=seed, report=report)
    elif source.format == "feature_table":
        from fusionkit.data.feature_tables import join_features, read_feature_table
        from fusionkit.data.segments_csv import read_segments_csv

        raw = read_segments_csv(source.path, dims=None, report=report, simulate=False)
        tables = {m: read_feature_table(p) for m, p in source.features.items()}
        join_features(raw, tables, layout=source.extra.get("segment_features", "repeat"), report=report)
        source.extra["feature_names"] = {m: t.names for m, t in tables.items()}
        if any(t.word_level for t in tables.values()):  # word-level tables (python -m fusionkit extract)
            source.description = source.description.replace("; one vector per segment", "; word-level rows: " + ", ".join(
                m for m, t in sorted(tables.items()) if t.word_level))
    else:
        if source.format in ("pickle", "mag_pickle") and source.extra.get("corpus") in DIMS:
            source.extra["mag_dims"] = DIMS[source.extra["corpus"]]  # MAG-BERT's COVAREP/FACET sizes
        raw = readers.read(source, report=report)
        if not source.simulated:
            source.description += f" ({source.format})"
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
