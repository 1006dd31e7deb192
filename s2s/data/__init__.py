"""Corpora (read or generated) and batching."""
