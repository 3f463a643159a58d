"""Benchmarks run in tests only as smoke runs (tiny shapes, no timing assertions): they must keep working."""

from .script_utils import load_script


def test_bench_mcf_tiny_smoke(tmp_path):
    results = load_script("benchmarks/bench_mcf.py").main(["--tiny", "--json", str(tmp_path / "bench.json")])
    assert {(r.image_size, r.precision) for r in results} >= {(32, "fp32")}
    assert (tmp_path / "bench.json").exists()
