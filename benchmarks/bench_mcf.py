"""Forward throughput of `MCFModel` against transformers' `ViTModel` of the same shape.

Both models are built with random (seeded) weights, put in eval mode and run under `torch.inference_mode()` with SDPA
attention. For every (resolution, precision) setting the two models are timed in the same process, interleaved: each
repetition runs both, alternating which goes first, so that slow drifts (frequency scaling, noisy neighbours) hit both
alike. Throughput is `batch_size / median(seconds per forward)`.

Usage:

    python benchmarks/bench_mcf.py                       # ViT-B/16, 224 and 448 px, fp32 and bf16 autocast
    python benchmarks/bench_mcf.py --json /tmp/mcf.json  # also write every timing as JSON
    python benchmarks/bench_mcf.py --tiny                # tiny config, a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn
from transformers import ViTConfig, ViTModel

from faceformers import MCFConfig, MCFModel


PRECISIONS = ("fp32", "bf16")

# Encoder shape shared by both models: ViT-B/16 (the MCF release) and a tiny one for smoke tests.
BASE_SHAPE: dict[str, int] = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "image_size": 224,
    "patch_size": 16,
}
TINY_SHAPE: dict[str, int] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 128,
    "image_size": 32,
    "patch_size": 8,
}

# (warmup, repeats) per forward and model, when not given on the command line.
DEFAULT_ITERATIONS = (2, 7)
TINY_ITERATIONS = (1, 3)


@dataclass
class Result:
    """Timings of one (image size, precision) setting; `*_seconds` hold one entry per repetition."""

    image_size: int
    precision: str
    batch_size: int
    ours_seconds: list[float] = field(default_factory=list)
    reference_seconds: list[float] = field(default_factory=list)

    @property
    def ours_throughput(self) -> float:
        return self.batch_size / statistics.median(self.ours_seconds)

    @property
    def reference_throughput(self) -> float:
        return self.batch_size / statistics.median(self.reference_seconds)

    @property
    def ratio(self) -> float:
        """Ours over reference throughput, from the two medians."""
        return self.ours_throughput / self.reference_throughput

    @property
    def paired_ratio(self) -> float:
        """Median over repetitions of reference time / our time within the repetition (robust to drift)."""
        return statistics.median(
            reference / ours for ours, reference in zip(self.ours_seconds, self.reference_seconds)
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "ours_images_per_second": self.ours_throughput,
            "reference_images_per_second": self.reference_throughput,
            "ours_over_reference": self.ratio,
            "ours_over_reference_paired": self.paired_ratio,
        }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8, help="images per forward (default: 8)")
    parser.add_argument(
        "--sizes", type=int, nargs="+", help="input resolutions in px (default: the config's size and twice it)"
    )
    parser.add_argument(
        "--precisions", nargs="+", choices=PRECISIONS, default=list(PRECISIONS), help="bf16 = autocast (default: both)"
    )
    parser.add_argument(
        "--warmup", type=int, help=f"untimed forwards per model and setting (default: {DEFAULT_ITERATIONS[0]})"
    )
    parser.add_argument(
        "--repeats", type=int, help=f"timed forwards per model and setting (default: {DEFAULT_ITERATIONS[1]})"
    )
    parser.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="(default: cpu)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and inputs (default: 0)")
    parser.add_argument("--tiny", action="store_true", help="tiny config and few iterations (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the metadata and all timings to this file")
    args = parser.parse_args(argv)

    warmup, repeats = TINY_ITERATIONS if args.tiny else DEFAULT_ITERATIONS
    args.warmup = warmup if args.warmup is None else args.warmup
    args.repeats = repeats if args.repeats is None else args.repeats
    shape = TINY_SHAPE if args.tiny else BASE_SHAPE
    args.sizes = args.sizes or [shape["image_size"], 2 * shape["image_size"]]
    if args.warmup < 0 or args.repeats < 1 or args.batch_size < 1 or args.threads < 1:
        parser.error("--warmup must be >= 0; --repeats, --batch-size and --threads must be >= 1")
    if any(size % shape["patch_size"] for size in args.sizes):
        parser.error(f"every size must be a multiple of the patch size ({shape['patch_size']})")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build_models(shape: dict[str, int], seed: int, device: torch.device) -> tuple[nn.Module, nn.Module]:
    """`MCFModel` and `ViTModel` (no pooler) with the same shape, SDPA attention, random weights, in eval mode."""
    common = dict(shape, layer_norm_eps=1e-6, hidden_act="gelu", qkv_bias=True, attn_implementation="sdpa")
    torch.manual_seed(seed)
    ours = MCFModel(MCFConfig(**common))
    torch.manual_seed(seed)
    reference = ViTModel(ViTConfig(**common), add_pooling_layer=False)
    for model in (ours, reference):
        if model.config._attn_implementation != "sdpa":
            raise RuntimeError(f"{type(model).__name__} uses {model.config._attn_implementation!r}, not SDPA")
    return ours.to(device).eval(), reference.to(device).eval()


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager[Any]:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def make_forward(model: nn.Module, pixel_values: torch.Tensor, interpolate: bool) -> Callable[[], None]:
    def forward() -> None:
        model(pixel_values, interpolate_pos_encoding=interpolate)

    return forward


def time_call(forward: Callable[[], None], device: torch.device) -> float:
    """Seconds taken by one call, waiting for queued device work before and after."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    forward()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def interleaved_order(repeats: int) -> Iterator[tuple[str, ...]]:
    """Which model goes first in each repetition: ours first, then the reference first, and so on."""
    for index in range(repeats):
        yield ("ours", "reference") if index % 2 == 0 else ("reference", "ours")


