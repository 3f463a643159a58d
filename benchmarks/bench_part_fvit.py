"""Embedding throughput of `PartFViTModel` against the authors' `ViT_face_landmark_patch8`.

The reference is the authors' model class, imported from a checkout given with `--original-repo`; nothing of it lives
in this repository. Two layouts are recognised:

* szlbiubiubiu/Part_fViT: `vit_pytorch_my/vit_face_withlandmark.py`. Its forward normalises inside
  (`x / 255 * 2 - 1`), so it gets raw 0..255 pixels and ours gets the same images already normalised that way;
* szlbiubiubiu/LAFS_CVPR2024: `face_pre_pro/ViT_face.py`. No normalisation inside: both models get the same
  normalised images (`x / 255 - 0.5`, the authors' evaluation convention).

Both need `einops` and `timm`; `IPython` (imported for `embed`) is replaced by a stub when it is not installed, and
`--extra-path` puts more folders (e.g. a site-packages holding einops) on `sys.path`. The original is built at the
released size (`num_patches=196, image_size=112, patch_size=8, dim=768, depth=12, heads=11, mlp_dim=2048`,
`with_land=True`, no margin head) with random seeded weights; its state dict goes through our converter's functions
(`infer_config_fields`, `convert_state_dict`) into `PartFViTModel`, and the embeddings are checked to agree
(max |diff| <= 1e-4) before anything is timed.

Timing as in `bench_mcf.py` / `bench_segface.py`: eval mode, `torch.inference_mode()`, fp32 or bf16 autocast, the two
models interleaved (alternating which goes first) in one process; throughput = batch / median seconds per forward.

    python benchmarks/bench_part_fvit.py --original-repo /path/to/Part_fViT          # fp32 and bf16, batch 32
    python benchmarks/bench_part_fvit.py --original-repo /path/to/Part_fViT --json out.json
    python benchmarks/bench_part_fvit.py                                              # ours only, no ratio
    python benchmarks/bench_part_fvit.py --tiny                                       # tiny ViT, seconds (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import json
import platform
import shlex
import sys
import types
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
import transformers
from torch import nn


sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench_mcf, also when this file is imported by the tests
from bench_mcf import (  # noqa: E402
    Result,
    available_cores,
    cpu_model,
    interleaved_order,
    precision_context,
    time_call,
)

from faceformers.models.part_fvit import PartFViTConfig, PartFViTModel  # noqa: E402
from faceformers.models.part_fvit.convert_part_fvit_to_hf import convert_state_dict, infer_config_fields  # noqa: E402


# (module file, module name, normalises inside) per checkout layout
LAYOUTS = {
    "part_fvit": (Path("vit_pytorch_my/vit_face_withlandmark.py"), "vit_pytorch_my.vit_face_withlandmark", True),
    "lafs": (Path("face_pre_pro/ViT_face.py"), "face_pre_pro.ViT_face", False),
}
# ViT shape in the original's argument names: the released Part fViT-B and a tiny one (same 112 px input, landmark CNN
# and 196 patches: the original hard-codes the 160-channel CNN and the `* 111` landmark scaling).
BASE_SHAPE = {"dim": 768, "depth": 12, "heads": 11, "dim_head": 64, "mlp_dim": 2048}
TINY_SHAPE = {"dim": 64, "depth": 2, "heads": 2, "dim_head": 32, "mlp_dim": 128}
IMAGE_SIZE, PATCH_SIZE, NUM_PATCHES = 112, 8, 196
DEFAULTS = {"batch_size": 32, "warmup": 1, "repeats": 5}
TINY_DEFAULTS = {"batch_size": 2, "warmup": 1, "repeats": 2}
TOLERANCE = 1e-4


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--original-repo", type=Path, help="a checkout of Part_fViT or LAFS_CVPR2024 (the reference)")
    parser.add_argument(
        "--extra-path", type=Path, action="append", default=[], help="prepend to sys.path (e.g. for einops); repeatable"
    )
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--batch-size", type=int, help=f"images per forward (default: {DEFAULTS['batch_size']})")
    parser.add_argument("--warmup", type=int, help=f"untimed forwards per model and setting ({DEFAULTS['warmup']})")
    parser.add_argument("--repeats", type=int, help=f"timed forwards per model and setting ({DEFAULTS['repeats']})")
    parser.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0, help="seed of the random weights and images (default: 0)")
    parser.add_argument("--tiny", action="store_true", help="tiny ViT (2 blocks of width 64) and few iterations")
    parser.add_argument("--json", type=Path, help="also write the metadata and all timings to this file")
    args = parser.parse_args(argv)
    for name, value in (TINY_DEFAULTS if args.tiny else DEFAULTS).items():
        if getattr(args, name) is None:
            setattr(args, name, value)
    args.layout = None
    if args.original_repo is not None:
        args.layout = next((k for k, v in LAYOUTS.items() if (args.original_repo / v[0]).is_file()), None)
        if args.layout is None:
            expected = " nor ".join(str(module_file) for module_file, _, _ in LAYOUTS.values())
            parser.error(f"--original-repo {args.original_repo} has neither {expected}")
    if args.warmup < 0 or min(args.repeats, args.batch_size, args.threads) < 1:
        parser.error("--warmup must be >= 0; --repeats, --batch-size and --threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def import_original(repo: Path, layout: str, extra_paths: Sequence[Path]):
    """The original module holding `ViT_face_landmark_patch8` (`IPython` stubbed when missing: only `embed` is used)."""
    for path in reversed(extra_paths):
        sys.path.insert(0, str(path))
    try:
        importlib.import_module("IPython")
    except ImportError:
        stub = types.ModuleType("IPython")
        stub.embed = lambda *args, **kwargs: None
        stub.get_ipython = lambda: None
        sys.modules["IPython"] = stub
    sys.path.insert(0, str(repo))
    return importlib.import_module(LAYOUTS[layout][1])


def our_config(shape: dict[str, int], **fields: Any) -> PartFViTConfig:
    config = PartFViTConfig(
        hidden_size=shape["dim"],
        num_hidden_layers=shape["depth"],
        num_attention_heads=shape["heads"],
        head_dim=shape["dim_head"],
        intermediate_size=shape["mlp_dim"],
        image_size=IMAGE_SIZE,
        patch_size=PATCH_SIZE,
        num_patches=NUM_PATCHES,
        attn_implementation="sdpa",
        **fields,
    )
    return config


class OriginalForward(nn.Module):
    """`model(images)` returns the embeddings (the original's plain inference call)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values)


class OursForward(nn.Module):
    def __init__(self, model: PartFViTModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values).embeddings


def build_models(args: argparse.Namespace, original_module) -> dict[str, nn.Module]:
    shape = TINY_SHAPE if args.tiny else BASE_SHAPE
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    if original_module is None:
        ours = PartFViTModel(our_config(shape)).eval()
        check_sdpa(ours)
        return {"ours": OursForward(ours).to(device)}

    original = original_module.ViT_face_landmark_patch8(
        loss_type="None", GPU_ID=None, num_class=1, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE,
        num_patches=NUM_PATCHES, dropout=0.1, emb_dropout=0.1, with_land=True, **shape,
    ).eval()  # fmt: skip
    state_dict = original.state_dict()
    fields = infer_config_fields(state_dict, head_dim=shape["dim_head"])
    fields.pop("_landmark_block_shapes", None)
    config = our_config(shape, **{k: v for k, v in fields.items() if k in ("qkv_bias", "landmark_block_config")})
    for name, value in fields.items():  # what the converter reads off the tensors matches what we built
        if name != "landmark_block_config" and getattr(config, name) != value:
            raise RuntimeError(f"config.{name} = {getattr(config, name)}, the original's tensors say {value}")
    ours = PartFViTModel(config).eval()
    converted = {k.removeprefix("part_fvit."): v for k, v in convert_state_dict(state_dict, config).items()}
    ours.load_state_dict(converted, strict=True)
    check_sdpa(ours)
    return {"ours": OursForward(ours).to(device), "reference": OriginalForward(original).to(device)}


def check_sdpa(model: PartFViTModel) -> None:
    if model.config._attn_implementation != "sdpa":
        raise RuntimeError(f"PartFViTModel uses {model.config._attn_implementation!r} attention, not SDPA")


def make_inputs(batch_size: int, seed: int, layout: str | None, device: torch.device) -> dict[str, torch.Tensor]:
    """0..255 images; ours gets them normalised, the original what its forward expects (see the module docstring)."""
    generator = torch.Generator().manual_seed(seed)
    raw = torch.randint(0, 256, (batch_size, 3, IMAGE_SIZE, IMAGE_SIZE), generator=generator).float()
    if layout is not None and LAYOUTS[layout][2]:  # the Part_fViT copy computes x / 255 * 2 - 1 itself
        ours, reference = raw / 255 * 2 - 1, raw
    else:
        ours = reference = raw / 255 - 0.5
    return {"ours": ours.to(device), "reference": reference.to(device)}


@torch.inference_mode()
def check_same_embeddings(models: dict[str, nn.Module], layout: str, device: torch.device) -> float:
    inputs = make_inputs(2, 1, layout, device)
    difference = float((models["ours"](inputs["ours"]) - models["reference"](inputs["reference"])).abs().max())
    if not difference <= TOLERANCE:
        raise RuntimeError(f"Our embeddings differ from the original's by {difference:.2e} (> {TOLERANCE:g}).")
    return difference


def call(model: nn.Module, pixel_values: torch.Tensor) -> Callable[[], Any]:
    return lambda: model(pixel_values)  # neither model writes into its input


def benchmark(models: dict[str, nn.Module], precision: str, args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    inputs = make_inputs(args.batch_size, args.seed, args.layout, device)
    forwards = {name: call(model, inputs[name]) for name, model in models.items()}
    result = Result(image_size=IMAGE_SIZE, precision=precision, batch_size=args.batch_size)
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
    return {
        "command": shlex.join(["python", "benchmarks/bench_part_fvit.py", *(sys.argv[1:] if argv is None else argv)]),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_model()}, {args.threads} threads",
        "config": "tiny" if args.tiny else "Part fViT-B",
        "original": args.layout,
        "batch_size": args.batch_size,
        "image_size": IMAGE_SIZE,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "seed": args.seed,
    }


def result_dict(result: Result) -> dict[str, Any]:
    """`Result.to_dict`, also without reference timings (ours alone)."""
    if result.reference_seconds:
        return result.to_dict()
    return {**asdict(result), "ours_images_per_second": result.ours_throughput}


def format_row(result: Result) -> str:
    ours = f"{result.ours_throughput:.2f}"
    if not result.reference_seconds:
        return f"| {result.precision} | {ours} | - | - | - |"
    return (
        f"| {result.precision} | {ours} | {result.reference_throughput:.2f} | {result.ratio:.3f} | "
        f"{result.paired_ratio:.3f} |"
    )


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    original_module = import_original(args.original_repo, args.layout, args.extra_path) if args.layout else None
    info = metadata(args, argv)
    models = build_models(args, original_module)
    if "reference" in models:
        info["max_embedding_difference"] = check_same_embeddings(models, args.layout, torch.device(args.device))
    results = [benchmark(models, precision, args) for precision in args.precisions]

    reference = {"part_fvit": "Part_fViT copy", "lafs": "LAFS copy", None: "none"}[args.layout]
    print(f"`{info['command']}`\n")
    print(
        f"{info['date']} | {info['config']} @ {IMAGE_SIZE} px, batch {args.batch_size}, median of {args.repeats} "
        f"(warmup {args.warmup}) | original: {reference}"
        + (f" (max |emb diff| {info['max_embedding_difference']:.1e})" if "max_embedding_difference" in info else "")
        + f" | {info['device']} | torch {info['torch']}, transformers {info['transformers']}\n"
    )
    print("| precision | ours img/s | original img/s | ours / original | paired |")
    print("|:---|---:|---:|---:|---:|")
    for result in results:
        print(format_row(result))
    if args.json is not None:
        payload = {"metadata": info, "results": [result_dict(result) for result in results]}
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
