"""What runs s2s's recurrent loops, search and loss, decided once per process: the compiled CPU kernels of this
package (``recurrence.cpp``, ``search.cpp``, ``loss.cpp``), the Python loops, or the device's own fused RNN. Every
module with such a loop asks here and keeps no decision of its own:

- ``fused_rnn(like)``: the encoder's GRU layers run the device's fused RNN (cuDNN on CUDA) everywhere but on the
  CPU, where s2s's own recurrence runs them;
- ``usable(like, acc, products)``: s2s's own loops (the encoder's GRU layers, the input-fed decoder in training and
  its greedy and beam search, the loss) run in the kernels on the CPU with fp32 activations and fp32 or bf16
  products, once built; otherwise the Python loops run, which compute the same thing and are the path for other
  devices and fp64.

Why the kernels: the hand-written Python loops of ``s2s.modules.recurrence`` and ``s2s.modules.input_feeding``
spend most of a training step dispatching small element-wise operations one core at a time. The same loops in C++
fuse those operations and split the batch between the cores, and the loss kernel makes one pass per row of logits,
so training on the CPU is markedly faster with them (``tools/bench.py`` compares the two).

``S2S_KERNELS`` in the environment, read once:

- ``off``: the Python loops, on purpose (to compare the two or to rule the kernels out); nothing is built;
- ``on`` (the default, also when unset): the kernels where they build, else the Python loops after one line on
  stderr saying why;
- ``require``: the kernels; a failed build raises ``BackendError`` naming the compiler's first error.

Any other value is a ``BackendError``; ``0``, ``no`` and ``false``, earlier spellings of ``off``, still mean it.

The kernels are compiled for this machine's CPU the first time they are needed, with PyTorch's own extension
builder (ninja and the C++ compiler), and kept under ``$XDG_CACHE_HOME/s2s/kernels`` (``~/.cache`` by default), one
folder per source, compiler flags, torch version and CPU. ``-mprefer-vector-width=512`` (use AVX-512's full width)
is an x86-64 flag: other CPUs build without it, and the build says so.
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

from s2s.errors import BackendError

VARIABLE = "S2S_KERNELS"
MODES = ("off", "on", "require")
OLD_OFF = ("0", "no", "false")  # earlier spellings of off
FOLDER = Path(__file__).parent
SOURCES = [FOLDER / "recurrence.cpp", FOLDER / "loss.cpp", FOLDER / "search.cpp"]
X86_ONLY = ["-mprefer-vector-width=512"]  # AVX-512's full width: compilers for other CPUs reject it
_lock = threading.Lock()
_mode: str | None = None  # S2S_KERNELS, once read
_built: bool | None = None  # None: not tried yet
_failure = ""  # the first error of a build that failed
_held_off = 0  # open ``disabled()`` blocks


def mode() -> str:
    """``S2S_KERNELS`` as off, on or require, read and checked on the first call."""
    global _mode
    if _mode is None:
        _mode = read_mode(os.environ.get(VARIABLE))
    return _mode


def read_mode(value: str | None) -> str:
    """A value of ``S2S_KERNELS`` → off, on or require (unset or empty: on); anything else is a ``BackendError``."""
    spelled = (value or "on").strip().lower()
    if spelled in OLD_OFF:
        return "off"
    if spelled not in MODES:
        raise BackendError(f"{VARIABLE}: {value!r} is not one of {', '.join(MODES)}")
    return spelled


def usable(like: torch.Tensor, acc: torch.dtype, products: torch.dtype) -> bool:
    """Whether the kernels take over a loop on tensors like ``like``: on the CPU, with fp32 activations (``acc``)
    and fp32 or bf16 matrix products (``products``), once built, outside ``disabled()``. The one question that
    every loop asks (the encoder's and decoder's recurrences and the loss)."""
    if mode() == "off":  # checks S2S_KERNELS on the first question, whatever the device
        return False
    fits = like.device.type == "cpu" and acc == torch.float32 and products in (torch.float32, torch.bfloat16)
    return fits and not _held_off and available()


def products_dtype(like: torch.Tensor) -> torch.dtype:
    """The dtype matrix products on ``like``'s device run in at this point: autocast's, or fp32 without it (what
    the loops pass to ``usable`` as ``products``)."""
    device = like.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else torch.float32


def fused_rnn(like: torch.Tensor) -> bool:
    """Whether recurrent layers over tensors like ``like`` run the device's fused RNN (cuDNN on CUDA) rather than
    s2s's own recurrence, which is written for the CPU: everywhere but the CPU, whatever ``S2S_KERNELS`` says."""
    return like.device.type != "cpu"


