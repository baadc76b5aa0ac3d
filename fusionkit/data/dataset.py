"""Tokenized, word-piece-aligned datasets (MAG-BERT convention) stored as flat arrays with offsets."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch

from fusionkit.data.errors import LoadReport
from fusionkit.data.segments import RawSegment


class Example(NamedTuple):
    """One item: ``input_ids (L,)`` int64 with [CLS]/[SEP]; ``acoustic (L, d_a)`` / ``visual (L, d_v)`` float32
    (one row per word piece, zero rows at [CLS]/[SEP]; for unaligned data their own lengths); label; id."""

    input_ids: np.ndarray
    acoustic: np.ndarray
    visual: np.ndarray
    label: float
    id: str


def _offsets(lengths) -> np.ndarray:
    out = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(np.asarray(lengths, dtype=np.int64), out=out[1:])
    return out


class MultimodalDataset(torch.utils.data.Dataset):
    """A split: variable-length examples kept as concatenated arrays plus offsets (cheap to cache and slice).

    ``aligned``: features have one row per word piece (the text length); otherwise they are unaligned
    sequences with their own lengths and the collated batch carries ``acoustic_mask`` / ``visual_mask``.
    """

    def __init__(
        self,
        *,
        input_ids: np.ndarray,
        token_offsets: np.ndarray,
        acoustic: np.ndarray,
        acoustic_offsets: np.ndarray,
        visual: np.ndarray,
        visual_offsets: np.ndarray,
        labels: np.ndarray,
        ids: list,
        aligned: bool,
        max_seq_length: int,
        pad_token_id: int = 0,
        name: str = "",
    ) -> None:
        n = len(labels)
        for what, off in (("token", token_offsets), ("acoustic", acoustic_offsets), ("visual", visual_offsets)):
            if len(off) != n + 1:
                raise ValueError(f"{what}_offsets has {len(off)} entries, expected {n + 1}")
        if len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} labels")
        self.input_ids = np.asarray(input_ids, dtype=np.int64)
        self.token_offsets = np.asarray(token_offsets, dtype=np.int64)
        self.acoustic = np.asarray(acoustic, dtype=np.float32)
        self.acoustic_offsets = np.asarray(acoustic_offsets, dtype=np.int64)
        self.visual = np.asarray(visual, dtype=np.float32)
        self.visual_offsets = np.asarray(visual_offsets, dtype=np.int64)
        self.labels = np.asarray(labels, dtype=np.float32)
        self.ids = [str(i) for i in ids]
        self.aligned = bool(aligned)
        self.max_seq_length = int(max_seq_length)
        self.pad_token_id = int(pad_token_id)
        self.name = name

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> Example:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a split of {len(self)} examples")
        index = int(index) % len(self)
        t0, t1 = self.token_offsets[index], self.token_offsets[index + 1]
        a0, a1 = self.acoustic_offsets[index], self.acoustic_offsets[index + 1]
        v0, v1 = self.visual_offsets[index], self.visual_offsets[index + 1]
        return Example(
            input_ids=self.input_ids[t0:t1],
            acoustic=self.acoustic[a0:a1],
            visual=self.visual[v0:v1],
            label=float(self.labels[index]),
            id=self.ids[index],
        )

    @property
    def lengths(self) -> np.ndarray:
        """Word pieces per example, [CLS]/[SEP] included."""
        return np.diff(self.token_offsets)

    @property
    def acoustic_lengths(self) -> np.ndarray:
        return np.diff(self.acoustic_offsets)

    @property
    def visual_lengths(self) -> np.ndarray:
        return np.diff(self.visual_offsets)

    @property
    def d_acoustic(self) -> int:
        return int(self.acoustic.shape[1])

    @property
    def d_visual(self) -> int:
        return int(self.visual.shape[1])

    def without(self, *channels: str) -> "MultimodalDataset":
        """The same split with ``channels`` (``"acoustic"`` / ``"visual"``) absent: their arrays become ``(0, 0)``
        and every example's ``(0, 0)``, so batches carry ``None`` for them (never zeros)."""
        unknown = set(channels) - {"acoustic", "visual"}
        if unknown:
            raise ValueError(f"unknown channel(s) {sorted(unknown)}; expected acoustic and/or visual")
        arrays = {}
        for name in ("acoustic", "visual"):
            if name in channels:
                arrays[name] = np.zeros((0, 0), np.float32)
                arrays[f"{name}_offsets"] = np.zeros(len(self) + 1, np.int64)
            else:
                arrays[name] = getattr(self, name)
                arrays[f"{name}_offsets"] = getattr(self, f"{name}_offsets")
        return MultimodalDataset(input_ids=self.input_ids, token_offsets=self.token_offsets, labels=self.labels,
                                 ids=self.ids, aligned=self.aligned, max_seq_length=self.max_seq_length,
                                 pad_token_id=self.pad_token_id, name=self.name, **arrays)

    def subset(self, indices) -> "MultimodalDataset":
        """A new dataset holding ``indices`` (in that order)."""
        indices = [int(i) for i in indices]
        items = [self[i] for i in indices]
        return MultimodalDataset(
            input_ids=np.concatenate([it.input_ids for it in items]) if items else np.zeros(0, np.int64),
            token_offsets=_offsets([len(it.input_ids) for it in items]),
            acoustic=(np.concatenate([it.acoustic for it in items]) if items
                      else np.zeros((0, self.d_acoustic), np.float32)),
            acoustic_offsets=_offsets([len(it.acoustic) for it in items]),
            visual=np.concatenate([it.visual for it in items]) if items else np.zeros((0, self.d_visual), np.float32),
            visual_offsets=_offsets([len(it.visual) for it in items]),
            labels=np.asarray([it.label for it in items], dtype=np.float32),
            ids=[it.id for it in items],
            aligned=self.aligned,
            max_seq_length=self.max_seq_length,
            pad_token_id=self.pad_token_id,
            name=self.name,
        )

    def arrays(self) -> dict:
        """The arrays that define this dataset (what the cache stores)."""
        return {
            "input_ids": self.input_ids,
            "token_offsets": self.token_offsets,
            "acoustic": self.acoustic,
            "acoustic_offsets": self.acoustic_offsets,
            "visual": self.visual,
            "visual_offsets": self.visual_offsets,
            "labels": self.labels,
            "ids": np.asarray(self.ids, dtype=np.str_),
        }


