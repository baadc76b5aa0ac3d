"""Readers (MAG-BERT pickle, MMSA pickle, .csd, segments CSV), safety, validation errors, cache and CLI."""
from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from data_fixtures import (
    content_rows,
    make_content,
    write_csd,
    write_mag_pickle,
    write_mmsa_pickle,
    write_segments_csv,
)
from fusionkit.data import DataError, load_splits, make_loader
from fusionkit.data.__main__ import main as cli

SHARED = Path(os.environ.get("FUSIONKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MOSI_CSV = SHARED / "mosi" / "mosi_segments.csv"
MOSI_LABELS = SHARED / "mosi" / "CMU_MOSI_Opinion_Labels.csd"
needs_mosi_csv = pytest.mark.skipif(not MOSI_CSV.is_file(), reason=f"{MOSI_CSV} not present")


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def content():
    return make_content(seed=0)


BATCH_FIELDS = ("input_ids", "attention_mask", "token_type_ids", "acoustic", "visual", "label")


def _batches(data, split):
    return list(make_loader(data.splits[split], batch_size=2, shuffle=False))


def _assert_same_batches(a, b):
    for split in ("train", "valid", "test"):
        for x, y in zip(_batches(a, split), _batches(b, split), strict=True):
            for name in BATCH_FIELDS:
                assert torch.equal(getattr(x, name), getattr(y, name)), (split, name)
            assert x.ids == y.ids and x.aligned == y.aligned


# ------------------------------------------------------------------------------------------ formats agree


def test_every_format_loads_to_identical_batches(tmp_path, tok, content):
    mag = load_splits(write_mag_pickle(tmp_path / "mag" / "mosi.pkl", content), tokenizer=tok)
    assert mag.info.format == "mag_pickle" and not mag.info.simulated
    assert [len(mag.splits[s]) for s in ("train", "valid", "test")] == [3, 3, 3]
    for other in (
        write_mmsa_pickle(tmp_path / "a" / "aligned_50.pkl", content, padding="back"),
        write_mmsa_pickle(tmp_path / "b" / "aligned_50.pkl", content, padding="front"),
        write_csd(tmp_path / "csd", content),
    ):
        data = load_splits(other, tokenizer=tok)
        assert data.info.format in ("mmsa_pickle", "csd")
        _assert_same_batches(mag, data)
    # the batch really holds the fixture's word features, repeated per word piece
    first = mag.splits["train"][0]
    assert first.id == content["train"][0]["id"]
    assert first.label == pytest.approx(content["train"][0]["label"])


def test_named_dataset_resolves_under_data_root_and_env(tmp_path, tok, content, monkeypatch):
    write_mag_pickle(tmp_path / "root" / "mosi" / "mosi.pkl", content)
    by_arg = load_splits("mosi", data_root=tmp_path / "root", tokenizer=tok)
    monkeypatch.setenv("FUSIONKIT_DATA", str(tmp_path / "root"))
    by_env = load_splits("mosi", tokenizer=tok)
    assert by_arg.info.name == "mosi" and by_arg.info.format == "mag_pickle"
    assert (by_arg.info.d_acoustic, by_arg.info.d_visual) == (74, 47)
    _assert_same_batches(by_arg, by_env)
    # sequences dropped straight into <root>/mosei are found too
    write_csd(tmp_path / "root" / "mosei", content)
    csd = load_splits("mosei", tokenizer=tok)
    assert csd.info.format == "csd" and csd.info.name == "mosei"
    _assert_same_batches(by_arg, csd)


def test_random_data_read_under_the_name_mosi_is_not_labelled_real(tmp_path, tok, content):
    """Realness is not taken from the name: the reader read these (random) features from a file, and says so."""
    import benchmarks.run as bench

    path = write_mag_pickle(tmp_path / "root" / "mosi" / "mosi.pkl", content)
    info = load_splits("mosi", data_root=tmp_path / "root", tokenizer=tok).info
    assert info.channel_kinds() == {"text": "file", "acoustic": "file", "visual": "file"} and not info.simulated
    assert info.description == f"features read from {path} (mag_pickle)"
    title = bench.channel_title(info.channel_kinds(), None, info.simulated)
    assert title == "from file: text, acoustic, visual"
    assert "real" not in f"{info.description} {title} {info.channel_summary()}".lower()


def test_mmsa_unaligned_keeps_sequences_and_masks(tmp_path, tok, content):
    data = load_splits(write_mmsa_pickle(tmp_path / "unaligned_50.pkl", content, aligned=False), tokenizer=tok)
    assert not data.info.aligned
    ds = data.splits["train"]
    np.testing.assert_array_equal(ds[0].acoustic, content["train"][0]["acoustic"])
    batch = next(iter(make_loader(ds, batch_size=3, shuffle=False)))
    assert not batch.aligned
    lengths = [len(c["words"]) for c in content["train"]]
    assert batch.acoustic.shape == (3, max(lengths), 74)
    assert batch.acoustic_mask.sum(1).tolist() == lengths and batch.visual_mask.sum(1).tolist() == lengths
    fixed = next(iter(make_loader(ds, batch_size=3, shuffle=False, padding="fixed")))
    assert fixed.input_ids.shape[1] == 50 and fixed.acoustic.shape[1] == max(lengths)


def test_nonfinite_features_become_zero_and_are_counted(tmp_path, tok, content):
    bad = {s: [dict(c) for c in segs] for s, segs in content.items()}
    a = bad["valid"][1]["acoustic"].copy()
    a[0, :3] = [np.nan, np.inf, -np.inf]
    bad["valid"][1]["acoustic"] = a
    data = load_splits(write_mag_pickle(tmp_path / "mosi.pkl", bad), tokenizer=tok)
    assert data.info.report.sanitized_nonfinite == {"valid": 3}
    ex = data.splits["valid"][1]
    assert np.isfinite(ex.acoustic).all() and not ex.acoustic[1, :3].any()


def test_covarep_style_neg_inf_is_zeroed_in_pickles_and_csd_alike(tmp_path, tok, content):
    bad = {s: [dict(c) for c in segs] for s, segs in content.items()}
    a = bad["train"][0]["acoustic"].copy()
    a[1, 5] = -np.inf
    bad["train"][0]["acoustic"] = a
    mag = load_splits(write_mag_pickle(tmp_path / "mosi.pkl", bad), tokenizer=tok)
    csd = load_splits(write_csd(tmp_path / "csd", bad), tokenizer=tok)
    assert mag.info.report.sanitized_nonfinite == {"train": 1}
    assert csd.info.report.sanitized_nonfinite == {"train": 2}  # the word's two frames
    _assert_same_batches(mag, csd)
    words = bad["train"][0]["words"]
    start = 1 + len(tok.tokenize(words[0]))
    rows = mag.splits["train"][0].acoustic[start:start + len(tok.tokenize(words[1]))]
    assert len(rows) and not rows[:, 5].any()
    np.testing.assert_array_equal(rows[:, 6], a[1, 6])


# ------------------------------------------------------------------------------------------ segments CSV


def test_segments_csv_uses_transcript_for_empty_words_and_is_deterministic(tmp_path, tok, content):
    rows = content_rows(content)
    rows[0]["words"] = ""
    rows[0]["transcript"] = "I LOVED IT"
    rows[4]["split"] = "dev"
    path = write_segments_csv(tmp_path / "mosi_segments.csv", rows)
    data = load_splits(path, tokenizer=tok)
    assert data.info.format == "segments_csv" and data.info.simulated
    assert "SIMULATED" in data.info.description
    assert data.info.report.fallbacks == {"transcript_for_empty_words": 1}
    assert data.info.report.total_dropped == 0
    assert len(data.splits["train"]) == 3 and rows[4]["segment_id"] in data.splits["valid"].ids
    first = data.splits["train"][0]
    assert first.input_ids.tolist()[1:-1] == tok.convert_tokens_to_ids(["i", "loved", "it"])
    assert (first.acoustic.shape[1], first.visual.shape[1]) == (74, 47)
    # the simulated rows depend on the segment only: a second file with the same segment gives the same rows
    other = write_segments_csv(tmp_path / "copy" / "mosi_segments.csv", rows)
    again = load_splits(other, tokenizer=tok, cache=False)
    np.testing.assert_array_equal(again.splits["test"][2].acoustic, data.splits["test"][2].acoustic)
    assert not np.array_equal(data.splits["test"][1].acoustic[1], data.splits["test"][2].acoustic[1])


def test_mosei_sim_resolves_with_35d_visual_and_empty_end(tmp_path, tok, content):
    rows = content_rows(content)
    for r in rows:
        r["end"] = ""
    rows[2]["words"] = ""
    write_segments_csv(tmp_path / "mosei" / "mosei_segments.csv", rows)
    data = load_splits("mosei-sim", data_root=tmp_path, tokenizer=tok)
    assert (data.info.d_acoustic, data.info.d_visual) == (74, 35)
    assert data.info.simulated and data.info.report.fallbacks["transcript_for_empty_words"] == 1


# ------------------------------------------------------------------------------------------ safety


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_without_running_code(tmp_path, tok):
    marker = tmp_path / "pwned"
    path = tmp_path / "mosi.pkl"
    path.write_bytes(pickle.dumps({"train": [_Exploit(marker)], "dev": [], "test": []}))
    with pytest.raises(DataError, match=r"mosi\.pkl.*unsafe pickle.*refusing to load (posix|os|nt)\.system"):
        load_splits(path, tokenizer=tok)
    assert not marker.exists()


def test_pickle_with_other_classes_is_refused(tmp_path, tok):
    from collections import Counter

    path = tmp_path / "aligned_50.pkl"
    path.write_bytes(pickle.dumps({"train": Counter(a=1)}))
    with pytest.raises(DataError, match="refusing to load collections.Counter"):
        load_splits(path, tokenizer=tok)


def test_cache_files_are_npz_without_pickles_and_corrupt_ones_are_rebuilt(tmp_path, tok, content):
    path = write_mag_pickle(tmp_path / "mosi.pkl", content)
    first = load_splits(path, tokenizer=tok)
    files = list((tmp_path / "cache").iterdir())
    assert len(files) == 1 and files[0].suffix == ".npz"
    with np.load(files[0], allow_pickle=False) as npz:  # raises if anything needed pickle
        assert {"train/input_ids", "valid/acoustic", "test/labels", "__meta__"} <= set(npz.files)
    cached = load_splits(path, tokenizer=tok)
    _assert_same_batches(first, cached)
    files[0].write_bytes(files[0].read_bytes()[:100])
    with pytest.warns(UserWarning, match="corrupt data cache"):
        rebuilt = load_splits(path, tokenizer=tok)
    _assert_same_batches(first, rebuilt)
    assert np.load(files[0], allow_pickle=False)["train/labels"].shape == (3,)
    assert not [f for f in (tmp_path / "cache").iterdir() if f.suffix != ".npz"]  # no temp files left


def test_cache_key_changes_with_tokenizer_and_length(tmp_path, tok, content):
    path = write_mag_pickle(tmp_path / "mosi.pkl", content)
    load_splits(path, tokenizer=tok)
    load_splits(path, tokenizer=tok, max_seq_length=6)
    short = load_splits(path, tokenizer=tok, max_seq_length=6)
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2
    assert short.splits["train"].lengths.max() <= 6


# ------------------------------------------------------------------------------------------ bad inputs


def _mag(tmp_path, content, edit):
    data = {s: [dict(c) for c in segs] for s, segs in content.items()}
    edit(data)
    return write_mag_pickle(tmp_path / "bad" / "mosi.pkl", data)


def _set(split, i, key, value):
    def edit(data):
        data[split][i][key] = value
    return edit


@pytest.mark.parametrize(
    ("edit", "pattern"),
    [
        (_set("train", 1, "label", 3.5), r"split 'train', segment 'vid0X-0_2': label 3\.5 is outside \[-3, 3\]"),
        (_set("test", 0, "label", "positive"), r"split 'test', segment 'vid2X-0_1': label 'positive' is not numeric"),
        (_set("valid", 2, "words", []), r"split 'dev', segment 'vid1X-0_3': the word list is empty"),
        (_set("train", 0, "visual", np.zeros((2, 47), np.float32)),
         r"split 'train', segment 'vid0X-0_1': visual features have 2 rows but the segment has \d+ words"),
    ],
)
def test_bad_mag_inputs_name_file_split_and_segment(tmp_path, tok, content, edit, pattern):
    path = _mag(tmp_path, content, edit)
    with pytest.raises(DataError, match=f"mosi.pkl'.*{pattern}"):
        load_splits(path, tokenizer=tok, cache=False)


def test_wrong_feature_dims(tmp_path, tok, content):
    def edit(data):
        c = data["test"][1]
        c["acoustic"] = np.zeros((len(c["words"]), 70), np.float32)
    path = _mag(tmp_path, content, edit)
    with pytest.raises(DataError, match=r"split 'test', segment 'vid2X-0_2': acoustic features are 70-d, expected 74"):
        load_splits(path, tokenizer=tok, cache=False)
    (tmp_path / "root" / "mosi").mkdir(parents=True)
    os.replace(path, tmp_path / "root" / "mosi" / "mosi.pkl")
    with pytest.raises(DataError, match="70-d, expected 74-d"):
        load_splits("mosi", data_root=tmp_path / "root", tokenizer=tok, cache=False)


def test_missing_split_and_keys(tmp_path, tok, content):
    path = write_mag_pickle(tmp_path / "mosi.pkl", content)
    data = pickle.loads(path.read_bytes())
    del data["dev"]
    data["valid"] = []
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=r"unrecognised pickle layout"):
        load_splits(path, tokenizer=tok, cache=False)
    data = {"train": data["train"], "dev": data["train"]}
    path.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=r"mosi\.pkl'.*missing split\(s\) test"):
        load_splits(path, tokenizer=tok, cache=False)
    mmsa = write_mmsa_pickle(tmp_path / "aligned_50.pkl", content)
    data = pickle.loads(mmsa.read_bytes())
    del data["valid"]["vision"]
    mmsa.write_bytes(pickle.dumps(data))
    with pytest.raises(DataError, match=r"aligned_50\.pkl', split 'valid': missing key\(s\) vision"):
        load_splits(mmsa, tokenizer=tok, cache=False)


