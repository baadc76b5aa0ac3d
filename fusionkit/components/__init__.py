"""Reusable blocks. Importing this package declares them in the registry (see ``fusionkit.create``)."""
from fusionkit.components import (  # noqa: F401 - imported for their @register declarations
    adapters,
    attention,
    conv,
    crossmodal,
    fusion,
    heads,
    low_rank_fusion,
    mag,
    memory,
    misa,
    outer_product,
    recurrent,
    restitution,
    subnet,
    tensor_fusion,
)
from fusionkit.components.attention import Attention, masked_mean
from fusionkit.components.heads import RegressionHead

__all__ = ["Attention", "RegressionHead", "masked_mean"]
