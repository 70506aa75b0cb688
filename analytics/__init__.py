"""Polars analytics over the Requiem execution history (read only)."""
