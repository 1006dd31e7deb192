"""An exponential moving average of a model's weights during training (``train.ema_decay``; Polyak averaging in its
moving form): validation scores, and the best checkpoint keeps, the averaged weights, while training goes on with
the raw ones. What it bought on each recipe it was tried on is in the docs' ablation tables.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn


class WeightAverage:
    """The average of ``model``'s trainable weights: ``update`` after every optimizer step, ``applied`` to validate."""

    def __init__(self, model: nn.Module, decay: float):
        self.decay = decay
        trained = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
        self.names = [name for name, _ in trained]
        self.weights = [parameter for _, parameter in trained]
        self.average = [weight.detach().clone() for weight in self.weights]
        self.updates = 0

    def restart(self) -> None:
        """Start the average again from the model's current weights."""
        with torch.no_grad():
            torch._foreach_copy_(self.average, [weight.detach() for weight in self.weights])
        self.updates = 0

    def update(self) -> None:
        """Fold the current weights in. Early on the decay is lower ((1 + n) / (10 + n) after n updates), so that
        the average forgets the random start instead of dragging it along for 1 / (1 - decay) steps."""
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        with torch.no_grad():
            torch._foreach_lerp_(self.average, [weight.detach() for weight in self.weights], 1.0 - decay)

    @contextmanager
    def applied(self) -> Iterator[None]:
        """The model holds the averaged weights inside the block and its own ones again after it."""
        with torch.no_grad():
            own = [weight.detach().clone() for weight in self.weights]
            for weight, average in zip(self.weights, self.average, strict=True):
                weight.copy_(average)
        try:
            yield
        finally:
            with torch.no_grad():
                for weight, kept in zip(self.weights, own, strict=True):
                    weight.copy_(kept)

    def state_dict(self) -> dict:
        return {"updates": self.updates, "average": dict(zip(self.names, [t.cpu() for t in self.average], strict=True))}

    def load_state_dict(self, state: dict) -> None:
        saved = state["average"]
        if sorted(saved) != sorted(self.names):
            raise ValueError(f"averaged {len(saved)} tensors, the model trains {len(self.names)} of other names")
        self.updates = int(state["updates"])
        with torch.no_grad():
            for name, average in zip(self.names, self.average, strict=True):
                average.copy_(saved[name])
