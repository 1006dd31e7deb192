"""Checkpoints in a run directory: model weights in safetensors, trainer state loadable without pickle code.

Every file is written to a temporary name, flushed and renamed, so a crash at any moment leaves the previous
checkpoint whole.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from s2s.errors import RunError
from s2s.files import atomic_write


def save_weights(model: torch.nn.Module, path: Path) -> None:
    # tied weights appear once in safetensors; keep_vars=False gives plain tensors
    tensors = {}
    seen = {}
    for name, tensor in model.state_dict().items():
        key = tensor.data_ptr()
        if key in seen:
            continue
        seen[key] = name
        tensors[name] = tensor.detach().contiguous().cpu()
    atomic_write(path, lambda tmp: save_file(tensors, tmp))


def load_weights(model: torch.nn.Module, path: Path) -> None:
    try:
        tensors = load_file(str(path))
    except FileNotFoundError:
        raise RunError(f"{path}: checkpoint not found") from None
    except Exception as error:
        raise RunError(f"{path}: not a readable safetensors checkpoint ({error})") from None
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    missing = [name for name in missing if not is_tied(model, name)]
    if missing or unexpected:
        raise RunError(
            f"{path}: does not match the recipe's model (missing {missing[:3]}, unexpected {unexpected[:3]})"
        )


def is_tied(model: torch.nn.Module, name: str) -> bool:
    """A parameter that shares its storage with another one saved under a different name."""
    state = model.state_dict()
    ptr = state[name].data_ptr()
    return any(other != name and tensor.data_ptr() == ptr for other, tensor in state.items())


def save_state(state: dict, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def load_state(path: Path) -> dict:
    """Trainer state (optimizer, counters, RNG); weights_only refuses anything that would run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise RunError(f"{path}: trainer state not found") from None
    except Exception as error:
        raise RunError(f"{path}: refused to load trainer state ({str(error).splitlines()[0]})") from None
