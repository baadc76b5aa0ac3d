"""Model recipes composed from registered blocks."""
