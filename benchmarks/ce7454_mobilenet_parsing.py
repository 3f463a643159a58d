"""SegFace with a MobileNetV3-Large backbone on the CE7454 CelebAMask-HQ dev release: train on 160 images, report the
dataset-level mean F1 (classes 1..18, SegFace protocol) on the other 40. A script, not run in CI.

    python benchmarks/ce7454_mobilenet_parsing.py --steps 2000 --batch_size 8 --image_size 256

* Data: `faceformers.data.face_parsing_datasets.ce7454_shards` on `realdata/celebamask_hq_ce7454_parsing/dev_200`:
  masks converted from order B to order A (SegFace's), left/right classes swapped back on the 12 mirrored rows. The
  release defines no split; `ce7454_split_rows` takes the last 40 rows of `index.csv` (sorted by random hex names)
  as the eval set and the first 160 as the training set.
* Model: `SegFaceConfig.for_dataset("celebamask_hq", backbone="mobilenet_v3_large", image_size=256)`, **randomly
  initialised**: no ImageNet weights are available offline, whereas SegFace fine-tunes from ImageNet. Expect far
  lower scores than the paper's.
* Recipe: AdamW (lr 1e-4, weight decay 1e-5), loss 0.5 CE + 0.5 Dice (in the model), no augmentation (SegFace trains
  CelebAMask-HQ without). A minimal loop rather than `examples/train_face_parsing.py`: that script takes file
  patterns (`--train_files`) read by the generic readers, which cannot pair the CE7454 images with their masks, remap
  the label order or fix the mirrored rows.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from faceformers.data.face_parsing_datasets import ce7454_shards
from faceformers.data.parsing import FaceParsingTransform
from faceformers.data.streaming import read_shard
from faceformers.metrics.face_parsing import FaceParsingAccumulator
from faceformers.models.segface import SegFaceConfig, SegFaceForSemanticSegmentation


DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "realdata" / "celebamask_hq_ce7454_parsing" / "dev_200"
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def load_split(root: Path, split: str, num_eval: int, transform) -> tuple[torch.Tensor, torch.Tensor]:
    samples = [transform(record) for shard in ce7454_shards(root, split, num_eval=num_eval) for record in read_shard(shard)]
    return torch.stack([s["pixel_values"] for s in samples]), torch.stack([s["labels"] for s in samples])


@torch.no_grad()
def evaluate(model, pixels: torch.Tensor, labels: torch.Tensor, batch_size: int, device) -> dict[str, float]:
    model.eval()
    accumulator = FaceParsingAccumulator(model.config.num_labels)
    for start in range(0, len(pixels), batch_size):
        logits = model(pixels[start : start + batch_size].to(device)).logits
        accumulator.update(logits.argmax(1).cpu().numpy(), labels[start : start + batch_size].numpy())
    model.train()
    return accumulator.compute(id2label=model.config.id2label)


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--num_eval", type=int, default=40)
    parser.add_argument("--image_size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--learning_rate", type=float, default=1e-4)
    parser.add_argument("--weight_decay", type=float, default=1e-5)
    parser.add_argument("--eval_every", type=int, default=0, help="also evaluate every N steps (0: only at the end)")
    parser.add_argument("--seed", type=int, default=32)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--output_json", type=Path, default=None)
    args = parser.parse_args(argv)

    torch.manual_seed(args.seed)
    device = torch.device(args.device)
    transform = FaceParsingTransform(args.image_size, IMAGENET_MEAN, IMAGENET_STD, num_labels=19)
    train_pixels, train_labels = load_split(args.data_root, "train", args.num_eval, transform)
    eval_pixels, eval_labels = load_split(args.data_root, "eval", args.num_eval, transform)
    print(f"train {len(train_pixels)} / eval {len(eval_pixels)} images at {args.image_size}px")

    config = SegFaceConfig.for_dataset("celebamask_hq", backbone="mobilenet_v3_large", image_size=args.image_size)
    model = SegFaceForSemanticSegmentation(config).to(device).train()  # random init: no ImageNet weights offline
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(args.seed)

    start, order, cursor = time.time(), torch.randperm(len(train_pixels), generator=generator), 0
    for step in range(1, args.steps + 1):
        if cursor + args.batch_size > len(order):  # a new epoch, reshuffled
            order, cursor = torch.randperm(len(train_pixels), generator=generator), 0
        index = order[cursor : cursor + args.batch_size]
        cursor += args.batch_size
        loss = model(train_pixels[index].to(device), labels=train_labels[index].to(device)).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if not math.isfinite(loss.item()):
            raise RuntimeError(f"Non-finite loss at step {step}.")
        if step % 50 == 0 or step == 1 or step == args.steps:
            print(f"step {step} loss {loss.item():.4f} ({time.time() - start:.0f}s)", flush=True)
        if args.eval_every and step % args.eval_every == 0 and step != args.steps:
            print(f"step {step} eval mean_f1 {evaluate(model, eval_pixels, eval_labels, args.batch_size, device)['mean_f1']:.4f}")

    scores = evaluate(model, eval_pixels, eval_labels, args.batch_size, device)
    scores = {key: float(value) for key, value in scores.items() if np.isscalar(value)}
    print(json.dumps({"steps": args.steps, "mean_f1": scores["mean_f1"], "seconds": round(time.time() - start)}))
    print({key: round(value, 4) for key, value in scores.items() if key.startswith("f1_")})
    if args.output_json:
        args.output_json.write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()}, "scores": scores}, indent=2))
    return scores


if __name__ == "__main__":
    main()
