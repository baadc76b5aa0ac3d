"""Fixture helpers for the data tests: a tiny WordPiece tokenizer and writers for every supported format."""
from __future__ import annotations

from pathlib import Path

import numpy as np

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "i", "loved", "it", "the", "movie", "was", "bad",
              "wonderful", "##ly", "good", "not", "very", "boring", "great", "film", "a", "fun", "##s"]


def tiny_tokenizer(tmp_path: Path):
    """A BERT WordPiece tokenizer over :data:`TINY_VOCAB` (ids = positions), built from a local vocab file."""
    from transformers import BertTokenizerFast

    del tmp_path  # built in memory
    return BertTokenizerFast(vocab={t: i for i, t in enumerate(TINY_VOCAB)}, do_lower_case=True)


class WordByWordTokenizer:
    """Hides ``is_fast`` so the loader tokenizes word by word (MAG-BERT's loop) instead of in one call."""

    def __init__(self, tokenizer) -> None:
        self._tok = tokenizer
        self.cls_token_id, self.sep_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad_token_id = tokenizer.pad_token_id

    def tokenize(self, text):
        return self._tok.tokenize(text)

    def convert_tokens_to_ids(self, tokens):
        return self._tok.convert_tokens_to_ids(tokens)

    def get_vocab(self):
        return self._tok.get_vocab()


def vocab_id(token: str) -> int:
    return TINY_VOCAB.index(token)


# ---------------------------------------------------------------- format writers

D_A, D_V = 74, 47
SPLIT_NAMES = ("train", "valid", "test")
WORD_POOL = ["i", "loved", "it", "the", "movie", "was", "bad", "wonderfully", "good", "not", "very", "boring",
             "great", "films", "a", "fun"]


def make_content(seed: int = 0, per_split: int = 3, d_a: int = D_A, d_v: int = D_V) -> dict:
    """``{split: [dict(id, video, words, acoustic (n, d_a), visual (n, d_v), label)]}``, one video per split.

    Feature values are multiples of 1/4 so averages of the frames written by :func:`write_csd` are exact.
    """
    rng = np.random.default_rng(seed)
    content = {}
    for s, split in enumerate(SPLIT_NAMES):
        video = f"vid{s}X-{seed}"
        segs = []
        for k in range(per_split):
            n = int(rng.integers(2, 7))
            segs.append(dict(
                id=f"{video}_{k + 1}",
                video=video,
                words=[str(w) for w in rng.choice(WORD_POOL, n)],
                acoustic=(rng.integers(-8, 8, (n, d_a)) / 4).astype(np.float32),
                visual=(rng.integers(-8, 8, (n, d_v)) / 4).astype(np.float32),
                label=float(np.round(rng.uniform(-3, 3), 1)),
            ))
        content[split] = segs
    return content


def write_mag_pickle(path: Path, content: dict) -> Path:
    import pickle

    data = {}
    for split, name in (("train", "train"), ("valid", "dev"), ("test", "test")):
        data[name] = [((list(c["words"]), c["visual"], c["acoustic"]), np.array([[c["label"]]]), c["id"])
                      for c in content[split]]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return path


def write_mmsa_pickle(path: Path, content: dict, *, aligned: bool = True, length: int = 8,
                      padding: str = "back") -> Path:
    """MMSA layout; aligned: features zero-padded to ``length`` rows (``back`` or ``front``); unaligned: the
    rows are padded at the back and ``*_lengths`` give the real lengths."""
    import pickle

    data = {}
    for split in SPLIT_NAMES:
        segs = content[split]
        n = len(segs)
        d_a, d_v = segs[0]["acoustic"].shape[1], segs[0]["visual"].shape[1]
        audio = np.zeros((n, length, d_a), np.float32)
        vision = np.zeros((n, length, d_v), np.float32)
        for i, c in enumerate(segs):
            m = len(c["words"])
            if padding == "front":
                audio[i, length - m:], vision[i, length - m:] = c["acoustic"], c["visual"]
            else:
                audio[i, :m], vision[i, :m] = c["acoustic"], c["visual"]
        part = {
            "raw_text": np.array([" ".join(c["words"]) for c in segs]),
            "id": np.array([c["id"].rsplit("_", 1)[0] + "$_$" + c["id"].rsplit("_", 1)[1] for c in segs]),
            "audio": audio,
            "vision": vision,
            "regression_labels": np.array([c["label"] for c in segs], np.float32),
        }
        if not aligned:
            part["audio_lengths"] = [len(c["words"]) for c in segs]
            part["vision_lengths"] = [len(c["words"]) for c in segs]
        data[split] = part
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(data))
    return path


