"""MHMF-BERT recipe (being written)."""
