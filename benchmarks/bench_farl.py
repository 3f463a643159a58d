"""Image+text forward throughput of `FaRLModel` against transformers' `CLIPModel` of the same dimensions.

Both models get the same random (seeded) weights (FaRL's parameters have CLIP's names), SDPA attention, eval mode and
`torch.inference_mode()`; each call embeds `batch_size` images and `batch_size` captions padded to 77 tokens and
returns `logits_per_image`. Timing as in `bench_mcf.py`: the two models interleaved in one process, alternating which
goes first; throughput = image-text pairs / median seconds per forward.

    python benchmarks/bench_farl.py                       # FaRL-Base (ViT-B/16 + CLIP text), fp32 and bf16 autocast
    python benchmarks/bench_farl.py --json /tmp/farl.json # also every timing as JSON
    python benchmarks/bench_farl.py --tiny                # tiny towers, a few seconds (smoke test)
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
import transformers
from bench_mcf import Result, available_cores, cpu_model, interleaved_order, precision_context, time_call
from torch import nn
from transformers import CLIPConfig, CLIPModel

from faceformers import FaRLConfig, FaRLModel


TINY = {
    "text_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2},
    "vision_config": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 2,
                      "image_size": 32, "patch_size": 8},
    "projection_dim": 16,
}  # fmt: skip


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch-size", type=int, default=8, help="image-text pairs per forward (default: 8)")
    parser.add_argument("--precisions", nargs="+", choices=("fp32", "bf16"), default=["fp32", "bf16"])
    parser.add_argument("--warmup", type=int, default=2, help="untimed forwards per model and setting (default: 2)")
    parser.add_argument("--repeats", type=int, default=7, help="timed forwards per model and setting (default: 7)")
    parser.add_argument("--threads", type=int, default=available_cores(), help="torch threads (default: all cores)")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tiny", action="store_true", help="tiny towers (smoke test)")
    parser.add_argument("--json", type=Path, help="also write the metadata and all timings to this file")
    args = parser.parse_args(argv)
    if args.warmup < 0 or min(args.repeats, args.batch_size, args.threads) < 1:
        parser.error("--warmup must be >= 0; --repeats, --batch-size and --threads must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda but CUDA is not available")
    return args


def build_models(args: argparse.Namespace) -> dict[str, nn.Module]:
    """FaRLModel and a CLIPModel with the same dimensions and the same weights, SDPA attention, eval mode."""
    torch.manual_seed(args.seed)
    ours = FaRLModel(FaRLConfig(**(TINY if args.tiny else {}), attn_implementation="sdpa")).eval()
    config = ours.config
    reference = CLIPModel(
        CLIPConfig(
            text_config=config.text_config.to_dict(),
            vision_config=config.vision_config.to_dict(),
            projection_dim=config.projection_dim,
            attn_implementation="sdpa",
        )
    ).eval()
    reference.load_state_dict(ours.state_dict(), strict=True)
    device = torch.device(args.device)
    return {"ours": ours.to(device), "reference": reference.to(device)}


def make_inputs(config: FaRLConfig, batch_size: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Captions of 10..40 tokens padded to the context length (as a data loader with max_length padding gives)."""
    generator = torch.Generator().manual_seed(seed)
    text = config.text_config
    input_ids = torch.zeros(batch_size, text.max_position_embeddings, dtype=torch.long)
    attention_mask = torch.zeros_like(input_ids)
    for row in range(batch_size):
        length = int(torch.randint(10, 41, (), generator=generator))
        input_ids[row, :length] = torch.randint(1, text.vocab_size - 2, (length,), generator=generator)
        input_ids[row, 0], input_ids[row, length - 1] = text.bos_token_id, text.eos_token_id
        attention_mask[row, :length] = 1
    size = config.vision_config.image_size
    pixel_values = torch.randn(batch_size, 3, size, size, generator=generator)
    inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "pixel_values": pixel_values}
    return {key: value.to(device) for key, value in inputs.items()}


def benchmark(models: dict[str, nn.Module], inputs: dict, precision: str, args: argparse.Namespace) -> Result:
    device = torch.device(args.device)
    result = Result(image_size=inputs["pixel_values"].shape[-1], precision=precision, batch_size=args.batch_size)
    timings = {"ours": result.ours_seconds, "reference": result.reference_seconds}
    forwards = {name: (lambda model=model: model(**inputs).logits_per_image) for name, model in models.items()}
    with torch.inference_mode():  # same function first (fp32)
        torch.testing.assert_close(forwards["ours"](), forwards["reference"](), rtol=1e-4, atol=1e-4)
    with torch.inference_mode(), precision_context(precision, device):
        for repeats, record in ((args.warmup, False), (args.repeats, True)):
            for order in interleaved_order(repeats):
                for name in order:
                    seconds = time_call(forwards[name], device)
                    if record:
                        timings[name].append(seconds)
    return result


def main(argv: Sequence[str] | None = None) -> list[Result]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    models = build_models(args)
    inputs = make_inputs(models["ours"].config, args.batch_size, args.seed, torch.device(args.device))
    results = [benchmark(models, inputs, precision, args) for precision in args.precisions]

    command = shlex.join(["python", "benchmarks/bench_farl.py", *(sys.argv[1:] if argv is None else argv)])
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"{cpu_model()}, {args.threads} threads"
    date = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    print(f"`{command}`\n\n{date} | {'tiny' if args.tiny else 'FaRL-Base'}, batch {args.batch_size}, median of "
          f"{args.repeats} (warmup {args.warmup}) | {device} | torch {torch.__version__}, transformers {transformers.__version__}\n")
    print("| precision | FaRLModel pairs/s | CLIPModel pairs/s | FaRL / CLIP | paired |\n|:---|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r.precision} | {r.ours_throughput:.2f} | {r.reference_throughput:.2f} | {r.ratio:.3f} | {r.paired_ratio:.3f} |")
    if args.json is not None:
        payload = {"command": command, "date": date, "device": device, "python": platform.python_version(),
                   "results": [r.to_dict() for r in results]}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
