"""Extraction from clips: real speech from espeak-ng, OpenFace CSVs in OpenFace 2.0's schema, the SDK's
averaging rule computed by hand, every bad input refused or repaired as documented, and a round trip."""
from __future__ import annotations

import json
import math
import shutil
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from extract_fixtures import ESPEAK, NO_ESPEAK, spoken_clip, tone, write_openface, write_words_csv
from fusionkit.extract import (AudioError, ExtractError, OpenFaceError, Word, WordsError, check_timings, extract,
                               read_audio, read_openface, read_words, word_means)
from fusionkit.extract.words import parse_word_json

F0 = "F0semitoneFrom27.5Hz_sma3nz"
LOUD = "Loudness_sma3"
needs_espeak = pytest.mark.skipif(ESPEAK is None, reason=NO_ESPEAK)


def _table(path):
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def _column(table, name):
    return table["features"][:, list(table["names"]).index(name)]


# -- the averaging rule --------------------------------------------------------------------------------------
def test_word_means_by_hand():
    feats = np.array([[1.0, 10.0], [3.0, np.nan], [5.0, 30.0], [7.0, 40.0]])
    frames = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [3.0, 4.0]])
    words = np.array([[0.5, 2.5],        # overlaps frames 0, 1, 2
                      [3.0, 3.0],        # zero-length at a frame start: frame 3 contains it? f0 < 3 is false → none
                      [3.2, 3.8],        # inside frame 3
                      [np.nan, np.nan],  # untimed
                      [9.0, 9.5]])       # beyond the frames
    means, counts, bad = word_means(feats, frames, words)
    np.testing.assert_allclose(means[0], [(1 + 3 + 5) / 3, (10 + 30) / 2])  # NaN left out of its feature only
    np.testing.assert_array_equal(counts, [3, 0, 1, 0, 0])
    np.testing.assert_allclose(means[2], [7.0, 40.0])
    np.testing.assert_array_equal(means[[1, 3, 4]], 0.0)
    assert bad == 1


@given(st.integers(1, 30), st.integers(1, 8), st.integers(0, 10_000), st.booleans())
@settings(max_examples=80, deadline=None)
def test_word_means_equal_brute_force(n, m, seed, fixed_length):
    rng = np.random.default_rng(seed)
    starts = np.sort(rng.uniform(0, 3, n))
    lengths = np.full(n, 0.06) if fixed_length else rng.uniform(0.005, 0.3, n)  # openSMILE / arbitrary frames
    frames = np.stack([starts, starts + lengths], axis=1)
    feats = rng.normal(size=(n, 3))
    feats[rng.uniform(size=feats.shape) < 0.1] = np.nan
    w0 = rng.uniform(0, 3, m)
    words = np.stack([w0, w0 + rng.uniform(0, 0.5, m)], axis=1)
    means, counts, _ = word_means(feats, frames, words)
    for j, (a, b) in enumerate(words):
        hit = (frames[:, 1] > a) & (frames[:, 0] < b)
        assert counts[j] == hit.sum()
        for d in range(3):
            vals = feats[hit, d][np.isfinite(feats[hit, d])]
            assert means[j, d] == pytest.approx(vals.mean() if len(vals) else 0.0, abs=1e-5)


def test_check_timings_repairs_and_refusals():
    counts = Counter()
    words = [Word("b", 1.0, 2.0), Word("a", 0.0, 1.2), Word("c", 2.5, 3.5)]
    out = check_timings(words, duration=3.0, segment="s", counts=counts)
    assert [w.word for w in out] == ["a", "b", "c"]          # unsorted → sorted by start
    assert counts["reordered_segments"] == 1
    assert counts["overlapping"] == 1                         # b starts before a ends: both keep their interval
    assert out[2].end == 3.0 and counts["clipped"] == 1       # ends past the audio → clipped to its end
    with pytest.raises(WordsError, match="starts at 4 s but the audio ends at 3.000 s"):
        check_timings([Word("late", 4.0, 4.5)], duration=3.0, segment="s", counts=Counter())
    with pytest.raises(WordsError, match="0 ≤ start ≤ end"):
        check_timings([Word("neg", 1.0, 0.5)], duration=3.0, segment="s", counts=Counter())


