"""Benchmarks run in tests only as smoke runs (tiny shapes, no timing assertions): they must keep working."""

import pytest

from .script_utils import load_script


def test_bench_mcf_tiny_smoke(tmp_path):
    results = load_script("benchmarks/bench_mcf.py").main(["--tiny", "--json", str(tmp_path / "bench.json")])
    assert {(r.image_size, r.precision) for r in results} >= {(32, "fp32")}
    assert (tmp_path / "bench.json").exists()


def test_bench_farl_tiny_smoke(tmp_path):
    results = load_script("benchmarks/bench_farl.py").main(["--tiny", "--repeats", "2", "--json", str(tmp_path / "farl.json")])
    assert [r.precision for r in results] == ["fp32", "bf16"] and all(r.ratio > 0 for r in results)
    assert (tmp_path / "farl.json").exists()


def test_bench_data_tiny_smoke(tmp_path):
    """Generated tiny shards (no real data): inline, 2 DataLoader workers, the prototypes and the stage profile."""
    argv = ["--tiny", "--what_if", "--json", str(tmp_path / "data.json")]
    payload = load_script("benchmarks/bench_data.py").main(argv)
    runs = {(r["output"], r["transport"], r["image_size"]) for r in payload["results"]}
    assert runs >= {("float", transport, size) for transport in ["inline", "samples"] for size in [64, 32]}
    assert runs >= {("float", "batches", 64), ("uint8", "batches", 64), ("uint8 native", "inline", 64)}
    assert all(r["images_per_second"] > 0 and r["images_per_cpu_second"] > 0 for r in payload["results"])
    assert set(payload["stage_profile_us_per_image"]) == {"64", "32"}
    assert (tmp_path / "data.json").exists()


def test_bench_data_skips_without_shards(tmp_path, capsys):
    assert load_script("benchmarks/bench_data.py").main(["--train_files", str(tmp_path / "none-*.tar")]) is None
    assert "skipping" in capsys.readouterr().out


def test_bench_train_step_tiny_smoke(tmp_path):
    """Tiny config, one timed step per precision; the FLOP formula equals torch's count (without the recompute)."""
    payload = load_script("benchmarks/bench_train.py").main(
        ["--tiny", "--parts", "step", "--device", "cpu", "--json", str(tmp_path / "train.json")]
    )
    step = payload["step"]
    assert [row["precision"] for row in step["results"]] == ["fp32", "bf16"]
    assert all(row["images_per_second"] > 0 and row["peak_memory_bytes"] > 0 for row in step["results"])
    counted, formula = step["counted_flops_per_image"]["without_recompute"], step["flops_per_image"]["total"]
    assert abs(counted - formula) / formula < 1e-3  # only the contrastive logits (B x B) are not in the formula
    assert (tmp_path / "train.json").exists()


def test_bench_train_parses_the_script_log():
    log = (
        "08:01:02 INFO pretrain_mcf: step 5  loss 3.1  perceptual_loss 0.002  contrastive_loss 1.2  lr 0.0001  "
        "images_per_second 41.25\npretrain:  50%|#####     | 5/10\r"
        "08:01:05 INFO pretrain_mcf: step 10  loss 3  perceptual_loss 0.002  contrastive_loss 1.1  lr 5e-05  "
        "images_per_second 1.5e+02\n"
    )
    assert load_script("benchmarks/bench_train.py").logged_throughputs(log) == [(5, 41.25), (10, 150.0)]


@pytest.mark.slow  # three Python start-ups (1 + 2 processes): 15-30 s on 2 cores
def test_bench_train_scaling_tiny_smoke():
    """examples/pretrain_mcf.py with 1 and 2 CPU processes (tiny config, synthetic faces)."""
    scaling = load_script("benchmarks/bench_train.py").main(["--tiny", "--parts", "scaling"])["scaling"]
    assert scaling["images_per_second"]["1"] > 0 and scaling["images_per_second"]["2"] > 0
    assert scaling["efficiency"] > 0


def test_bench_part_fvit_tiny_smoke(tmp_path):
    """Ours alone (the authors' code is not in the repository): tiny ViT on 112 px, fp32 and bf16."""
    argv = ["--tiny", "--threads", "1", "--json", str(tmp_path / "part_fvit.json")]
    results = load_script("benchmarks/bench_part_fvit.py").main(argv)
    assert [r.precision for r in results] == ["fp32", "bf16"]
    assert all(r.ours_throughput > 0 and not r.reference_seconds for r in results)
    assert (tmp_path / "part_fvit.json").exists()