def word_pieces(tokenizer, segments: list) -> list:
    """For each segment, ``(piece_ids, word_index_per_piece)`` tokenizing each word on its own (MAG-BERT).

    A fast tokenizer does all segments in one call (``is_split_into_words``), which gives the same pieces as
    tokenizing word by word since BERT pre-tokenizes within each word anyway.
    """
    out = []
    if getattr(tokenizer, "is_fast", False):
        enc = tokenizer([list(s.words) for s in segments], is_split_into_words=True, add_special_tokens=False)
        for i in range(len(segments)):
            ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
            words = np.asarray(enc.word_ids(i), dtype=np.int64)
            out.append((ids, words))
        return out
    for s in segments:
        ids, words = [], []
        for w, word in enumerate(s.words):
            pieces = tokenizer.convert_tokens_to_ids(tokenizer.tokenize(word))
            ids.extend(pieces)
            words.extend([w] * len(pieces))
        out.append((np.asarray(ids, dtype=np.int64), np.asarray(words, dtype=np.int64)))
    return out


def build_dataset(
    segments: list,
    *,
    tokenizer,
    max_seq_length: int,
    split: str,
    report: LoadReport,
    name: str = "",
    d_acoustic: int | None = None,
    d_visual: int | None = None,
) -> MultimodalDataset:
    """Tokenize and align ``segments`` exactly as MAG-BERT's ``convert_to_features``.

    Each word's feature row is repeated for each of its word pieces; the pieces (and their rows) are cut to
    ``max_seq_length - 2``; [CLS] and [SEP] are added with zero feature rows. Unaligned segments keep their
    feature sequences unchanged.
    """
    if max_seq_length < 3:
        raise ValueError(f"max_seq_length={max_seq_length} leaves no room for a word piece; use at least 3")
    cls_id, sep_id = tokenizer.cls_token_id, tokenizer.sep_token_id
    if cls_id is None or sep_id is None:
        raise ValueError("the tokenizer has no [CLS]/[SEP] tokens; pass a BERT-family tokenizer")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    aligned = all(s.aligned for s in segments) if segments else True
    if segments and any(s.aligned for s in segments) and not aligned:
        raise ValueError("a split mixes aligned and unaligned segments")
    if segments:
        d_acoustic = segments[0].acoustic.shape[1]
        d_visual = segments[0].visual.shape[1]
    budget = max_seq_length - 2
    ids_parts, ac_parts, vi_parts = [], [], []
    tok_len, ac_len, vi_len = [], [], []
    for seg, (pieces, word_idx) in zip(segments, word_pieces(tokenizer, segments)):
        if len(pieces) > budget:
            report.truncated[split] += 1
            pieces, word_idx = pieces[:budget], word_idx[:budget]
        ids = np.concatenate([[cls_id], pieces, [sep_id]]).astype(np.int64)
        ids_parts.append(ids)
        tok_len.append(len(ids))
        if seg.aligned:
            for parts, lens, feats in ((ac_parts, ac_len, seg.acoustic), (vi_parts, vi_len, seg.visual)):
                rows = np.zeros((len(ids), feats.shape[1]), dtype=np.float32)
                rows[1:-1] = feats[word_idx]
                parts.append(rows)
                lens.append(len(rows))
        else:
            ac_parts.append(seg.acoustic.astype(np.float32))
            ac_len.append(len(seg.acoustic))
            vi_parts.append(seg.visual.astype(np.float32))
            vi_len.append(len(seg.visual))
    return MultimodalDataset(
        input_ids=np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64),
        token_offsets=_offsets(tok_len),
        acoustic=np.concatenate(ac_parts) if ac_parts else np.zeros((0, d_acoustic or 0), np.float32),
        acoustic_offsets=_offsets(ac_len),
        visual=np.concatenate(vi_parts) if vi_parts else np.zeros((0, d_visual or 0), np.float32),
        visual_offsets=_offsets(vi_len),
        labels=np.asarray([s.label for s in segments], dtype=np.float32),
        ids=[s.id for s in segments],
        aligned=aligned,
        max_seq_length=max_seq_length,
        pad_token_id=pad_id,
        name=name,
    )


