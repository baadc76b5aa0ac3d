"""fusionkit's own datasets, each a registered dataset with its own ``resolve`` and ``read``.

They enter the dataset registry (:attr:`fusionkit.registry.Registry.datasets`) through the hook
``fusionkit_register_datasets`` of fusionkit's block plug-in (:mod:`fusionkit.plugins.builtin`), the same way a
plug-in adds a dataset; this module is imported when one of them is first resolved. ``read`` is the reader of
the resolved source's format (:data:`fusionkit.data.readers.FORMAT_READERS`).
"""
from __future__ import annotations

from pathlib import Path

from fusionkit.data import readers
from fusionkit.data.api import (COVAREP_DESCRIPTION, COVAREP_MEANS, DIMS, LAYOUT_WORDS, SIM_DESCRIPTION, Source,
                                _missing)
from fusionkit.data.probes import PROBE_NAMES


def _synthetic(root: Path) -> Source:
    return Source(
        name="synthetic", format="synthetic", path=None, simulated=True, dims=(74, 47),
        description="generated review sentences from a small sentiment lexicon with SIMULATED, "
                    "label-correlated nonverbal channels (74-d acoustic, 47-d visual); no files",
    )


def _real(corpus: str):
    def resolve(root: Path) -> Source:
        candidates = readers.candidate_paths(corpus, root)
        for path in candidates:
            if readers.holds_data(path):
                fmt = readers.detect_format(path)
                # the channels are what the reader produces (read from this file), not what the name promises
                return Source(name=corpus, format=fmt, path=path, simulated=False, dims=None,
                              description=f"features read from {path}", extra={"corpus": corpus})
        tried = [*candidates[:-1], f"{candidates[-1]}/*.csd"]
        raise _missing(corpus, tried, f"put real {corpus.upper()} features there in one of the supported formats: "
                                      f"MAG-BERT's {corpus}.pkl, MMSA's aligned_50.pkl / unaligned_50.pkl, or a "
                                      f"directory of CMU-MultimodalSDK .csd files (words, COVAREP, FACET, labels); "
                                      f"or use '{corpus}-sim' (real transcripts, simulated nonverbal channels)")

    return resolve


def _simulated(corpus: str):
    key = f"{corpus}-sim"

    def resolve(root: Path) -> Source:
        path = root / corpus / f"{corpus}_segments.csv"
        if not path.is_file():
            raise _missing(key, [path], f"put the {corpus.upper()} segment table {corpus}_segments.csv (columns "
                                        f"segment_id, video_id, clip_id, start, end, label, split, transcript, words) "
                                        f"in {root / corpus}")
        d_v = DIMS[corpus][1]
        return Source(name=key, format="segments_csv", path=path, simulated=True, dims=(74, d_v),
                      description=SIM_DESCRIPTION.format(corpus=f"CMU-{corpus.upper()}", d_v=d_v))

    return resolve


def _mosi_covarep(root: Path) -> Source:
    key = "mosi-covarep"
    path, table = root / "mosi" / "mosi_segments.csv", root / "mosi" / COVAREP_MEANS
    missing = [p for p in (path, table) if not p.is_file()]
    if missing:
        raise _missing(key, missing, f"put the CMU-MOSI segment table mosi_segments.csv and the COVAREP "
                                     f"utterance means {COVAREP_MEANS} in {root / 'mosi'}")
    return Source(name=key, format="feature_table", path=path, simulated=False, dims=None,
                  description=COVAREP_DESCRIPTION.format(layout=LAYOUT_WORDS["repeat"]), features={"acoustic": table},
                  channels={"text": "file", "acoustic": "file", "visual": "absent"})


def _probe(key: str):
    def resolve(root: Path) -> Source:  # fusion probes (fusionkit.data.probes)
        from fusionkit.data import probes

        return probes.resolve(key, root=root)

    return resolve


# name → resolve(root), in the order the names are listed
RESOLVERS = {
    "synthetic": _synthetic,
    "mosi": _real("mosi"),
    "mosei": _real("mosei"),
    "mosi-sim": _simulated("mosi"),
    "mosei-sim": _simulated("mosei"),
    "mosi-covarep": _mosi_covarep,
    **{name: _probe(name) for name in PROBE_NAMES},
}


def resolve(name: str, root: Path) -> Source:
    return RESOLVERS[name](root)


read = readers.read_source  # (source, *, seed, report): the reader of the source's format
