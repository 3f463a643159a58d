"""`examples/train_face_recognition.py`: two steps in-process on synthetic identities (evaluation, checkpoint, exact
resume), mixup + layer-wise lr decay + landmark loss on a folder-per-identity dataset then fine-tuning the result with
a new margin head, the optimizer groups and lr rule, and data / argument errors that must fail at start."""

import json
import math

import numpy as np
import pytest
import torch

from faceformers import PartFViTConfig, PartFViTForFaceRecognition, PartFViTModel

from ..data_utils import encoded_image, write_webdataset
from ..script_utils import load_script


TINY = (
    "hidden_size=32,num_hidden_layers=1,num_attention_heads=2,head_dim=16,intermediate_size=64,image_size=32,"
    'patch_size=4,num_patches=16,landmark_stem_channels=8,landmark_block_config=[[3,16,8,true,"relu",2]]'
)


def arguments(output_dir, *extra):
    return [
        "--output_dir", str(output_dir), "--config_overrides", TINY, "--per_device_train_batch_size", "4",
        "--gradient_accumulation_steps", "1", "--logging_steps", "1", "--synthetic_num_samples", "32",
        "--synthetic_num_identities", "8", "--eval_num_samples", "16", "--eval_num_identities", "4", *extra,
    ]


def script():
    return load_script("examples/train_face_recognition.py")


def test_two_steps_on_synthetic_identities_then_resume(tmp_path):
    result = script().main(arguments(tmp_path, "--max_steps", "2", "--checkpointing_steps", "1", "--eval_steps", "1"))
    assert result["steps"] == 2 and result["num_labels"] == 8 and math.isfinite(result["last_loss"])
    assert 0 <= result["eval_accuracy"] <= 1 and result["eval_num_images"] == 16 and result["eval_num_pairs"] > 0
    for name in ("model.safetensors", "config.json", "preprocessor_config.json", "metrics.json"):
        assert (tmp_path / name).exists(), name
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert [e["step"] for e in metrics["evaluations"]] == [1, 2] and len(metrics["loss_history"]) == 2
    assert json.loads((tmp_path / "preprocessor_config.json").read_text())["size"] == {"height": 32, "width": 32}
    backbone = PartFViTModel.from_pretrained(tmp_path)  # the embedding model loads from the saved folder
    assert backbone(torch.zeros(1, 3, 32, 32)).embeddings.shape == (1, 32)

    resumed = script().main(
        arguments(tmp_path / "resumed", "--max_steps", "2", "--resume_from_checkpoint", str(tmp_path / "checkpoints" / "step_00000001"))
    )
    assert resumed["steps"] == 2
    assert resumed["last_loss"] == pytest.approx(result["last_loss"], rel=1e-4)  # same data, mixup draws and dropout


def write_identity_folders(root, num_identities=3, per_identity=4):
    rng = np.random.default_rng(0)
    for identity in range(num_identities):
        folder = root / f"person_{identity}"
        folder.mkdir(parents=True)
        for index in range(per_identity):
            (folder / f"{index}.jpg").write_bytes(encoded_image(rng, size=40))
    return str(root)


def test_mixup_layer_decay_landmark_loss_on_identity_folders_then_new_head(tmp_path):
    folders = write_identity_folders(tmp_path / "faces")
    result = script().main(
        arguments(tmp_path / "out", "--train_files", folders, "--max_steps", "2", "--mixup_prob", "1", "--layer_wise_lr_decay", "0.5",
                  "--landmark_loss_schedule", "0:1000,1:0", "--loss_type", "arcface", "--shuffle_buffer_size", "0")
    )
    assert result["num_labels"] == 3 and result["steps"] == 2
    history = json.loads((tmp_path / "out" / "metrics.json").read_text())["loss_history"]
    assert history[0]["landmark_loss"] > 0 and history[1]["landmark_loss"] == 0  # beta 1000, then 0
    config = PartFViTConfig.from_pretrained(tmp_path / "out")
    assert config.loss_type == "arcface" and config.use_reference_landmarks
    assert config.id2label == {0: "person_0", 1: "person_1", 2: "person_2"}

    # fine-tune the result on synthetic identities: 8 classes, so a new margin head
    tuned = script().main(
        ["--output_dir", str(tmp_path / "tuned"), "--model_name_or_path", str(tmp_path / "out"), "--num_labels", "8",
         "--max_steps", "1", "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "1",
         "--synthetic_num_samples", "16", "--synthetic_num_identities", "8", "--eval_num_samples", "16",
         "--eval_num_identities", "4", "--mixup_alpha", "0"]  # fmt: skip
    )
    assert tuned["num_labels"] == 8 and math.isfinite(tuned["last_loss"])
    assert PartFViTForFaceRecognition.from_pretrained(tmp_path / "tuned").margin_head.weight.shape == (8, 32)


