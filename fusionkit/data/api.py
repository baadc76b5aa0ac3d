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
from fusionkit.data.segments import SPLITS, sanitize_features
from fusionkit.data.simulate import fingerprint as sim_fingerprint
from fusionkit.data.tokenizers import get_tokenizer, tokenizer_identity

DATASET_NAMES = ("synthetic", "mosi", "mosei", "mosi-sim", "mosei-sim")
DIMS = {"mosi": (74, 47), "mosei": (74, 35)}
SIM_DESCRIPTION = (
    "real {corpus} transcripts, labels and official split with SIMULATED nonverbal channels (74-d acoustic, "
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

    def checksum(self, seed: int) -> str:
        if self.path is None:
            from fusionkit.data.synthetic import fingerprint

            return f"{self.name}-seed{seed}-{fingerprint()}"
        files = sorted(self.path.iterdir()) if self.path.is_dir() else [self.path]
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


def resolve_source(name_or_path, *, data_root_dir=None) -> Source:
    """Map a dataset name or a file path to a :class:`Source`; errors list the paths tried and what to add."""
    from fusionkit.data import readers

    text = str(name_or_path)
    key = text.lower()
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
                return Source(name=key, format=fmt, path=path, simulated=False, dims=None,
                              description=f"CMU-{key.upper()} with real features", extra={"corpus": key})
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
                       else f"{path.name} with real features")
        return Source(name=path.stem, format=fmt, path=path, simulated=simulated, dims=dims, description=description)
    if "/" in text or os.sep in text or Path(text).suffix:
        raise DataError(f"data file {text!r} does not exist; pass an existing file or one of the dataset names: "
                        f"{', '.join(DATASET_NAMES)}")
    raise DataError(f"unknown dataset {text!r}; expected one of {', '.join(DATASET_NAMES)} or a path to a data file")


def _read_segments(source: Source, *, seed: int, report: LoadReport) -> tuple[dict, bool]:
    """``({split: [RawSegment]}, aligned)`` with features sanitized (counted in ``report``)."""
    from fusionkit.data import readers

    if source.format == "synthetic":
        raw = readers.read_synthetic(seed=seed)
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
) -> LoadedData:
    """Load a dataset by name (``synthetic``, ``mosi``, ``mosei``, ``mosi-sim``, ``mosei-sim``) or file path.

    Returns :class:`LoadedData` with splits ``train`` / ``valid`` / ``test`` of :class:`MultimodalDataset`
    (pre-tokenized, word-piece aligned as MAG-BERT) and a :class:`DatasetInfo`.

    tokenizer: ``None`` (bundled MiniLM), a name/path, or a tokenizer object.
    max_samples: keep at most this many examples per split (a seeded random subset, counted as dropped).
    seed: seeds ``synthetic`` generation and the ``max_samples`` subset (simulated channels depend only on
        the segment id).
    cache: reuse/store the tokenized splits under ``FUSIONKIT_CACHE`` (default ``~/.cache/fusionkit``).
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for a word piece; use at least 3")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"max_samples must be ≥ 1 or None, got {max_samples}")
    source = resolve_source(name_or_path, data_root_dir=data_root)
    key = None
    loaded = None
    if cache:
        key = cache_mod.cache_key(
            name=source.name, format=source.format, checksum=source.checksum(seed),
            tokenizer=tokenizer_identity(tokenizer), max_seq_length=max_seq_length,
            simulation=sim_fingerprint() if source.simulated else None,
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
                           aligned=aligned, sources=[str(source.path)] if source.path else [])
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