def available() -> bool:
    """Whether ``torch.ops.s2s_kernels`` is loaded, building it on the first call unless ``S2S_KERNELS=off``.
    Under ``S2S_KERNELS=require`` a failed build raises ``BackendError`` (at every call: it is not retried)."""
    global _built, _failure
    if _built is None:
        with _lock:
            if _built is None:
                _built, _failure = _try_build(mode())
    if _failure and mode() == "require":
        raise BackendError(f"{VARIABLE}=require, but the CPU kernels could not be built: {_failure}")
    return _built


def reason() -> str:
    """Why the kernels are not in use: ``S2S_KERNELS=off``, the build's first error, or "" (built, or not asked)."""
    return f"{VARIABLE}=off" if _mode == "off" else _failure


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
    """The kernels' operator namespace (ask ``usable`` first)."""
    return torch.ops.s2s_kernels


def parts() -> int:
    """Into how many row blocks the loops split a batch: one per thread PyTorch uses."""
    return torch.get_num_threads()


def flags(machine: str | None = None) -> list[str]:
    """The compiler flags for this CPU (for ``machine``, a ``platform.machine()`` name): optimised for it, with
    OpenMP, and the x86-64 flags only on x86-64."""
    machine = (machine or platform.machine()).lower()
    x86 = X86_ONLY if machine in ("x86_64", "amd64") else []
    return ["-O3", "-march=native", *x86, "-fopenmp"]


def _try_build(mode: str) -> tuple[bool, str]:
    """(built, the first error of a failed build); under ``on`` a failure is said in one line on stderr."""
    if mode == "off":
        return False, ""
    try:
        _build()
    except Exception as error:  # noqa: BLE001 — any failure to build means the Python loops (or, required, an error)
        failure = _first_error(str(error)) or type(error).__name__
        if mode == "on":
            print(f"s2s: the CPU kernels could not be built ({failure}); using the Python loops", file=sys.stderr)
        return False, failure
    return True, ""


def _build() -> None:
    """Compile the kernels (or find them compiled) and load them into ``torch.ops.s2s_kernels``; raise if that fails."""
    build_flags = flags()
    build = _build_directory(build_flags)
    if _load_built(build):
        return
    from torch.utils import cpp_extension  # imports setuptools: only when there is something to build

    build.mkdir(parents=True, exist_ok=True)
    if not any(build.glob("*.so")):
        print(f"s2s: compiling the CPU kernels once, into {build}", file=sys.stderr)
        if not set(X86_ONLY) <= set(build_flags):
            print(f"s2s: building without {' '.join(X86_ONLY)}, which only x86-64 CPUs take", file=sys.stderr)
    with warnings.catch_warnings(), redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        cpp_extension.load(
            name="s2s_kernels",
            sources=[str(source) for source in SOURCES],
            extra_cflags=build_flags,
            extra_ldflags=["-fopenmp"],
            build_directory=str(build),
            is_python_module=False,
            verbose=False,
        )


def _load_built(build: Path) -> bool:
    """Load a library built before into this folder, without PyTorch's extension builder: the folder is named by
    the sources, flags, torch build and CPU, so a library in it is the one a build would make. A library that is
    missing, or fails to load (an interrupted link, say), is left to the builder."""
    library, ninja = build / "s2s_kernels.so", build / "build.ninja"
    if not library.is_file() or (ninja.is_file() and ninja.stat().st_mtime > library.stat().st_mtime):
        return False  # not built, or a build began after the library was linked
    try:
        torch.ops.load_library(str(library))
    except (OSError, RuntimeError):
        return False
    return True


def _first_error(message: str) -> str:
    """The line of a build failure that says what went wrong (the compiler's first error), else its first line."""
    lines = [line.strip() for line in message.splitlines() if line.strip()]
    errors = [line for line in lines if "error:" in line]
    return " ".join((errors or lines or [""])[0].split())[:300]


def _build_directory(build_flags: list[str]) -> Path:
    """One folder per checkout, source, compiler flags, torch build and CPU: a library built elsewhere is never
    loaded, and two checkouts never share a folder (the build records its sources' paths, so another checkout's
    paths would make it rebuild each time the other one ran)."""
    key = hashlib.sha256(str(FOLDER.resolve()).encode())
    for source in sorted(FOLDER.glob("*.[ch]*")):  # the sources and the header they share
        key.update(source.read_bytes())
    key.update(" ".join(build_flags).encode())
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
