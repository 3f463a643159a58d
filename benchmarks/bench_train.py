"""Training throughput of `MCFForPreTraining`: one training step in a plain loop, and 1 vs 2 processes on CPU.

Part `step`: forward + backward + AdamW step + momentum update, in a plain loop on fixed synthetic tensors (no data
pipeline), timed after warm-up steps. On CUDA: ViT-B/16 (the `MCFConfig` defaults) at batch 64 under bf16 autocast,
with images/s, peak memory (`torch.cuda.max_memory_allocated`) and MFU. On CPU: a small config (hidden 192, 6 layers,
3 heads, 112 px, patch 16, decoder 128 x 2) at batch 32, in fp32 and bf16 autocast, with images/s and peak RSS.
Precisions are interleaved: every repetition times each of them, alternating which goes first.

Part `scaling` (CPU): `examples/pretrain_mcf.py` run through `tests/launch_distributed.launch`, once with 1 process
(global batch B, 2 torch threads) and once with 2 processes (batch B/2 each, 1 thread each), same small config,
`--random_teacher`, on the real shards when present (else the script's synthetic faces). Throughput is the
`images_per_second` the script logs every `--scaling_logging_steps` steps (global images over the wall time between two
logs, data loading included); the first logging window (start-up, warm-up) is dropped. Efficiency = img/s with 2
processes / img/s with 1 process. On a 2-core machine both runs use every core, so this measures what distribution
costs (gradient all-reduce, key all-gather, smaller per-process GEMMs, data pipeline per process), not added hardware.

FLOPs per image (model FLOPs: 2 per multiply-add, matmuls, the patch convolution and attention only; LayerNorm,
GELU, softmax, BatchNorm, the losses and the optimizer are left out, and nothing recomputed is counted). With
`block(t, d, f) = 2 t (4 d^2 + 2 d f) + 4 t^2 d` the forward FLOPs of one transformer block over t tokens of width d
(qkv + output projections, MLP, Q K^T and A V), N patches, k = int(N (1 - mask_ratio)) kept patches, patch size p,
C channels, projector hidden width H and output width q:

    patch     = 2 N (C p^2) D                                    (the patch convolution runs on all N patches)
    encoder   = patch + L block(1 + k, D, F)                     (online and momentum encoder, forward)
    decoder   = 2 (1 + k) D D_dec + L_dec block(1 + N, D_dec, F_dec) + 2 (1 + N) D_dec (C p^2)
    heads     = projector 2 (D H + H q) + predictor 2 (q H + H q); momentum projector 2 (D H + H q)
    teacher   = patch_T + L_T block(1 + N_T, D_T, F_T)            (forward)
    teacher_input_grad = patch_T + L_bwd (block_linear + 2 block_attention)(1 + N_T, D_T, F_T)
                                                                 (L_bwd = last perceptual layer + 1)

    step = 3 (encoder - patch) + 2 patch + 3 decoder + 3 (projector + predictor)    online: forward + backward (2x)
         + encoder + momentum projector                                               momentum branch: forward
         + teacher                                                                    teacher on the input: forward
         + teacher + teacher_input_grad                               teacher on the prediction: forward + backward

The backward of a trained part costs twice its forward (input and weight gradients), except the patch convolution,
whose input (pixels) needs no gradient. The frozen teacher needs only input gradients: its linear layers and patch
convolution cost 1x their forward in backward, its attention matmuls 2x (gradients of both operands), over the blocks
up to the last perceptual layer. For ViT-B/16 at 224 px (decoder 512 x 8) this gives 174.1 GFLOP per image, 61 % of it
in the teacher (`--check_flops` compares the formula with `torch.utils.flop_counter` on one step).
MFU = FLOPs per image x img/s / `--peak_tflops` (default on CUDA: 989, the H100 SXM dense bf16 peak).

Usage:

    python benchmarks/bench_train.py                         # CPU: small config step (fp32, bf16) + 1 vs 2 processes
    python benchmarks/bench_train.py --parts step            # only the step benchmark (CUDA if available)
    python benchmarks/bench_train.py --json /tmp/train.json  # also write every timing as JSON
    python benchmarks/bench_train.py --tiny                  # tiny config, a few steps (smoke test)
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import re
import resource
import runpy
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import transformers

from faceformers import MCFConfig, MCFForPreTraining, MCFModel
from faceformers.training import parameter_groups


ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRAIN_FILES = os.path.normpath(ROOT / ".." / "shared" / "realdata" / "celebahq128_pretrain" / "train-*.tar")
H100_BF16_DENSE_TFLOPS = 989.0
PRECISIONS = ("fp32", "bf16")

# ViT-B/16 is the MCFConfig default (decoder 512 x 8, projector 4096 -> 256).
CONFIGS: dict[str, dict[str, Any]] = {
    "base": {},
    "small": {
        "hidden_size": 192, "num_hidden_layers": 6, "num_attention_heads": 3, "intermediate_size": 768,
        "image_size": 112, "patch_size": 16, "decoder_hidden_size": 128, "decoder_num_hidden_layers": 2,
        "decoder_num_attention_heads": 4, "decoder_intermediate_size": 512, "projector_hidden_size": 1024,
        "projection_dim": 128,
    },
    "tiny": {
        "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "image_size": 32, "patch_size": 8, "decoder_hidden_size": 16, "decoder_num_hidden_layers": 1,
        "decoder_num_attention_heads": 2, "decoder_intermediate_size": 32, "projector_hidden_size": 64,
        "projection_dim": 16,
    },
}
RUN_SCRIPT = "--run-script"  # child mode: `bench_train.py --run-script THREADS SCRIPT ARGS...`


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", nargs="+", choices=("step", "scaling"), default=["step", "scaling"])
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto", help="step part (default: auto)")
    parser.add_argument("--config", choices=tuple(CONFIGS), help="default: base on CUDA, small on CPU")
    parser.add_argument("--batch_size", type=int, help="step part (default: 64 on CUDA, 32 on CPU)")
    parser.add_argument("--precisions", nargs="+", choices=PRECISIONS, help="default: bf16 on CUDA, fp32 bf16 on CPU")
    parser.add_argument("--warmup_steps", type=int, help="untimed steps per precision (default: 5 CUDA, 2 CPU)")
    parser.add_argument("--repeats", type=int, default=5, help="timed chunks per precision, interleaved (default: 5)")
    parser.add_argument("--steps_per_repeat", type=int, help="steps per timed chunk (default: 10 CUDA, 3 CPU)")
    parser.add_argument("--threads", type=int, help="torch threads on CPU (default: all cores)")
    parser.add_argument(
        "--peak_tflops", type=float,
        help=f"accelerator peak for MFU (default on CUDA: {H100_BF16_DENSE_TFLOPS}, H100 SXM dense bf16; none on CPU)",
    )
    parser.add_argument("--check_flops", action="store_true", help="compare the FLOP formula with torch's counter")
    parser.add_argument("--train_files", nargs="+", default=[DEFAULT_TRAIN_FILES],
                        help="scaling part: shards (default: the real CelebA-HQ shards; synthetic faces if absent)")
    parser.add_argument("--scaling_config", choices=tuple(CONFIGS), help="scaling part (default: small)")
    parser.add_argument("--scaling_global_batch", type=int, default=32, help="global batch B (default: 32)")
    parser.add_argument("--scaling_steps", type=int, default=25, help="optimizer steps per run (default: 25)")
    parser.add_argument("--scaling_logging_steps", type=int, default=5, help="steps per logged window (default: 5)")
    parser.add_argument(
        "--scaling_repeats", type=int, default=2, help="runs per process count, interleaved (default: 2)"
    )
    parser.add_argument("--scaling_workers", type=int, default=0, help="DataLoader workers per process (default: 0)")
    parser.add_argument("--scaling_mixed_precision", choices=("no", "bf16"), default="no")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny config and few steps (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the metadata and every timing to this file")
    args = parser.parse_args(argv)

    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    cuda = args.device == "cuda"
    if args.tiny:
        args.check_flops = True
        defaults = {"config": "tiny", "scaling_config": "tiny", "batch_size": 8, "warmup_steps": 1,
                    "steps_per_repeat": 1, "repeats": 1, "scaling_global_batch": 8, "scaling_steps": 4,
                    "scaling_logging_steps": 2, "scaling_repeats": 1}
        for name, value in defaults.items():
            if getattr(args, name) in (None, parser.get_default(name)):
                setattr(args, name, value)
    args.config = args.config or ("base" if cuda else "small")
    args.scaling_config = args.scaling_config or "small"  # CPU processes: never ViT-B by default
    args.batch_size = args.batch_size or (64 if cuda else 32)
    args.precisions = args.precisions or (["bf16"] if cuda else list(PRECISIONS))
    args.warmup_steps = (5 if cuda else 2) if args.warmup_steps is None else args.warmup_steps
    args.steps_per_repeat = args.steps_per_repeat or (10 if cuda else 3)
    args.threads = args.threads or available_cores()
    if args.peak_tflops is None and cuda:
        args.peak_tflops = H100_BF16_DENSE_TFLOPS
    if args.scaling_global_batch % 2 or args.scaling_steps <= args.scaling_logging_steps:
        parser.error("--scaling_global_batch must be even and --scaling_steps > --scaling_logging_steps")
    if min(args.batch_size, args.repeats, args.steps_per_repeat, args.scaling_repeats) < 1 or args.warmup_steps < 0:
        parser.error("batch size, repeats and steps must be >= 1, --warmup_steps >= 0")
    return args


def available_cores() -> int:
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def build_config(name: str) -> MCFConfig:
    return MCFConfig(**CONFIGS[name])


def config_overrides(name: str) -> str:
    return ",".join(f"{key}={value}" for key, value in CONFIGS[name].items())


# ------------------------------------------------------------------------------------------------------------ FLOPs


def block_flops(tokens: int, width: int, mlp: int) -> tuple[float, float]:
    """Forward FLOPs of one transformer block: (linear layers, attention matmuls)."""
    return 2.0 * tokens * (4 * width * width + 2 * width * mlp), 4.0 * tokens * tokens * width


def training_flops_per_image(config: MCFConfig) -> dict[str, float]:
    """Model FLOPs of one training step per image, by component (see the module docstring for the formula)."""
    n, p, c = config.num_patches, config.patch_size, config.num_channels
    keep = int(n * (1 - config.mask_ratio))
    d, h, q = config.hidden_size, config.projector_hidden_size, config.projection_dim

    patch = 2.0 * n * c * p * p * d
    linear, attention = block_flops(1 + keep, d, config.intermediate_size)
    encoder_blocks = config.num_hidden_layers * (linear + attention)

    dd = config.decoder_hidden_size
    linear, attention = block_flops(1 + n, dd, config.decoder_intermediate_size)
    decoder_blocks = config.decoder_num_hidden_layers * (linear + attention)
    decoder = 2.0 * (1 + keep) * d * dd + decoder_blocks + 2.0 * (1 + n) * dd * c * p * p

    projector = 2.0 * (d * h + h * q)
    predictor = 2.0 * (q * h + h * q)

    teacher_config = config.get_perceptual_teacher_config()
    nt, pt, dt = teacher_config.num_patches, teacher_config.patch_size, teacher_config.hidden_size
    teacher_patch = 2.0 * nt * c * pt * pt * dt
    linear, attention = block_flops(1 + nt, dt, teacher_config.intermediate_size)
    teacher = teacher_patch + teacher_config.num_hidden_layers * (linear + attention)
    backward_blocks = max(config.get_perceptual_layers()) + 1  # input gradients flow through these blocks only
    teacher_input_grad = teacher_patch + backward_blocks * (linear + 2 * attention)

    flops = {
        "online encoder (fwd + bwd)": 3 * encoder_blocks + 2 * patch,
        "decoder (fwd + bwd)": 3 * decoder,
        "projector + predictor (fwd + bwd)": 3 * (projector + predictor),
        "momentum encoder + projector (fwd)": patch + encoder_blocks + projector,
        "teacher on input (fwd)": teacher,
        "teacher on prediction (fwd + input grad)": teacher + teacher_input_grad,
    }
    flops["total"] = sum(flops.values())
    return flops


def counted_flops_per_image(model: MCFForPreTraining, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """FLOPs of one forward + backward counted by `torch.utils.flop_counter.FlopCounterMode`, per image.

    torch counts five matmuls for a fused-attention backward (it recomputes Q K^T), where the formula counts the four
    gradient matmuls; `without_recompute` takes that fifth out and is what the formula should match.
    """
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        model(**batch).loss.backward()
    model.zero_grad(set_to_none=True)
    images = len(batch["pixel_values"])
    by_operator = {str(op): count / images for op, count in counter.get_flop_counts()["Global"].items()}
    attention_backward = sum(count for op, count in by_operator.items() if "attention" in op and "backward" in op)
    total = counter.get_total_flops() / images
    return {"total": total, "without_recompute": total - attention_backward / 5, "by_operator": by_operator}


# ------------------------------------------------------------------------------------------------------- step part


@dataclass
class StepResult:
    precision: str
    batch_size: int
    seconds_per_step: list[float] = field(default_factory=list)  # mean seconds per step of each timed chunk
    peak_memory_bytes: list[int] = field(default_factory=list)
    load: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.batch_size / statistics.median(self.seconds_per_step)


def build_model(config: MCFConfig, seed: int) -> MCFForPreTraining:
    torch.manual_seed(seed)
    model = MCFForPreTraining(config)
    model.load_perceptual_teacher(MCFModel(config.get_perceptual_teacher_config()).state_dict())  # random teacher
    return model


def synthetic_batch(config: MCFConfig, batch_size: int, device: torch.device, seed: int) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    size, patches = config.image_size, config.num_patches
    return {
        "pixel_values": torch.randn(batch_size, config.num_channels, size, size, generator=generator).to(device),
        "noise": torch.rand(batch_size, patches, generator=generator).to(device),
        "momentum_noise": torch.rand(batch_size, patches, generator=generator).to(device),
    }


def precision_context(precision: str, device: torch.device) -> contextlib.AbstractContextManager:
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def reset_peak_memory(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        return
    with contextlib.suppress(OSError):  # Linux: "5" resets this process's peak RSS (VmHWM)
        Path("/proc/self/clear_refs").write_text("5")


def peak_memory(device: torch.device) -> int:
    """Bytes: CUDA max allocated, or this process's peak RSS (VmHWM since the last reset, else ru_maxrss)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device)
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def current_rss() -> int | None:
    """This process's resident memory now, in bytes (Linux), to put the peak RSS in context."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return None


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def training_step(model, optimizer, batch, precision: str, device: torch.device) -> torch.Tensor:
    with precision_context(precision, device):
        loss = model(**batch).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    model.update_momentum_encoder()
    return loss.detach()


def run_step_part(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    config = build_config(args.config)
    rss_before_model = current_rss()
    model = build_model(config, args.seed).to(device).train()
    optimizer = torch.optim.AdamW(parameter_groups(model, 0.05), lr=1e-4, betas=(0.9, 0.95))
    batch = synthetic_batch(config, args.batch_size, device, args.seed)
    flops = training_flops_per_image(config)
    counted = counted_flops_per_image(model, batch) if args.check_flops else None

    results = {precision: StepResult(precision, args.batch_size) for precision in args.precisions}
    for precision in args.precisions:  # warm-up of every precision before any timing
        for _ in range(args.warmup_steps):
            training_step(model, optimizer, batch, precision, device)
    for repeat in range(args.repeats):
        for precision in args.precisions if repeat % 2 == 0 else reversed(args.precisions):
            result = results[precision]
            reset_peak_memory(device)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(args.steps_per_repeat):
                loss = training_step(model, optimizer, batch, precision, device)
            synchronize(device)
            result.seconds_per_step.append((time.perf_counter() - start) / args.steps_per_repeat)
            result.peak_memory_bytes.append(peak_memory(device))
            result.load.append(os.getloadavg()[0])
            result.losses.append(loss.float().item())
            print(f"  step {precision}: {args.batch_size / result.seconds_per_step[-1]:.2f} img/s "
                  f"(load {result.load[-1]:.2f})", flush=True)

    rows = []
    for result in results.values():
        achieved = flops["total"] * result.images_per_second
        rows.append({
            "precision": result.precision,
            "batch_size": result.batch_size,
            "images_per_second": result.images_per_second,
            "seconds_per_step_median": statistics.median(result.seconds_per_step),
            "seconds_per_step": result.seconds_per_step,
            "peak_memory_bytes": max(result.peak_memory_bytes),
            "achieved_tflops": achieved / 1e12,
            "mfu": achieved / (args.peak_tflops * 1e12) if args.peak_tflops else None,
            "load": result.load,
            "last_loss": result.losses[-1],
        })
    return {
        "device": str(device),
        "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
        "config": args.config,
        "threads": torch.get_num_threads() if device.type == "cpu" else None,
        "rss_before_model_bytes": rss_before_model,
        "flops_per_image": flops,
        "counted_flops_per_image": counted,
        "peak_tflops": args.peak_tflops,
        "results": rows,
    }


# ---------------------------------------------------------------------------------------------------- scaling part


LOG_PATTERN = re.compile(r"step (\d+) .*?images_per_second ([0-9.eE+-]+)")


def logged_throughputs(log: str) -> list[tuple[int, float]]:
    return [(int(step), float(rate)) for step, rate in LOG_PATTERN.findall(log)]


def run_training(world_size: int, threads: int, per_process_batch: int, args: argparse.Namespace, data: list[str],
                 work_dir: Path) -> dict[str, Any]:
    """One run of examples/pretrain_mcf.py over `world_size` local CPU processes; throughput from rank 0's log."""
    sys.path.insert(0, str(ROOT))
    try:
        from tests.launch_distributed import launch
    finally:
        sys.path.remove(str(ROOT))

    run_dir = Path(tempfile.mkdtemp(dir=work_dir))
    argv = [
        "benchmarks/bench_train.py", RUN_SCRIPT, str(threads), "examples/pretrain_mcf.py",
        "--output_dir", str(run_dir / "output"), "--config_overrides", config_overrides(args.scaling_config),
        "--random_teacher", "--cpu", "--seed", str(args.seed), "--max_steps", str(args.scaling_steps),
        "--logging_steps", str(args.scaling_logging_steps), "--per_device_train_batch_size", str(per_process_batch),
        "--learning_rate", "1e-4", "--dataloader_num_workers", str(args.scaling_workers),
        "--mixed_precision", args.scaling_mixed_precision, *data,
    ]
    load_before = os.getloadavg()[0]
    start = time.perf_counter()
    launch(argv, world_size, run_dir, timeout=600)
    wall = time.perf_counter() - start
    windows = logged_throughputs((run_dir / "rank0.log").read_text())
    measured = [rate for _, rate in windows[1:]]  # drop the first window: start-up and warm-up
    if not measured:
        raise RuntimeError(f"No throughput logged after the first window in {run_dir / 'rank0.log'}.")
    # every window holds the same number of images, so the overall rate is the harmonic mean of the window rates
    overall = len(measured) / sum(1 / rate for rate in measured)
    return {
        "processes": world_size, "threads_per_process": threads, "per_process_batch": per_process_batch,
        "images_per_second": overall, "window_rates": [rate for _, rate in windows], "wall_seconds": wall,
        "load_before": load_before, "load_after": os.getloadavg()[0],
    }