# -- word-timing formats -------------------------------------------------------------------------------------
FORMATS = {
    "whisperx": {"segments": [{"start": 0.1, "end": 0.9, "text": " so good",
                               "words": [{"word": "so", "start": 0.1, "end": 0.3, "score": 0.9},
                                         {"word": "good", "start": 0.35, "end": 0.9, "score": 0.8},
                                         {"word": "2"}]}]},
    "whisper-timestamped": {"text": " so good", "segments": [{"id": 0, "start": 0.1, "end": 0.9, "text": " so good",
                            "words": [{"text": "so", "start": 0.1, "end": 0.3, "confidence": 0.9},
                                      {"text": "good", "start": 0.35, "end": 0.9, "confidence": 0.8}]}]},
    "gentle": {"transcript": "so good 2", "words": [
        {"alignedWord": "so", "case": "success", "start": 0.1, "end": 0.3, "word": "so", "startOffset": 0},
        {"alignedWord": "good", "case": "success", "start": 0.35, "end": 0.9, "word": "good", "startOffset": 3},
        {"case": "not-found-in-audio", "word": "2", "startOffset": 8}]},
    "mfa": {"start": 0, "end": 1.0, "tiers": {"words": {"type": "interval_tier", "entries": [
        [0.0, 0.1, ""], [0.1, 0.3, "so"], [0.35, 0.9, "good"]]}, "phones": {"type": "interval_tier", "entries": []}}},
    "list": [{"word": "so", "start": 0.1, "end": 0.3}, {"word": "good", "start": 0.35, "end": 0.9}],
}


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_word_json_formats(fmt):
    words, found, dropped = parse_word_json(FORMATS[fmt], where="t")
    assert found == fmt
    assert [(w.word, w.start, w.end) for w in words[:2]] == [("so", 0.1, 0.3), ("good", 0.35, 0.9)]
    if fmt in ("whisperx", "gentle"):  # the untimed word stays in the text, without times
        assert words[2].word == "2" and not words[2].timed
    assert dropped == (1 if fmt == "mfa" else 0)


def test_words_from_csv_and_csd(tmp_path):
    from data_fixtures import _write_seq

    csv_path = write_words_csv(tmp_path / "w.csv", [("a", "hi", 0, 0.5), ("a", "sp", 0.5, 0.6), ("b", "yo", 0, 1)])
    src = read_words(csv_path)
    assert {k: [w.word for w in v] for k, v in src.segments.items()} == {"a": ["hi"], "b": ["yo"]}
    assert src.dropped_silence == 1
    tokens = np.array([[b"sp"], [b"hello"], [b"there"]], dtype=object)
    _write_seq(tmp_path / "CMU_MOSI_TimestampedWords.csd", "Words", {"vid1": (tokens.astype("S"), [[0, .2], [.2, .6],
                                                                                                  [.6, 1.0]])})
    src = read_words(tmp_path / "CMU_MOSI_TimestampedWords.csd")
    assert [(w.word, round(w.start, 3)) for w in src.segments["vid1"]] == [("hello", 0.2), ("there", 0.6)]


def test_unknown_json_is_one_clear_error(tmp_path):
    (tmp_path / "x.json").write_text(json.dumps({"foo": 1}))
    with pytest.raises(WordsError, match="not a known word-timing JSON"):
        read_words(tmp_path / "x.json")


# -- audio: repairs and refusals -----------------------------------------------------------------------------
def test_audio_stereo_and_rate_repairs(tmp_path):
    data = tone(tmp_path / "s.wav", 0.5, sr=44100, channels=2, subtype="FLOAT")
    signal, info = read_audio(tmp_path / "s.wav", sample_rate=16000)
    assert info.downmixed and info.channels == 2 and info.resampled_from == 44100
    assert len(signal) == pytest.approx(0.5 * 16000, abs=2)
    same, _ = read_audio(tmp_path / "s.wav", sample_rate=44100)
    np.testing.assert_allclose(same, data.mean(axis=1), atol=1e-6)  # the downmix is the channel mean


def test_audio_refusals(tmp_path):
    tone(tmp_path / "low.wav", 0.5, sr=4000)
    with pytest.raises(AudioError, match="4000 Hz is below 8000 Hz"):
        read_audio(tmp_path / "low.wav")
    tone(tmp_path / "ok.wav", 1.0)
    raw = (tmp_path / "ok.wav").read_bytes()
    (tmp_path / "cut.wav").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(AudioError, match="truncated WAV"):
        read_audio(tmp_path / "cut.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF\x00\x00")
    with pytest.raises(AudioError, match="not a readable audio file"):
        read_audio(tmp_path / "junk.wav")


