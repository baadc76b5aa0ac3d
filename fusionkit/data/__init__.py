"""Multimodal data layer (being written)."""
from fusionkit.data.batch import MultimodalBatch

__all__ = ["MultimodalBatch"]
