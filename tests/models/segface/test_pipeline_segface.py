"""`pipeline("image-segmentation")` with SegFace: from a saved folder and from the offline HF cache, on real photos."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from transformers import pipeline

from faceformers import SegFaceConfig, SegFaceForSemanticSegmentation, SegFaceImageProcessor

from ...hub_utils import add_to_offline_cache


PHOTOS = Path(__file__).parents[3].parent / "shared" / "realdata" / "facer_samples"


def photos() -> list[PIL.Image.Image]:
    names = ("girl.jpg", "sideface.jpg", "fire.webp")
    found = [PIL.Image.open(PHOTOS / name) for name in names if (PHOTOS / name).exists()]
    if found:
        return found
    rng = np.random.default_rng(0)  # without the shared photos, odd-sized random images still test the contract
    return [PIL.Image.fromarray(rng.integers(0, 256, (97, 131, 3), dtype=np.uint8)), PIL.Image.new("L", (40, 64))]


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    config = SegFaceConfig.for_dataset(
        "celebamask_hq", backbone={"library": "timm", "name": "resnet10t", "out_indices": [1, 2, 3, 4]}, image_size=64
    )
    torch.manual_seed(0)
    model = SegFaceForSemanticSegmentation(config).eval()
    folder = tmp_path_factory.mktemp("segface")
    model.save_pretrained(folder)
    SegFaceImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    return folder


def test_pipeline_returns_named_masks_at_the_original_size(saved_model):
    segmenter = pipeline("image-segmentation", model=str(saved_model))
    config = segmenter.model.config
    for image in photos():
        results = segmenter(image)
        assert results, "no mask"
        labels = [r["label"] for r in results]
        assert len(labels) == len(set(labels)) and set(labels) <= set(config.id2label.values())
        union = np.zeros((image.height, image.width), dtype=np.int64)
        for result in results:
            assert result["mask"].size == image.size and result["mask"].mode == "L"
            union += np.asarray(result["mask"]) > 0
        assert (union == 1).all(), "every pixel belongs to exactly one class"


def test_pipeline_from_the_offline_cache(saved_model, tmp_path):
    add_to_offline_cache(tmp_path / "hf_home", "org/segface-tiny-64-celebamask-hq", saved_model)
    image = photos()[0].convert("RGB").resize((50, 70))
    image.save(tmp_path / "face.png")
    expected = pipeline("image-segmentation", model=str(saved_model))(image)
    expected = {r["label"]: np.asarray(r["mask"]) for r in expected}
    np.save(tmp_path / "expected.npy", expected, allow_pickle=True)
    script = textwrap.dedent(
        f"""
        import numpy as np, PIL.Image
        import faceformers
        from transformers import pipeline
        results = pipeline("image-segmentation", model="org/segface-tiny-64-celebamask-hq")(PIL.Image.open({str(tmp_path / "face.png")!r}))
        expected = np.load({str(tmp_path / "expected.npy")!r}, allow_pickle=True).item()
        assert {{r["label"] for r in results}} == set(expected)
        assert all((np.asarray(r["mask"]) == expected[r["label"]]).all() for r in results)
        print("OK")
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
