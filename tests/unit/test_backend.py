"""What runs s2s's loops is decided once per process, in s2s.kernels, and every place with a loop asks there:
S2S_KERNELS=off|on|require, a build tried at most once (never while collecting tests), a failure said in one line
(or, required, raised), the x86-64-only compiler flags only there. No test here compiles anything."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from torch.utils import cpp_extension

from s2s import kernels
from s2s.errors import BackendError, S2SError
from s2s.loss import projected_cross_entropy
from s2s.modules import input_feeding, recurrence
from s2s.modules.decoders import Memory
from s2s.modules.encoders import RNNEncoder
from tests.helpers import input_fed_decoder, needs_kernels

COMPILER_SAYS = (
    "Error building extension 's2s_kernels': [1/3] c++ -MMD -MF loss.o.d -O3 -c loss.cpp -o loss.o\n"
    "loss.cpp:13:10: fatal error: torch/library.h: No such file or directory\n"
    "compilation terminated."
)
FIRST_ERROR = "loss.cpp:13:10: fatal error: torch/library.h: No such file or directory"
FELL_BACK = f"s2s: the CPU kernels could not be built ({FIRST_ERROR}); using the Python loops"


def broken_build(**_) -> None:
    raise RuntimeError(COMPILER_SAYS)


@pytest.fixture
def decide(monkeypatch):
    """``decide(value, build)``: a process that has decided nothing yet, with S2S_KERNELS=value (None: unset),
    whose build runs ``build`` (by default it succeeds) instead of compiling. Returns the list of builds tried."""
    monkeypatch.setattr(kernels, "_mode", None)
    monkeypatch.setattr(kernels, "_built", None)
    monkeypatch.setattr(kernels, "_failure", "")
    builds = []

    def set_up(value: str | None, build=lambda: None) -> list:
        if value is None:
            monkeypatch.delenv("S2S_KERNELS", raising=False)
        else:
            monkeypatch.setenv("S2S_KERNELS", value)
        monkeypatch.setattr(kernels, "_build", lambda: (builds.append(value), build()))
        return builds

    return set_up


@pytest.mark.parametrize(
    "value, builds, expected, tried",
    [
        (None, True, True, 1),  # unset: on
        ("", True, True, 1),
        ("on", True, True, 1),
        ("on", False, False, 1),
        ("require", True, True, 1),
        ("off", True, False, 0),
        ("OFF", True, False, 0),
        ("0", True, False, 0),  # earlier spellings of off
        ("no", True, False, 0),
        ("false", True, False, 0),
    ],
)
def test_s2s_kernels_chooses_the_kernels_or_the_python_loops(decide, value, builds, expected, tried):
    tries = decide(value, (lambda: None) if builds else broken_build)
    cpu = torch.empty(0)
    for _ in range(3):  # decided once: later questions neither read the variable nor build again
        assert kernels.available() is expected
        assert kernels.usable(cpu, torch.float32, torch.bfloat16) is expected
    assert len(tries) == tried


def test_a_failed_build_is_said_in_one_line_and_the_python_loops_run(decide, capsys):
    decide("on", broken_build)
    assert not kernels.usable(torch.empty(0), torch.float32, torch.float32)
    assert not kernels.available()
    assert capsys.readouterr().err.splitlines() == [FELL_BACK]
    assert kernels.reason() == FIRST_ERROR


def test_off_builds_nothing_and_says_nothing(decide, capsys):
    tries = decide("off", lambda: pytest.fail("nothing is built"))
    assert not kernels.usable(torch.empty(0), torch.float32, torch.float32)
    assert not kernels.available()
    assert tries == [] and capsys.readouterr().err == ""
    assert kernels.reason() == "S2S_KERNELS=off"


def test_require_makes_a_failed_build_an_error_naming_the_compilers_first_error(decide, capsys):
    tries = decide("require", broken_build)
    for _ in range(2):  # every later question raises too, without building again
        with pytest.raises(BackendError) as raised:
            kernels.usable(torch.empty(0), torch.float32, torch.float32)
        assert str(raised.value) == f"S2S_KERNELS=require, but the CPU kernels could not be built: {FIRST_ERROR}"
    assert isinstance(raised.value, S2SError) and raised.value.exit_code == 1
    assert len(tries) == 1 and capsys.readouterr().err == ""


@pytest.mark.parametrize("value", ["fast", "1", "yes", "required"])
def test_any_other_value_is_an_error_naming_the_variable_and_the_values(decide, value):
    tries = decide(value)
    with pytest.raises(BackendError, match=f"^S2S_KERNELS: '{value}' is not one of off, on, require$"):
        kernels.usable(torch.empty(0, device="meta"), torch.float64, torch.float64)  # whatever the question
    assert tries == []


def test_only_cpu_fp32_activations_with_fp32_or_bf16_products_outside_disabled_take_the_kernels(decide):
    tries = decide("on")
    cpu = torch.empty(0)
    assert kernels.usable(cpu, torch.float32, torch.float32) and kernels.usable(cpu, torch.float32, torch.bfloat16)
    assert not kernels.usable(cpu, torch.float64, torch.float64)  # gradient checks: always the Python loops
    assert not kernels.usable(cpu, torch.float32, torch.float16)
    assert not kernels.usable(torch.empty(0, device="meta"), torch.float32, torch.float32)
    with kernels.disabled():
        assert not kernels.usable(cpu, torch.float32, torch.bfloat16)
    assert kernels.usable(cpu, torch.float32, torch.bfloat16)
    assert len(tries) == 1


def test_recurrent_layers_run_the_devices_fused_rnn_everywhere_but_on_the_cpu():
    assert not kernels.fused_rnn(torch.empty(0))
    assert kernels.fused_rnn(torch.empty(0, device="meta"))


def test_the_x86_64_flag_is_only_given_on_x86_64_and_keys_the_build_directory():
    assert kernels.flags("x86_64") == ["-O3", "-march=native", "-mprefer-vector-width=512", "-fopenmp"]
    assert kernels.flags("AMD64") == kernels.flags("x86_64")
    assert kernels.flags("aarch64") == ["-O3", "-march=native", "-fopenmp"]
    assert kernels._build_directory(kernels.flags("x86_64")) != kernels._build_directory(kernels.flags("aarch64"))


@pytest.mark.parametrize("machine", ["x86_64", "aarch64"])
def test_a_build_says_it_compiles_and_elsewhere_than_x86_64_what_it_leaves_out(monkeypatch, capsys, tmp_path, machine):
    loaded = []
    monkeypatch.setattr(kernels.platform, "machine", lambda: machine)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", lambda **settings: loaded.append(settings))
    kernels._build()
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"s2s: compiling the CPU kernels once, into {kernels._build_directory(kernels.flags())}"
    if machine == "x86_64":
        assert len(lines) == 1 and "-mprefer-vector-width=512" in loaded[0]["extra_cflags"]
    else:
        assert lines[1:] == ["s2s: building without -mprefer-vector-width=512, which only x86-64 CPUs take"]
        assert "-mprefer-vector-width=512" not in loaded[0]["extra_cflags"]
    (kernels._build_directory(kernels.flags()) / "s2s_kernels.so").touch()
    kernels._build()  # built before: loaded without a word
    assert len(loaded) == 2 and capsys.readouterr().err == ""


def test_kernels_built_before_load_without_the_extension_builder():
    """A command's start-up does not pay for importing PyTorch's extension builder (and setuptools) once the
    kernels are built: they are loaded from their folder as they are."""
    needs_kernels()  # built now, if not before
    check = (
        "import sys\n"
        "from s2s import kernels\n"
        "assert kernels.available()\n"
        "print('torch.utils.cpp_extension' in sys.modules, 'setuptools' in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "False False\n"


def test_a_compiler_that_fails_falls_back_with_the_compile_line_and_one_line_why(decide, monkeypatch, capsys, tmp_path):
    decide(None, kernels._build)  # the real build, with a compiler that fails
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(cpp_extension, "load", broken_build)
    assert not kernels.available()
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and lines[0].startswith("s2s: compiling the CPU kernels once")
    assert lines[1] == FELL_BACK


# --- every place that has a loop asks s2s.kernels: the loops it runs, and the kernel operator it would call ---
def encoder_step() -> None:
    encoder = RNNEncoder(30, 8, 6, 2, "gru", True, 0.0, False)
    out = encoder(torch.randint(4, 30, (3, 5)), torch.tensor([5, 2, 4]))
    (out.states.sum() + out.summary.sum()).backward()


def recurrence_step() -> None:
    w_hh, b_hh = torch.randn(2, 18, 6, requires_grad=True), torch.randn(2, 18)
    recurrence.stacked_gru(torch.randn(5, 2, 3, 18), torch.zeros(2, 3, 6), w_hh, b_hh).sum().backward()


def decoder_step() -> None:
    decoder = input_fed_decoder(summary_size=24)
    states, mask = torch.randn(3, 5, 24), torch.arange(5)[None] < torch.tensor([5, 2, 4])[:, None]
    memory = Memory(states, decoder.attention.project_keys(states), mask, states[:, 0])
    logits, _, _ = decoder(torch.randint(4, 30, (3, 4)), decoder.initial_state(memory), memory)
    logits.sum().backward()


def loss_step() -> None:
    output, hidden = torch.nn.Linear(6, 30), torch.randn(8, 6, requires_grad=True)
    projected_cross_entropy(hidden, output, torch.randint(0, 30, (8,)), 0.1).backward()


PLACES = {  # place: (a training step through it, its Python loop, the kernel operator it calls when compiled)
    "encoder": (encoder_step, (recurrence, "gru_loop"), "gru_forward"),
    "recurrence": (recurrence_step, (recurrence, "gru_loop"), "gru_forward"),
    "decoder": (decoder_step, (input_feeding, "step"), "fed_attention_forward"),
    "input_feeding": (decoder_step, (input_feeding, "step"), "fed_attention_forward"),
    "loss": (loss_step, (torch, "softmax"), "cross_entropy_gradient"),
}


class Asked(Exception):
    """A kernel operator was called."""


def kernel_operator(name: str):
    """An operator that says it was called."""

    def called(*_):
        raise Asked(name)

    return called


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("place", PLACES)
def test_off_makes_every_place_run_its_python_loop(decide, monkeypatch, place, dtype):
    training_step, (module, name), _ = PLACES[place]
    decide("off", lambda: pytest.fail("nothing is built"))
    monkeypatch.setattr(kernels, "ops", lambda: pytest.fail("a kernel operator was asked for"))
    calls = []
    python_loop = getattr(module, name)
    monkeypatch.setattr(module, name, lambda *args, **settings: (calls.append(name), python_loop(*args, **settings))[1])
    torch.manual_seed(0)
    with torch.autocast("cpu", dtype=dtype or torch.float32, enabled=dtype is not None):
        training_step()
    assert calls


@pytest.mark.parametrize("place", PLACES)
def test_where_the_kernels_are_built_every_place_calls_them(decide, monkeypatch, place):
    training_step, _, operator = PLACES[place]
    decide("on")
    monkeypatch.setattr(kernels, "ops", lambda: SimpleNamespace(**{operator: kernel_operator(operator)}))
    torch.manual_seed(0)
    with pytest.raises(Asked, match=f"^{operator}$"):
        training_step()


def test_where_the_device_has_a_fused_rnn_the_encoder_runs_it(monkeypatch):
    monkeypatch.setattr(kernels, "fused_rnn", lambda like: True)
    monkeypatch.setattr("s2s.modules.encoders.stacked_gru", lambda *_: pytest.fail("s2s's own recurrence ran"))
    encoder_step()
