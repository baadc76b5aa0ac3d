"""Fusion probes: deterministic generators that follow their documented rules, and loading them by name."""
from __future__ import annotations

import csv

import numpy as np
import pytest

from fusionkit.data import probes
from fusionkit.data.probes import CUE_SPAN, CUE_WORDS, LEXICON, PROBE_NAMES, Hidden, hidden_variable

WORDS = "i think the movie was really not that good but the music was fun and so was the ending".split()
IDS = [f"vid{v}_{c}" for v in range(8) for c in range(25)]


def hiddens(probe: str, words=WORDS):
    return [hidden_variable(probe, segment_id=i, words=words) for i in IDS]


@pytest.mark.parametrize("probe", PROBE_NAMES)
def test_generators_are_deterministic_by_segment_id(probe):
    first = hidden_variable(probe, segment_id="abc_1", words=WORDS)
    assert hidden_variable(probe, segment_id="abc_1", words=WORDS) == first
    a1, v1 = probes.probe_channels(segment_id="abc_1", video_id="abc", n_words=len(WORDS), hidden=first)
    a2, v2 = probes.probe_channels(segment_id="abc_1", video_id="abc", n_words=len(WORDS), hidden=first)
    assert np.array_equal(a1, a2) and np.array_equal(v1, v2)
    assert a1.shape == (len(WORDS), 74) and v1.shape == (len(WORDS), 47) and np.isfinite(a1).all()
    if probe != "probe-redundant":  # the hidden variable varies across segments
        assert len({repr(h) for h in hiddens(probe)}) > 1


@pytest.mark.parametrize("probe, channel, other", [("probe-unique-a", "acoustic", "visual"),
                                                    ("probe-unique-v", "visual", "acoustic")])
def test_unique_probes_flag_only_in_their_channel(probe, channel, other):
    hs = hiddens(probe)
    for h in hs:
        cues = getattr(h, channel)
        assert getattr(h, other) == {}
        assert h.flip == bool(cues)
        assert not cues or (len(cues) == CUE_WORDS and set(cues.values()) == {1})
    rate = np.mean([h.flip for h in hs])
    assert 0.2 < rate < 0.4  # FLIP_RATE = 0.3 over 200 segments


def test_synergy_flips_on_xor_and_each_channel_alone_is_uninformative():
    hs = hiddens("probe-synergy")
    a = np.array([bool(h.acoustic) for h in hs])
    v = np.array([bool(h.visual) for h in hs])
    flip = np.array([h.flip for h in hs])
    assert np.array_equal(flip, a ^ v)
    # P(flip | acoustic cue) and P(flip | none) are both about 1/2: the acoustic channel alone tells nothing
    assert abs(flip[a].mean() - flip[~a].mean()) < 0.2 and abs(flip[v].mean() - flip[~v].mean()) < 0.2


def test_timing_flips_only_when_the_cue_is_in_the_first_half():
    hs = hiddens("probe-timing")
    half = len(WORDS) // 2
    for h in hs:
        assert len(h.acoustic) == CUE_WORDS and h.visual == {}  # every segment carries the cue
        in_first = [i < half for i in h.acoustic]
        assert all(in_first) or not any(in_first)
        assert h.flip == all(in_first)
    assert 0 < np.mean([h.flip for h in hs]) < 0.5
    # a one-word segment has no first half: it never flips
    assert not any(hidden_variable("probe-timing", segment_id=i, words=["fine"]).flip for i in IDS)


def test_redundant_cue_marks_the_lexicon_words_by_polarity():
    words = "the movie was good but so boring and the worst".split()
    h = hidden_variable("probe-redundant", segment_id="x_1", words=words)
    assert h == Hidden(acoustic={3: 1, 6: -1, 9: -1}, visual={}, flip=False)
    assert LEXICON["good"] == 1 and LEXICON["boring"] == -1
    long = ["good"] * (CUE_SPAN + 5)  # only the visible words are marked
    assert sorted(hidden_variable("probe-redundant", segment_id="x", words=long).acoustic) == list(range(CUE_SPAN))


def test_null_never_changes_the_target():
    hs = hiddens("probe-null")
    assert not any(h.flip for h in hs)
    assert any(h.acoustic for h in hs) and any(h.visual for h in hs)
    assert probes.probe_target(1.5, Hidden(flip=True)) == -1.5 and probes.probe_target(1.5, Hidden()) == 1.5


def test_cue_adds_exactly_its_shift_on_its_words_and_dims():
    hidden = Hidden(acoustic={1: 1, 4: -1}, visual={2: 1})
    a, v = probes.probe_channels(segment_id="s_1", video_id="s", n_words=6, hidden=hidden)
    a0, v0 = probes.probe_channels(segment_id="s_1", video_id="s", n_words=6, hidden=Hidden())
    dims_a, shift_a = probes.cue_direction(probes.ACOUSTIC, 74)
    dims_v, shift_v = probes.cue_direction(probes.VISUAL, 47)
    expected_a = np.zeros_like(a0)
    expected_a[1, dims_a] = shift_a
    expected_a[4, dims_a] = -shift_a
    expected_v = np.zeros_like(v0)
    expected_v[2, dims_v] = shift_v
    np.testing.assert_allclose(a - a0, expected_a, atol=1e-5)
    np.testing.assert_allclose(v - v0, expected_v, atol=1e-5)