def test_video_container_without_ffmpeg_names_the_fix(tmp_path, monkeypatch):
    (tmp_path / "clip.mp4").write_bytes(b"\x00" * 64)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(AudioError, match="install ffmpeg"):
        read_audio(tmp_path / "clip.mp4")


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg is not installed")
def test_ffmpeg_decodes_other_containers(tmp_path):
    import subprocess

    tone(tmp_path / "t.wav", 1.0, sr=16000)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "t.wav"), str(tmp_path / "t.mka")], check=True)
    signal, info = read_audio(tmp_path / "t.mka")
    assert info.decoder == "ffmpeg" and abs(info.duration - 1.0) < 0.05 and info.resampled_from is None
    tone(tmp_path / "st.wav", 1.0, sr=22050, channels=2)
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(tmp_path / "st.wav"), str(tmp_path / "st.mka")], check=True)
    signal, info = read_audio(tmp_path / "st.mka", sample_rate=16000)
    assert info.channels == 2 and info.downmixed and info.resampled_from == 22050
    assert len(signal) == pytest.approx(16000, abs=400)


# -- speech from espeak-ng -----------------------------------------------------------------------------------
@needs_espeak
def test_higher_pitch_words_get_higher_f0_on_their_interval(tmp_path):
    (tmp_path / "clips").mkdir()
    timings = spoken_clip(tmp_path / "clips" / "p.wav", ["yes"] * 4, pitches=[10, 90, 10, 90])
    write_words_csv(tmp_path / "w.csv", [("p", w, a, b) for w, a, b in timings])
    extract(audio=tmp_path / "clips", words=tmp_path / "w.csv", out=tmp_path / "out", progress=False)
    table = _table(tmp_path / "out" / "acoustic.npz")
    f0 = _column(table, F0)
    np.testing.assert_allclose(table["start"], [t[1] for t in timings], atol=1e-6)
    assert min(f0[1], f0[3]) > max(f0[0], f0[2]) + 2.0, f0  # semitones
    # the same frames given the neighbours' intervals: the pattern follows the intervals, not the word order
    shifted = [("p", f"w{k}", timings[k + 1][1], timings[k + 1][2]) for k in range(3)]
    write_words_csv(tmp_path / "s.csv", shifted)
    extract(audio=tmp_path / "clips", words=tmp_path / "s.csv", out=tmp_path / "out2", progress=False)
    g0 = _column(_table(tmp_path / "out2" / "acoustic.npz"), F0)
    np.testing.assert_allclose(g0, f0[1:], rtol=1e-5)


@needs_espeak
def test_silence_and_untimed_words(tmp_path):
    (tmp_path / "clips").mkdir()
    timings = spoken_clip(tmp_path / "clips" / "q.wav", ["good", None, "movie"], silences={1: 0.6})
    # the pause's interior (openSMILE's pitch window reaches ~60 ms across a boundary)
    rows = [("q", w, a + 0.1, b - 0.1) if w == "pause" else ("q", w, a, b) for w, a, b in timings]
    rows += [("q", "extra", "", "")]
    write_words_csv(tmp_path / "w.csv", rows)
    result = extract(audio=tmp_path / "clips", words=tmp_path / "w.csv", out=tmp_path / "out", progress=False)
    table = _table(tmp_path / "out" / "acoustic.npz")
    f0, loud = _column(table, F0), _column(table, LOUD)
    assert list(table["word"]) == ["good", "pause", "movie", "extra"]
    assert f0[1] == 0.0 and f0[0] > 0 and f0[2] > 0                 # silence: frames, but unvoiced (F0 0)
    assert loud[1] < 0.01 * min(loud[0], loud[2])
    assert table["n_frames"][1] > 0
    assert table["n_frames"][3] == 0 and not table["features"][3].any()  # untimed: zeros and n_frames 0
    counts = result.provenance["counts"]
    assert counts["empty_words_acoustic"] == 1 and counts["untimed"] == 1


