"""Each example's `main(argv)` runs two steps on CPU."""

import math

from ..script_utils import load_script


def test_demo_mcf_two_steps(tmp_path):
    result = load_script("examples/demo_mcf.py").main(["--steps", "2", "--batch_size", "4", "--output_dir", str(tmp_path)])
    assert math.isfinite(result["last_loss"])
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "preprocessor_config.json").exists()
