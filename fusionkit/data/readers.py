"""Format detection and the table of readers, one per format (:data:`FORMAT_READERS`).

A resolved :class:`fusionkit.data.api.Source` is read by the reader of its ``format``: the data files
(``pickle`` / ``mag_pickle`` / ``mmsa_pickle``, ``csd``, ``probe``, ``segments_csv``), a segment table joined to
feature tables (``feature_table``) or the generated reviews (``synthetic``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from fusionkit.data.errors import DataError, LoadReport

FORMATS = ("mag_pickle", "mmsa_pickle", "csd", "segments_csv")  # "pickle" = one of the first two, not yet read
DIMS = {"mosi": (74, 47), "mosei": (74, 35)}  # MAG-BERT's COVAREP/FACET sizes per corpus
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


FEATURE_CSD_KEYS = ("covarep", "facet", "word")


def candidate_paths(name: str, root: Path) -> list:
    """Where a real-feature dataset ``name`` (``mosi`` / ``mosei``) is looked for, in order. ``<root>/<name>``
    itself counts as a ``.csd`` directory only when it holds feature sequences (not just the labels)."""
    base = root / name
    return [
        base / f"{name}.pkl",
        root / f"{name}.pkl",
        base / "aligned_50.pkl",
        base / "unaligned_50.pkl",
        base / "csd",
        base,
    ]


def holds_data(path: Path) -> bool:
    """Whether a candidate path is usable: an existing file, or a directory with feature ``.csd`` files."""
    if path.is_file():
        return True
    if path.is_dir():
        return any(k in f.name.lower() for f in path.glob("*.csd") for k in FEATURE_CSD_KEYS)
    return False


def detect_format(path: Path) -> str:
    """The reader for ``path``: a directory → ``csd``; otherwise by content (HDF5, pickle, CSV header)."""
    path = Path(path)
    if path.is_dir():
        if not list(path.glob("*.csd")):
            raise DataError(f"directory {str(path)!r} holds no .csd files; put the CMU-MultimodalSDK computational "
                            f"sequences (words, COVAREP, FACET, labels) there")
        return "csd"
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise DataError(f"cannot read data file {str(path)!r}: {exc}") from None
    if head.startswith(_HDF5_MAGIC):
        return "csd"
    if head[:1] == b"\x80" or path.suffix in (".pkl", ".pickle"):
        return "pickle"  # MAG-BERT or MMSA layout, told apart when read (the file is unpickled once)
    first_line = head.split(b"\n", 1)[0].decode("utf-8", "replace")
    if ("segment_id" in first_line and "label" in first_line) or path.suffix.lower() == ".csv":
        return "segments_csv"  # the CSV reader names any missing column
    raise DataError(f"cannot detect the format of {str(path)!r}: expected a MAG-BERT or MMSA pickle, a "
                    f"CMU-MultimodalSDK .csd file/directory, or a segments CSV with segment_id and label columns")


# What a reader may hit on a structurally damaged file beyond the cases it names itself (a scalar where a
# list should be, a ragged array, an unconvertible value): always reported as a DataError naming the file.
MALFORMED = (TypeError, ValueError, IndexError, KeyError, AttributeError, OverflowError, UnicodeError, MemoryError,
             RecursionError)


def read(source, *, report: LoadReport) -> dict:
    """``{split: [RawSegment]}`` from ``source`` (a resolved :class:`fusionkit.data.api.Source`)."""
    try:
        return _read(source, report=report)
    except DataError:
        raise
    except MALFORMED as exc:
        raise DataError.at(f"malformed {source.format} data ({type(exc).__name__}: {exc})", file=source.path) \
            from None


def _read_pickle(source, *, report: LoadReport) -> dict:
    from fusionkit.data.pickles import read_pickle

    source.format, splits = read_pickle(source.path, dims=source.dims, mag_dims=source.extra.get("mag_dims"),
                                        report=report)
    return splits


def _read_csd(source, *, report: LoadReport) -> dict:
    from fusionkit.data.csd import read_csd

    return read_csd(source.path, dims=source.dims, report=report,
                    feature_names=source.extra.setdefault("feature_names", {}))


def _read_probe(source, *, report: LoadReport) -> dict:  # fusion probes: a segment table with planted cues
    from fusionkit.data.probes import read_probe

    return read_probe(source.path, source.name, report=report)


def _read_segments_csv(source, *, report: LoadReport) -> dict:
    from fusionkit.data.segments_csv import read_segments_csv

    return read_segments_csv(source.path, dims=source.dims, report=report)


# The data files: format → reader(source, *, report); their malformed content is reported by :func:`read`.
FILE_READERS: dict[str, Callable] = {
    "pickle": _read_pickle, "mag_pickle": _read_pickle, "mmsa_pickle": _read_pickle,
    "csd": _read_csd, "probe": _read_probe, "segments_csv": _read_segments_csv,
}


def _read(source, *, report: LoadReport) -> dict:
    reader = FILE_READERS.get(source.format)
    if reader is None:
        raise DataError(f"unknown data format {source.format!r}; expected one of {', '.join(FORMATS)}")
    return reader(source, report=report)


def read_synthetic(*, seed: int) -> dict:
    from fusionkit.data.synthetic import synthetic_segments

    return synthetic_segments(seed=seed)


def _read_data_file(source, *, seed: int, report: LoadReport) -> dict:
    if source.format in ("pickle", "mag_pickle") and source.extra.get("corpus") in DIMS:
        source.extra["mag_dims"] = DIMS[source.extra["corpus"]]  # MAG-BERT's COVAREP/FACET sizes
    raw = read(source, report=report)
    if not source.simulated:
        source.description += f" ({source.format})"
    return raw


def _read_feature_tables(source, *, seed: int, report: LoadReport) -> dict:
    from fusionkit.data.feature_tables import join_features, read_feature_table
    from fusionkit.data.segments_csv import read_segments_csv

    raw = read_segments_csv(source.path, dims=None, report=report, simulate=False)
    tables = {m: read_feature_table(p) for m, p in source.features.items()}
    join_features(raw, tables, layout=source.extra.get("segment_features", "repeat"), report=report)
    source.extra["feature_names"] = {m: t.names for m, t in tables.items()}
    if any(t.word_level for t in tables.values()):  # word-level tables (python -m fusionkit extract)
        source.description = source.description.replace("; one vector per segment", "; word-level rows: " + ", ".join(
            m for m, t in sorted(tables.items()) if t.word_level))
    return raw


# Every format: format → reader(source, *, seed, report) -> {split: [RawSegment]}.
FORMAT_READERS: dict[str, Callable] = {
    "synthetic": lambda source, *, seed, report: read_synthetic(seed=seed),
    "feature_table": _read_feature_tables,
    **{fmt: _read_data_file for fmt in FILE_READERS},
}


def read_source(source, *, seed: int, report: LoadReport) -> dict:
    """``{split: [RawSegment]}`` from ``source``, by the reader of its format (:data:`FORMAT_READERS`)."""
    reader = FORMAT_READERS.get(source.format, _read_data_file)  # an unknown format is named by :func:`read`
    return reader(source, seed=seed, report=report)
