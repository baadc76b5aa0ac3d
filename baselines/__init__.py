"""Baseline models, each registered as a ``model`` component (one file per model)."""
from baselines import iccn, iccn_e2e, lmf, mag_bert, misa, mult, text_only, tfn  # noqa: F401
