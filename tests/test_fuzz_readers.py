"""Seeded, bounded fuzzing of every data format the loader reads.

Each mutant starts from a valid fixture (:mod:`data_fixtures`) and is damaged either in its bytes (a truncation,
flipped bytes) or in its structure before it is written (wrong dtypes and shapes, NaN/inf, huge or negative
lengths, wrong or missing keys and columns, malformed labels, a pickle whose ``__reduce__`` would run code).
Every mutant must either load and pass the dataset invariants below, or raise ``DataError`` naming the file;
any other exception, a hang (per-mutant alarm) or code execution fails the test. ``FUSIONKIT_FUZZ_REPORT=path``
writes the mutant and outcome counts as JSON (docs/reliability.md quotes them).
"""
from __future__ import annotations

import copy
import csv
import io
import json
import os
import pickle
import signal
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from data_fixtures import (SEGMENT_COLUMNS, content_rows, make_content, write_csd, write_mag_pickle,
                           write_mmsa_pickle, write_segments_csv)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fusionkit.data import DataError, load_splits
from fusionkit.data.segments import SPLITS

MUTANTS_PER_FORMAT = 250
SECONDS_PER_MUTANT = 10
REPORT: dict = {}
FUZZ = settings(max_examples=MUTANTS_PER_FORMAT, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"a mutant took more than {SECONDS_PER_MUTANT} s to load")


@pytest.fixture(scope="module", autouse=True)
def write_report():
    yield
    target = os.environ.get("FUSIONKIT_FUZZ_REPORT")
    if target:
        Path(target).write_text(json.dumps(REPORT, indent=1, sort_keys=True))


