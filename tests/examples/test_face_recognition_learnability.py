"""Learnability of `examples/train_face_recognition.py`: a tiny Part fViT trained from scratch with the script's
CosFace recipe on synthetic identities verifies *held-apart* synthetic people (other seed, never seen in training) with
accuracy >= 0.9 after a few hundred CPU steps."""

import json

import pytest

from ..script_utils import load_script


# 85,770 parameters (with the 100-identity margin head): a 2-block ViT of width 64 over 25 landmark patches of 6 px on
# 32 px faces, and a 2-block landmark CNN. Dropout / drop-path off: this model underfits (300 steps at lr 2e-3: 0.77 with
# the default dropouts 0.1 / 0.1 / 0.1 / 0.5, 0.86 without).
LEARNABLE = (
    "hidden_size=64,num_hidden_layers=2,num_attention_heads=4,head_dim=16,intermediate_size=128,image_size=32,"
    'patch_size=6,num_patches=25,landmark_stem_channels=8,landmark_block_config=[[3,16,16,true,"relu",2],[3,32,24,false,"relu",2]],'
    "hidden_dropout_prob=0.0,embedding_dropout_prob=0.0,drop_path_rate=0.0,landmark_dropout_prob=0.0"
)


# Measured (verification accuracy, 10 folds, flip test, 1,792 pairs of 256 faces of 32 held-apart people, at steps
# 100 / 200 / 300 / 400 / 500), every run with exactly these settings, 1 torch thread:
#   --seed 0: 0.742 / 0.935 / 0.976 / 0.979 / 0.977   (loss 48.2 -> 3.2)
#   --seed 1: 0.772 / 0.919 / 0.975 / 0.979 / 0.979   (loss 45.0 -> 2.5)
#   --seed 2: 0.783 / 0.906 / 0.970 / 0.980 / 0.984   (loss 44.0 -> 11.7)
# and this test (seed 0) with 2 threads: 0.742 / 0.930 / 0.982 / 0.986 / 0.989 (loss 48.2 -> 2.1; the thread count
# changes float summation order, hence the small difference). A seed changes the initial weights, the 100 training
# people and the 32 evaluation people. The CosFace loss (s = 64, m = 0.4, the script's default) sits on a plateau near
# 30 for the first ~150 steps before it falls; at lr 2e-3 the plateau lasted longer and seeds 1 / 2 ended at only
# 0.925 / 0.908 after 500 steps, at lr 4e-3 every seed is >= 0.9 from step 200 on.
# Runtime: 80 s on 2 idle cores (1 or 2 threads alike: drawing the 32,000 synthetic faces is ~75 % of it, the model
# ~15 s); up to ~160 s when other jobs share the cores. Hence the slow marker (RUN_SLOW=1 runs it).
@pytest.mark.slow
def test_tiny_part_fvit_learns_to_verify_held_apart_synthetic_identities(tmp_path):
    result = load_script("examples/train_face_recognition.py").main(
        ["--output_dir", str(tmp_path), "--config_overrides", LEARNABLE, "--seed", "0",
         "--synthetic_num_identities", "100", "--per_device_train_batch_size", "64", "--gradient_accumulation_steps", "1",
         "--max_steps", "500", "--learning_rate", "4e-3", "--eval_steps", "100", "--logging_steps", "50"]  # fmt: skip
    )
    evaluations = json.loads((tmp_path / "metrics.json").read_text())["evaluations"]
    accuracies = [round(e["accuracy"], 4) for e in evaluations]
    assert [e["step"] for e in evaluations] == [100, 200, 300, 400, 500]
    assert result["eval_num_images"] == 256 and result["eval_num_pairs"] > 1000  # 32 unseen people, 8 faces each
    assert result["eval_accuracy"] >= 0.9, accuracies
    assert accuracies[0] < result["eval_accuracy"], accuracies  # it learned during the run, not by chance at step 0
    assert result["last_loss"] < 0.5 * result["first_loss"], (result["first_loss"], result["last_loss"])