def test_cue_strength_scales_the_shift_changes_the_cache_key_and_is_restored():
    calibrated, key = probes.CUE_STRENGTH, probes.fingerprint()
    _, shift = probes.cue_direction(probes.ACOUSTIC, 74)
    with probes.cue_strength(2 * calibrated) as value:
        assert value == 2 * calibrated
        _, doubled = probes.cue_direction(probes.ACOUSTIC, 74)
        np.testing.assert_allclose(doubled, 2 * shift, rtol=1e-6)
        assert probes.fingerprint() != key  # a cached copy of the calibrated probes is never returned
    assert probes.CUE_STRENGTH == calibrated and probes.fingerprint() == key
    with probes.cue_strength(None):
        assert probes.CUE_STRENGTH == calibrated
    with pytest.raises(RuntimeError), probes.cue_strength(3.0):
        raise RuntimeError("restored even when the block fails")
    assert probes.CUE_STRENGTH == calibrated


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_cue_strength_must_be_non_negative_and_finite(bad):
    with pytest.raises(ValueError, match="cue strength must be a non-negative number"), probes.cue_strength(bad):
        pass


def test_cue_strength_zero_removes_every_cue():
    hidden = Hidden(acoustic={1: 1, 4: -1}, visual={2: 1})
    with probes.cue_strength(0):
        a, v = probes.probe_channels(segment_id="s_1", video_id="s", n_words=6, hidden=hidden)
    a0, v0 = probes.probe_channels(segment_id="s_1", video_id="s", n_words=6, hidden=Hidden())
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(v, v0)


def _write_table(root, rows):
    (root / "mosi").mkdir(parents=True)
    with open(root / "mosi" / "mosi_segments.csv", "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=["segment_id", "video_id", "clip_id", "label", "split", "words"])
        writer.writeheader()
        writer.writerows(rows)


def test_probe_loads_by_name_with_simulated_channels_and_probe_targets(tmp_path, tok, isolated_cache):
    from fusionkit.data import load_splits

    rows = [{"segment_id": f"v{i}_{i}", "video_id": f"v{i}", "clip_id": str(i), "label": f"{0.5 + i / 20:.2f}",
             "split": ("train", "valid", "test")[i % 3], "words": "i loved the movie it was great fun"}
            for i in range(30)]
    _write_table(tmp_path, rows)
    data = load_splits("probe-unique-a", data_root=tmp_path, tokenizer=tok)
    assert data.info.channel_kinds() == {"text": "file", "acoustic": "simulated", "visual": "simulated"}
    assert data.info.simulated and "SIMULATED" in data.info.description and data.info.format == "probe"
    table = probes.hidden_table("probe-unique-a", data_root=tmp_path)
    for split, ds in data.splits.items():
        for seg_id, label in zip(ds.ids, ds.labels):
            p = table[seg_id]
            assert label == pytest.approx(-p.original_label if p.hidden.flip else p.original_label)
    assert any(p.hidden.flip for p in table.values()) and not all(p.hidden.flip for p in table.values())
    null = load_splits("probe-null", data_root=tmp_path, tokenizer=tok)  # another probe: another cache entry
    assert np.allclose(sorted(null.splits["train"].labels), sorted(float(r["label"]) for r in rows[0::3]))


def test_unknown_dataset_message_lists_the_probes():
    from fusionkit.data import DataError
    from fusionkit.data.api import resolve_source

    with pytest.raises(DataError, match="probe-unique-a"):
        resolve_source("probe-unique-x")


@pytest.mark.slow  # sklearn and the bundled tokenizer
def test_cue_readout_reads_the_planted_cue(tmp_path):
    rows = [{"segment_id": f"v{i // 5}_{i}", "video_id": f"v{i // 5}", "clip_id": str(i), "label": "1.0",
             "split": ("train", "train", "valid", "test")[i % 4], "words": " ".join(["word"] * (6 + i % 9))}
            for i in range(240)]
    _write_table(tmp_path, rows)
    out = probes.cue_readout("probe-unique-a", data_root=tmp_path)
    table = probes.hidden_table("probe-unique-a", data_root=tmp_path)
    assert out["flip_rate"] == pytest.approx(np.mean([p.hidden.flip for p in table.values()]))
    assert out["segments_with_cue"] == out["flip_rate"]  # unique-a: a cue exactly on the ironic segments
    assert 0.65 < out["word_readout_balanced_acc"] < 0.9  # readable, not trivially (calibrated near 0.78)
    # the best-scoring word of a segment tells cued segments apart well above chance (0.5)
    assert out["segment_max_readout_auc"] > 0.65
    assert out["cue_words_truncated"] == 0


def test_calibrate_refuses_a_cue_strength_for_a_dataset_without_a_cue(capsys):
    from fusionkit.data.__main__ import main

    assert main(["calibrate", "synthetic", "--cue-strength", "2"]) == 2
    assert "--cue-strength applies to the probe datasets" in capsys.readouterr().err
