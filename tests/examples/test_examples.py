"""Each example's `main(argv)` runs two steps on CPU."""

import importlib.util
import math
from pathlib import Path


EXAMPLES = Path(__file__).parents[2] / "examples"


def load_example(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_demo_mcf_two_steps(tmp_path):
    result = load_example("demo_mcf").main(["--steps", "2", "--batch_size", "4", "--output_dir", str(tmp_path)])
    assert math.isfinite(result["last_loss"])
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "preprocessor_config.json").exists()
