"""`examples/evaluate_verification.py` on a tiny random MCF model and an LFW-layout folder of synthetic faces."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from faceformers import MCFConfig, MCFImageProcessor, MCFModel
from faceformers.data.synthetic import SyntheticFaces

from ..script_utils import load_script


NUM_IDENTITIES, IMAGES_PER_IDENTITY = 6, 3


@pytest.fixture(scope="module")
def script():
    return load_script("examples/evaluate_verification.py")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    torch.manual_seed(0)
    config = MCFConfig(
        hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, image_size=32, patch_size=8
    )
    folder = tmp_path_factory.mktemp("model")
    MCFModel(config).save_pretrained(folder)
    MCFImageProcessor(size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def lfw(tmp_path_factory):
    """`<root>/<name>/<name>_<idx:04d>.jpg` for 6 synthetic people x 3 photos, and a 2-fold pairs file of 20 pairs."""
    root = tmp_path_factory.mktemp("lfw")
    faces = SyntheticFaces(seed=7, image_size=32, num_identities=NUM_IDENTITIES)
    names = [f"Synthetic_Person{k}" for k in range(NUM_IDENTITIES)]
    for k, name in enumerate(names):
        (root / name).mkdir()
        for photo in range(IMAGES_PER_IDENTITY):  # sample k + 6 * photo shows person k
            faces.sample(k + NUM_IDENTITIES * photo)["image"].save(root / name / f"{name}_{photo + 1:04d}.jpg")
    lines = ["2\t5"]  # 2 folds of 5 same + 5 different pairs
    for fold in range(2):
        for i in range(5):
            k = (i + fold) % NUM_IDENTITIES
            first, second = (1, 2) if (i + fold) % 2 else (1, 3)
            lines.append(f"{names[k]}\t{first}\t{second}")
        for i in range(5):
            k = (i + 3 * fold) % NUM_IDENTITIES
            lines.append(f"{names[k]}\t{1 + i % 3}\t{names[(k + 1 + i) % NUM_IDENTITIES]}\t{1 + fold}")
    pairs = root / "pairs.txt"
    pairs.write_text("\n".join(lines) + "\n")
    return root, pairs


def test_evaluate_verification_end_to_end(script, model_dir, lfw, tmp_path, capsys):
    root, pairs = lfw
    output = tmp_path / "results.json"
    argv = ["--model_name_or_path", str(model_dir), "--pairs_file", str(pairs), "--image_root", str(root)]
    results = script.main(argv + ["--batch_size", "4", "--output_json", str(output), "--cpu"])
    expected_keys = {"accuracy", "accuracy_std", "fold_accuracies", "best_thresholds", "num_pairs", "num_folds", "auc"}
    assert expected_keys | {f"tar_at_far_{far:g}" for far in (1e-6, 1e-3, 0.1)} <= results.keys()
    assert 0.0 <= results["accuracy"] <= 1.0 and 0.0 <= results["auc"] <= 1.0
    assert results["num_pairs"] == 20 and results["num_folds"] == 2 and len(results["fold_accuracies"]) == 2
    used = {image for pair in script.read_pairs(pairs).pairs for image in pair}  # 16 of the 18 photos
    assert results["num_images"] == len(used) == 16 and results["flip_test"] is False
    assert json.loads(output.read_text()) == results
    assert "accuracy" in capsys.readouterr().out

    flipped = script.main(argv + ["--flip_test", "--num_folds", "5", "--cpu"])
    assert flipped["flip_test"] is True and flipped["num_folds"] == 5 and 0.0 <= flipped["accuracy"] <= 1.0


def test_flip_test_sums_the_embeddings_of_the_mirror_image(script, model_dir, lfw):
    from transformers import AutoImageProcessor, AutoModel

    root, _ = lfw
    model, processor = AutoModel.from_pretrained(model_dir).eval(), AutoImageProcessor.from_pretrained(model_dir)
    paths = sorted(root.glob("*/*.jpg"))[:3]
    plain = script.embed_images(model, processor, paths, batch_size=2)
    flipped = script.embed_images(model, processor, paths, batch_size=2, flip_test=True)
    with torch.no_grad():
        images = [Image.open(path).convert("RGB") for path in paths]
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"]
        mirror = model(pixel_values=pixel_values.flip(-1)).pooler_output.numpy()
    assert plain.shape == (3, 32)
    np.testing.assert_allclose(flipped, plain + mirror, rtol=1e-5, atol=1e-5)
    assert not np.allclose(flipped, 2 * plain, atol=1e-3)  # the mirror image really differs


def test_read_pairs_formats(script, tmp_path):
    path = tmp_path / "pairs.txt"
    path.write_text("10 300\nAaron_Peirsol 1 2\nAJ_Cook 1 Marsha_Thomason 1\n\n")
    pairs = script.read_pairs(path)
    assert pairs.num_folds == 10 and pairs.issame == [True, False]
    assert pairs.pairs == [(("Aaron_Peirsol", 1), ("Aaron_Peirsol", 2)), (("AJ_Cook", 1), ("Marsha_Thomason", 1))]
    assert script.image_path("/lfw", "AJ_Cook", 1).as_posix() == "/lfw/AJ_Cook/AJ_Cook_0001.jpg"
    path.write_text("1\nAaron_Peirsol 1 2\nAJ_Cook 1 Marsha_Thomason one\n")
    with pytest.raises(ValueError, match=r"pairs.txt:3: expected 'name idx1 idx2'"):
        script.read_pairs(path)


def test_missing_images_raise_a_clear_error(script, model_dir, lfw, tmp_path):
    root, _ = lfw
    pairs = tmp_path / "pairs.txt"
    pairs.write_text("Synthetic_Person0 1 9\nSynthetic_Person0 1 Nobody 2\n")
    with pytest.raises(FileNotFoundError, match=r"2 of the 3 images .* missing .*Synthetic_Person0_0009.jpg"):
        script.main(["--model_name_or_path", str(model_dir), "--pairs_file", str(pairs), "--image_root", str(root)])
