"""Reading a clip's audio: mono float32 at one sample rate, with every repair counted.

WAV and FLAC (and the other formats libsndfile reads: OGG, AIFF …) are read with ``soundfile``. Any other
container or a video (mp4, mkv, webm, m4a, mp3 …) is decoded by an ``ffmpeg`` binary when one is on the PATH; when
none is, the error names the fix.

Documented repairs (counted in :class:`AudioInfo` and in ``provenance.json``):

* more than one channel → the mean of the channels (``downmixed``);
* a sample rate other than the extraction rate → resampled with a polyphase filter (``resampled_from``).

Refused with one :class:`AudioError`: a file that cannot be decoded, a WAV whose header declares more audio than
the file holds (truncated copy or download), a rate below :data:`MIN_SAMPLE_RATE`, an empty or non-finite signal.
"""
from __future__ import annotations

import shutil
import struct
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

SOUNDFILE_SUFFIXES = (".wav", ".flac", ".ogg", ".aiff", ".aif", ".au", ".w64", ".caf")
FFMPEG_SUFFIXES = (".mp3", ".m4a", ".mka", ".aac", ".opus", ".wma", ".mp4", ".mkv", ".webm", ".mov", ".avi", ".mpg",
                   ".mpeg", ".flv", ".3gp")
AUDIO_SUFFIXES = SOUNDFILE_SUFFIXES + FFMPEG_SUFFIXES
MIN_SAMPLE_RATE = 8000  # narrow-band (telephone) speech; below it the eGeMAPS spectral bands do not exist
FFMPEG_FIX = ("install ffmpeg (Debian/Ubuntu: apt-get install ffmpeg; conda: conda install -c conda-forge ffmpeg) "
              "or convert the file to WAV/FLAC first")


class AudioError(ValueError):
    """An audio file that cannot be used; the message names the file and the fix."""


@dataclass
class AudioInfo:
    path: str
    sample_rate: int          # the rate of the returned signal
    source_rate: int          # the file's rate
    channels: int             # the file's channel count
    duration: float           # seconds
    decoder: str              # "soundfile" or "ffmpeg"
    downmixed: bool = False
    resampled_from: int | None = None


def _declared_wav_frames(path: Path) -> tuple[int, int] | None:
    """``(declared data bytes, bytes present)`` for a RIFF/WAVE file, or None when not a WAV or size unknown."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(12)
        if len(head) < 12 or head[:4] != b"RIFF" or head[8:12] != b"WAVE":
            return None
        pos = 12
        while pos + 8 <= size:
            fh.seek(pos)
            chunk = fh.read(8)
            if len(chunk) < 8:
                return None
            cid, length = chunk[:4], struct.unpack("<I", chunk[4:])[0]
            if cid == b"data":
                if length in (0, 0xFFFFFFFF):  # streamed WAV (pipe): the size is not known in the header
                    return None
                return length, size - (pos + 8)
            pos += 8 + length + (length & 1)
    return None


def _read_soundfile(path: Path) -> tuple[np.ndarray, int]:
    try:
        import soundfile as sf
    except ImportError:
        raise AudioError("soundfile is not installed; pip install 'fusionkit[extract]' (opensmile, soundfile, "
                         "scipy)") from None

    declared = _declared_wav_frames(path) if path.suffix.lower() in (".wav", ".wave") else None
    if declared is not None and declared[1] < declared[0]:
        raise AudioError(f"audio {str(path)!r}: truncated WAV: the header declares {declared[0]} bytes of samples, "
                         f"the file holds {max(declared[1], 0)}; copy or export the file again")
    try:
        data, sr = sf.read(str(path), dtype="float32", always_2d=True)
    except (RuntimeError, TypeError, ValueError) as exc:  # LibsndfileError is a RuntimeError
        raise AudioError(f"audio {str(path)!r}: not a readable audio file ({exc}); check the file or convert it to "
                         f"WAV/FLAC") from None
    return data, int(sr)


def _read_ffmpeg(path: Path, sample_rate: int) -> tuple[np.ndarray, int]:
    """Decoded by ffmpeg straight to ``sample_rate``; returns the samples and the stream's own rate."""
    binary = shutil.which("ffmpeg")
    if binary is None:
        raise AudioError(f"audio {str(path)!r}: {path.suffix or 'this'} files are decoded with ffmpeg, which is not "
                         f"installed; {FFMPEG_FIX}")
    cmd = [binary, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-f", "f32le", "-acodec", "pcm_f32le",
           "-ar", str(sample_rate), "-"]
    proc = subprocess.run(cmd, capture_output=True)  # channels kept: downmixing is ours, so it is counted
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(f"audio {str(path)!r}: ffmpeg cannot decode it ({msg[-1] if msg else proc.returncode})")
    channels, source_rate = _ffprobe(binary, path)
    data = np.frombuffer(proc.stdout, dtype="<f4")
    if channels > 1:
        data = data[: len(data) - len(data) % channels].reshape(-1, channels)
    else:
        data = data.reshape(-1, 1)
    return data.astype(np.float32), source_rate or sample_rate