# -- OpenFace --------------------------------------------------------------------------------------------------
def test_openface_schema_and_planted_au12(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "face").mkdir()
    tone(tmp_path / "clips" / "v.wav", 2.0)
    write_openface(tmp_path / "face" / "v.csv", 2.0, au12=[(1.0, 1.5, 3.0)], failed=[(1.5, 2.0)],
                   nan_cells=[(3, "AU12_r")])
    face = read_openface(tmp_path / "face" / "v.csv")
    assert len(face.names) == 17 + 18 + 8 + 6 and face.names[8] == "AU12_r" and face.failed_frames == 15
    write_words_csv(tmp_path / "w.csv", [("v", "a", 0.0, 0.5), ("v", "b", 0.5, 1.0), ("v", "c", 1.0, 1.5),
                                         ("v", "d", 1.5, 2.0)])
    result = extract(audio=tmp_path / "clips", words=tmp_path / "w.csv", out=tmp_path / "out",
                     openface=tmp_path / "face", progress=False)
    table = _table(tmp_path / "out" / "visual.npz")
    au12 = _column(table, "AU12_r")
    np.testing.assert_allclose(au12[:3], [0.0, 0.0, 3.0], atol=1e-6)   # the rise lands on word c only
    np.testing.assert_allclose(_column(table, "AU12_c")[:3], [0, 0, 1])
    assert table["n_frames"][3] == 0 and not table["features"][3].any()   # no face tracked during d
    assert list(table["n_frames"][:3]) == [15, 15, 15]
    counts = result.provenance["counts"]
    assert counts["failed_face_frames"] == 15 and counts["nonfinite_visual_values"] == 1
    assert counts["empty_words_visual"] == 1


def test_openface_refusals(tmp_path):
    (tmp_path / "a.csv").write_text("frame, confidence\n1, 0.9\n")
    with pytest.raises(OpenFaceError, match="no timestamp, success column"):
        read_openface(tmp_path / "a.csv")
    write_openface(tmp_path / "b.csv", 0.2)
    lines = (tmp_path / "b.csv").read_text().splitlines()
    (tmp_path / "b.csv").write_text("\n".join(lines[:-1] + [lines[-1][:40]]) + "\n")
    with pytest.raises(OpenFaceError, match="truncated"):
        read_openface(tmp_path / "b.csv")


