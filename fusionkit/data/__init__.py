"""Multimodal data layer: datasets by name or path, MAG-BERT word-piece alignment, collation and loaders.

>>> data = load_splits("synthetic")
>>> loader = make_loader(data.splits["train"], batch_size=32, shuffle=True)
"""
from fusionkit.data.api import DATASET_NAMES, data_root, load_splits
from fusionkit.data.batch import MultimodalBatch
from fusionkit.data.dataset import DatasetInfo, Example, LoadedData, MultimodalDataset, build_dataset, parse_modalities
from fusionkit.data.errors import DataError, LoadReport
from fusionkit.data.feature_tables import FeatureTable, read_feature_table
from fusionkit.data.loader import BucketBatchSampler, MultimodalLoader, collate, make_loader

__all__ = [
    "DATASET_NAMES",
    "BucketBatchSampler",
    "DataError",
    "DatasetInfo",
    "FeatureTable",
    "Example",
    "LoadReport",
    "LoadedData",
    "MultimodalBatch",
    "MultimodalDataset",
    "MultimodalLoader",
    "build_dataset",
    "collate",
    "data_root",
    "load_splits",
    "make_loader",
    "parse_modalities",
    "read_feature_table",
]