def _ffprobe(binary: str, path: Path) -> tuple[int, int | None]:
    """``(channels, sample rate)`` of the first audio stream (``(1, None)`` when ffprobe is unavailable)."""
    probe = shutil.which("ffprobe") or binary.replace("ffmpeg", "ffprobe")
    if Path(probe).is_file():
        proc = subprocess.run([probe, "-v", "error", "-select_streams", "a:0", "-show_entries",
                               "stream=channels,sample_rate", "-of", "default=noprint_wrappers=1", str(path)],
                              capture_output=True, text=True)
        fields = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
        try:
            return max(int(fields.get("channels", 1)), 1), int(fields["sample_rate"])
        except (KeyError, ValueError):
            pass
    return 1, None


def resample(signal: np.ndarray, source_rate: int, target_rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's ``resample_poly``) of a 1-d signal."""
    if source_rate == target_rate:
        return signal
    from scipy.signal import resample_poly

    ratio = Fraction(target_rate, source_rate).limit_denominator(1000)
    return resample_poly(signal, ratio.numerator, ratio.denominator).astype(np.float32)


def read_audio(path, *, sample_rate: int = 16000) -> tuple[np.ndarray, AudioInfo]:
    """``(signal (n,) float32 at sample_rate, AudioInfo)``; see the module docstring for repairs and refusals."""
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"audio {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix in SOUNDFILE_SUFFIXES:
        data, sr = _read_soundfile(path)
        decoder = "soundfile"
    elif suffix in FFMPEG_SUFFIXES:
        data, sr = _read_ffmpeg(path, sample_rate)
        decoder = "ffmpeg"  # already at sample_rate (ffmpeg's resampler); sr is the stream's own rate
    else:
        raise AudioError(f"audio {str(path)!r}: unknown audio suffix {suffix!r}; use one of "
                         f"{', '.join(AUDIO_SUFFIXES)}")
    if sr < MIN_SAMPLE_RATE:
        raise AudioError(f"audio {str(path)!r}: sample rate {sr} Hz is below {MIN_SAMPLE_RATE} Hz, too low for the "
                         f"acoustic descriptors; record or export at 16 kHz or more")
    if data.shape[0] == 0:
        raise AudioError(f"audio {str(path)!r} holds no samples")
    if not np.isfinite(data).all():
        raise AudioError(f"audio {str(path)!r} holds NaN/inf samples; export it again as PCM WAV")
    channels = int(data.shape[1])
    mono = data.mean(axis=1) if channels > 1 else data[:, 0]
    rate_now = sample_rate if decoder == "ffmpeg" else sr
    info = AudioInfo(path=str(path), sample_rate=sample_rate, source_rate=sr, channels=channels,
                     duration=len(mono) / rate_now, decoder=decoder, downmixed=channels > 1)
    if sr != sample_rate:
        if decoder == "soundfile":
            mono = resample(mono, sr, sample_rate)
        info.resampled_from = sr
    return np.ascontiguousarray(mono, dtype=np.float32), info

