"""The compiled CPU kernels of the recurrent loops (``recurrence.cpp``) and of the loss (``loss.cpp``), built on
first use.

The hand-written Python loops of ``s2s.modules.recurrence`` and ``s2s.modules.input_feeding`` spend most of a
training step dispatching small element-wise operations one core at a time. The same loops in C++ fuse those
operations and run half the batch on each core, and the loss kernel makes one pass per row of logits; on the 2-core
development machine training runs 1.6× faster in bf16 and 1.26× in fp32 with them (``tools/bench.py``). They are
compiled for this machine's CPU the first time they are needed (about 15 s, with PyTorch's own extension builder and
the C++ compiler), and the library is kept under ``$XDG_CACHE_HOME/s2s/kernels`` (``~/.cache`` by default), one
folder per source, torch version and CPU.

Where they cannot be built (no compiler, no ninja) the Python loops run instead, after one line on stderr saying
why; they compute the same thing. ``S2S_KERNELS=off`` in the environment chooses the Python loops on purpose, to
compare the two or to rule the kernels out.
"""

from __future__ import annotations

import hashlib
import io
import os
import platform
import sys
import threading
import warnings
from contextlib import contextmanager, redirect_stdout
from pathlib import Path

import torch

FOLDER = Path(__file__).parent
SOURCES = [FOLDER / "recurrence.cpp", FOLDER / "loss.cpp"]
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"]  # this CPU's vector units; OpenMP
_lock = threading.Lock()
_loaded: bool | None = None  # None: not tried yet
_held_off = 0  # open ``disabled()`` blocks


def available() -> bool:
    """Whether ``torch.ops.s2s_kernels`` can be used, building it on the first call."""
    global _loaded
    if _loaded is None:
        with _lock:
            if _loaded is None:
                _loaded = _load()
    return _loaded


def usable(like: torch.Tensor, acc: torch.dtype, dtype: torch.dtype) -> bool:
    """Whether the kernels can take over work on tensors like ``like``: on the CPU, with fp32 activations (``acc``)
    and fp32 or bf16 matrix products (``dtype``), once built."""
    products = dtype in (torch.float32, torch.bfloat16)
    return like.device.type == "cpu" and acc == torch.float32 and products and not _held_off and available()


@contextmanager
def disabled():
    """Within this block the Python loops run. ``tools/bench.py`` counts a step's FLOPs this way: the products the
    kernels make run on their worker threads, where ``torch.utils.flop_counter`` does not see them."""
    global _held_off
    _held_off += 1
    try:
        yield
    finally:
        _held_off -= 1


def ops():
    """The kernels' operator namespace (call ``available()`` first)."""
    return torch.ops.s2s_kernels


def parts() -> int:
    """Into how many row blocks the loops split a batch: one per thread PyTorch uses."""
    return torch.get_num_threads()


def _load() -> bool:
    if os.environ.get("S2S_KERNELS", "").lower() in ("off", "0", "no", "false"):
        return False
    try:
        from torch.utils import cpp_extension

        build = _build_directory()
        build.mkdir(parents=True, exist_ok=True)
        if not any(build.glob("*.so")):
            print(f"s2s: compiling the CPU kernels once, into {build} (about 15 s)", file=sys.stderr)
        with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            cpp_extension.load(
                name="s2s_kernels",
                sources=[str(source) for source in SOURCES],
                extra_cflags=FLAGS,
                extra_ldflags=["-fopenmp"],
                build_directory=str(build),
                is_python_module=False,
                verbose=False,
            )
        return True
    except Exception as error:  # noqa: BLE001 — any failure to build means the Python loops, said once
        reason = _first_error(str(error)) or type(error).__name__
        print(f"s2s: the CPU kernels could not be built ({reason}); using the Python loops", file=sys.stderr)
        return False


def _first_error(message: str) -> str:
    """The line of a build failure that says what went wrong (the compiler's first error), else its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return " ".join((errors or lines or [""])[0].split())[:300]


def _build_directory() -> Path:
    """One folder per source, compiler flags, torch build and CPU: a library built elsewhere is never loaded."""
    key = hashlib.sha256()
    for source in sorted(FOLDER.glob("*.[ch]*")):  # the sources and the header they share
        key.update(source.read_bytes())
    key.update(" ".join(FLAGS).encode())
    key.update(torch.__version__.encode())
    key.update(_cpu_description().encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / "s2s" / "kernels" / key.hexdigest()[:16]


def _cpu_description() -> str:
    """The CPU's model and instruction-set flags (what -march=native compiles for)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({line for line in lines if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor() or platform.machine()
