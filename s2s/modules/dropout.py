"""Dropout whose mask costs a quarter of a random number per element on the CPU.

PyTorch's CPU dropout draws one Bernoulli sample per element from its Mersenne Twister, which costs as much as the
recurrent step the dropped embeddings feed. Here every random 32-bit word gives four bytes and an element is dropped
when its byte falls below ``round(p × 256)``: the rate is ``p`` to within 1/512 (0.3 becomes 77/256 = 0.3008), drawn
much faster from the same seeded generator. A rate of 1/512 or less would round to no dropout at all, so it is
refused (a recipe already at load, ``s2s.config``). On other devices ``F.dropout`` is already fast and is used as
it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

STEPS = 256  # a random byte per element: rates are applied in steps of 1/256


class Dropout(nn.Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout must be in [0, 1), not {p}")
        self.p = p
        self.threshold = round(p * STEPS)  # drop where a random byte < threshold
        if p > 0 and self.threshold == 0:
            raise ValueError(f"dropout {p} rounds to 0/{STEPS}: it would drop nothing")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu":
            return F.dropout(x, self.p, training=True)
        words = torch.randint(-(2**31), 2**31, ((x.numel() + 3) // 4,), dtype=torch.int32)  # 32 random bits each
        keep = words.view(torch.uint8)[: x.numel()].view(x.shape) >= self.threshold
        return x * (keep.to(x.dtype) * (STEPS / (STEPS - self.threshold)))

    def extra_repr(self) -> str:
        return f"p={self.p}"