def benchmark_setting(
    models: dict[str, nn.Module], image_size: int, precision: str, args: argparse.Namespace, native_size: int
) -> Result:
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    pixel_values = torch.randn(args.batch_size, 3, image_size, image_size, generator=generator).to(device)
    interpolate = image_size != native_size
    forwards = {name: make_forward(model, pixel_values, interpolate) for name, model in models.items()}
    result = Result(image_size=image_size, precision=precision, batch_size=args.batch_size)
    timings = {"ours": result.ours_seconds, "reference": result.reference_seconds}

    with torch.inference_mode(), precision_context(precision, device):
        for order in interleaved_order(args.warmup):
            for name in order:
                forwards[name]()
        for order in interleaved_order(args.repeats):
            for name in order:
                timings[name].append(time_call(forwards[name], device))
    return result


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def collect_metadata(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    arguments = list(sys.argv[1:] if argv is None else argv)
    metadata = {
        "command": shlex.join(["python", "benchmarks/bench_mcf.py", *arguments]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "cpu": cpu_model(),
        "cpu_bf16_native": cpu_has_flag("avx512_bf16") or cpu_has_flag("amx_bf16"),
        "threads": torch.get_num_threads(),
        "device": args.device,
        "config": "tiny" if args.tiny else "ViT-B/16",
        "batch_size": args.batch_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }
    if args.device == "cuda":
        metadata["gpu"] = torch.cuda.get_device_name()
    return metadata


def cpu_has_flag(flag: str) -> bool:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return False
    return any(line.startswith("flags") and flag in line.split() for line in lines)


def bf16_speedups(results: Sequence[Result]) -> dict[int, tuple[float, float]]:
    """Per image size: (ours, reference) throughput in bf16 over fp32, when both were measured."""
    by_key = {(result.image_size, result.precision): result for result in results}
    speedups = {}
    for (size, precision), result in by_key.items():
        fp32 = by_key.get((size, "fp32"))
        if precision == "bf16" and fp32 is not None:
            speedups[size] = (
                result.ours_throughput / fp32.ours_throughput,
                result.reference_throughput / fp32.reference_throughput,
            )
    return speedups


def format_report(metadata: dict[str, Any], results: Sequence[Result]) -> str:
    device = metadata.get("gpu", f"{metadata['cpu']}, {metadata['threads']} threads")
    lines = [
        f"`{metadata['command']}`",
        "",
        f"{metadata['date']} | {metadata['config']}, batch {metadata['batch_size']}, "
        f"median of {metadata['repeats']} (warmup {metadata['warmup']}) | {device} | "
        f"torch {metadata['torch']}, transformers {metadata['transformers']}",
        "",
        "| size | precision | MCFModel img/s | ViTModel img/s | MCF / ViT | MCF / ViT paired | MCF bf16/fp32 "
        "| ViT bf16/fp32 |",
        "|---:|:---|---:|---:|---:|---:|---:|---:|",
    ]
    speedups = bf16_speedups(results)
    for result in results:
        ours_speedup = reference_speedup = "-"
        if result.precision == "bf16" and result.image_size in speedups:
            ours_speedup, reference_speedup = (f"{value:.2f}x" for value in speedups[result.image_size])
        lines.append(
            f"| {result.image_size} | {result.precision} | {result.ours_throughput:.2f} | "
            f"{result.reference_throughput:.2f} | {result.ratio:.3f} | {result.paired_ratio:.3f} | "
            f"{ours_speedup} | {reference_speedup} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = TINY_SHAPE if args.tiny else BASE_SHAPE
    ours, reference = build_models(shape, args.seed, torch.device(args.device))
    models = {"ours": ours, "reference": reference}
    metadata = collect_metadata(args, argv)
    results = [
        benchmark_setting(models, size, precision, args, native_size=shape["image_size"])
        for size in args.sizes
        for precision in args.precisions
    ]
    print(format_report(metadata, results))
    if args.json is not None:
        payload = {"metadata": metadata, "results": [result.to_dict() for result in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
