"""Fusion probes: the real CMU-MOSI transcripts, labels and split with SIMULATED word-level nonverbal channels in
which a hidden per-segment variable changes the target by a known rule.

Every probe starts from ``mosi-sim``'s nuisance channels with the label signal switched off (per-segment latent,
per-video speaker offsets, AR(1) noise across words, per-dimension scales and offsets; no ``-inf`` artifacts),
so the only information the acoustic (74-d) and visual (47-d) rows carry is the planted **cue**: a shift of
``CUE_STRENGTH`` noise units along a fixed direction of ``CUE_DIMS`` dimensions of the channel, added to the rows of a
few words. ``y`` is the real MOSI label; the probe's **target** (the dataset's label) is ``y`` or ``−y``:

``probe-unique-a``
    A segment is *ironic* with probability ``FLIP_RATE`` (0.3); an ironic segment carries the cue on
    ``CUE_WORDS`` (3) random words of its acoustic channel and its target is ``−y``; every other segment has no
    cue and target ``y``. The visual channel carries nothing. Text cannot know the flip.
``probe-unique-v``
    The same with the cue in the visual channel only.
``probe-synergy``
    The acoustic cue is present with probability 1/2 and, independently, the visual cue with probability 1/2;
    the target is ``−y`` exactly when one is present and the other is not (XOR), so half the segments flip.
    Either channel alone is independent of the flip: P(flip | acoustic cue) = P(flip | no acoustic cue) = 1/2.
``probe-timing``
    Every segment carries the acoustic cue on ``CUE_WORDS`` words, all in the first half of its visible words
    (probability ``FLIP_RATE``) or all in the second half; the target is ``−y`` exactly when they are in the
    first half. The cue's presence tells nothing; only its position does, so a model must keep word order.
``probe-redundant``
    The acoustic cue sits on every visible word of the fixed sentiment lexicon :data:`LEXICON` (``+`` direction
    for positive words, ``−`` for negative ones); the target is ``y``. The cue is a function of the words alone:
    it repeats what the text says, and the attainable gain over ``text`` is about 0.
``probe-null``
    The acoustic cue (probability ``FLIP_RATE``) and the visual cue (independently, probability ``FLIP_RATE``)
    on ``CUE_WORDS`` random words each, unrelated to the target, which is ``y``. Any gain here is overfitting.

*Visible words* are a segment's first ``CUE_SPAN`` (32) words: at ``max_seq_length=50`` word pieces every model
sees them, so a cue is never cut off by truncation (``cue_readout`` counts the exceptions). *First half* is the
visible words ``[0, n // 2)``; a one-word segment has no first half and never flips in ``probe-timing``.

Everything is seeded by the segment id (and the video id for the speaker offsets), as ``mosi-sim`` is: a segment
always gets the same channels, hidden variable and target. ``CUE_STRENGTH`` is calibrated with
:func:`cue_readout` so that a per-word linear read-out of the cue (logistic regression on one standardised row)
reaches a balanced accuracy of about 0.8 on the test split: readable, not trivially.
"""
from __future__ import annotations

import contextlib
import math
import zlib
from dataclasses import dataclass, field

import numpy as np

from fusionkit.data.segments import RawSegment
from fusionkit.data.simulate import ACOUSTIC, VISUAL, ChannelSpec, _layout, simulate_channel

PROBE_VERSION = 1
FLIP_RATE = 0.3
CUE_WORDS = 3
CUE_SPAN = 32
CUE_DIMS = 4  # the channel's signal dims of mosi-sim (``simulate._layout``), which carry no label signal here
CUE_STRENGTH = 1.4  # in units of the per-segment latent's standard deviation, on each cue dimension

# A fixed sentiment lexicon (word → polarity) for probe-redundant: frequent opinion words of movie reviews.
LEXICON = {
    **{w: 1 for w in ("good", "great", "best", "love", "loved", "like", "liked", "enjoyed", "funny", "fun", "nice",
                      "awesome", "amazing", "excellent", "beautiful", "perfect", "wonderful", "fantastic",
                      "favorite", "entertaining", "interesting", "cool", "brilliant", "recommend")},
    **{w: -1 for w in ("bad", "worst", "boring", "hate", "hated", "stupid", "terrible", "awful", "horrible",
                       "waste", "disappointed", "disappointing", "dumb", "annoying", "poor", "crap", "ridiculous",
                       "lame", "weird", "worse", "mediocre", "dull", "pointless", "mess")},
}


@dataclass(frozen=True)
class ProbeRule:
    """One probe: ``name`` (the dataset name), which channels carry cues, and a one-line statement of the rule."""

    name: str
    summary: str
    flips: bool  # whether the hidden variable can change the target (False: redundant, null)


