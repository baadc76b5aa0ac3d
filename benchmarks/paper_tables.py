"""Published numbers that ``results.md`` prints under the measured table, clearly marked as the paper's.

The MHMF-BERT paper (Zou, Ding, Wang, "Utilizing BERT intermediate layers for multimodal sentiment analysis",
2022) reports its Table 1 (CMU-MOSI) and Table 2 (CMU-MOSEI) with BERT-base and the real CMU-MultimodalSDK
features. The article is closed access and no public copy of its tables could be found while writing this
module, so **no row is reproduced**: a number we cannot check against the source is worse than none.
To add rows, fill ``rows`` below with values copied from the paper (accuracies and F1 in %, MAE/Corr raw;
``None`` for a cell the paper leaves empty) and set ``verified`` to where they were checked.
"""
from __future__ import annotations

# Column order of the printed tables; keys match fusionkit.metrics names.
COLUMNS: tuple[str, ...] = ("acc2_has0", "acc2_non0", "f1_has0", "f1_non0", "acc7", "mae", "corr")

PAPER_TABLES: dict[str, dict] = {
    "mosi": {
        "title": "Table 1 of the MHMF-BERT paper: CMU-MOSI (BERT-base, real features)",
        "verified": None,
        "rows": {},  # e.g. "MHMF-BERT": {"acc2_has0": ..., "acc2_non0": ..., ...}
    },
    "mosei": {
        "title": "Table 2 of the MHMF-BERT paper: CMU-MOSEI (BERT-base, real features)",
        "verified": None,
        "rows": {},
    },
}

UNAVAILABLE_NOTE = (
    "The paper's numbers are not reproduced here: the article is closed access and its tables could not be "
    "verified from a public source (see benchmarks/paper_tables.py to add them)."
)


def paper_table_for(dataset: str) -> dict | None:
    """The paper table matching ``dataset`` (``mosi``, ``mosi-sim`` … → Table 1; ``mosei*`` → Table 2)."""
    name = dataset.lower()
    if name.startswith("mosei"):
        return PAPER_TABLES["mosei"]
    if name.startswith("mosi"):
        return PAPER_TABLES["mosi"]
    return None
