"""`pipeline("zero-shot-image-classification")` and `pipeline("image-feature-extraction")` with FaRL, offline: from
a saved folder and, in a fresh process, from a hand-built HF cache (`org/farl-base-patch16`)."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from PIL import Image
from transformers import AutoProcessor, pipeline

from faceformers import FaRLConfig, FaRLImageProcessor, FaRLModel, FaRLProcessor, build_farl_tokenizer

from ...hub_utils import add_to_offline_cache


PHOTO = Path(__file__).parents[3].parent / "shared" / "realdata" / "facer_samples" / "ffhq_15723.jpg"
LABELS = ["blond hair", "eyeglasses", "a beard"]


def tiny_farl() -> FaRLModel:
    """The real 49,408-token vocabulary (the tokenizer's ids must fit) with very narrow towers."""
    torch.manual_seed(0)
    config = FaRLConfig(
        text_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2),
        vision_config=dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2, image_size=32, patch_size=8),
        projection_dim=8,
        logit_scale_init_value=4.0,
    )  # fmt: skip
    return FaRLModel(config).eval()


def photo() -> Image.Image:
    if not PHOTO.is_file():
        pytest.skip(f"real photo not found: {PHOTO}")
    return Image.open(PHOTO)


@pytest.fixture(scope="module")
def saved_farl(tmp_path_factory) -> tuple[Path, FaRLModel]:
    folder = tmp_path_factory.mktemp("farl")
    model = tiny_farl()
    model.save_pretrained(folder)
    FaRLProcessor(FaRLImageProcessor(size={"height": 32, "width": 32}), build_farl_tokenizer()).save_pretrained(folder)
    return folder, model


@torch.no_grad()
def expected_scores(model: FaRLModel, processor, image: Image.Image, template: str) -> dict[str, float]:
    inputs = processor(text=[template.format(label) for label in LABELS], images=image, return_tensors="pt", padding=True)
    probabilities = model(**inputs).logits_per_image.softmax(dim=-1)[0]
    return dict(zip(LABELS, probabilities.tolist()))


def test_processor_round_trip_through_auto_processor(saved_farl):
    folder, _ = saved_farl
    processor = AutoProcessor.from_pretrained(folder)
    assert type(processor) is FaRLProcessor
    assert type(processor.image_processor) is FaRLImageProcessor
    inputs = processor(text=["a smiling face"], images=photo(), return_tensors="pt", padding=True)
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert inputs["input_ids"][0, 0] == 49406 and inputs["input_ids"][0, -1] == 49407


def test_zero_shot_pipeline_from_a_saved_folder(saved_farl):
    folder, model = saved_farl
    classifier = pipeline("zero-shot-image-classification", model=str(folder))
    template = "a photo of a face with {}."
    results = classifier(photo(), candidate_labels=LABELS, hypothesis_template=template)
    assert sorted(result["label"] for result in results) == sorted(LABELS)
    assert abs(sum(result["score"] for result in results) - 1) < 1e-5
    expected = expected_scores(model, AutoProcessor.from_pretrained(folder), photo(), template)
    for result in results:
        assert result["score"] == pytest.approx(expected[result["label"]], abs=1e-5)


def test_feature_extraction_pipeline_returns_the_image_embedding(saved_farl):
    folder, model = saved_farl
    extractor = pipeline("image-feature-extraction", model=str(folder), return_tensors=True)
    features = extractor(photo())
    with torch.no_grad():
        expected = model(**FaRLImageProcessor(size={"height": 32, "width": 32})(photo(), return_tensors="pt"))
    assert features.shape == (1, 8)
    torch.testing.assert_close(features, expected.image_embeds)


def test_both_pipelines_from_the_offline_hf_cache(saved_farl, tmp_path):
    folder, model = saved_farl
    add_to_offline_cache(tmp_path / "hf_home", "org/farl-base-patch16", folder)
    template = "a photo of a face with {}."
    expected = expected_scores(model, AutoProcessor.from_pretrained(folder), photo(), template)
    script = textwrap.dedent(
        f"""
        import faceformers
        from PIL import Image
        from transformers import AutoModel, pipeline
        assert type(AutoModel.from_pretrained("org/farl-base-patch16")).__name__ == "FaRLModel"
        image = Image.open({str(PHOTO)!r})
        results = pipeline("zero-shot-image-classification", model="org/farl-base-patch16")(
            image, candidate_labels={LABELS!r}, hypothesis_template={template!r})
        expected = {expected!r}
        assert all(abs(r["score"] - expected[r["label"]]) < 1e-5 for r in results), results
        features = pipeline("image-feature-extraction", model="org/farl-base-patch16", return_tensors=True)(image)
        assert tuple(features.shape) == (1, 8)
        print("OK")
        """
    )
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf_home"), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-3000:]
