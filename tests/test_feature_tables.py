"""Segment-level feature tables (CSV / .npz joined by segment_id), absent channels, ``mosi-covarep``, and the
real-frame ``.csd`` fixture built from the frame-level COVAREP file."""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from data_fixtures import content_rows, make_content, write_segments_csv
from fusionkit.data import DataError, load_splits, make_loader
from fusionkit.data.__main__ import main as cli
from fusionkit.data.dataset import parse_modalities

SHARED = Path(os.environ.get("FUSIONKIT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))
MOSI = SHARED / "mosi"
FRAMES = MOSI / "covarep_frames_ZUXBRvtny7o_9.mat"
D_TABLE = 5


pytestmark = pytest.mark.usefixtures("isolated_cache")


@pytest.fixture(scope="module")
def content():
    return make_content(seed=3)


def _vectors(content, d=D_TABLE, seed=0):
    rng = np.random.default_rng(seed)
    ids = [c["id"] for split in ("train", "valid", "test") for c in content[split]]
    return ids, (rng.integers(-8, 8, (len(ids), d)) / 4).astype(np.float32)


def _write_table(path: Path, ids, values, names=None, *, cells=None):
    names = names or [f"feat_{k}" for k in range(values.shape[1])]
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["segment_id", *names])
        for i, row in zip(ids, values):
            w.writerow([i, *(cells.get(i, [repr(float(v)) for v in row]) if cells else [repr(float(v)) for v in row])])
    return path


def _segment_table(tmp_path, content):
    return write_segments_csv(tmp_path / "fix_segments.csv", content_rows(content))


def _load(tmp_path, tok, content, **kw):
    return load_splits(_segment_table(tmp_path, content), tokenizer=tok, **kw)


# ------------------------------------------------------------------------------------------ joining and layouts


def test_csv_table_repeats_the_vector_on_every_word_piece(tmp_path, tok, content):
    ids, values = _vectors(content)
    table = _write_table(tmp_path / "egemaps.csv", ids, values)
    data = _load(tmp_path, tok, content, features={"acoustic": table})
    info = data.info
    assert (info.d_acoustic, info.d_visual, info.aligned, info.simulated) == (D_TABLE, 0, True, False)
    assert info.modalities == ("t", "a") and info.channels == {"text": "file", "acoustic": "file", "visual": "absent"}
    assert info.feature_names == {"acoustic": [f"feat_{k}" for k in range(D_TABLE)]}
    row = {i: v for i, v in zip(ids, values)}
    batch = next(iter(make_loader(data.splits["train"], batch_size=3, shuffle=False)))
    assert batch.visual is None and batch.visual_mask is None and batch.aligned and batch.modalities == ("t", "a")
    for b, seg in enumerate(batch.ids):
        n = int(batch.attention_mask[b].sum())
        a = batch.acoustic[b]
        assert torch.equal(a[1:n - 1], torch.from_numpy(row[seg]).expand(n - 2, D_TABLE))  # every word piece
        assert not a[0].any() and not a[n - 1:].any()  # [CLS], [SEP] and padding: zero rows, as for word rows


def test_step_layout_is_a_one_step_sequence_with_its_own_mask(tmp_path, tok, content):
    ids, values = _vectors(content)
    table = _write_table(tmp_path / "a.csv", ids, values)
    data = _load(tmp_path, tok, content, features={"acoustic": table}, segment_features="step")
    assert not data.info.aligned
    batch = next(iter(make_loader(data.splits["valid"], batch_size=3, shuffle=False)))
    assert batch.acoustic.shape == (3, 1, D_TABLE) and batch.acoustic_mask.tolist() == [[True]] * 3
    assert batch.visual is None and not batch.aligned
    row = {i: v for i, v in zip(ids, values)}
    assert all(torch.equal(batch.acoustic[b, 0], torch.from_numpy(row[s])) for b, s in enumerate(batch.ids))


def test_npz_and_csv_tables_load_to_identical_batches_and_both_modalities_can_be_tables(tmp_path, tok, content):
    ids, values = _vectors(content)
    _, vis = _vectors(content, d=3, seed=1)
    np.savez(tmp_path / "a.npz", segment_id=np.array(ids), features=values, names=np.array(["x", "y", "z", "u", "w"]))
    csv_a = _write_table(tmp_path / "a.csv", ids, values, ["x", "y", "z", "u", "w"])
    csv_v = _write_table(tmp_path / "v.csv", ids[::-1], vis[::-1])  # row order does not matter: joined by id
    from_npz = _load(tmp_path, tok, content, features={"acoustic": tmp_path / "a.npz", "visual": csv_v})
    from_csv = _load(tmp_path, tok, content, features={"acoustic": csv_a, "visual": csv_v})
    assert from_npz.info.modalities == ("t", "a", "v") and from_npz.info.feature_names["acoustic"][0] == "x"
    for split in ("train", "valid", "test"):
        for x, y in zip(make_loader(from_npz.splits[split], batch_size=2, shuffle=False),
                        make_loader(from_csv.splits[split], batch_size=2, shuffle=False), strict=True):
            assert torch.equal(x.acoustic, y.acoustic) and torch.equal(x.visual, y.visual)
    v_row = {i: v for i, v in zip(ids, vis)}
    batch = next(iter(make_loader(from_csv.splits["test"], batch_size=1, shuffle=False)))
    assert torch.equal(batch.visual[0, 1], torch.from_numpy(v_row[batch.ids[0]]))


def test_nonfinite_cells_become_zero_and_are_counted_per_split(tmp_path, tok, content):
    ids, values = _vectors(content)
    bad_id = content["test"][1]["id"]
    cells = {bad_id: ["-inf", "nan", "inf", "1.5", "2"]}
    table = _write_table(tmp_path / "a.csv", ids, values, cells=cells)
    data = _load(tmp_path, tok, content, features={"acoustic": table})
    assert data.info.report.sanitized_nonfinite == {"test": 3}
    ds = data.splits["test"]
    k = ds.ids.index(bad_id)
    assert np.array_equal(ds[k].acoustic[1], np.array([0, 0, 0, 1.5, 2], np.float32))


# ------------------------------------------------------------------------------------------ errors name file and ids


def test_ids_missing_on_either_side_are_one_error_naming_the_file_and_ids(tmp_path, tok, content):
    ids, values = _vectors(content)
    lacking = ids[2]
    table = _write_table(tmp_path / "a.csv", [*ids[:2], *ids[3:], "ghost_1"],
                         np.concatenate([values[:2], values[3:], values[:1]]))
    with pytest.raises(DataError) as err:
        _load(tmp_path, tok, content, features={"acoustic": table})
    msg = str(err.value)
    assert "a.csv" in msg and repr(lacking) in msg and "'ghost_1'" in msg and "no row" in msg


def test_duplicate_ids_and_non_numeric_cells_name_the_ids(tmp_path, tok, content):
    ids, values = _vectors(content)
    dup = _write_table(tmp_path / "dup.csv", [*ids, ids[4]], np.concatenate([values, values[4:5]]))
    with pytest.raises(DataError, match=rf"dup\.csv.*duplicate segment_id.*{ids[4]!r}"):
        _load(tmp_path, tok, content, features={"acoustic": dup})
    cells = {ids[0]: ["loud", "1", "1", "1", "1"], ids[5]: ["1", "", "1", "1", "1"]}
    text = _write_table(tmp_path / "text.csv", ids, values, cells=cells)
    with pytest.raises(DataError, match=rf"text\.csv.*non-numeric.*{ids[0]!r}, {ids[5]!r}"):
        _load(tmp_path, tok, content, features={"acoustic": text})


def test_npz_needing_pickle_or_lacking_arrays_is_refused(tmp_path, tok, content):
    ids, values = _vectors(content)
    np.savez(tmp_path / "obj.npz", segment_id=np.array(ids, dtype=object), features=values)
    with pytest.raises(DataError, match=r"obj\.npz.*pickle"):
        _load(tmp_path, tok, content, features={"acoustic": tmp_path / "obj.npz"})
    np.savez(tmp_path / "nofeat.npz", segment_id=np.array(ids))
    with pytest.raises(DataError, match=r"nofeat\.npz.*missing array\(s\) features"):
        _load(tmp_path, tok, content, features={"acoustic": tmp_path / "nofeat.npz"})


def test_feature_options_are_checked(tmp_path, tok, content):
    ids, values = _vectors(content)
    table = _write_table(tmp_path / "a.csv", ids, values)
    with pytest.raises(DataError, match="unknown modality 'audio'"):
        _load(tmp_path, tok, content, features={"audio": table})
    with pytest.raises(DataError, match="comes with its own channels"):
        load_splits("mosi-sim", tokenizer=tok, data_root=tmp_path, features={"acoustic": table})
    with pytest.raises(ValueError, match="segment_features 'frames'"):
        _load(tmp_path, tok, content, features={"acoustic": table}, segment_features="frames")


# ------------------------------------------------------------------------------------------ modality subsets


def test_select_modalities_drops_channels_to_none_and_refuses_absent_ones(tmp_path, tok, content):
    data = load_splits(_segment_table(tmp_path, content), tokenizer=tok)  # simulated a and v
    assert data.info.modalities == ("t", "a", "v") and data.select_modalities("t,a,v") is data
    text_only = data.select_modalities("t")
    batch = next(iter(make_loader(text_only.splits["train"], batch_size=2, shuffle=False)))
    assert batch.acoustic is None and batch.visual is None and batch.modalities == ("t",)
    full = next(iter(make_loader(data.splits["train"], batch_size=2, shuffle=False)))
    assert torch.equal(batch.input_ids, full.input_ids) and torch.equal(batch.label, full.label)
    tv = data.select_modalities("t,v")
    assert tv.info.modalities == ("t", "v") and tv.info.d_acoustic == 0 and tv.info.d_visual == 47
    assert tv.info.channels["acoustic"] == "absent" and data.info.channels["acoustic"] == "simulated"
    ids, values = _vectors(content)
    covarep_like = _load(tmp_path, tok, content, features={"acoustic": _write_table(tmp_path / "a.csv", ids, values)})
    with pytest.raises(ValueError, match="has no visual channel; its modalities are t,a"):
        covarep_like.select_modalities("t,v")


@pytest.mark.parametrize("spec, expected", [("t,a", ("t", "a")), ("v,t", ("t", "v")), ("tav", ("t", "a", "v")),
                                            (("t",), ("t",))])
def test_parse_modalities(spec, expected):
    assert parse_modalities(spec) == expected


@pytest.mark.parametrize("spec, match", [("a,v", "lacks t"), ("t,x", "subset of t"), ("t,t", "twice"), ("", "subset")])
def test_parse_modalities_errors(spec, match):
    with pytest.raises(ValueError, match=match):
        parse_modalities(spec)


def test_cli_inspect_reports_a_feature_table(tmp_path, tok, content, capsys, monkeypatch):
    ids, values = _vectors(content)
    table = _write_table(tmp_path / "a.csv", ids, values)
    monkeypatch.setattr("fusionkit.data.api.get_tokenizer", lambda _t: tok)
    monkeypatch.setattr("fusionkit.data.api.tokenizer_identity", lambda _t: "tiny")
    assert cli(["inspect", str(_segment_table(tmp_path, content)), "--features", f"acoustic={table}"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["format"] == "feature_table" and out["modalities"] == "t,a" and out["d_visual"] == 0
    assert out["channels"] == {"text": "file", "acoustic": "file", "visual": "absent"} and not out["simulated"]
    assert str(table) in out["sources"] and "NO visual channel" in out["description"]
    assert cli(["inspect", "x.csv", "--features", "sound=a.csv"]) == 2


# ------------------------------------------------------------------------------------------ real shared data


@pytest.mark.skipif(not (MOSI / "mosi_covarep_utterance_mean.csv").is_file(), reason="shared MOSI data not present")
def test_inspect_mosi_covarep(capsys):
    assert cli(["inspect", "mosi-covarep", "--data-root", str(SHARED)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["splits"] == {"train": 1284, "valid": 229, "test": 686}
    assert (out["d_acoustic"], out["d_visual"], out["modalities"], out["simulated"]) == (73, 0, "t,a", False)
    assert out["channels"] == {"text": "file", "acoustic": "file", "visual": "absent"}
    assert "COVAREP" in out["description"] and "NO visual channel" in out["description"]
    assert out["feature_names"]["acoustic"][:3] == ["F0", "VUV", "NAQ"] and out["sanitized_nonfinite"] == 0
    with open(MOSI / "mosi_covarep_utterance_mean.csv") as fh:  # the table's first row reaches the batch
        first = next(csv.DictReader(fh))
    data = load_splits("mosi-covarep", data_root=SHARED)
    split = next(s for s, ds in data.splits.items() if first["segment_id"] in ds.ids)
    ds = data.splits[split]
    row = ds[ds.ids.index(first["segment_id"])].acoustic[1]
    assert np.allclose(row, [float(first[k]) for k in list(first)[1:]], rtol=1e-6)


@pytest.mark.skipif(not FRAMES.is_file(), reason=f"{FRAMES} not present")
def test_real_covarep_frames_csd_fixture_averages_per_word_keeps_names_and_sanitizes(tmp_path):
    """A .csd set around the real frame-level COVAREP of ZUXBRvtny7o_9 (100 Hz frame timestamps, made-up word
    intervals): the reader's per-word rows are the frame means over each interval."""
    import h5py
    import scipy.io

    from fusionkit.data.csd import dimension_names, read_csd, read_sequence
    from fusionkit.data.errors import LoadReport

    mat = scipy.io.loadmat(FRAMES)
    frames = mat["features"].astype(np.float32)
    names = [str(np.asarray(n).ravel()[0]) for n in mat["names"].ravel()]
    assert frames.shape == (349, 74) and names[0] == "F0" and len(names) == 74
    frames[100, 0] = -np.inf  # a COVAREP-style artifact inside the second word
    n = len(frames)
    frame_iv = np.stack([np.arange(n) / 100.0, (np.arange(n) + 1) / 100.0], axis=1)
    bounds = [0, 37, 120, 121, 200, 349]  # made-up word boundaries, in frames (one word of a single frame)
    words = ["i", "loved", "it", "very", "good"]
    word_iv = np.array([[bounds[k] / 100.0, bounds[k + 1] / 100.0] for k in range(len(words))])
    videos = {"ZUXBRvtny7o": "train", "vidB": "valid", "vidC": "test"}

    def write(path, root, data, dim_names=None):
        with h5py.File(path, "w") as fh:
            g = fh.create_group(root)
            for video, (feats, iv) in data.items():
                v = g.create_group("data").create_group(video) if "data" not in g else g["data"].create_group(video)
                v.create_dataset("features", data=feats)
                v.create_dataset("intervals", data=iv)
            md = g.create_group("metadata")
            md.create_dataset("dimension names", data=np.array([s.encode() for s in (dim_names or ["[]"])],
                                                               dtype=object), dtype=h5py.string_dtype())

    write(tmp_path / "CMU_MOSI_TimestampedWords.csd", "Words",
          {v: (np.array([w.encode() for w in words], dtype="S")[:, None], word_iv) for v in videos})
    write(tmp_path / "CMU_MOSI_COVAREP.csd", "COVAREP", {v: (frames, frame_iv) for v in videos}, names)
    write(tmp_path / "CMU_MOSI_VisualFacet_4.1.csd", "FACET_4.1",
          {v: (np.ones((n, 2), np.float32), frame_iv) for v in videos})
    write(tmp_path / "CMU_MOSI_Opinion_Labels.csd", "Opinion Segment Labels",
          {v: (np.array([[1.5]], np.float32), np.array([[0.0, 3.49]])) for v in videos})
    write_segments_csv(tmp_path / "fix_segments.csv",
                       [dict(segment_id=f"{v}_1", video_id=v, clip_id=1, label=1.5, split=s, words=" ".join(words))
                        for v, s in videos.items()])

    assert dimension_names(read_sequence(tmp_path / "CMU_MOSI_COVAREP.csd")) == names
    report, feature_names = LoadReport(), {}
    out = read_csd(tmp_path, report=report, feature_names=feature_names)
    assert feature_names["acoustic"] == names  # COVAREP's 74 dimension names kept
    assert report.sanitized_nonfinite == {"train": 1, "valid": 1, "test": 1}  # the one -inf, in each copy
    seg = out["train"][0]
    assert seg.id == "ZUXBRvtny7o_1" and seg.words == words and seg.acoustic.shape == (5, 74)
    clean = np.where(np.isfinite(frames), frames, 0.0).astype(np.float64)
    for k in range(len(words)):
        expected = clean[bounds[k]:bounds[k + 1]].mean(axis=0)
        np.testing.assert_allclose(seg.acoustic[k], expected, rtol=1e-5, atol=1e-5)
    assert np.isfinite(seg.acoustic).all()
    assert 0 <= seg.acoustic[:, 0].min() and seg.acoustic[:, 0].max() <= 357  # F0 in the card's range (Hz)
    assert seg.acoustic[:, names.index("MCEP_0")].mean() < 0  # MCEP_0 ≈ −9 in this segment


@pytest.mark.slow
def test_benchmark_run_trains_on_a_feature_table(tmp_path, content, capsys):
    import benchmarks.run as bench

    ids, values = _vectors(content)
    table = _write_table(tmp_path / "a.csv", ids, values)
    out = tmp_path / "out"
    argv = ["--models", "lmf", "--dataset", str(_segment_table(tmp_path, content)), "--seeds", "1", "--epochs", "1",
            "--batch-size", "4", "--tiny-bert", "--quiet", "--out", str(out)]
    assert bench.main([*argv, "--features", f"acoustic={table}"]) == 0
    assert (out / "results.md").read_text().splitlines()[0].endswith("— from file: text, acoustic; absent: visual")
    assert json.loads((out / "lmf/seed0/run.json").read_text())["features"] == [f"acoustic={table}"]
    capsys.readouterr()
    assert bench.main([*argv, "--features", "sound=a.csv"]) == 2
    assert "error: --features 'sound=a.csv' is not MODALITY=PATH" in capsys.readouterr().err


def test_repeated_or_empty_feature_names_and_damaged_npz_are_data_errors(tmp_path, tok, content):
    from fusionkit.data import DataError
    from fusionkit.data.feature_tables import read_feature_table

    ids, values = _vectors(content)
    dup = _write_table(tmp_path / "dup.csv", ids, values, names=["a", "b", "a", "c", "d"])
    with pytest.raises(DataError, match=r"dup\.csv.*feature name\(s\) 'a' appear more than once"):
        read_feature_table(dup)
    empty = _write_table(tmp_path / "empty.csv", ids, values, names=["a", "", "b", "c", "d"])
    with pytest.raises(DataError, match=r"empty\.csv.*feature column\(s\) \[1\] have no name"):
        read_feature_table(empty)
    np.savez(tmp_path / "ok.npz", segment_id=np.array(ids), features=values)
    raw = (tmp_path / "ok.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(DataError, match=r"cut\.npz.*not a readable \.npz feature table"):
        read_feature_table(tmp_path / "cut.npz")