def test_truncated_and_corrupt_files(tmp_path, tok, content):
    path = write_mag_pickle(tmp_path / "mosi.pkl", content)
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DataError, match=r"mosi\.pkl'.*(truncated or corrupt|corrupt pickle)"):
        load_splits(path, tokenizer=tok, cache=False)
    folder = write_csd(tmp_path / "csd", content)
    words = folder / "CMU_MOSI_TimestampedWords.csd"
    words.write_bytes(words.read_bytes()[:600])
    with pytest.raises(DataError, match=r"TimestampedWords\.csd'.*(not a readable HDF5|truncated or corrupt)"):
        load_splits(folder, tokenizer=tok, cache=False)
    csv_path = write_segments_csv(tmp_path / "s" / "mosi_segments.csv", content_rows(content))
    text = csv_path.read_text().splitlines()
    csv_path.write_text("\n".join(text[:4] + [text[4].split(",", 3)[0] + "," + text[4].split(",")[1]]) + "\n")
    with pytest.raises(DataError, match=r"mosi_segments\.csv'.*segment 'vid1X-0_1': row 5 has the wrong number"):
        load_splits(csv_path, tokenizer=tok, cache=False)


def test_csd_errors(tmp_path, tok, content):
    folder = write_csd(tmp_path / "csd", content)
    (folder / "CMU_MOSI_VisualFacet_4.1.csd").unlink()
    with pytest.raises(DataError, match="missing computational sequence.*visual"):
        load_splits(folder, tokenizer=tok, cache=False)
    folder = write_csd(tmp_path / "nosplit", content, split_csv=False)
    with pytest.raises(DataError, match="no video → split map"):
        load_splits(folder, tokenizer=tok, cache=False)


