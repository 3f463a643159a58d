"""`examples/pretrain_farl.py`: two steps in-process (synthetic default, with MIM), 2 processes with batch b == 1
process with batch 2b (the differentiable gather), real CelebA-HQ pairs with captions in json, bad arguments."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from ..launch_distributed import launch
from ..script_utils import load_script


CELEBAHQ = Path(__file__).parents[2].parent / "shared" / "realdata" / "celebahq128_pretrain"
TINY = (
    "vision_config.hidden_size=32,vision_config.intermediate_size=64,vision_config.num_hidden_layers=1,"
    "vision_config.num_attention_heads=2,vision_config.image_size=32,vision_config.patch_size=8,"
    "text_config.hidden_size=16,text_config.intermediate_size=32,text_config.num_hidden_layers=1,"
    "text_config.num_attention_heads=2,text_config.max_position_embeddings=24,projection_dim=16,"
    'mim_num_masking_patches=6,mim_min_patches_per_block=2,image_tokenizer_config={"hidden_size":8,"blocks_per_group":1}'
)


def arguments(output_dir, *extra, overrides=TINY):
    return [
        "--output_dir", str(output_dir), "--config_overrides", overrides, "--logging_steps", "1", "--warmup_steps", "1",
        "--synthetic_num_samples", "64", "--eval_num_samples", "16", "--per_device_eval_batch_size", "8", *extra,
    ]  # fmt: skip


def test_two_steps_in_process_on_synthetic_default(tmp_path):
    result = load_script("examples/pretrain_farl.py").main(
        arguments(tmp_path, "--random_image_tokenizer", "--max_steps", "2", "--per_device_train_batch_size", "4")
    )
    assert result["steps"] == 2 and result["skipped"] == 0
    assert set(result["history"][-1]) == {"loss", "contrastive_loss", "mim_loss"}
    assert [e["step"] for e in result["evaluations"]] == [0, 2] and result["evaluations"][-1]["num_pairs"] == 16
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "tokenizer.json").exists()
    assert (tmp_path / "pretraining" / "model.safetensors").exists()


def test_two_processes_follow_the_single_process_trajectory(tmp_path):
    overrides = TINY + ",mim_loss_weight=0"  # the contrastive loss over the gathered batch, exactly
    common = ["--max_steps", "4", "--shuffle_buffer_size", "0"]
    load_script("examples/pretrain_farl.py").main(
        arguments(tmp_path / "one", *common, "--per_device_train_batch_size", "8", overrides=overrides)
    )
    launch(["examples/pretrain_farl.py", *arguments(tmp_path / "two", *common, "--per_device_train_batch_size", "4",
                                                    overrides=overrides)], 2, tmp_path)  # fmt: skip
    one, two = (load_file(str(tmp_path / name / "model.safetensors")) for name in ("one", "two"))
    for name in one:
        if name.endswith("k_proj.bias"):  # softmax ignores a key bias: its gradient is rounding noise, which Adam scales up
            continue
        torch.testing.assert_close(two[name], one[name], rtol=1e-4, atol=1e-6, msg=name)


def test_two_processes_on_real_pairs_with_json_captions(tmp_path):
    if not CELEBAHQ.is_dir():
        pytest.skip(f"real pre-training pairs not found: {CELEBAHQ}")
    train = [str(CELEBAHQ / f"train-00000{i}.tar") for i in range(2)]
    launch(["examples/pretrain_farl.py", *arguments(tmp_path, "--random_image_tokenizer", "--max_steps", "2",
            "--per_device_train_batch_size", "2", "--shuffle_buffer_size", "0", "--train_files", *train,
            "--eval_files", str(CELEBAHQ / "val-000000.tar"), "--eval_steps", "100")], 2, tmp_path)  # fmt: skip
    log = (tmp_path / "rank0.log").read_text()
    assert "Skipped 0 samples" in log and "num_pairs 500" in log
    assert (tmp_path / "pretraining" / "model.safetensors").exists()


def test_missing_visual_tokenizer_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="No visual tokenizer for the MIM targets"):
        load_script("examples/pretrain_farl.py").main(arguments(tmp_path, "--max_steps", "2"))