def _write_seq(path: Path, root: str, data: dict) -> None:
    import h5py

    with h5py.File(path, "w") as fh:
        g = fh.create_group(root)
        d = g.create_group("data")
        for video, (feats, intervals) in data.items():
            v = d.create_group(video)
            v.create_dataset("features", data=feats)
            v.create_dataset("intervals", data=np.asarray(intervals, np.float32))
        md = g.create_group("metadata")
        md.create_dataset("root name", data=np.array([root.encode()], dtype=object), dtype=h5py.string_dtype())
        md.create_dataset("dimension names", data=np.array([b"[]"], dtype=object), dtype=h5py.string_dtype())


def write_csd(folder: Path, content: dict, *, split_csv: bool = True) -> Path:
    """Words, COVAREP, FACET and label sequences (one video per split, words 1 s apart with a silence token
    between segments, two frames per word averaging to the word's features) plus a split table."""

    folder.mkdir(parents=True, exist_ok=True)
    words_d, ac_d, vi_d, lab_d = {}, {}, {}, {}
    table = []
    for split in SPLIT_NAMES:
        segs = content[split]
        video = segs[0]["video"]
        w_feats, w_iv, a_f, a_iv, v_f, v_iv, l_f, l_iv = [], [], [], [], [], [], [], []
        t = 0.0
        for c in segs:
            w_feats.append([b"sp"])
            w_iv.append([t, t + 1.0])
            t += 1.0
            start = t
            for k, word in enumerate(c["words"]):
                w_feats.append([word.encode()])
                w_iv.append([t, t + 1.0])
                for sign in (-1.0, 1.0):
                    a_f.append(c["acoustic"][k] + sign * 0.5)
                    v_f.append(c["visual"][k] + sign * 0.5)
                    a_iv.append([t, t + 0.5] if sign < 0 else [t + 0.5, t + 1.0])
                    v_iv.append(a_iv[-1])
                t += 1.0
            l_f.append([c["label"]])
            l_iv.append([start, t])
            table.append(dict(segment_id=c["id"], video_id=video, clip_id=c["id"].rsplit("_", 1)[1], start=start,
                              end=t, label=c["label"], split=split, transcript=" ".join(c["words"]).upper(),
                              words=" ".join(c["words"])))
        words_d[video] = (np.array(w_feats, dtype=object).astype("S"), w_iv)
        ac_d[video] = (np.array(a_f, np.float32), a_iv)
        vi_d[video] = (np.array(v_f, np.float32), v_iv)
        lab_d[video] = (np.array(l_f, np.float32), l_iv)
    _write_seq(folder / "CMU_MOSI_TimestampedWords.csd", "Words", words_d)
    _write_seq(folder / "CMU_MOSI_COVAREP.csd", "COVAREP", ac_d)
    _write_seq(folder / "CMU_MOSI_VisualFacet_4.1.csd", "FACET_4.1", vi_d)
    _write_seq(folder / "CMU_MOSI_Opinion_Labels.csd", "Opinion Segment Labels", lab_d)
    if split_csv:
        write_segments_csv(folder / "fixture_segments.csv", table)
    return folder


SEGMENT_COLUMNS = ["segment_id", "video_id", "clip_id", "start", "end", "label", "split", "transcript", "words"]


def write_segments_csv(path: Path, rows: list) -> Path:
    import csv

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=SEGMENT_COLUMNS)
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k, "") for k in SEGMENT_COLUMNS})
    return path


def content_rows(content: dict) -> list:
    return [dict(segment_id=c["id"], video_id=c["video"], clip_id=c["id"].rsplit("_", 1)[1], start=0, end=1,
                 label=c["label"], split=split, transcript=" ".join(c["words"]).upper(), words=" ".join(c["words"]))
            for split in SPLIT_NAMES for c in content[split]]