def run_scaling_part(args: argparse.Namespace) -> dict[str, Any]:
    from faceformers.data.streaming import resolve_train_files

    if args.tiny:
        data, data_name = ["--synthetic_num_samples", "64", "--synthetic_num_shards", "4"], "synthetic faces (tiny)"
    else:
        try:
            shards = resolve_train_files(args.train_files)
            data, data_name = ["--train_files", *args.train_files], f"{len(shards)} shards: {args.train_files}"
        except ValueError:
            print(f"  scaling: no shards match {args.train_files}; using the script's synthetic faces.")
            data, data_name = [], "synthetic faces (script default)"
    batch = args.scaling_global_batch
    setups = [(1, 2, batch), (2, 1, batch // 2)]  # (processes, threads per process, per-process batch)
    runs: dict[int, list[dict[str, Any]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory() as work_dir:
        for repeat in range(args.scaling_repeats):
            for processes, threads, per_process in setups if repeat % 2 == 0 else reversed(setups):
                run = run_training(processes, threads, per_process, args, data, Path(work_dir))
                runs[processes].append(run)
                print(f"  scaling {processes} process(es): {run['images_per_second']:.2f} img/s "
                      f"(wall {run['wall_seconds']:.1f} s, load {run['load_before']:.2f} -> {run['load_after']:.2f})",
                      flush=True)
    one = statistics.median(run["images_per_second"] for run in runs[1])
    two = statistics.median(run["images_per_second"] for run in runs[2])
    paired = [b["images_per_second"] / a["images_per_second"] for a, b in zip(runs[1], runs[2])]
    return {
        "config": args.scaling_config, "data": data_name, "global_batch": batch, "steps": args.scaling_steps,
        "logging_steps": args.scaling_logging_steps, "dataloader_workers": args.scaling_workers,
        "mixed_precision": args.scaling_mixed_precision,
        "images_per_second": {"1": one, "2": two}, "efficiency": two / one,
        "efficiency_paired": statistics.median(paired), "runs": runs,
    }


# -------------------------------------------------------------------------------------------------------- report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_report(metadata: dict[str, Any], step: dict[str, Any] | None, scaling: dict[str, Any] | None) -> str:
    lines = [f"`{metadata['command']}`", "",
             f"{metadata['date']} | {metadata['cpu']}, {metadata['cores']} cores | torch {metadata['torch']}, "
             f"transformers {metadata['transformers']}, accelerate {metadata['accelerate']}"]
    if step is not None:
        flops, counted = step["flops_per_image"], step["counted_flops_per_image"]
        where = step["gpu"] or f"CPU, {step['threads']} threads"
        title = f"Training step, {step['config']} config, {where}: {flops['total'] / 1e9:.3f} GFLOP/image (formula)"
        if counted:
            title += (f", {counted['without_recompute'] / 1e9:.3f} counted by torch without the attention recompute "
                      f"({counted['total'] / 1e9:.3f} with it)")
        lines += ["", title + "."]
        memory = "max allocated" if step["gpu"] else "peak RSS"
        if not step["gpu"] and step["rss_before_model_bytes"]:
            lines.append(f"Peak RSS is the whole process's: {step['rss_before_model_bytes'] / 2**20:.0f} MiB before "
                         "the model was built.")
        lines += ["", "| precision | batch | img/s | s/step | peak memory (MiB) | achieved GFLOP/s | MFU |",
                  "|:---|---:|---:|---:|---:|---:|---:|"]
        for row in step["results"]:
            mfu = f"{100 * row['mfu']:.1f} %" if row["mfu"] is not None else "-"
            lines.append(f"| {row['precision']} | {row['batch_size']} | {row['images_per_second']:.2f} | "
                         f"{row['seconds_per_step_median']:.3f} | {row['peak_memory_bytes'] / 2**20:.0f} ({memory}) | "
                         f"{row['achieved_tflops'] * 1e3:.1f} | {mfu} |")
    if scaling is not None:
        lines += ["", f"1 vs 2 CPU processes, {scaling['config']} config, global batch {scaling['global_batch']}, "
                      f"{scaling['steps']} steps (first {scaling['logging_steps']} dropped), {scaling['data']}:", "",
                  "| processes | threads each | batch each | img/s (median) | runs (img/s) |",
                  "|---:|---:|---:|---:|:---|"]
        for processes in (1, 2):
            runs = scaling["runs"][processes]
            lines.append(f"| {processes} | {runs[0]['threads_per_process']} | {runs[0]['per_process_batch']} | "
                         f"{scaling['images_per_second'][str(processes)]:.2f} | "
                         f"{', '.join('%.2f' % run['images_per_second'] for run in runs)} |")
        lines += ["", f"Scaling efficiency (2 processes / 1): {scaling['efficiency']:.3f} "
                      f"(paired per repetition: {scaling['efficiency_paired']:.3f})"]
    return "\n".join(lines)


def run_script(argv: list[str]) -> None:
    """Child mode: set the torch threads, then run a script as `__main__` (used by the scaling part)."""
    threads, script, *script_argv = argv
    torch.set_num_threads(int(threads))
    sys.argv = [script, *script_argv]
    runpy.run_path(script, run_name="__main__")


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    try:
        return run(args, argv)
    finally:
        torch.set_num_threads(threads)  # callers (tests) keep their thread count


def run(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    import accelerate

    metadata = {
        "command": shlex.join(["python", "benchmarks/bench_train.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "cpu": cpu_model(), "cores": available_cores(), "torch": torch.__version__,
        "transformers": transformers.__version__, "accelerate": accelerate.__version__,
        "python": platform.python_version(), "loadavg_start": os.getloadavg(),
    }
    step = run_step_part(args) if "step" in args.parts else None
    scaling = run_scaling_part(args) if "scaling" in args.parts else None
    metadata["loadavg_end"] = os.getloadavg()
    print(format_report(metadata, step, scaling))
    payload = {"metadata": metadata, "step": step, "scaling": scaling}
    if args.json is not None:
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return payload


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == RUN_SCRIPT:
        run_script(sys.argv[2:])
    else:
        main()