class Evil:
    """A pickle payload that would create a file if the unpickler ran it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


# -- the invariants of a loaded dataset ----------------------------------------------------------------------
def check_invariants(data, vocab_size: int) -> None:
    info = data.info
    assert set(data.splits) == set(SPLITS)
    for split, ds in data.splits.items():
        assert len(ds) > 0, split
        assert np.isfinite(ds.labels).all() and (np.abs(ds.labels) <= 3).all()
        for arr, d in ((ds.acoustic, info.d_acoustic), (ds.visual, info.d_visual)):
            if arr is None or (d == 0 and arr.shape[-1] == 0):  # an absent channel (e.g. only acoustic given)
                continue
            assert arr.dtype == np.float32 and arr.ndim == 2 and arr.shape[1] == d and d > 0
            assert np.isfinite(arr).all()
        for offsets, total in ((ds.token_offsets, len(ds.input_ids)), (ds.acoustic_offsets, len(ds.acoustic)),
                               (ds.visual_offsets, len(ds.visual))):
            assert offsets[0] == 0 and offsets[-1] == total and (np.diff(offsets) >= 0).all()
        assert (ds.lengths >= 3).all() and (ds.lengths <= ds.max_seq_length).all()  # [CLS] word… [SEP]
        assert ((ds.input_ids >= 0) & (ds.input_ids < vocab_size)).all()
        assert (ds.acoustic_lengths >= 1).all() and (ds.visual_lengths >= 1).all()
        if ds.aligned:
            assert (ds.acoustic_lengths == ds.lengths).all() and (ds.visual_lengths == ds.lengths).all()
        assert len(ds.ids) == len(ds) and all(isinstance(i, str) for i in ds.ids)


def attempt(path: Path, tok, counts: Counter, kind: str) -> None:
    """Load one mutant; count ``loaded`` or ``DataError``; anything else fails."""
    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS_PER_MUTANT)
    try:
        data = load_splits(path, tokenizer=tok, cache=False)
    except DataError as e:
        assert str(path) in str(e), f"DataError does not name {path}: {e}"
        counts[f"{kind}:DataError"] += 1
        counts["DataError"] += 1
        return
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # e.g. a Rust panic of the tokenizer (not an Exception): report the mutant
        if isinstance(e, Exception):
            raise
        raise AssertionError(f"{type(e).__name__}: {e}") from None
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    check_invariants(data, len(tok.get_vocab()))
    counts[f"{kind}:loaded"] += 1
    counts["loaded"] += 1


# -- mutations -------------------------------------------------------------------------------------------------
def byte_mutation():
    """``(kind, fn(bytes) → bytes)``: a truncation or a few flipped bytes."""
    truncate = st.floats(0.0, 0.999).map(lambda f: ("truncate", lambda b: b[: int(len(b) * f)]))

    def flipper(spots):
        def flip(b):
            b = bytearray(b)
            for where, xor in spots:
                b[int(where * len(b))] ^= xor
            return bytes(b)
        return ("flip", flip)

    flips = st.lists(st.tuples(st.floats(0.0, 0.999), st.integers(1, 255)), min_size=1, max_size=8).map(flipper)
    return st.one_of(truncate, flips)


BAD_ARRAYS = st.sampled_from(["nan", "inf", "-inf", "strings", "object", "1d", "3d", "empty", "transpose", "int",
                              "huge_values", "complex"])


def bad_array(arr: np.ndarray, how: str):
    arr = np.array(arr, copy=True)
    if how in ("nan", "inf", "-inf"):
        arr = arr.astype(np.float32) if arr.dtype.kind in "biuf" else np.full(arr.shape, 0.5, np.float32)
        if arr.size:
            arr.flat[0] = float(how)
        return arr
    make = {
        "strings": lambda: arr.astype(str),
        "object": lambda: np.array([None] * max(arr.shape[0], 1), dtype=object),
        "1d": lambda: arr.reshape(-1),
        "3d": lambda: arr[None],
        "empty": lambda: arr[:0],
        "transpose": lambda: arr.T,
        "int": lambda: arr.astype(np.int64),
        "huge_values": lambda: np.full_like(arr, 3e38, dtype=np.float32),
        "complex": lambda: arr.astype(np.complex64),
    }[how]
    try:
        return make()
    except (TypeError, ValueError):  # e.g. text that cannot become numbers: damage it another way
        return arr.astype(str)[..., None]


BAD_LABELS = st.sampled_from([float("nan"), float("inf"), 3.5, -7, "abc", None, [1.0, 2.0], np.array([[1.0, 2.0]]),
                              np.array([], np.float32), "0.5", True])
BAD_WORDS = st.sampled_from([[], [""], [1, 2], "a string", None, ["ok", None], [b"bytes"], ["loved"] * 200])


def mag_structural(data: dict, choice, marker: Path):
    """Damage MAG-BERT's ``{train|dev|test: [((words, visual, acoustic), label, id)]}`` in place."""
    kind, split, index, arg = choice
    examples = data[split]
    k = index % len(examples)
    (words, visual, acoustic), label, seg = examples[k]
    if kind == "array":
        if arg[0] == "visual":
            visual = bad_array(visual, arg[1])
        else:
            acoustic = bad_array(acoustic, arg[1])
    elif kind == "label":
        label = arg
    elif kind == "words":
        words = arg
    elif kind == "drop_split":
        del data[split]
        return
    elif kind == "rename_split":
        data[split + "_x"] = data.pop(split)
        return
    elif kind == "split_type":
        data[split] = arg
        return
    elif kind == "example_shape":
        examples[k] = arg
        return
    elif kind == "rows":  # features with another number of rows than words
        visual = np.concatenate([visual, visual])
    elif kind == "evil":
        examples[k] = ((words, Evil(marker), acoustic), label, seg)
        return
    elif kind == "id":
        seg = arg
    examples[k] = ((words, visual, acoustic), label, seg)


def _mag_choices():
    split = st.sampled_from(["train", "dev", "test"])
    index = st.integers(0, 10)
    return st.one_of(
        st.tuples(st.just("array"), split, index, st.tuples(st.sampled_from(["visual", "acoustic"]), BAD_ARRAYS)),
        st.tuples(st.just("label"), split, index, BAD_LABELS),
        st.tuples(st.just("words"), split, index, BAD_WORDS),
        st.tuples(st.sampled_from(["drop_split", "rename_split", "rows", "evil"]), split, index, st.none()),
        st.tuples(st.just("split_type"), split, index, st.sampled_from([None, 3, "x", {}, [], {"a": 1}])),
        st.tuples(st.just("example_shape"), split, index, st.sampled_from([None, (), (1, 2), ((1, 2), 3, 4), "x"])),
        st.tuples(st.just("id"), split, index, st.sampled_from([None, 3, b"\xff\xfe", "", ("a",)])),
    )


