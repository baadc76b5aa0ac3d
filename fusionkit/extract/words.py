"""Word timings per segment, from the files users have.

Every reader returns ``{segment_id: [Word]}`` with times in seconds. Supported inputs (``--words``):

* **CSV** ``segment_id,word,start,end`` (header required, other columns ignored), any number of segments.
* **CMU-MultimodalSDK** ``TimestampedWords`` ``.csd`` (HDF5): one entry per video, the video id is the segment id;
  the SDK's silence tokens (``sp``, ``sil``) are dropped.
* **JSON** word lists, one file per clip (the file's stem is the segment id), or a directory of them:

  - WhisperX (``whisperx --output_format json``): ``{"segments": [{"words": [{"word", "start", "end", "score"}]}]}``;
    words WhisperX could not align (often numerals) have no ``start``/``end``;
  - whisper-timestamped: ``{"segments": [{"words": [{"text", "start", "end", "confidence"}]}]}``;
  - Gentle (``/transcriptions?async=false`` or ``align.py``): ``{"words": [{"word", "case", "start", "end", …}]}``;
    words with ``case`` ``not-found-in-audio`` have no times;
  - Montreal Forced Aligner (``mfa align --output_format json``):
    ``{"tiers": {"words": {"entries": [[start, end, "word"], …]}}}``; empty labels are silences, dropped;
  - a plain list ``[{"word", "start", "end"}, …]``.

A word without times (the untimed aligner words above) is kept in the text with ``start = end = NaN``: it gets
zero features and a frame count of 0, like a word without frames.
"""
from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path

SILENCE = {"sp", "<sp>", "sil", "<sil>", "", "<eps>"}
WORD_COLUMNS = ("segment_id", "word", "start", "end")
JSON_FORMATS = ("whisperx", "whisper-timestamped", "gentle", "mfa", "list")


class WordsError(ValueError):
    """A word-timing file that cannot be used; the message names the file and the fix."""


@dataclass
class Word:
    word: str
    start: float  # seconds; NaN when the aligner gave no time
    end: float

    @property
    def timed(self) -> bool:
        return math.isfinite(self.start) and math.isfinite(self.end)


@dataclass
class WordSource:
    """What was read: the segments, the format and the files (for provenance)."""

    segments: dict
    format: str
    files: list
    dropped_silence: int = 0


def _number(value, *, where: str) -> float:
    if value is None:
        return math.nan
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise WordsError(f"{where}: time {value!r} is not a number of seconds") from None
    if math.isinf(out):
        raise WordsError(f"{where}: time {value!r} is infinite")
    return out


def read_words_csv(path: Path) -> WordSource:
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            header = [h.strip() for h in (reader.fieldnames or [])]
            missing = [c for c in WORD_COLUMNS if c not in header]
            if missing:
                raise WordsError(f"words {str(path)!r}: missing column(s) {', '.join(missing)}; a word-timing CSV has "
                                 f"the header segment_id,word,start,end (seconds)")
            reader.fieldnames = header
            out, dropped = {}, 0
            for line, row in enumerate(reader, start=2):
                if None in row or any(row.get(c) is None for c in WORD_COLUMNS):
                    raise WordsError(f"words {str(path)!r}: row {line} has the wrong number of fields")
                seg = row["segment_id"].strip()
                if not seg:
                    raise WordsError(f"words {str(path)!r}: row {line} has an empty segment_id")
                word = row["word"].strip()
                if word.lower() in SILENCE:
                    dropped += 1
                    continue
                where = f"words {str(path)!r} row {line}"
                out.setdefault(seg, []).append(Word(word, _number(row["start"].strip() or None, where=where),
                                                    _number(row["end"].strip() or None, where=where)))
    except (UnicodeDecodeError, csv.Error) as exc:
        raise WordsError(f"words {str(path)!r}: not a readable CSV ({exc})") from None
    if not out:
        raise WordsError(f"words {str(path)!r} holds no words")
    return WordSource(segments=out, format="csv", files=[path], dropped_silence=dropped)


def read_words_csd(path: Path) -> WordSource:
    from fusionkit.data.csd import read_sequence
    from fusionkit.data.errors import DataError

    try:
        seq = read_sequence(path)
    except DataError as exc:
        raise WordsError(f"words: {exc}") from None
    out, dropped = {}, 0
    for video, (feats, intervals) in seq.data.items():
        words = []
        for k in range(len(feats)):
            token = feats[k, 0]
            token = (token.decode("utf-8", "replace") if isinstance(token, bytes) else str(token)).strip()
            if token.lower() in SILENCE:
                dropped += 1
                continue
            words.append(Word(token, float(intervals[k, 0]), float(intervals[k, 1])))
        if words:
            out[str(video)] = words
    if not out:
        raise WordsError(f"words {str(path)!r}: the TimestampedWords sequence holds no words")
    return WordSource(segments=out, format="csd", files=[path], dropped_silence=dropped)


