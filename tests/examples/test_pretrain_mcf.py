"""`examples/pretrain_mcf.py`: two steps in-process, exact resume after SIGKILL (1 and 2 processes), 2 processes with
batch b == 1 process with batch 2b, dirty data and bad arguments."""

import json
import random
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from ..data_utils import truncate_file, write_webdataset
from ..launch_distributed import launch, spawn
from ..script_utils import load_script


TINY = (
    "hidden_size=32,num_hidden_layers=2,num_attention_heads=4,intermediate_size=64,image_size=32,patch_size=8,"
    "decoder_hidden_size=16,decoder_num_hidden_layers=1,decoder_num_attention_heads=2,decoder_intermediate_size=32,"
    "projector_hidden_size=64,projection_dim=16"
)


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("wds")
    write_webdataset(root, num_shards=4, per_shard=12)
    return str(root / "*.tar")


def arguments(output_dir, shards, *extra, overrides=TINY):
    return [
        "--output_dir", str(output_dir), "--train_files", shards, "--config_overrides", overrides, "--random_teacher",
        "--shuffle_buffer_size", "4", "--logging_steps", "1", "--learning_rate", "1e-3", "--warmup_steps", "2", *extra,
    ]


def final_weights(output_dir):
    return load_file(str(output_dir / "pretraining" / "model.safetensors"))


def test_two_steps_in_process_on_synthetic_default(tmp_path):
    result = load_script("examples/pretrain_mcf.py").main(
        ["--output_dir", str(tmp_path), "--config_overrides", TINY, "--random_teacher", "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--synthetic_num_samples", "64"]
    )
    assert result["steps"] == 2 and result["last_loss"] == result["last_loss"]
    assert (tmp_path / "model.safetensors").exists() and (tmp_path / "pretraining" / "model.safetensors").exists()


@pytest.mark.parametrize("world_size", [1, 2])
def test_exact_resume_after_sigkill(tmp_path, shards, world_size):
    common = ["--max_steps", "24", "--per_device_train_batch_size", str(8 // world_size), "--gradient_accumulation_steps", "2",
              "--checkpointing_steps", "3", "--max_grad_norm", "1.0"]
    launch(["examples/pretrain_mcf.py", *arguments(tmp_path / "full", shards, *common)], world_size, tmp_path)

    processes = spawn(["examples/pretrain_mcf.py", *arguments(tmp_path / "killed", shards, *common)], world_size, tmp_path)
    deadline = time.time() + 300
    while not (tmp_path / "killed" / "checkpoints" / "step_00000006").exists():
        assert time.time() < deadline and all(p.poll() is None for p in processes), "run ended before it could be killed"
        time.sleep(0.05)
    time.sleep(random.uniform(0.0, 0.1))  # somewhere after step 6: a tiny run can finish its 18 other steps in 0.4 s
    for process in processes:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert not (tmp_path / "killed" / "pretraining").exists(), "the run finished before SIGKILL"

    launch(["examples/pretrain_mcf.py", *arguments(tmp_path / "killed", shards, *common, "--resume_from_checkpoint", "latest")], world_size, tmp_path)
    expected, actual = final_weights(tmp_path / "full"), final_weights(tmp_path / "killed")
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name


def test_two_processes_follow_the_single_process_trajectory(tmp_path, shards):
    overrides = TINY + ",sync_batch_norm=true"
    common = ["--max_steps", "6", "--warmup_steps", "1"]
    load_script("examples/pretrain_mcf.py").main(arguments(tmp_path / "one", shards, *common, "--per_device_train_batch_size", "8", overrides=overrides))
    launch(["examples/pretrain_mcf.py", *arguments(tmp_path / "two", shards, *common, "--per_device_train_batch_size", "4", overrides=overrides)], 2, tmp_path)
    one = json.loads((tmp_path / "one" / "loss_history.json").read_text())
    two = json.loads((tmp_path / "two" / "loss_history.json").read_text())
    assert len(one) == len(two) == 6
    torch.testing.assert_close(torch.tensor(two), torch.tensor(one), rtol=0, atol=1e-5)


def test_dirty_data_trains_to_the_end_and_logs_the_skips(tmp_path, caplog):
    write_webdataset(tmp_path / "dirty", num_shards=2, per_shard=10, corrupt={0: [2, 5, 7]})
    truncate_file(tmp_path / "dirty" / "train-000001.tar")
    result = load_script("examples/pretrain_mcf.py").main(
        arguments(tmp_path / "out", str(tmp_path / "dirty" / "*.tar"), "--max_steps", "6", "--per_device_train_batch_size", "4")
    )
    assert result["steps"] == 6 and result["skipped"] >= 3
    assert any("Skipped" in r.getMessage() and "undecodable" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--learning_rate", "-1"], "--learning_rate must be positive, got -1"),
        (["--per_device_train_batch_size", "0"], "--per_device_train_batch_size must be >= 1, got 0"),
        (["--mixed_precision", "fp8"], "--mixed_precision must be one of"),
        (["--warmup_steps", "50", "--max_steps", "10"], r"--warmup_steps must be in \[0, max_steps=10\)"),
        (["--train_files", "/nonexistent/*.tar"], "matches no file or folder"),
        (["--train_files", "{csv}"], "Unknown data format"),
        (["--dataloader_num_workers", "3"], r"multiple of processes x DataLoader workers \(1 x 3\)"),
        (["--config_overrides", "hidden_size=30"], r"hidden_size \(30\) is not a multiple"),
        (["--config_overrides", "depth=3"], "Invalid --config_overrides item 'depth=3'"),
        (["--resume_from_checkpoint", "latest"], "no complete checkpoint"),
    ],
)
def test_nonsense_arguments_fail_at_start(tmp_path, shards, extra, message):
    (tmp_path / "data.csv").write_text("x")
    extra = [e.replace("{csv}", str(tmp_path / "data.csv")) for e in extra]
    argv = arguments(tmp_path / "out", shards, "--max_steps", "4")
    for flag in ("--train_files", "--config_overrides"):
        if flag in extra and flag in argv:
            index = argv.index(flag)
            del argv[index : index + 2]
    with pytest.raises(ValueError, match=message):
        load_script("examples/pretrain_mcf.py").main(argv + extra)


def test_a_teacher_is_required(tmp_path, shards):
    argv = [a for a in arguments(tmp_path / "out", shards, "--max_steps", "4") if a != "--random_teacher"]
    with pytest.raises(ValueError, match="No perceptual teacher: pass --teacher_name_or_path"):
        load_script("examples/pretrain_mcf.py").main(argv)
