"""`examples/train_face_parsing.py` and `examples/evaluate_face_parsing.py`: two steps in-process + evaluation of the
saved folder, file data with image + mask members, learnability on synthetic faces, and bad arguments."""

import json
import os
import tarfile

import numpy as np
import pytest

from ..data_utils import add_member, encoded_image
from ..launch_distributed import launch
from ..script_utils import load_script


BACKBONE = json.dumps({"library": "timm", "name": "resnet10t", "out_indices": [1, 2, 3, 4]})
TINY = (
    "decoder_hidden_size=32,num_pos_feats=16,decoder_num_attention_heads=2,decoder_intermediate_size=64,"
    "decoder_upscaling_sizes=[16,8],decoder_num_hidden_layers=1"
)


def arguments(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--backbone", BACKBONE, "--image_size", "64", "--config_overrides", TINY,
        "--logging_steps", "1", "--per_device_train_batch_size", "4", "--synthetic_num_samples", "64",
        "--eval_num_samples", "16", *extra,
    ]


def test_two_steps_in_process_then_evaluate(tmp_path):
    result = load_script("examples/train_face_parsing.py").main(
        arguments(tmp_path, "--max_steps", "2", "--checkpointing_steps", "1", "--eval_steps", "1")
    )
    assert result["steps"] == 2 and result["last_loss"] == result["last_loss"]
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "metrics.json"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["step"] for e in metrics["evaluations"]] == [1, 2] and len(metrics["loss_history"]) == 2
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["size"] == {"height": 64, "width": 64}

    scores = load_script("examples/evaluate_face_parsing.py").main(
        ["--model_name_or_path", str(tmp_path), "--synthetic_num_samples", "16", "--synthetic_seed", "1000"]
    )
    assert scores["num_images"] == 16 and 0 <= scores["mean_f1"] <= 1
    # the evaluation script reproduces the training script's final evaluation (same held-apart faces: seed + 1000)
    assert scores["mean_f1"] == pytest.approx(result["eval_mean_f1"]) and scores["mean_iou"] == pytest.approx(result["eval_mean_iou"])

    # resume from the step-1 checkpoint and finish
    resumed = load_script("examples/train_face_parsing.py").main(
        arguments(tmp_path / "resumed", "--max_steps", "2", "--resume_from_checkpoint", str(tmp_path / "checkpoints" / "step_00000001"))
    )
    assert resumed["steps"] == 2


def test_two_processes_sum_their_confusion_matrices(tmp_path):
    """The final evaluation of a 2-process run (each process scores half of the eval shards) equals a 1-process
    evaluation of the saved model on the whole eval set."""
    launch(["examples/train_face_parsing.py", *arguments(tmp_path / "out", "--max_steps", "2", "--per_device_train_batch_size", "2")], 2, tmp_path)
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    scores = load_script("examples/evaluate_face_parsing.py").main(
        ["--model_name_or_path", str(tmp_path / "out"), "--synthetic_num_samples", "16", "--cpu"]
    )
    assert scores["num_images"] == 16
    # batches are composed differently (8 + 8 images vs 16), which can flip argmax near-ties of an untrained model
    assert metrics["eval_mean_f1"] == pytest.approx(scores["mean_f1"], abs=2e-3)
    assert metrics["eval_pixel_accuracy"] == pytest.approx(scores["pixel_accuracy"], abs=2e-3)
    assert metrics["eval_num_pixels"] == 16 * 64 * 64  # both halves of the eval set were summed


def write_parsing_shards(root, num_shards=2, per_shard=6):
    """`<key>.jpg` + `<key>.png` (an 11-class label map) per sample."""
    from PIL import Image
    import io

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for shard in range(num_shards):
        with tarfile.open(root / f"part-{shard}.tar", "w") as archive:
            for index in range(per_shard):
                label = np.kron(rng.integers(0, 11, (8, 8), dtype=np.uint8), np.ones((8, 8), dtype=np.uint8))
                buffer = io.BytesIO()
                Image.fromarray(label).save(buffer, format="PNG")
                add_member(archive, f"{shard}{index:04d}.jpg", encoded_image(rng, size=64))
                add_member(archive, f"{shard}{index:04d}.png", buffer.getvalue())
    return str(root / "*.tar")