# -- the runner: bad files, resume, outputs --------------------------------------------------------------------
def test_bad_file_is_named_and_skipped_and_finished_files_are_reused(tmp_path, capsys):
    from fusionkit.__main__ import main

    clips = tmp_path / "clips"
    clips.mkdir()
    for k in range(3):
        tone(clips / f"s{k}.wav", 1.0, freq=150 + 50 * k)
    raw = (clips / "s1.wav").read_bytes()
    (clips / "s1.wav").write_bytes(raw[: len(raw) // 3])
    write_words_csv(tmp_path / "w.csv", [(f"s{k}", "hey", 0.1, 0.6) for k in range(3)] + [("s9", "x", 0, 1)])
    argv = ["extract", "--audio", str(clips), "--words", str(tmp_path / "w.csv"), "--out", str(tmp_path / "o"),
            "--quiet"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "s1.wav" in err and "truncated WAV" in err and "'s9'" in err
    errors = json.loads((tmp_path / "o" / "errors.json").read_text())
    assert sorted(errors) == ["s1", "s9"]
    assert list(_table(tmp_path / "o" / "acoustic.npz")["segment_id"]) == ["s0", "s2"]
    prov = json.loads((tmp_path / "o" / "provenance.json").read_text())
    assert prov["config"]["feature_set"] == "eGeMAPSv02" and prov["modalities"]["acoustic"]["dim"] == 25
    assert len(prov["inputs"]["s0"]["audio"]["sha256"]) == 64
    # fixed file + rerun: s0 and s2 reused, s1 done now
    tone(clips / "s1.wav", 1.0, freq=200)
    result = extract(audio=clips, words=tmp_path / "w.csv", out=tmp_path / "o", progress=False)
    assert result.reused == 2 and result.segments == ["s0", "s1", "s2"]
    tone(clips / "s2.wav", 1.0, freq=300)  # a changed input is redone
    assert extract(audio=clips, words=tmp_path / "w.csv", out=tmp_path / "o", progress=False).reused == 2


def test_parallel_equals_serial(tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    for k in range(3):
        tone(clips / f"s{k}.wav", 0.8, freq=120 + 40 * k)
    write_words_csv(tmp_path / "w.csv", [(f"s{k}", w, a, a + 0.3) for k in range(3) for w, a in (("a", 0), ("b", .4))])
    one = extract(audio=clips, words=tmp_path / "w.csv", out=tmp_path / "one", progress=False)
    two = extract(audio=clips, words=tmp_path / "w.csv", out=tmp_path / "two", workers=2, progress=False)
    assert one.segments == two.segments
    np.testing.assert_array_equal(_table(tmp_path / "one" / "acoustic.npz")["features"],
                                  _table(tmp_path / "two" / "acoustic.npz")["features"])


def test_a_second_extraction_into_a_held_out_is_refused_before_writing(tmp_path, capsys):
    import os
    import subprocess
    import sys

    from fusionkit.__main__ import main
    from fusionkit.extract.api import LOCK_NAME
    from fusionkit.locking import DirectoryLock

    clips = tmp_path / "clips"
    clips.mkdir()
    tone(clips / "s0.wav", 0.6)
    write_words_csv(tmp_path / "w.csv", [("s0", "hey", 0.1, 0.5)])
    out = tmp_path / "o"
    out.mkdir()
    # another process holds the directory, as a running `fusionkit extract` does
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from fusionkit.locking import DirectoryLock; "
        f"lock = DirectoryLock({str(out)!r}, ['fusionkit extract --out o'], name={LOCK_NAME!r}, "
        "tool='fusionkit extract').acquire(); print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        argv = ["extract", "--audio", str(clips), "--words", str(tmp_path / "w.csv"), "--out", str(out), "--quiet"]
        assert main(argv) == 2
        (line,) = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
        assert line.startswith("error:") and "in use by another fusionkit extract" in line
        assert f"pid {holder.pid}" in line and "another --out" in line
        assert os.listdir(out) == [LOCK_NAME]  # nothing written beside the holder's lock
    finally:
        holder.kill()
        holder.wait()
    # the holder died without releasing: its lock file stays, the kernel lock is gone, the next run takes over
    with pytest.warns(RuntimeWarning, match="stale lock"):
        assert extract(audio=clips, words=tmp_path / "w.csv", out=out, progress=False).segments == ["s0"]
    assert not (out / LOCK_NAME).exists()
    with DirectoryLock(out, name=LOCK_NAME, tool="fusionkit extract"):  # free again
        pass


def test_command_level_refusals(tmp_path):
    tone(tmp_path / "a.wav", 0.5)
    write_words_csv(tmp_path / "w.csv", [("zzz", "x", 0, 0.2)])
    with pytest.raises(ExtractError, match="unknown openSMILE feature set 'eGeMAPS2'"):
        extract(audio=tmp_path, words=tmp_path / "w.csv", out=tmp_path / "o", feature_set="eGeMAPS2")
    with pytest.raises(ExtractError, match="name each audio file <segment_id>.wav"):
        extract(audio=tmp_path, words=tmp_path / "w.csv", out=tmp_path / "o", progress=False)


def test_word_level_table_join_checks_words(tmp_path):
    from fusionkit.data.errors import DataError, LoadReport
    from fusionkit.data.feature_tables import join_features, read_feature_table
    from fusionkit.data.segments import RawSegment

    np.savez(tmp_path / "t.npz", segment_id=np.array(["a", "a", "b"]), word_index=np.array([1, 0, 0]),
             word=np.array(["movie", "Good,", "bad"]), features=np.array([[2.0], [1.0], [np.nan]]),
             names=np.array(["f"]))
    table = read_feature_table(tmp_path / "t.npz")
    assert table.word_level
    raw = {"train": [RawSegment("a", ["good", "movie"], np.zeros((2, 0)), np.zeros((2, 0)), 1.0)],
           "valid": [RawSegment("b", ["bad"], np.zeros((1, 0)), np.zeros((1, 0)), 0.0)], "test": []}
    report = LoadReport()
    join_features(raw, {"acoustic": table}, layout="repeat", report=report)
    np.testing.assert_array_equal(raw["train"][0].acoustic, [[1.0], [2.0]])  # word_index order
    assert raw["valid"][0].acoustic[0, 0] == 0 and report.sanitized_nonfinite["valid"] == 1
    raw["train"][0].words = ["good", "film"]
    with pytest.raises(DataError, match="word 1 is 'movie' but the segment table has 'film'"):
        join_features(raw, {"acoustic": table}, layout="repeat", report=LoadReport())
    raw["train"][0].words = ["good", "movie", "indeed"]
    with pytest.raises(DataError, match="has 2 row"):
        join_features(raw, {"acoustic": table}, layout="repeat", report=LoadReport())


def test_mmsa_pickle_reads_back(tmp_path):
    from fusionkit.data.errors import LoadReport
    from fusionkit.data.pickles import read_mmsa_pickle

    clips = tmp_path / "clips"
    clips.mkdir()
    rows, seg_rows = [], ["segment_id,label,split,words"]
    for k, split in enumerate(("train", "valid", "test")):
        tone(clips / f"s{k}.wav", 0.8)
        rows += [(f"s{k}", "a", 0.0, 0.3), (f"s{k}", "b", 0.4, 0.7)]
        seg_rows.append(f"s{k},{k - 1},{split},a b")
    write_words_csv(tmp_path / "w.csv", rows)
    (tmp_path / "segs.csv").write_text("\n".join(seg_rows) + "\n")
    result = extract(audio=clips, words=tmp_path / "w.csv", out=tmp_path / "o", pkl_segments=tmp_path / "segs.csv",
                     progress=False)
    data = read_mmsa_pickle(result.tables["pkl"], report=LoadReport())
    seg = data["test"][0]
    assert seg.id == "s2" and seg.words == ["a", "b"] and seg.label == 1.0
    np.testing.assert_allclose(seg.acoustic, _table(tmp_path / "o" / "acoustic.npz")["features"][4:6], rtol=1e-6)


# -- extract → train → predict ---------------------------------------------------------------------------------
@pytest.mark.slow
@needs_espeak
def test_round_trip_extract_train_predict(tmp_path, monkeypatch, capsys, isolated_cache):
    import benchmarks.run as bench
    from fusionkit.__main__ import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "clips").mkdir()
    sentences = {"t1": (["great", "movie"], 2.0, "train"), "t2": (["awful", "film"], -2.0, "train"),
                 "v1": (["nice", "story"], 1.0, "valid"), "e1": (["boring", "plot"], -1.0, "test")}
    rows, segs = [], ["segment_id,label,split,words"]
    for sid, (words, label, split) in sentences.items():
        rows += [(sid, w, a, b) for w, a, b in spoken_clip(tmp_path / "clips" / f"{sid}.wav", words)]
        segs.append(f"{sid},{label},{split},{' '.join(words)}")
    write_words_csv(tmp_path / "words.csv", rows)
    (tmp_path / "segments.csv").write_text("\n".join(segs) + "\n")
    assert main(["extract", "--audio", "clips", "--words", "words.csv", "--out", "OUT", "--quiet"]) == 0
    assert bench.main(["--dataset", "segments.csv", "--features", "acoustic=OUT/acoustic.npz", "--models", "tfn",
                       "--seeds", "1", "--epochs", "1", "--out", "RUN", "--tiny-bert", "--quiet"]) == 0
    capsys.readouterr()
    new = spoken_clip(tmp_path / "new.wav", ["really", "good"])
    write_words_csv(tmp_path / "new.csv", [("new", w, a, b) for w, a, b in new])
    assert main(["predict", "RUN/tfn/seed0", "--audio", "new.wav", "--words", "new.csv"]) == 0
    out = capsys.readouterr().out.strip().split("\t")
    assert out[0] == "new" and math.isfinite(float(out[1]))
    assert main(["predict", "RUN/tfn/seed0", "--audio", "clips", "--words", "words.csv"]) == 0  # the folder form
    lines = capsys.readouterr().out.strip().splitlines()
    assert [ln.split("\t")[0] for ln in lines] == sorted(sentences)
    # refusals: words outside the audio, another feature set — one error line each, non-zero exit
    write_words_csv(tmp_path / "late.csv", [("new", "really", 9.0, 9.5)])
    assert main(["extract", "--audio", "clips", "--words", "words.csv", "--out", "OTHER", "--quiet",
                 "--feature-set", "ComParE_2016"]) == 0
    for extra in (["--words", "late.csv"], ["--words", "new.csv", "--feature-set", "ComParE_2016"],
                  ["--words", "new.csv", "--openface", "new.csv"], ["--words", "new.csv", "--provenance", "OTHER"]):
        assert main(["predict", "RUN/tfn/seed0", "--audio", "new.wav", *extra]) == 2
        err = capsys.readouterr().err
        assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1, err
        assert "Traceback" not in err
