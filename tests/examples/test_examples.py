"""`make demo`'s second half: `examples/demo_mcf.py` on the output of two pre-training steps."""

from ..script_utils import load_script
from .test_pretrain_mcf import TINY


def test_demo_mcf_on_a_two_step_pretraining_run(tmp_path):
    load_script("examples/pretrain_mcf.py").main(
        ["--output_dir", str(tmp_path), "--config_overrides", TINY, "--random_teacher", "--max_steps", "2",
         "--per_device_train_batch_size", "4", "--synthetic_num_samples", "64"]
    )
    result = load_script("examples/demo_mcf.py").main(["--model_dir", str(tmp_path), "--num_identities", "3"])
    assert -1.0 <= result["different_identity"] <= 1.0 and -1.0 <= result["same_identity"] <= 1.0
