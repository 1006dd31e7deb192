"""tools/startup.py: process start to the first answer of a command, with the interpreter and PyTorch's import as
floors measured the same way."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.helpers import ENV, ROOT


def startup(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "tools/startup.py", *args], capture_output=True, text=True, env=ENV, cwd=ROOT, timeout=300
    )


def test_the_start_up_tool_times_the_first_answer_and_both_floors(trained_run):
    done = startup("translate", str(trained_run), "--text", "March 3, 2021", "--repeat", "1", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["command"] == f"s2s translate --model {trained_run}"
    for row in ("first_answer", "python", "import_torch"):
        assert result[row]["runs"] == 1 and 0 < result[row]["min_s"] <= result[row]["median_s"] <= result[row]["max_s"]
    assert result["python"]["median_s"] < result["first_answer"]["median_s"]


def test_the_start_up_tool_refuses_what_it_cannot_run(trained_run, tmp_path):
    assert "--repeat: 0 is not between 1 and 50" in startup("translate", str(trained_run), "--repeat", "0").stderr
    assert "--image: caption needs a picture" in startup("caption", str(trained_run)).stderr
    failed = startup("translate", str(tmp_path / "missing"), "--repeat", "1")
    assert failed.returncode == 1 and failed.stderr.startswith("startup: s2s translate --model")