def mmsa_structural(data: dict, choice, marker: Path):
    """Damage MMSA's ``{split: {raw_text, id, audio, vision, regression_labels[, *_lengths]}}`` in place."""
    kind, split, key, arg = choice
    part = data[split]
    if kind == "drop_key":
        part.pop(key, None)
    elif kind == "rename_key":
        if key in part:
            part[key + "_x"] = part.pop(key)
    elif kind == "array":
        if key in ("audio", "vision"):
            part[key] = bad_array(part[key], arg)
        else:
            part[key] = bad_array(np.asarray(part[key]), arg)
    elif kind == "lengths":
        n = len(part["id"])
        for name in ("audio_lengths", "vision_lengths"):
            part[name] = [arg] * n
    elif kind == "short":  # one array with fewer entries than ids
        part[key] = part[key][:-1]
    elif kind == "split_type":
        data[split] = arg
    elif kind == "evil":
        part["id"] = [Evil(marker)] * len(part["id"])
    elif kind == "labels":
        labels = np.asarray(part["regression_labels"], dtype=object)
        labels[0] = arg
        part["regression_labels"] = labels


def _mmsa_choices():
    split = st.sampled_from(list(SPLITS))
    key = st.sampled_from(["raw_text", "id", "audio", "vision", "regression_labels"])
    return st.one_of(
        st.tuples(st.sampled_from(["drop_key", "rename_key", "short"]), split, key, st.none()),
        st.tuples(st.just("array"), split, key, BAD_ARRAYS),
        st.tuples(st.just("lengths"), split, key, st.sampled_from([-5, 0, 10 ** 12, 2.5, "x", None, 10 ** 30])),
        st.tuples(st.just("split_type"), split, key, st.sampled_from([None, 3, "x", [], {}])),
        st.tuples(st.just("evil"), split, key, st.none()),
        st.tuples(st.just("labels"), split, key, BAD_LABELS),
    )


def _pickle_case(choices):
    return st.one_of(st.tuples(st.just("bytes"), st.integers(0, 3), byte_mutation()),
                     st.tuples(st.just("structure"), st.integers(0, 3), choices))


def _check_no_code_ran(marker: Path) -> None:
    assert not marker.exists(), "a pickle payload ran"


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["mag_pickle", "mmsa_pickle", "mmsa_unaligned"])
def test_fuzz_pickles(fmt, tok, tmp_path_factory):
    counts: Counter = Counter()
    base = tmp_path_factory.mktemp(fmt)
    marker = base / "code-ran"
    choices = _mag_choices() if fmt == "mag_pickle" else _mmsa_choices()

    @FUZZ
    @given(case=_pickle_case(choices))
    def one(case):
        how, seed, change = case
        content = make_content(seed)
        path = base / f"data{counts['total']}.pkl"
        counts["total"] += 1
        if fmt == "mag_pickle":
            write_mag_pickle(path, content)
        else:
            write_mmsa_pickle(path, content, aligned=fmt == "mmsa_pickle")
        if how == "bytes":
            kind, fn = change
            path.write_bytes(fn(path.read_bytes()))
        else:
            kind = change[0]
            data = pickle.loads(path.read_bytes())  # our own fixture, written a line above
            (mag_structural if fmt == "mag_pickle" else mmsa_structural)(data, change, marker)
            path.write_bytes(pickle.dumps(data))
        attempt(path, tok, counts, kind)
        _check_no_code_ran(marker)
        path.unlink()

    one()
    REPORT[fmt] = dict(counts)
    assert counts["loaded"] + counts["DataError"] == counts["total"] and counts["DataError"] > 0


