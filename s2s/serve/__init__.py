"""Serving trained runs over HTTP (``s2s serve``, in progress): the pieces that do not depend on the web framework
come first. ``batcher.py`` gathers concurrent requests to one model into batches."""
