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


def step_checkpoint(run_dir: Path, step: int) -> Path:
    return Path(run_dir) / "checkpoints" / f"step-{step:08d}.safetensors"


def step_checkpoints(run_dir: Path) -> list[Path]:
    """The run's step checkpoints, oldest first."""
    return sorted((Path(run_dir) / "checkpoints").glob("step-*.safetensors"))


def keep_newest(run_dir: Path, count: int) -> None:
    for old in step_checkpoints(run_dir)[:-count]:
        old.unlink()


def average_checkpoints(paths: list[Path], out: Path) -> None:
    """The element-wise mean of the weights in ``paths``, written to ``out`` (accumulated in fp64)."""
    total: dict[str, torch.Tensor] = {}
    dtypes: dict[str, torch.dtype] = {}
    for path in paths:
        try:
            tensors = load_file(str(path))
        except Exception as error:
            raise RunError(f"{path}: not a readable safetensors checkpoint ({error})") from None
        if total and tensors.keys() != total.keys():
            raise RunError(f"{path}: holds other tensors than {paths[0]}; checkpoints of one run only")
        for name, tensor in tensors.items():
            total[name] = total.get(name, 0) + tensor.double()
            dtypes[name] = tensor.dtype
    mean = {name: (tensor / len(paths)).to(dtypes[name]) for name, tensor in total.items()}
    atomic_write(out, lambda tmp: save_file(mean, tmp))