# -- segments CSV ------------------------------------------------------------------------------------------------
CSV_CELLS = st.sampled_from(["", "abc", "nan", "inf", "-inf", "1e309", "-4", "3.0001", "0x10", "\x00", "tést",
                             "train", "dev", "other", "a,b", '"', "\n", " " * 3])


def _csv_case():
    column = st.sampled_from(SEGMENT_COLUMNS)
    return st.one_of(
        st.tuples(st.just("bytes"), st.integers(0, 3), byte_mutation()),
        st.tuples(st.just("cell"), st.integers(0, 3), st.tuples(st.integers(0, 20), column, CSV_CELLS)),
        st.tuples(st.just("drop_column"), st.integers(0, 3), column),
        st.tuples(st.just("duplicate_row"), st.integers(0, 3), st.integers(0, 20)),
        st.tuples(st.just("extra_field"), st.integers(0, 3), st.integers(0, 20)),
        st.tuples(st.just("invalid_utf8"), st.integers(0, 3), st.integers(0, 20)),
    )


@pytest.mark.slow
def test_fuzz_segments_csv(tok, tmp_path_factory):
    counts: Counter = Counter()
    base = tmp_path_factory.mktemp("csv")

    @FUZZ
    @given(case=_csv_case())
    def one(case):
        how, seed, arg = case
        rows = content_rows(make_content(seed))
        path = base / f"fuzz{counts['total']}_segments.csv"
        counts["total"] += 1
        columns = list(SEGMENT_COLUMNS)
        if how == "cell":
            row, column, value = arg
            rows[row % len(rows)][column] = value
        elif how == "drop_column":
            columns.remove(arg)
        elif how == "duplicate_row":
            rows.append(dict(rows[arg % len(rows)]))
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in columns})
        data = buf.getvalue().encode()
        lines = data.split(b"\n")
        if how == "extra_field":
            k = 1 + arg % (len(lines) - 2)
            lines[k] = lines[k].rstrip(b"\r") + b",surplus\r"
            data = b"\n".join(lines)
        elif how == "invalid_utf8":
            k = 1 + arg % (len(lines) - 2)
            lines[k] = b"\xff\xfe" + lines[k]
            data = b"\n".join(lines)
        elif how == "bytes":
            data = arg[1](data)
        path.write_bytes(data)
        attempt(path, tok, counts, how if how != "bytes" else arg[0])
        path.unlink()

    one()
    REPORT["segments_csv"] = dict(counts)
    assert counts["loaded"] + counts["DataError"] == counts["total"] and counts["DataError"] > 0


# -- CMU-MultimodalSDK .csd (HDF5) ------------------------------------------------------------------------------
CSD_FILES = ["CMU_MOSI_TimestampedWords.csd", "CMU_MOSI_COVAREP.csd", "CMU_MOSI_VisualFacet_4.1.csd",
             "CMU_MOSI_Opinion_Labels.csd"]


def _rewrite_csd(path: Path, how: str, arg) -> None:
    """Damage one dataset of a ``.csd`` file in place (h5py)."""
    import h5py

    with h5py.File(path, "r+") as fh, np.errstate(all="ignore"):
        root = fh[next(iter(fh.keys()))]
        videos = list(root["data"].keys())
        group = root["data"][videos[0]]
        if how == "drop":
            del group[arg]
        elif how == "drop_data":
            del root["data"]
        elif how == "extra_root":
            fh.create_group("another_root")
        elif how == "features":
            feats = group["features"][()]
            if feats.dtype.kind == "S":
                new = {"strings": feats, "nan": np.full(feats.shape, np.nan)}.get(arg, feats[:0])
            else:
                new = bad_array(feats, arg) if arg != "strings" else feats.astype("S8")
            if new.dtype == object or new.dtype.kind == "c":
                new = np.zeros((0,), np.float32)
            del group["features"]
            group.create_dataset("features", data=new)
        elif how == "intervals":
            iv = group["intervals"][()]
            new = {"reverse": iv[::-1, ::-1], "nan": np.full_like(iv, np.nan), "negative": -iv,
                   "huge": iv * 1e300, "short": iv[:-1], "3col": np.concatenate([iv, iv[:, :1]], axis=1)}[arg]
            del group["intervals"]
            group.create_dataset("intervals", data=new)
        elif how == "rename_video":
            root["data"].move(videos[0], videos[0] + "_renamed")