def test_lapa_preset_on_files_with_helen_style_evaluation(tmp_path):
    files = write_parsing_shards(tmp_path / "data")
    result = load_script("examples/train_face_parsing.py").main(
        arguments(tmp_path / "out", "--dataset_preset", "lapa", "--train_files", files, "--eval_files", files,
                  "--max_steps", "2", "--shuffle_buffer_size", "0")
    )
    assert result["steps"] == 2 and "eval_f1_lower_lip" in result
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["label_field"] == "mask_lapa"
    scores = load_script("examples/evaluate_face_parsing.py").main(
        ["--model_name_or_path", str(tmp_path / "out"), "--eval_files", files, "--output_file", str(tmp_path / "scores.json")]
    )
    assert scores["num_images"] == 12 and "helen_overall_f1" in scores
    assert json.loads((tmp_path / "scores.json").read_text())["mean_f1"] == pytest.approx(scores["mean_f1"])


# Learnability: a tiny SegFace (timm resnet10t + a 32-wide one-block decoder with a 16-channel pixel embedding, 64 px,
# trained from scratch) learns the synthetic faces' LaPa 11-class view (`--dataset_preset lapa --augment false`) and
# reaches mean F1 >= 0.8 on 128 held-apart faces (seed 1000: other identities, other scenes). Measured: 0.827 after
# 1200 steps (0.817 after 1000, 0.757 after 600). The 19 CelebAMask-HQ classes are slower at 64 px (tiny earrings,
# necklaces, eyeglasses): 0.72 after 1000 steps, 0.76 after 1500, so the LaPa view keeps the test within ~3 minutes.
LEARNABILITY_OVERRIDES = TINY.replace("decoder_upscaling_sizes=[16,8]", "decoder_upscaling_sizes=[32,16]")
LEARNABILITY = [
    "--dataset_preset", "lapa", "--augment", "false", "--config_overrides", LEARNABILITY_OVERRIDES,
    "--max_steps", "1200", "--per_device_train_batch_size", "8", "--learning_rate", "3e-3",
    "--lr_decay_steps", "900", "1100", "--eval_num_samples", "128", "--synthetic_num_samples", "4096",
    "--logging_steps", "100",
]


def test_tiny_segface_learns_synthetic_face_parsing(tmp_path):  # ~2.5 min on 2 idle cores: the must-show
    argv = arguments(tmp_path, *LEARNABILITY)
    index = argv.index("--config_overrides")  # the first one (TINY) is replaced by LEARNABILITY's
    del argv[index : index + 2]
    result = load_script("examples/train_face_parsing.py").main(argv)
    assert result["last_loss"] < result["first_loss"] / 3
    assert result["eval_mean_f1"] >= 0.8, {k: round(v, 3) for k, v in result.items() if k.startswith("eval_f1")}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--dataset_preset", "ffhq"], "--dataset_preset must be one of"),
        (["--model_name_or_path", "x", "--config_name", "y"], "either --model_name_or_path or --config_name"),
        (["--lr_decay_steps", "5", "2"], r"--lr_decay_steps must be increasing positive steps, got \[5, 2\]"),
        (["--lr_decay_gamma", "0"], "--lr_decay_gamma must be positive"),
        (["--eval_steps", "0"], "--eval_steps must be >= 1"),
        (["--learning_rate", "-1"], "--learning_rate must be positive, got -1"),
        (["--config_overrides", "decoder_hidden_size=30"], r"decoder_hidden_size \(30\)"),
        (["--config_overrides", "depth=3"], "Invalid --config_overrides item 'depth=3'"),
        (["--image_size", "100"], "multiple of 32"),
        (["--backbone", "resnet18"], "Unsupported torchvision backbone 'resnet18'"),
        (["--label_field", "mask_lapa"], "do not match the model's 19 classes"),
        (["--label_field", "landmarks"], "is not a synthetic label map"),
        (["--train_files", "/nonexistent/*.tar"], "matches no file or folder"),
        (["--eval_files", "/nonexistent/*.tar"], "matches no file or folder"),
        (["--resume_from_checkpoint", "latest"], "no complete checkpoint"),
    ],
)
def test_bad_arguments_fail_at_start(tmp_path, extra, message):
    argv = arguments(tmp_path / "out", "--max_steps", "4")
    for flag in ("--config_overrides", "--image_size", "--backbone"):
        if flag in extra:
            index = argv.index(flag)
            del argv[index : index + 2]
    with pytest.raises(ValueError, match=message):
        load_script("examples/train_face_parsing.py").main(argv + extra)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_evaluate_rejects_mismatched_synthetic_labels(tmp_path):
    load_script("examples/train_face_parsing.py").main(arguments(tmp_path, "--max_steps", "1"))
    with pytest.raises(ValueError, match="does not match the model's 19 classes"):
        load_script("examples/evaluate_face_parsing.py").main(["--model_name_or_path", str(tmp_path), "--label_field", "mask_helen"])
    assert os.path.isdir(tmp_path)
