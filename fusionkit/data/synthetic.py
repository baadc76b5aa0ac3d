"""The ``synthetic`` dataset: generated review sentences from a small sentiment lexicon, no files needed."""
from __future__ import annotations

import numpy as np

from fusionkit.data.segments import RawSegment
from fusionkit.data.simulate import simulate_segment

DEFAULT_SIZES = {"train": 240, "valid": 60, "test": 60}
# Stronger than the *-sim channels so small models can learn from every modality in a few epochs.
SYNTHETIC_STRENGTH = (0.8, 0.6)

POSITIVE = {
    "good": 1.0, "great": 1.5, "excellent": 2.0, "loved": 2.0, "amazing": 2.0, "wonderful": 2.0, "fun": 1.0,
    "brilliant": 2.0, "enjoyed": 1.5, "beautiful": 1.5, "funny": 1.0, "nice": 1.0, "fantastic": 2.0,
}
NEGATIVE = {
    "bad": -1.0, "terrible": -2.0, "boring": -1.5, "awful": -2.0, "hated": -2.0, "worst": -2.0, "dull": -1.0,
    "disappointing": -1.5, "poor": -1.0, "annoying": -1.0, "stupid": -1.5, "mediocre": -0.5, "horrible": -2.0,
}
SUBJECTS = ["the movie", "the film", "the acting", "the plot", "the story", "the ending", "the cast", "this one",
            "the music", "the dialogue"]
VERBS = ["was", "is", "felt", "seemed", "looked"]
INTENSIFIERS = {"really": 1.3, "very": 1.3, "quite": 1.1, "somewhat": 0.7, "kind of": 0.6, "so": 1.4}
FILLERS = ["i think", "honestly", "overall", "to be fair", "in my opinion", "well", "and", "but", "um"]


GENERATOR_VERSION = 1


def fingerprint() -> str:
    """Identifies the generator (lexicon, sizes, strengths) for cache keys."""
    import zlib

    params = repr((GENERATOR_VERSION, DEFAULT_SIZES, SYNTHETIC_STRENGTH, POSITIVE, NEGATIVE, SUBJECTS, VERBS,
                   INTENSIFIERS, FILLERS))
    return f"{GENERATOR_VERSION}-{zlib.crc32(params.encode()):08x}"


def _sentence(rng: np.random.Generator) -> tuple[list, float]:
    words: list = []
    score = 0.0
    for _ in range(int(rng.integers(1, 3))):
        if rng.random() < 0.4:
            words.extend(str(rng.choice(FILLERS)).split())
        words.extend(str(rng.choice(SUBJECTS)).split())
        words.append(str(rng.choice(VERBS)))
        boost = 1.0
        position = len(words)  # where a negation goes
        if rng.random() < 0.5:
            word = str(rng.choice(list(INTENSIFIERS)))
            boost = INTENSIFIERS[word]
            words.extend(word.split())
        if rng.random() < 0.15:  # a neutral clause
            words.append("okay")
            continue
        lexicon = POSITIVE if rng.random() < 0.5 else NEGATIVE
        word = str(rng.choice(list(lexicon)))
        negated = rng.random() < 0.15
        if negated:
            words.insert(position, "not")
        words.append(word)
        score += lexicon[word] * boost * (-0.5 if negated else 1.0)
    return words, score


def synthetic_segments(*, seed: int = 0, sizes: dict | None = None, d_acoustic: int = 74,
                       d_visual: int = 47) -> dict:
    """``{split: [RawSegment]}`` of generated sentences with simulated, label-correlated nonverbal rows."""
    sizes = dict(DEFAULT_SIZES if sizes is None else sizes)
    out = {}
    for s_index, split in enumerate(("train", "valid", "test")):
        rng = np.random.default_rng([seed, s_index, 2024])
        segments = []
        for i in range(sizes[split]):
            words, score = _sentence(rng)
            label = float(np.clip(np.round(score + rng.normal(0.0, 0.4), 1), -3.0, 3.0))
            seg_id = f"synthetic{seed}_{split}_{i}"
            acoustic, visual = simulate_segment(
                segment_id=seg_id, video_id=f"synthetic{seed}_{split}_{i // 8}", label=label, n_words=len(words),
                d_acoustic=d_acoustic, d_visual=d_visual,
                acoustic_strength=SYNTHETIC_STRENGTH[0], visual_strength=SYNTHETIC_STRENGTH[1],
            )
            segments.append(RawSegment(id=seg_id, words=words, acoustic=acoustic, visual=visual, label=label))
        out[split] = segments
    return out
