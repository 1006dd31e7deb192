"""s2s: recurrent sequence-to-sequence learning with PyTorch.

Layers, bottom up: config → data, tokenizer → modules → models → search → train, checkpoint, metrics → cli.
"""

__version__ = "0.1.0"