CHANNELS = ("text", "acoustic", "visual")
MODALITY_OF = {"text": "t", "acoustic": "a", "visual": "v"}
KIND_WORDS = {"file": "from file"}  # how a channel kind reads in headers and summaries


@dataclass
class DatasetInfo:
    """What was loaded: ``format`` is the detected reader; ``simulated`` marks generated nonverbal channels.

    ``channels``: ``{"text", "acoustic", "visual"}`` → ``"file"`` (read from the data file; fusionkit cannot tell
    recorded features from any others, so it never calls them real), ``"simulated"`` (generated by
    :mod:`fusionkit.data.simulate` or ``synthetic``) or ``"absent"`` (no such channel: its size is 0 and batches
    carry ``None``); ``feature_names``: per channel, the feature (column /
    dimension) names where the source has them.
    """

    name: str
    format: str
    d_acoustic: int
    d_visual: int
    simulated: bool
    description: str
    report: LoadReport = field(default_factory=LoadReport)
    aligned: bool = True
    sources: list = field(default_factory=list)
    channels: dict = field(default_factory=dict)
    feature_names: dict = field(default_factory=dict)

    @property
    def modalities(self) -> tuple:
        """Present modalities in ``("t", "a", "v")`` order (text is always present)."""
        dims = {"text": 1, "acoustic": self.d_acoustic, "visual": self.d_visual}
        return tuple(MODALITY_OF[c] for c in CHANNELS if dims[c] > 0 and self.channel_kind(c) != "absent")

    def channel_kind(self, channel: str) -> str:
        """``"file"`` / ``"simulated"`` / ``"absent"`` of ``channel``: the recorded kind (a channel dropped by
        ``--modalities`` keeps it, so tables can say "not used"), else from the sizes and ``simulated`` (data cached
        before channels were recorded): text is read from the file except for ``synthetic``, and ``simulated``
        refers to the nonverbal channels only. ``"real"``, recorded by earlier versions, reads as ``"file"``."""
        if self.channels.get(channel):
            return "file" if self.channels[channel] == "real" else self.channels[channel]
        dims = {"text": 1, "acoustic": self.d_acoustic, "visual": self.d_visual}
        if not dims[channel]:
            return "absent"
        if channel == "text":
            return "simulated" if self.format == "synthetic" else "file"
        return "simulated" if self.simulated else "file"

    def channel_kinds(self) -> dict:
        """``{"text", "acoustic", "visual"}`` → :meth:`channel_kind`."""
        return {c: self.channel_kind(c) for c in CHANNELS}

    def channel_summary(self) -> str:
        """``text from file, acoustic from file (73-d), visual absent`` — what every results header states."""
        dims = {"acoustic": self.d_acoustic, "visual": self.d_visual}
        parts = []
        for c, kind in self.channel_kinds().items():
            parts.append(f"{c} {KIND_WORDS.get(kind, kind)}"
                         + (f" ({dims[c]}-d)" if c in dims and kind != "absent" else ""))
        return ", ".join(parts)


