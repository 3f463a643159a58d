"""Inference throughput of `SegFaceForSemanticSegmentation` against the authors' SegFace implementation.

The reference is the authors' model class (`network/models/segface_celeb.py` of Kartik-3004/SegFace), imported from a
checkout you point to with `--original-repo`; nothing of it lives in this repository. Both models get the same
weights: the original is built with random (seeded) weights, its state dict goes through our converter
(`convert_state_dict`) into ours, and the logits are checked to agree (max |diff| <= 1e-4) before anything is timed.
The original's torchvision builders are called with `weights=None` (its code asks for ImageNet weights, a download).

Timing as in `bench_mcf.py`: eval mode, `torch.inference_mode()`, fp32 or bf16 autocast, the two models interleaved
(alternating which goes first) in one process; throughput = batch / median seconds per forward.

    python benchmarks/bench_segface.py --original-repo /path/to/SegFace                  # Swin-B and MobileNetV3 @ 512
    python benchmarks/bench_segface.py --original-repo /path/to/SegFace --json out.json  # also every timing as JSON
    python benchmarks/bench_segface.py                                                   # ours only, no ratio
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
import transformers
from bench_mcf import Result, available_cores, cpu_model, interleaved_order, precision_context, time_call
from torch import nn

from faceformers.models.segface import SegFaceForSemanticSegmentation
from faceformers.models.segface.convert_segface_to_hf import convert_state_dict, resolve_config


# Our backbone name -> (the original's model name, the released variant whose config we use).
BACKBONES = {
    "swin_b": ("swin_base", "swinb_celeba_512"),
    "mobilenet_v3_large": ("mobilenet", "mobilenet_celeba_512"),
}
TORCHVISION_BUILDERS = ("swin_b", "swin_v2_b", "convnext_base", "convnext_small", "mobilenet_v3_large",
                        "efficientnet_v2_m", "resnet101")  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original-repo", type=Path, help="a checkout of Kartik-3004/SegFace (the reference)")
    parser.add_argument("--backbones", nargs="+", choices=list(BACKBONES), default=list(BACKBONES))
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--image-size", type=int, default=512, help="input resolution in px (default: 512)")
    parser.add_argument("--batch-size", type=int, default=4, help="images per forward (default: 4)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed forwards per model and setting (default: 1)")
    parser.add_argument("--repeats", type=int, default=5, help="timed forwards per model and setting (default: 5)")
    parser.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the metadata and all timings to this file")
    args = parser.parse_args(argv)
    if args.original_repo is not None and not (args.original_repo / "network" / "models" / "segface_celeb.py").is_file():
        parser.error(f"--original-repo {args.original_repo} has no network/models/segface_celeb.py")
    if args.warmup < 0 or min(args.repeats, args.batch_size, args.threads) < 1:
        parser.error("--warmup must be >= 0; --repeats, --batch-size and --threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def import_original(repo: Path):
    """The original `segface_celeb` module, its torchvision builders made to skip the ImageNet download."""
    sys.path.insert(0, str(repo))
    module = importlib.import_module("network.models.segface_celeb")
    for name in TORCHVISION_BUILDERS:
        if hasattr(module, name):
            builder = getattr(module, name)
            setattr(module, name, lambda *args, _builder=builder, **kwargs: _builder(weights=None))
    return module


class OriginalForward(nn.Module):
    """Calls the original model the way its test script does: `model(images, labels, dataset_ids)`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        batch = pixel_values.shape[0]
        landmarks = torch.zeros(batch, 5, 2, device=pixel_values.device)  # unused by the CelebAMask-HQ model
        dataset = torch.zeros(batch, dtype=torch.long, device=pixel_values.device)
        return self.model(pixel_values, {"lnm_seg": landmarks}, dataset)