def test_missing_dataset_names_the_paths_and_what_to_put(tmp_path):
    with pytest.raises(DataError) as err:
        load_splits("mosi", data_root=tmp_path)
    msg = str(err.value)
    assert "dataset 'mosi' not found" in msg and str(tmp_path / "mosi" / "mosi.pkl") in msg
    assert "MAG-BERT's mosi.pkl" in msg and "mosi-sim" in msg
    with pytest.raises(DataError, match=r"(?s)dataset .mosi-sim. not found.*mosi_segments\.csv"):
        load_splits("mosi-sim", data_root=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        load_splits(tmp_path / "nothing.pkl")


def test_cli_errors_exit_2_with_one_line(tmp_path, capsys):
    assert cli(["inspect", "mosei", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: dataset 'mosei' not found") and err.count("\n") == 1


def test_cli_inspect_json_on_a_fixture(tmp_path, tok, content, capsys, monkeypatch):
    bad = {s: [dict(c) for c in segs] for s, segs in content.items()}
    bad["train"][0]["label"] = 0.0
    path = write_mag_pickle(tmp_path / "mosi.pkl", bad)
    monkeypatch.setattr("fusionkit.data.api.get_tokenizer", lambda _t: tok)
    monkeypatch.setattr("fusionkit.data.api.tokenizer_identity", lambda _t: "tiny")
    assert cli(["inspect", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "mag_pickle" and out["splits"] == {"train": 3, "valid": 3, "test": 3}
    assert (out["d_acoustic"], out["d_visual"], out["zero_labels"], out["dropped"]) == (74, 47, 1, 0)
    labels = [c["label"] for s in bad.values() for c in s]
    assert out["label_range"] == pytest.approx([min(labels), max(labels)])


# ------------------------------------------------------------------------------------------ real shared data


@pytest.mark.skipif(not MOSI_LABELS.is_file(), reason=f"{MOSI_LABELS} not present")
def test_real_mosi_label_sequence():
    from fusionkit.data.csd import label_segments, read_sequence, role_of, split_map_for

    seq = read_sequence(MOSI_LABELS)
    assert role_of(seq) == "labels" and seq.name == "Opinion Segment Labels"
    segments = label_segments(seq)
    assert len(segments) == 93 and sum(len(v) for v in segments.values()) == 2199
    folds, _ = split_map_for(MOSI_LABELS, segments)
    counts = {s: sum(len(v) for k, v in segments.items() if folds[k] == s) for s in ("train", "valid", "test")}
    videos = {s: sum(1 for k in segments if folds[k] == s) for s in ("train", "valid", "test")}
    assert counts == {"train": 1284, "valid": 229, "test": 686}
    assert videos == {"train": 52, "valid": 10, "test": 31}
    from fusionkit.data.folds import MOSI_FOLDS  # the built-in folds agree with the CSV's
    assert all(MOSI_FOLDS[k] == folds[k] for k in segments)
    if MOSI_CSV.is_file():
        import csv

        with open(MOSI_CSV) as fh:
            labels = {r["segment_id"]: float(r["label"]) for r in csv.DictReader(fh)}
        ours = {sid: lab for rows in segments.values() for sid, _s, _e, lab in rows}
        assert ours.keys() == labels.keys()
        assert max(abs(ours[k] - labels[k]) for k in ours) < 1e-4


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("shared_cache")


@needs_mosi_csv
def test_inspect_mosi_sim(capsys, monkeypatch, shared_cache):
    monkeypatch.setenv("FUSIONKIT_CACHE", str(shared_cache))
    assert cli(["inspect", "mosi-sim", "--data-root", str(SHARED)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"] == {"train": 1284, "valid": 229, "test": 686}
    assert -3 <= out["label_range"][0] < 0 < out["label_range"][1] <= 3
    assert out["zero_labels"] == 96 and out["simulated"] and out["d_visual"] == 47
    assert out["fallbacks"] == {"transcript_for_empty_words": 4} and out["dropped"] == 0
    assert out["sanitized_nonfinite"] > 0


@needs_mosi_csv
def test_mosi_sim_probe_is_calibrated(monkeypatch, shared_cache):
    from fusionkit.data.calibrate import calibration

    monkeypatch.setenv("FUSIONKIT_CACHE", str(shared_cache))
    result = calibration(load_splits("mosi-sim", data_root=SHARED))
    assert 57 <= result["acoustic"]["logistic_acc2"] <= 63
    assert 54 <= result["visual"]["logistic_acc2"] <= 60