def parse_word_json(data, *, where: str) -> tuple[list, str, int]:
    """``(words, format, dropped silences)`` from one clip's JSON (see the module docstring for the formats)."""
    items, fmt, dropped = None, None, 0
    if isinstance(data, dict) and isinstance(data.get("tiers"), dict):
        tier = data["tiers"].get("words")
        entries = tier.get("entries") if isinstance(tier, dict) else None
        if not isinstance(entries, list):
            raise WordsError(f"{where}: an MFA JSON needs tiers.words.entries ([start, end, word] triples)")
        items, fmt = [], "mfa"
        for e in entries:
            if not (isinstance(e, (list, tuple)) and len(e) == 3):
                raise WordsError(f"{where}: MFA entry {e!r} is not [start, end, word]")
            items.append({"word": e[2], "start": e[0], "end": e[1]})
    elif isinstance(data, dict) and isinstance(data.get("segments"), list):
        items = []
        for seg in data["segments"]:
            words = seg.get("words") if isinstance(seg, dict) else None
            if not isinstance(words, list):
                raise WordsError(f"{where}: segments without word lists; run the recognizer with word timestamps "
                                 f"(WhisperX aligns by default; whisper-timestamped writes them)")
            items += words
        fmt = "whisperx" if any(isinstance(w, dict) and "word" in w for w in items) else "whisper-timestamped"
    elif isinstance(data, dict) and isinstance(data.get("words"), list):
        items, fmt = data["words"], "gentle"
    elif isinstance(data, list):
        items, fmt = data, "list"
    if items is None:
        raise WordsError(f"{where}: not a known word-timing JSON; expected WhisperX / whisper-timestamped "
                         f"(segments[].words[]), Gentle (words[]), MFA (tiers.words.entries) or a list of "
                         f"{{word, start, end}}")
    out = []
    for n, item in enumerate(items):
        if not isinstance(item, dict):
            raise WordsError(f"{where}: word {n} is {type(item).__name__}, expected an object with word/start/end")
        text = item.get("word", item.get("text"))
        if not isinstance(text, str):
            raise WordsError(f"{where}: word {n} has no 'word' (or 'text') string")
        text = text.strip()
        if text.lower() in SILENCE:
            dropped += 1
            continue
        if fmt == "gentle" and item.get("case") not in (None, "success"):
            out.append(Word(text, math.nan, math.nan))
            continue
        out.append(Word(text, _number(item.get("start"), where=f"{where} word {n}"),
                        _number(item.get("end"), where=f"{where} word {n}")))
    return out, fmt, dropped


def read_words_json(paths: list) -> WordSource:
    out, formats, dropped = {}, set(), 0
    for path in paths:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise WordsError(f"words {str(path)!r}: not valid JSON ({exc})") from None
        words, fmt, d = parse_word_json(data, where=f"words {str(path)!r}")
        if not words:
            raise WordsError(f"words {str(path)!r} holds no words")
        out[Path(path).stem] = words
        formats.add(fmt)
        dropped += d
    return WordSource(segments=out, format="json:" + "+".join(sorted(formats)), files=list(paths),
                      dropped_silence=dropped)


def read_words(path) -> WordSource:
    """Word timings from a CSV, a ``.csd``, a JSON file or a directory of JSON/CSV files (by suffix)."""
    path = Path(path)
    if path.is_dir():
        jsons = sorted(path.glob("*.json"))
        csvs = sorted(path.glob("*.csv"))
        if jsons and not csvs:
            return read_words_json(jsons)
        if csvs and not jsons:
            merged = [read_words_csv(p) for p in csvs]
            segments = {}
            for src in merged:
                for seg, words in src.segments.items():
                    if seg in segments:
                        raise WordsError(f"words: segment {seg!r} appears in more than one CSV in {str(path)!r}")
                    segments[seg] = words
            return WordSource(segments=segments, format="csv", files=csvs,
                              dropped_silence=sum(s.dropped_silence for s in merged))
        raise WordsError(f"words {str(path)!r}: a word-timing directory holds either <segment_id>.json files or "
                         f"CSV files, found {len(jsons)} JSON and {len(csvs)} CSV")
    if not path.is_file():
        raise WordsError(f"words {str(path)!r} does not exist")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return read_words_csv(path)
    if suffix == ".csd":
        return read_words_csd(path)
    if suffix == ".json":
        return read_words_json([path])
    raise WordsError(f"words {str(path)!r}: unknown suffix {suffix!r}; give a .csv (segment_id,word,start,end), a "
                     f"TimestampedWords .csd or an aligner's .json")