def _csd_case():
    file = st.sampled_from(CSD_FILES)
    return st.one_of(
        st.tuples(st.just("bytes"), st.integers(0, 3), file, byte_mutation()),
        st.tuples(st.just("drop"), st.integers(0, 3), file, st.sampled_from(["features", "intervals"])),
        st.tuples(st.sampled_from(["drop_data", "extra_root", "rename_video"]), st.integers(0, 3), file, st.none()),
        st.tuples(st.just("features"), st.integers(0, 3), file,
                  st.sampled_from(["nan", "inf", "strings", "1d", "3d", "empty", "transpose", "int", "huge_values"])),
        st.tuples(st.just("intervals"), st.integers(0, 3), file,
                  st.sampled_from(["reverse", "nan", "negative", "huge", "short", "3col"])),
        st.tuples(st.just("remove_file"), st.integers(0, 3), file, st.none()),
        st.tuples(st.just("split_table"), st.integers(0, 3), file, CSV_CELLS),
    )


@pytest.mark.slow
def test_fuzz_csd(tok, tmp_path_factory):
    counts: Counter = Counter()
    base = tmp_path_factory.mktemp("csd")

    @FUZZ
    @given(case=_csd_case())
    def one(case):
        how, seed, name, arg = case
        folder = base / f"mosi{counts['total']}"
        counts["total"] += 1
        write_csd(folder, make_content(seed))
        path = folder / name
        if how == "bytes":
            path.write_bytes(arg[1](path.read_bytes()))
        elif how == "remove_file":
            path.unlink()
        elif how == "split_table":
            rows = list(csv.DictReader(open(folder / "fixture_segments.csv", newline="")))
            rows[0]["split"] = arg
            write_segments_csv(folder / "fixture_segments.csv", rows)
        else:
            _rewrite_csd(path, how, arg)
        attempt(folder, tok, counts, how if how != "bytes" else arg[0])
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()

    one()
    REPORT["csd"] = dict(counts)
    assert counts["loaded"] + counts["DataError"] == counts["total"] and counts["DataError"] > 0


def test_evil_pickle_payload_is_refused_not_run(tok, tmp_path):
    """The fuzzers' code-execution probe works: the same payload unpickled naively would create the marker."""
    marker = tmp_path / "ran"
    payload = pickle.dumps({"train": [Evil(marker)], "dev": [], "test": []})
    (tmp_path / "evil.pkl").write_bytes(payload)
    with pytest.raises(DataError, match="unsafe pickle"):
        load_splits(tmp_path / "evil.pkl", tokenizer=tok, cache=False)
    assert not marker.exists()
    pickle.loads(copy.copy(payload))  # what the restricted unpickler prevents
    assert marker.exists()


# -- segment-level feature tables (CSV and .npz) -----------------------------------------------------------------
TABLE_CELLS = st.sampled_from(["", "nan", "inf", "-inf", "abc", "1e400", "-1e400", "0x10", "1,5", " 2 ", "3j", "∞",
                               "\x00", "1" * 400])


def _table_content(seed: int):
    content = make_content(seed)
    ids = [c["id"] for split in SPLITS for c in content[split]]
    values = (np.random.default_rng(seed).integers(-8, 8, (len(ids), 5)) / 4).astype(np.float32)
    return content, ids, values