PROBES = {p.name: p for p in (
    ProbeRule("probe-unique-a", "30% of segments are ironic (target −y); the flag is an acoustic cue on 3 words",
              True),
    ProbeRule("probe-unique-v", "30% of segments are ironic (target −y); the flag is a visual cue on 3 words", True),
    ProbeRule("probe-synergy", "acoustic and visual cues each present with p=1/2; target −y when exactly one is "
                               "present (XOR)", True),
    ProbeRule("probe-timing", "every segment has an acoustic cue on 3 words; target −y when they are in the first "
                              "half of the utterance (p=0.3)", True),
    ProbeRule("probe-redundant", "acoustic cue on the words of a fixed sentiment lexicon, signed by polarity; "
                                 "target y", False),
    ProbeRule("probe-null", "acoustic and visual cues (each p=0.3) unrelated to the target; target y", False),
)}
PROBE_NAMES = tuple(PROBES)
CORPUS = "mosi"


def fingerprint() -> str:
    """Identifies the probe generators (version and every parameter) for cache keys."""
    params = repr((PROBE_VERSION, FLIP_RATE, CUE_WORDS, CUE_SPAN, CUE_DIMS, CUE_STRENGTH, sorted(LEXICON.items()),
                   ACOUSTIC, VISUAL))
    return f"probe{PROBE_VERSION}-{zlib.crc32(params.encode()):08x}"


@contextlib.contextmanager
def cue_strength(value: float | None):
    """Generate the probes with another cue strength inside the ``with`` block (``None``: keep the calibrated
    one; 0: no cue at all, for ablations); restored on exit. The cache key (:func:`fingerprint`) includes the
    strength, so cached copies of the calibrated probes are never returned. For calibration studies
    (``--study probes --cue-strength X``)."""
    global CUE_STRENGTH
    if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value >= 0):
        raise ValueError(f"cue strength must be a non-negative number of latent standard deviations (0: no cue), "
                         f"got {value!r}")
    saved = CUE_STRENGTH
    if value is not None:
        CUE_STRENGTH = float(value)
    try:
        yield CUE_STRENGTH
    finally:
        CUE_STRENGTH = saved


@dataclass
class Hidden:
    """A segment's hidden variable: the cue positions per channel (word indices, with a sign each) and whether
    the target is flipped. ``target = -label if flip else label``."""

    acoustic: dict = field(default_factory=dict)  # word index → +1 / -1
    visual: dict = field(default_factory=dict)
    flip: bool = False


def _rng(*parts) -> np.random.Generator:
    return np.random.default_rng([PROBE_VERSION] + [zlib.crc32(str(p).encode("utf-8")) for p in parts])


def _place(rng: np.random.Generator, positions: np.ndarray, k: int = CUE_WORDS) -> dict:
    chosen = rng.choice(positions, size=min(k, len(positions)), replace=False) if len(positions) else []
    return {int(i): 1 for i in sorted(chosen)}


