"""Simulated nonverbal channels for transcripts without real features (``mosi-sim``, ``mosei-sim``, ``synthetic``).

These are NOT real COVAREP/FACET features. Per word, an acoustic row (74-d) and a visual row (47-d, MOSEI 35-d):
- a weak sentiment signal in a few dims: a per-segment latent ``strength * label`` plus per-segment noise,
- nuisance dims: per-video (speaker) offsets, heterogeneous per-dim scales and offsets,
- temporal correlation across words: AR(1) noise with coefficient ``AR_COEF``,
- COVAREP-like ``-inf`` artifacts in a small fraction of acoustic rows (sanitized to 0 by the loader, counted).
Everything is seeded by the segment id (and video id), so a segment always gets the same features.
Strengths are calibrated so a logistic probe on time-averaged features reaches test Acc2 ≈ 60 (acoustic) and
≈ 57 (visual) on ``mosi-sim`` (``python -m fusionkit.data calibrate mosi-sim``).
"""
from __future__ import annotations

import zlib
from dataclasses import dataclass

import numpy as np

SIM_VERSION = 1
AR_COEF = 0.7
SIGNAL_DIMS = 4  # sentiment-carrying dims per channel


@dataclass(frozen=True)
class ChannelSpec:
    dim: int
    strength: float  # latent shift per label unit, in units of the per-segment noise
    word_noise: float  # AR(1) innovation scale of the per-word noise
    artifact_rate: float = 0.0  # fraction of rows with -inf artifacts
    artifact_dims: int = 0
    salt: int = 0


ACOUSTIC = ChannelSpec(dim=74, strength=0.23, word_noise=1.0, artifact_rate=0.03, artifact_dims=3, salt=1)
VISUAL = ChannelSpec(dim=47, strength=0.19, word_noise=1.0, salt=2)


def fingerprint() -> str:
    """Identifies the simulation (version and every parameter) for cache keys."""
    params = repr((SIM_VERSION, AR_COEF, SIGNAL_DIMS, ACOUSTIC, VISUAL))
    return f"{SIM_VERSION}-{zlib.crc32(params.encode()):08x}"


def _seed(*parts) -> list:
    return [SIM_VERSION] + [zlib.crc32(str(p).encode("utf-8")) for p in parts]


def _layout(spec: ChannelSpec):
    """Fixed per-channel layout: which dims carry signal (with signs), and per-dim scales/offsets."""
    rng = np.random.default_rng(_seed("layout", spec.salt, spec.dim))
    dims = rng.choice(spec.dim, size=min(SIGNAL_DIMS, spec.dim), replace=False)
    signs = rng.choice([-1.0, 1.0], size=len(dims))
    scales = np.exp(rng.normal(0.0, 1.0, spec.dim)).astype(np.float32)
    offsets = rng.normal(0.0, 2.0, spec.dim).astype(np.float32)
    artifact = rng.choice(spec.dim, size=spec.artifact_dims, replace=False) if spec.artifact_dims else None
    return dims, signs, scales, offsets, artifact


def simulate_channel(spec: ChannelSpec, *, segment_id: str, video_id: str, label: float, n_words: int,
                     strength: float | None = None) -> np.ndarray:
    """``(n_words, spec.dim)`` float32 simulated rows for one segment (may contain ``-inf`` artifacts)."""
    dims, signs, scales, offsets, artifact = _layout(spec)
    strength = spec.strength if strength is None else strength
    rng = np.random.default_rng(_seed("segment", spec.salt, segment_id))
    speaker = np.random.default_rng(_seed("video", spec.salt, video_id)).normal(0.0, 0.5, spec.dim)
    latent = rng.normal(0.0, 1.0, spec.dim) + speaker
    latent[dims] += signs * strength * label
    innovations = rng.normal(0.0, spec.word_noise, (n_words, spec.dim))
    noise = np.empty_like(innovations)
    state = innovations[0] / np.sqrt(1 - AR_COEF**2)  # start from the stationary distribution
    for t in range(n_words):
        state = state if t == 0 else AR_COEF * state + innovations[t]
        noise[t] = state
    rows = ((latent + noise) * scales + offsets).astype(np.float32)
    if artifact is not None and spec.artifact_rate > 0:
        hit = rng.random(n_words) < spec.artifact_rate
        rows[np.ix_(hit, artifact)] = -np.inf
    return rows


def simulate_segment(*, segment_id: str, video_id: str, label: float, n_words: int, d_acoustic: int = 74,
                     d_visual: int = 47, acoustic_strength: float | None = None,
                     visual_strength: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Simulated ``(acoustic (n_words, d_acoustic), visual (n_words, d_visual))`` for one segment."""
    a_spec = ChannelSpec(**{**ACOUSTIC.__dict__, "dim": d_acoustic})
    v_spec = ChannelSpec(**{**VISUAL.__dict__, "dim": d_visual})
    acoustic = simulate_channel(a_spec, segment_id=segment_id, video_id=video_id, label=label, n_words=n_words,
                                strength=acoustic_strength)
    visual = simulate_channel(v_spec, segment_id=segment_id, video_id=video_id, label=label, n_words=n_words,
                              strength=visual_strength)
    return acoustic, visual
