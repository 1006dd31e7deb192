"""Image encoders: a CNN turns a picture into a grid of feature vectors (what attention reads, Show, Attend and
Tell) and one image vector (what initialises the decoder, Show and Tell). The same ``EncoderOutput`` as the
recurrent encoder, so the decoder and search cannot tell a picture from a sentence."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from s2s.modules.dropout import Dropout
from s2s.modules.encoders import EncoderOutput


class ResidualBlock(nn.Module):
    """conv-BN-ReLU-conv-BN plus the input (He et al. 2016); a 1×1 convolution matches shapes when they change."""

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        )
        self.shortcut = (
            nn.Identity()
            if stride == 1 and in_channels == out_channels
            else nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


def compact_resnet(channels: list[int], blocks: int) -> tuple[nn.Module, int]:
    """s2s's own backbone: a stride-2 stem, then one stage per width, each halving the grid. → (net, out channels)"""
    layers: list[nn.Module] = [
        nn.Conv2d(3, channels[0], 3, 2, 1, bias=False),
        nn.BatchNorm2d(channels[0]),
        nn.ReLU(inplace=True),
    ]
    previous = channels[0]
    for width in channels:
        layers.append(ResidualBlock(previous, width, stride=2))
        layers += [ResidualBlock(width, width, stride=1) for _ in range(blocks - 1)]
        previous = width
    return nn.Sequential(*layers), previous


@dataclass(frozen=True)
class FixedPart:
    """A backbone cut where its fine-tuned blocks begin: ``features`` (pixels → the grid at the cut, which never
    trains, so it can be cached), ``rest`` (that grid → the backbone's features, trained), the grid's ``channels``
    and the ``weights`` that decide it (what a cache of those grids is keyed by)."""

    features: Callable[[torch.Tensor], torch.Tensor]
    rest: Callable[[torch.Tensor], torch.Tensor]
    channels: int
    weights: dict[str, torch.Tensor]


def fixed_features(
    net: nn.Module, fixed: FixedPart | None
) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]:
    """What a feature cache holds for a frozen backbone: (pixels → grids that never change, the weights that decide
    them): the grids at the cut before its fine-tuned blocks, or else the whole network's."""
    return (fixed.features, fixed.weights) if fixed is not None else (net, net.state_dict())


class ImageEncoder(nn.Module):
    """backbone features [B, C, h, w] → grid [B, h·w, D] with learned cell positions, and the image vector [B, D]
    (the mean of the grid). A frozen backbone stays in eval mode (fixed BatchNorm statistics) while training; the
    ``tuned`` modules of a frozen backbone train anyway (fine-tuning its last blocks), and ``fixed``, where the
    backbone is cut before them, lets the encoder take the grids at the cut instead of pixels."""

    def __init__(
        self,
        backbone: nn.Module,
        channels: int,
        grid_cells: int,
        output_size: int,
        dropout: float,
        freeze: bool,
        tuned: list[nn.Module] = (),
        fixed: FixedPart | None = None,
    ):
        super().__init__()
        self.backbone, self.freeze, self.channels, self.fixed = backbone, freeze, channels, fixed
        if freeze:
            self.backbone.requires_grad_(False)
            for module in tuned:
                module.requires_grad_(True)
        self.backbone_trains = any(p.requires_grad for p in backbone.parameters())
        self.project = nn.Linear(channels, output_size)
        self.position = nn.Parameter(torch.zeros(grid_cells, output_size))  # where each cell is: "above", "left of"
        self.dropout = Dropout(dropout)
        self.output_size = output_size

    def train(self, mode: bool = True) -> ImageEncoder:
        super().train(mode)
        if self.freeze:
            self.backbone.eval()
        return self

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """images [B, 3, H, W] (ImageNet-normalised) → the backbone's feature grid [B, C, h, w]."""
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.backbone_trains):
            return self.backbone(images)

    def cacheable(self) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, torch.Tensor]]:
        """What a feature cache can hold for this encoder: (pixels → grids that never change, the weights that
        decide them). A backbone that trains with no fixed part has none."""
        if self.backbone_trains and self.fixed is None:
            raise ValueError("a backbone that trains has no fixed features to cache")
        return fixed_features(self.backbone, self.fixed)

    def forward(self, images: torch.Tensor, lengths: torch.Tensor | None = None) -> EncoderOutput:
        """images [B, 3, H, W], or the grids ``cacheable`` gave for them before (the feature cache) →
        EncoderOutput; ``lengths`` is unused (every cell is real)."""
        cached_channels = self.fixed.channels if self.fixed is not None else self.channels
        given = images.size(1) == cached_channels and images.size(1) != 3
        if given and self.fixed is not None:
            features = self.fixed.rest(images)  # the fine-tuned blocks, on the cached grid at the cut
        elif given and self.backbone_trains:
            raise ValueError("precomputed features given to an encoder whose backbone trains")
        else:
            features = images if given else self.features(images)  # [B, C, h, w]
        grid = features.flatten(2).transpose(1, 2)  # [B, h·w, C]
        if grid.size(1) != self.position.size(0):
            raise ValueError(
                f"the image gives {grid.size(1)} grid cells, the model was built for {self.position.size(0)}"
            )
        grid = self.dropout(torch.relu(self.project(grid) + self.position))  # [B, h·w, D]
        mask = torch.ones(grid.shape[:2], dtype=torch.bool, device=grid.device)
        return EncoderOutput(grid, mask, grid.mean(1))


def torchvision_backbone(name: str, pretrained: str | None) -> tuple[nn.Module, int]:
    """A torchvision classification network without its pooling and classifier: → (net, out channels)."""
    import torchvision  # an optional extra: callers turn ImportError into a message naming it

    weights = "DEFAULT" if pretrained == "default" else None
    net = torchvision.models.get_model(name, weights=weights)
    if pretrained not in (None, "default"):
        net.load_state_dict(torch.load(pretrained, map_location="cpu", weights_only=True))
    channels = net.fc.in_features if hasattr(net, "fc") else net.classifier[-1].in_features
    body = nn.Sequential(*list(net.children())[:-2])  # resnets: drop avgpool and fc
    return body, channels


def grid_cells(backbone: nn.Module, image_size: int) -> int:
    """How many cells the backbone's feature grid has for square images of ``image_size``."""
    with torch.no_grad():
        was_training = backbone.training
        backbone.eval()
        cells = backbone(torch.zeros(1, 3, image_size, image_size)).flatten(2).size(2)
        backbone.train(was_training)
    return cells