def build_models(backbone: str, args: argparse.Namespace, original_module) -> dict[str, nn.Module]:
    original_name, variant = BACKBONES[backbone]
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if original_module is None:
        config = resolve_config(variant, {})
        config.image_size = args.image_size
        return {"ours": SegFaceForSemanticSegmentation(config).to(device).eval()}

    original = original_module.SegFaceCeleb(args.image_size, original_name).eval()
    state_dict = original.state_dict()
    config = resolve_config(variant, state_dict)
    config.image_size = args.image_size
    ours = SegFaceForSemanticSegmentation(config).eval()
    ours.load_state_dict(convert_state_dict(state_dict, backbone, "celebamask_hq"), strict=True)
    models = {"ours": ours.to(device), "reference": OriginalForward(original).to(device)}
    check_same_logits(models, args.image_size, device)
    return models


@torch.no_grad()
def check_same_logits(models: dict[str, nn.Module], image_size: int, device: torch.device) -> None:
    pixel_values = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(1)).to(device)
    difference = float((models["ours"](pixel_values.clone()).logits - models["reference"](pixel_values.clone())).abs().max())
    if difference > 1e-4:
        raise RuntimeError(f"The converted model's logits differ from the original's by {difference:.2e} (> 1e-4).")


def call(model: nn.Module, pixel_values: torch.Tensor):
    return lambda: model(pixel_values.clone())  # the original may write into its input; both pay the same copy


def benchmark(models: dict[str, nn.Module], precision: str, args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    generator = torch.Generator().manual_seed(args.seed)
    pixel_values = torch.randn(args.batch_size, 3, args.image_size, args.image_size, generator=generator).to(device)
    forwards = {name: call(model, pixel_values) for name, model in models.items()}
    result = Result(image_size=args.image_size, precision=precision, batch_size=args.batch_size)
    timings = {"ours": result.ours_seconds, "reference": result.reference_seconds}
    with torch.inference_mode(), precision_context(precision, device):
        for repeats, record in ((args.warmup, False), (args.repeats, True)):
            for order in interleaved_order(repeats):
                for name in (name for name in order if name in forwards):
                    seconds = time_call(forwards[name], device)
                    if record:
                        timings[name].append(seconds)
    return result


def metadata(args: argparse.Namespace, argv: Sequence[str] | None) -> dict[str, Any]:
    info = {
        "command": shlex.join(["python", "benchmarks/bench_segface.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_model()}, {args.threads} threads",
        "batch_size": args.batch_size,
        "image_size": args.image_size,
        "warmup": args.warmup,
        "repeats": args.repeats,
    }
    return info


def format_row(backbone: str, result: Result) -> str:
    ours = f"{result.ours_throughput:.2f}"
    if not result.reference_seconds:
        return f"| {backbone} | {result.precision} | {ours} | - | - | - |"
    return (
        f"| {backbone} | {result.precision} | {ours} | {result.reference_throughput:.2f} | "
        f"{result.ratio:.3f} | {result.paired_ratio:.3f} |"
    )


def main(argv: Sequence[str] | None = None) -> dict[str, list[Result]]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    original_module = import_original(args.original_repo) if args.original_repo else None
    info = metadata(args, argv)
    results: dict[str, list[Result]] = {}
    for backbone in args.backbones:
        models = build_models(backbone, args, original_module)
        results[backbone] = [benchmark(models, precision, args) for precision in args.precisions]
        del models

    print(f"`{info['command']}`\n")
    print(f"{info['date']} | {args.image_size} px, batch {args.batch_size}, median of {args.repeats} "
          f"(warmup {args.warmup}) | {info['device']} | torch {info['torch']}, transformers {info['transformers']}\n")
    print("| backbone | precision | ours img/s | original img/s | ours / original | paired |")
    print("|:---|:---|---:|---:|---:|---:|")
    for backbone, rows in results.items():
        for result in rows:
            print(format_row(backbone, result))
    if args.json is not None:
        payload = {"metadata": info, "results": {k: [r.to_dict() for r in v] for k, v in results.items()}}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
