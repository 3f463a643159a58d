"""Evaluate a face parser with the SegFace protocol: one confusion matrix over the whole evaluation set, at the
processor's resolution (ORIGINALS.md §6.5), per-class F1 / IoU, mean F1 (foreground classes), mIoU (all classes),
and for 11-class LaPa / Helen-style label sets Helen's merged scores (eyes, brows, nose, mouth, skin, overall).

    python examples/evaluate_face_parsing.py --model_name_or_path runs/segface-helen \
        --eval_files "/data/helen/test-*.tar" --label_field mask_helen

Without --eval_files it evaluates on synthetic faces (`--synthetic_seed`), using the label map matching the model's
classes (`mask` for 19 classes, `mask_lapa` for 11, or --label_field). Multi-process runs (`accelerate launch`) split
the shards and sum the confusion matrices.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

import faceformers  # noqa: F401 - registers SegFace with the Auto classes
from faceformers.data.labels import HELEN_LABELS
from faceformers.data.parsing import SYNTHETIC_LABEL_FIELDS, FaceParsingTransform, evaluation_batches
from faceformers.data.streaming import resolve_train_files, synthetic_shards
from faceformers.metrics.face_parsing import FaceParsingAccumulator, helen_overall_f1
from faceformers.training import parse_arguments


logger = logging.getLogger("evaluate_face_parsing")


@dataclass
class EvaluationArguments:
    model_name_or_path: str = field(metadata={"help": "Folder or Hub id with the model and its image processor."})
    eval_files: list[str] | None = field(
        default=None, metadata={"help": "Glob patterns of .tar / .parquet / folder shards (default: synthetic faces).", "nargs": "+"}
    )
    label_field: str | None = field(default=None, metadata={"help": "Label map field (synthetic: mask / mask_lapa / mask_helen)."})
    synthetic_num_samples: int = field(default=256, metadata={"help": "Synthetic evaluation faces."})
    synthetic_seed: int = field(default=1000, metadata={"help": "Seed of the synthetic evaluation faces."})
    per_device_eval_batch_size: int = 16
    output_file: str | None = field(default=None, metadata={"help": "Also write the scores to this JSON file."})
    cpu: bool = field(default=False, metadata={"help": "Evaluate on CPU even if an accelerator is present."})

    def __post_init__(self):
        if self.synthetic_num_samples < 1 or self.per_device_eval_batch_size < 1:
            raise ValueError(
                f"--synthetic_num_samples ({self.synthetic_num_samples}) and --per_device_eval_batch_size "
                f"({self.per_device_eval_batch_size}) must be >= 1."
            )


def format_table(scores: dict[str, float], names: list[str], merged: dict[str, float] | None) -> str:
    """The paper's per-class table: class, F1, IoU; then mean F1 / mIoU and Helen's merged F1 scores."""
    width = max(len(name) for name in [*names, "mean F1 (fg)"]) + 2
    lines = [f"{'class':<{width}}{'F1':>8}{'IoU':>8}", "-" * (width + 16)]
    for name in names:
        lines.append(f"{name:<{width}}{100 * scores[f'f1_{name}']:>8.2f}{100 * scores[f'iou_{name}']:>8.2f}")
    lines += ["-" * (width + 16), f"{'mean F1 (fg)':<{width}}{100 * scores['mean_f1']:>8.2f}", f"{'mIoU':<{width}}{'':>8}{100 * scores['mean_iou']:>8.2f}"]
    if merged:
        lines.append("Helen merged F1: " + "  ".join(f"{group} {100 * value:.2f}" for group, value in merged.items()))
    return "\n".join(lines)


@torch.no_grad()
def main(argv: list[str] | None = None) -> dict[str, float]:
    from accelerate import Accelerator
    from transformers import AutoImageProcessor, AutoModelForSemanticSegmentation

    (args,) = parse_arguments((EvaluationArguments,), argv)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    accelerator = Accelerator(cpu=args.cpu)

    model = AutoModelForSemanticSegmentation.from_pretrained(args.model_name_or_path).to(accelerator.device).eval()
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
    num_labels = model.config.num_labels
    names = [model.config.id2label[i] for i in range(num_labels)]
    label_field = args.label_field or ("mask" if num_labels == 19 else "mask_lapa")
    if args.eval_files:
        shards = resolve_train_files(args.eval_files)
    else:
        if label_field not in SYNTHETIC_LABEL_FIELDS or (label_field == "mask") != (num_labels == 19):
            raise ValueError(f"Synthetic label map {label_field!r} does not match the model's {num_labels} classes.")
        size = processor.size["height"]
        shards = synthetic_shards(args.synthetic_num_samples, 8, seed=args.synthetic_seed, image_size=size)
    transform = FaceParsingTransform.from_image_processor(processor, label_field=label_field, num_labels=num_labels)
    ignore_index = getattr(model.config, "semantic_loss_ignore_index", 255)

    accumulator, skipped, images = FaceParsingAccumulator(num_labels, ignore_index=ignore_index), Counter(), 0
    batches = evaluation_batches(
        shards, transform, args.per_device_eval_batch_size, accelerator.process_index, accelerator.num_processes, skipped
    )
    for batch in batches:
        logits = model(pixel_values=batch["pixel_values"].to(accelerator.device)).logits
        if logits.shape[-2:] != batch["labels"].shape[-2:]:  # SegFace: bilinear to the (resized) label size
            logits = F.interpolate(logits.float(), size=batch["labels"].shape[-2:], mode="bilinear", align_corners=False)
        accumulator.update(logits.argmax(1).cpu(), batch["labels"])
        images += len(batch["labels"])
    totals = torch.tensor([images, sum(skipped.values())], device=accelerator.device)
    accumulator.confusion = accelerator.reduce(torch.from_numpy(accumulator.confusion).to(accelerator.device), "sum").cpu().numpy()
    images, num_skipped = accelerator.reduce(totals, "sum").tolist()

    scores = accumulator.compute(id2label=names)
    merged = helen_overall_f1(accumulator, names) if tuple(names) == HELEN_LABELS else None
    if merged:
        scores.update({f"helen_{group}_f1": value for group, value in merged.items()})
    scores.update(num_images=images, num_skipped=num_skipped)
    if accelerator.is_main_process:
        print(f"{args.model_name_or_path}: {images} images ({num_skipped} skipped), labels {label_field!r}")
        print(format_table(scores, names, merged))
        if args.output_file:
            Path(args.output_file).write_text(json.dumps(scores, indent=1))
    return scores


if __name__ == "__main__":
    main()