@dataclass
class LoadedData:
    """``splits``: always ``train`` / ``valid`` / ``test``."""

    splits: dict
    info: DatasetInfo

    def __getitem__(self, split: str) -> MultimodalDataset:
        return self.splits[split]

    def select_modalities(self, modalities) -> "LoadedData":
        """A view keeping only ``modalities`` (e.g. ``"t,a"``; text is required); the other channels are absent.

        A modality the dataset lacks is a ``ValueError`` naming what it has.
        """
        from dataclasses import replace

        wanted = parse_modalities(modalities)
        have = self.info.modalities
        lacking = [m for m in wanted if m not in have]
        if lacking:
            names = {"t": "text", "a": "acoustic", "v": "visual"}
            raise ValueError(f"dataset {self.info.name!r} has no {' or '.join(names[m] for m in lacking)} channel; "
                             f"its modalities are {','.join(have)}")
        drop = [c for c in ("acoustic", "visual") if MODALITY_OF[c] in have and MODALITY_OF[c] not in wanted]
        if not drop:
            return self
        splits = {name: ds.without(*drop) for name, ds in self.splits.items()}
        channels = {**self.info.channel_kinds(), **{c: "absent" for c in drop}}
        info = replace(self.info, channels=channels,
                       d_acoustic=0 if "acoustic" in drop else self.info.d_acoustic,
                       d_visual=0 if "visual" in drop else self.info.d_visual)
        return LoadedData(splits=splits, info=info)


MODALITY_ORDER = ("t", "a", "v")


def parse_modalities(value) -> tuple:
    """``"t,a"`` / ``"ta"`` / ``("t", "a")`` → ``("t", "a")`` in ``t, a, v`` order; text must be included."""
    items = value.replace(",", " ").split() if isinstance(value, str) else list(value)
    if isinstance(value, str) and len(items) == 1 and len(items[0]) > 1:
        items = list(items[0])
    items = [str(i).strip().lower() for i in items]
    bad = [i for i in items if i not in MODALITY_ORDER]
    if bad or not items:
        raise ValueError(f"modalities {value!r}: expected a comma-separated subset of t (text), a (acoustic), "
                         f"v (visual), e.g. t,a")
    if len(set(items)) != len(items):
        raise ValueError(f"modalities {value!r} names a modality twice")
    if "t" not in items:
        raise ValueError(f"modalities {value!r} lacks t: every model reads the text")
    return tuple(m for m in MODALITY_ORDER if m in items)