def test_parameter_groups_lr_rule_and_mixup():
    module = script()
    config = PartFViTConfig(num_labels=5)
    model = PartFViTForFaceRecognition(module.apply_config_overrides(config, TINY))
    groups = {g["group_name"]: g for g in module.recognition_parameter_groups(model, 1.0, 0.1, 0.05, 0.5)}
    # depth 1: layer 0 (landmark CNN, embeddings) x 0.25, layer 1 (block 0) x 0.5, layer 2 (norm, head) x 1
    assert groups["layer_0_landmark_cnn"]["lr"] == 0.25 and groups["layer_0_landmark_cnn"]["weight_decay"] == 0.05
    assert groups["layer_1_decay"]["lr"] == 0.5 and groups["layer_2_decay"]["lr"] == 1.0
    assert groups["layer_2_no_decay"]["weight_decay"] == 0.0
    head = model.part_fvit.landmark_net.head.weight  # LAFS `output_layer`: the common decay, not the CNN's
    assert any(p is head for p in groups["layer_0_decay"]["params"])
    assert sum(len(g["params"]) for g in groups.values()) == sum(1 for p in model.parameters() if p.requires_grad)

    args = module.FaceRecognitionOptimizationArguments(output_dir="x", per_device_train_batch_size=200, max_steps=34)
    assert module.lafs_learning_rate(args, num_processes=2) == pytest.approx(2.29e-3, rel=1e-3)  # ORIGINALS §7.5
    assert args.warmup_steps == 5  # 5 of 34 epochs

    images, labels = torch.randn(4, 3, 2, 2), torch.tensor([0, 1, 2, 3])
    mixed, targets = module.mixup(images, labels, 5, 0.2, 1.0, np.random.default_rng(0))
    assert targets.shape == (4, 5) and torch.allclose(targets.sum(1), torch.ones(4))
    lam = targets[0, 0].item()
    assert torch.allclose(mixed[0], lam * images[0] + (1 - lam) * images[3])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--mixup_prob", "2"], "--mixup_prob in"),
        (["--layer_wise_lr_decay", "0"], r"--layer_wise_lr_decay must be in \(0, 1\]"),
        (["--landmark_loss_schedule", "5:10"], "increasing steps from 0"),
        (["--landmark_loss_schedule", "lafs", "--landmark_loss_weight", "1"], "not both"),
        (["--loss_type", "softmax"], "--loss_type must be cosface or arcface"),
        (["--model_name_or_path", "x"], "--config_overrides applies to a new model"),
        (["--num_labels", "4"], "holds 8 identities but --num_labels is 4"),
        (["--resume_from_checkpoint", "latest"], "no complete checkpoint"),
    ],
)
def test_bad_arguments_fail_at_start(tmp_path, extra, message):
    with pytest.raises(ValueError, match=message):
        script().main(arguments(tmp_path / "out", "--max_steps", "2", *extra))
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_unlabelled_data_fails_at_start(tmp_path):
    shards = str(tmp_path / "wds" / "*.tar")
    write_webdataset(tmp_path / "wds", num_shards=2, per_shard=2)  # `<key>.jpg` + `<key>.json` without an identity
    with pytest.raises(ValueError, match="--num_labels is needed"):
        script().main(arguments(tmp_path / "out", "--train_files", shards, "--max_steps", "1"))
    with pytest.raises(ValueError, match=r"Record 00000000 has no identity label .*\(first record of the training shard .*train-000000.tar\)"):
        script().main(arguments(tmp_path / "out", "--train_files", shards, "--num_labels", "4", "--max_steps", "1"))
    flat = tmp_path / "flat"
    flat.mkdir()
    (flat / "a.jpg").write_bytes(encoded_image(np.random.default_rng(0)))
    with pytest.raises(ValueError, match="one sub-folder per identity"):
        script().main(arguments(tmp_path / "out", "--train_files", str(flat), "--max_steps", "1"))
    assert not (tmp_path / "out" / "model.safetensors").exists()