def _table_case():
    return st.one_of(
        st.tuples(st.just("csv_bytes"), st.integers(0, 3), byte_mutation()),
        st.tuples(st.just("csv_cell"), st.integers(0, 3), st.tuples(st.integers(0, 60), st.integers(0, 5), TABLE_CELLS)),
        st.tuples(st.just("csv_drop_row"), st.integers(0, 3), st.integers(0, 60)),
        st.tuples(st.just("csv_duplicate_row"), st.integers(0, 3), st.integers(0, 60)),
        st.tuples(st.just("csv_header"), st.integers(0, 3), st.sampled_from(["no_id", "dup_name", "empty_name", "short"])),
        st.tuples(st.just("npz_bytes"), st.integers(0, 3), byte_mutation()),
        st.tuples(st.just("npz_features"), st.integers(0, 3), BAD_ARRAYS),
        st.tuples(st.just("npz_keys"), st.integers(0, 3), st.sampled_from(["no_ids", "no_features", "object_ids",
                                                                           "int_ids", "short_ids", "bad_names",
                                                                           "pickled"])),
    )


@pytest.mark.slow
def test_fuzz_feature_tables(tok, tmp_path_factory):
    counts: Counter = Counter()
    base = tmp_path_factory.mktemp("tables")
    marker = base / "code_ran"

    @FUZZ
    @given(case=_table_case())
    def one(case):
        how, seed, arg = case
        content, ids, values = _table_content(seed)
        segments = write_segments_csv(base / f"seg{counts['total']}_segments.csv", content_rows(content))
        counts["total"] += 1
        names = [f"feat_{k}" for k in range(values.shape[1])]
        if how.startswith("csv"):
            rows = [[i, *(repr(float(v)) for v in row)] for i, row in zip(ids, values)]
            header = ["segment_id", *names]
            if how == "csv_cell":
                r, c, value = arg
                rows[r % len(rows)][c % len(header)] = value
            elif how == "csv_drop_row":
                rows.pop(arg % len(rows))
            elif how == "csv_duplicate_row":
                rows.append(list(rows[arg % len(rows)]))
            elif how == "csv_header":
                header = {"no_id": ["id", *names], "dup_name": ["segment_id", names[0], *names[:-1]],
                          "empty_name": ["segment_id", "", *names[1:]], "short": header[:-1]}[arg]
            buf = io.StringIO()
            csv.writer(buf).writerows([header, *rows])
            data = buf.getvalue().encode()
            if how == "csv_bytes":
                data = arg[1](data)
            path = base / f"table{counts['total']}.csv"
            path.write_bytes(data)
        else:
            arrays = {"segment_id": np.array(ids), "features": values, "names": np.array(names)}
            if how == "npz_features":
                arrays["features"] = bad_array(values, arg)
            elif how == "npz_keys":
                if arg == "no_ids":
                    del arrays["segment_id"]
                elif arg == "no_features":
                    del arrays["features"]
                elif arg == "object_ids":
                    arrays["segment_id"] = np.array(ids, dtype=object)
                elif arg == "int_ids":
                    arrays["segment_id"] = np.arange(len(ids))
                elif arg == "short_ids":
                    arrays["segment_id"] = np.array(ids[:-3])
                elif arg == "bad_names":
                    arrays["names"] = np.array(names[:2])
                elif arg == "pickled":
                    arrays["features"] = np.array([Evil(marker)] * len(ids), dtype=object)
            path = base / f"table{counts['total']}.npz"
            buf = io.BytesIO()
            np.savez(buf, **arrays)
            data = buf.getvalue()
            if how == "npz_bytes":
                data = arg[1](data)
            path.write_bytes(data)
        old = signal.signal(signal.SIGALRM, _alarm)
        signal.alarm(SECONDS_PER_MUTANT)
        try:
            loaded = load_splits(segments, tokenizer=tok, cache=False, features={"acoustic": path})
        except DataError as e:
            assert str(path) in str(e) or path.name in str(e), f"DataError does not name {path}: {e}"
            counts["DataError"] += 1
        else:
            check_invariants(loaded, len(tok.get_vocab()))
            assert loaded.info.d_acoustic == values.shape[1] or how == "csv_header"
            counts["loaded"] += 1
        finally:
            signal.alarm(0)
            signal.signal(signal.SIGALRM, old)
        _check_no_code_ran(marker)
        path.unlink()
        segments.unlink()

    one()
    REPORT["feature_tables"] = dict(counts)
    assert counts["loaded"] + counts["DataError"] == counts["total"] and counts["DataError"] > 0 and counts["loaded"] > 0
