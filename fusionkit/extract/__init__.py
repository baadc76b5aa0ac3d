"""Bring your own clips: word-aligned features from audio, word timings and OpenFace output.

>>> from fusionkit.extract import extract
>>> result = extract(audio="clips/", words="words.csv", out="features/")   # eGeMAPS LLDs, word-averaged
>>> result.tables["acoustic"]["words"]                                      # → features/acoustic.npz

One module per concern: :mod:`~fusionkit.extract.audio` (reading), :mod:`~fusionkit.extract.words` (timings),
:mod:`~fusionkit.extract.openface`, :mod:`~fusionkit.extract.acoustic` (openSMILE), :mod:`~fusionkit.extract.align`
(the SDK's averaging rule), :mod:`~fusionkit.extract.tables` (writing), :mod:`~fusionkit.extract.provenance`,
:mod:`~fusionkit.extract.runner` (parallel, resumable) and :mod:`~fusionkit.extract.predict` (scoring new clips).
"""
from fusionkit.extract.align import check_timings, word_means
from fusionkit.extract.api import ExtractResult, extract
from fusionkit.extract.audio import AudioError, read_audio
from fusionkit.extract.openface import OpenFaceError, read_openface
from fusionkit.extract.provenance import ExtractConfig, read_provenance
from fusionkit.extract.runner import ExtractError
from fusionkit.extract.words import Word, WordsError, read_words

__all__ = ["extract", "ExtractResult", "ExtractConfig", "ExtractError", "AudioError", "WordsError", "OpenFaceError",
           "Word", "read_audio", "read_words", "read_openface", "read_provenance", "check_timings", "word_means"]
