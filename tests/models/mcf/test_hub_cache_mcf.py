"""`AutoModel.from_pretrained("org/mcf-vitb16")` from a hand-built HF cache, offline, in a fresh process (the HF
environment variables are read at import time)."""

import os
import subprocess
import sys
import textwrap

import torch

from faceformers import MCFConfig, MCFImageProcessor, MCFModel

from ...hub_utils import add_to_offline_cache


def test_auto_classes_resolve_org_mcf_vitb16_from_the_offline_cache(tmp_path):
    config = MCFConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8)
    model = MCFModel(config).eval()
    processor = MCFImageProcessor(size={"height": 32, "width": 32})
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    add_to_offline_cache(tmp_path / "hf_home", "org/mcf-vitb16", tmp_path / "model")

    image = (torch.arange(48 * 40 * 3) % 251).to(torch.uint8).reshape(48, 40, 3).numpy()
    with torch.no_grad():
        expected = model(**processor(image, return_tensors="pt")).pooler_output
    torch.save({"image": image, "expected": expected}, tmp_path / "io.pt")

    script = textwrap.dedent(
        f"""
        import torch
        import faceformers
        from transformers import AutoImageProcessor, AutoModel, pipeline
        data = torch.load({str(tmp_path / "io.pt")!r}, weights_only=False)
        model = AutoModel.from_pretrained("org/mcf-vitb16").eval()
        processor = AutoImageProcessor.from_pretrained("org/mcf-vitb16")
        assert type(model).__name__ == "MCFModel" and type(processor).__name__ == "MCFImageProcessor"
        with torch.no_grad():
            actual = model(**processor(data["image"], return_tensors="pt")).pooler_output
        torch.testing.assert_close(actual, data["expected"], rtol=0, atol=0)
        features = pipeline("image-feature-extraction", model="org/mcf-vitb16", return_tensors=True)
        assert features(__import__("PIL.Image").Image.fromarray(data["image"])).shape == (1, 17, 32)
        print("OK")
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