def hidden_variable(probe: str, *, segment_id: str, words: list) -> Hidden:
    """The hidden variable of ``segment_id`` in ``probe`` (a deterministic function of the id and the words)."""
    if probe not in PROBES:
        raise ValueError(f"unknown probe {probe!r}; expected one of {', '.join(PROBE_NAMES)}")
    rng = _rng("probe", probe, segment_id)
    visible = min(len(words), CUE_SPAN)
    span = np.arange(visible)
    if probe in ("probe-unique-a", "probe-unique-v"):
        ironic = bool(rng.random() < FLIP_RATE)
        cues = _place(rng, span) if ironic else {}
        return Hidden(acoustic=cues if probe.endswith("-a") else {}, visual=cues if probe.endswith("-v") else {},
                      flip=ironic)
    if probe == "probe-synergy":
        a, v = bool(rng.random() < 0.5), bool(rng.random() < 0.5)
        a_cues, v_cues = _place(rng, span), _place(rng, span)
        return Hidden(acoustic=a_cues if a else {}, visual=v_cues if v else {}, flip=a != v)
    if probe == "probe-timing":
        first = bool(rng.random() < FLIP_RATE) and visible // 2 > 0
        half = span[: visible // 2] if first else span[visible // 2:]
        return Hidden(acoustic=_place(rng, half), flip=first)
    if probe == "probe-redundant":
        return Hidden(acoustic={i: LEXICON[w] for i, w in enumerate(words[:visible]) if w in LEXICON})
    # probe-null
    a, v = bool(rng.random() < FLIP_RATE), bool(rng.random() < FLIP_RATE)
    a_cues, v_cues = _place(rng, span), _place(rng, span)
    return Hidden(acoustic=a_cues if a else {}, visual=v_cues if v else {})


def probe_target(label: float, hidden: Hidden) -> float:
    """The probe's target: ``−label`` when the hidden variable flips it, else ``label``."""
    return -label if hidden.flip else label


def _spec(base: ChannelSpec, dim: int) -> ChannelSpec:
    return ChannelSpec(**{**base.__dict__, "dim": dim, "artifact_rate": 0.0})


def cue_direction(base: ChannelSpec, dim: int) -> tuple[np.ndarray, np.ndarray]:
    """``(dims, shift)``: the channel's cue dimensions and the shift one cue adds to a word's row there (the
    strength times the fixed signs, in the channel's per-dimension scale)."""
    dims, signs, scales, _, _ = _layout(_spec(base, dim))
    dims, signs = dims[:CUE_DIMS], signs[:CUE_DIMS]
    return dims, (CUE_STRENGTH * signs * scales[dims]).astype(np.float32)


def probe_channels(*, segment_id: str, video_id: str, n_words: int, hidden: Hidden, d_acoustic: int = 74,
                   d_visual: int = 47) -> tuple[np.ndarray, np.ndarray]:
    """``(acoustic (n_words, d_acoustic), visual (n_words, d_visual))``: mosi-sim's nuisance channels without label
    signal or artifacts, plus ``hidden``'s cues."""
    out = []
    for base, dim, cues in ((ACOUSTIC, d_acoustic, hidden.acoustic), (VISUAL, d_visual, hidden.visual)):
        rows = simulate_channel(_spec(base, dim), segment_id=segment_id, video_id=video_id, label=0.0,
                                n_words=n_words, strength=0.0)
        dims, shift = cue_direction(base, dim)
        for i, sign in cues.items():
            rows[i, dims] += sign * shift
        out.append(rows)
    return out[0], out[1]


@dataclass
class ProbeSegment:
    """One generated segment with its hidden variable and the real label it was derived from."""

    segment: RawSegment
    hidden: Hidden
    original_label: float


def generate(probe: str, raw: dict) -> dict:
    """``{split: [ProbeSegment]}`` from the validated segments of a segment table (``{split: [RawSegment]}`` with
    no nonverbal rows, :func:`fusionkit.data.segments_csv.read_segments_csv` with ``simulate=False``). The video
    id (speaker offsets) is the segment id without its last ``_clip`` part, as in MOSI's ids."""
    out = {s: [] for s in raw}
    for split, segments in raw.items():
        for seg in segments:
            hidden = hidden_variable(probe, segment_id=seg.id, words=seg.words)
            acoustic, visual = probe_channels(segment_id=seg.id, video_id=seg.id.rsplit("_", 1)[0],
                                              n_words=len(seg.words), hidden=hidden)
            made = RawSegment(id=seg.id, words=seg.words, acoustic=acoustic, visual=visual,
                              label=probe_target(seg.label, hidden))
            out[split].append(ProbeSegment(segment=made, hidden=hidden, original_label=seg.label))
    return out


def _generate_from(path, probe: str, report=None) -> dict:
    from fusionkit.data.errors import LoadReport
    from fusionkit.data.segments_csv import read_segments_csv

    raw = read_segments_csv(path, dims=None, report=report if report is not None else LoadReport(), simulate=False)
    return generate(probe, raw)


def read_probe(path, probe: str, *, report=None) -> dict:
    """``{split: [RawSegment]}`` of ``probe`` built on the segment table ``path``."""
    return {s: [p.segment for p in segs] for s, segs in _generate_from(path, probe, report).items()}


def hidden_table(probe: str, *, data_root=None) -> dict:
    """``{segment_id: ProbeSegment}`` over every split: the hidden variables the oracle ceiling applies."""
    from fusionkit.data.api import data_root as resolve_root

    path = resolve_root(data_root) / CORPUS / f"{CORPUS}_segments.csv"
    return {p.segment.id: p for segs in _generate_from(path, probe).values() for p in segs}


DESCRIPTION = (
    "PROBE dataset: real CMU-MOSI transcripts and official split; target = the real label or its negation by a "
    "planted rule ({summary}); SIMULATED nonverbal channels (74-d acoustic, 47-d visual: mosi-sim's nuisance "
    "noise without label signal, plus the word-level cue); not COVAREP/FACET features"
)


def resolve(key: str, *, root):
    """The :class:`fusionkit.data.api.Source` of probe ``key`` on ``<root>/mosi/mosi_segments.csv``."""
    from fusionkit.data.api import Source, _missing

    path = root / CORPUS / f"{CORPUS}_segments.csv"
    if not path.is_file():
        raise _missing(key, [path], f"put the CMU-MOSI segment table {CORPUS}_segments.csv in {root / CORPUS}")
    return Source(name=key, format="probe", path=path, simulated=True, dims=(74, 47),
                  description=DESCRIPTION.format(summary=PROBES[key].summary),
                  channels={"text": "real", "acoustic": "simulated", "visual": "simulated"})


# -- calibration --------------------------------------------------------------------------------------------------
def cue_readout(probe: str = "probe-unique-a", *, data_root=None, max_seq_length: int = 50, seed: int = 0) -> dict:
    """How readable the cue is: a per-word linear read-out (standardised logistic regression on one word's row of
    the cued channel, fit on the train split) predicting whether that word carries a cue; its balanced accuracy
    and AUC on the test split. Also the share of segments with a cue, the flip rate, and the number of cue words
    beyond ``max_seq_length`` word pieces with the bundled tokenizer (words a model cannot see).

    ``segment_mean_readout_balanced_acc``: the same read-out of whether a segment carries a cue at all, from the
    channel's mean over the segment's words (what a model that time-averages the channel, such as TFN or LMF,
    starts from); ``None`` for probe-timing, where every segment carries one. ``segment_max_readout_auc``: the AUC
    of the per-word read-out's highest score over a segment's words for the same question (what a model that can
    pick out single words, by attention or max-pooling, starts from); ``None`` likewise."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from fusionkit.data.api import data_root as resolve_root

    path = resolve_root(data_root) / CORPUS / f"{CORPUS}_segments.csv"
    data = _generate_from(path, probe)
    channel = "visual" if probe == "probe-unique-v" else "acoustic"

    def xy(split):
        x = np.concatenate([getattr(p.segment, channel) for p in data[split]])
        y = np.concatenate([np.isin(np.arange(len(p.segment.words)), list(getattr(p.hidden, channel)))
                            for p in data[split]])
        return x, y

    (x_tr, y_tr), (x_te, y_te) = xy("train"), xy("test")
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced",
                                                             random_state=seed))
    clf.fit(x_tr, y_tr)
    every = [p for segs in data.values() for p in segs]

    def means(split):  # what a model that time-averages the channel sees: one mean row per segment
        x = np.stack([getattr(p.segment, channel).mean(0) for p in data[split]])
        return x, np.array([bool(getattr(p.hidden, channel)) for p in data[split]])

    (m_tr, c_tr), (m_te, c_te) = means("train"), means("test")
    mean_readout = max_auc = None
    if 0 < c_tr.mean() < 1:  # in probe-timing every segment carries the cue: nothing to tell apart
        seg = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced",
                                                                 random_state=seed)).fit(m_tr, c_tr)
        mean_readout = float(balanced_accuracy_score(c_te, seg.predict(m_te)))
        # what a model that can pick out single words (attention, max-pooling) starts from
        best_word = [clf.decision_function(getattr(p.segment, channel)).max() for p in data["test"]]
        max_auc = float(roc_auc_score(c_te, best_word))
    out = {"probe": probe, "channel": channel, "cue_strength": CUE_STRENGTH, "cue_dims": CUE_DIMS,
           "word_readout_balanced_acc": float(balanced_accuracy_score(y_te, clf.predict(x_te))),
           "word_readout_auc": float(roc_auc_score(y_te, clf.decision_function(x_te))),
           "segment_mean_readout_balanced_acc": mean_readout,
           "segment_max_readout_auc": max_auc,
           "cue_words_share": float(y_te.mean()),
           "segments_with_cue": float(np.mean([bool(p.hidden.acoustic or p.hidden.visual) for p in every])),
           "flip_rate": float(np.mean([p.hidden.flip for p in every]))}
    try:
        from fusionkit.data.tokenizers import get_tokenizer

        tok = get_tokenizer(None)
        lost = 0
        for p in every:
            cued = set(p.hidden.acoustic) | set(p.hidden.visual)
            if not cued:
                continue
            pieces = np.cumsum([max(1, len(tok.tokenize(w))) for w in p.segment.words])
            lost += sum(1 for i in cued if pieces[i] > max_seq_length - 2)
        out["cue_words_truncated"] = int(lost)
    except Exception as e:  # noqa: BLE001 - the tokenizer is optional for the read-out itself
        out["cue_words_truncated"] = f"not counted ({type(e).__name__})"
    return out

