"""Face-parsing training (SegFace recipe) with Accelerate on streamed images + label maps.

    accelerate launch examples/train_face_parsing.py --output_dir runs/segface-celeba \
        --dataset_preset celebamask_hq --backbone swin_b --image_size 512 \
        --train_files "/data/celebamask-hq/train-*.tar" --eval_files "/data/celebamask-hq/test-*.tar" \
        --per_device_train_batch_size 4 --max_steps 225000 --eval_steps 15000 --checkpointing_steps 5000

Any `AutoModelForSemanticSegmentation` model works through `--model_name_or_path` (a folder or Hub id) or
`--config_name`; `--dataset_preset {celebamask_hq,lapa,helen}` + `--backbone` (a torchvision name, `timm:<name>` or a
JSON backbone_config) + `--image_size` + `--config_overrides` builds a new SegFace. Label maps come with the images
(see `faceformers.data.parsing` for the field convention); without --dataset_name / --train_files it trains on
synthetic faces with the preset's label set, and evaluates on synthetic faces of another seed.

Defaults are the paper's recipe (ORIGINALS.md §6.6): AdamW over all parameters, lr 1e-4, weight decay 1e-5, betas
(0.9, 0.999), no warm-up, lr x 0.1 at 80/300 and 200/300 of the run (`--lr_decay_steps`), loss 0.5 CE + 0.5 Dice (in the
model). CelebAMask-HQ and Helen train without augmentation, LaPa with the random affine transform (`--augment`).
The run is deterministic and resumable like `pretrain_mcf.py`.
"""

from __future__ import annotations

import bisect
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import faceformers  # noqa: F401 - registers SegFace with the Auto classes
from faceformers.data.parsing import SYNTHETIC_LABEL_FIELDS, FaceParsingTransform, evaluation_batches
from faceformers.data.streaming import resolve_train_files, synthetic_shards
from faceformers.metrics.face_parsing import FaceParsingAccumulator
from faceformers.models.segface import SegFaceConfig, SegFaceImageProcessor
from faceformers.models.segface.configuration_segface import DATASET_LABELS
from faceformers.training import (
    CheckpointManager,
    DataArguments,
    OptimizationArguments,
    Throughput,
    apply_config_overrides,
    build_accelerator,
    build_batcher,
    check_finite,
    micro_step,
    parse_arguments,
    push_folder_to_hub,
    setup_logging,
)


logger = logging.getLogger("train_face_parsing")
PRESET_LABEL_FIELDS = {"celebamask_hq": "mask", "lapa": "mask_lapa", "helen": "mask_helen"}


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "An AutoModelForSemanticSegmentation checkpoint (folder or Hub id) to fine-tune."}
    )
    config_name: str | None = field(default=None, metadata={"help": "A config (folder, Hub id or config.json) to train from scratch."})
    dataset_preset: str | None = field(
        default=None, metadata={"help": "New SegFace with the label set of celebamask_hq (default), lapa or helen."}
    )
    backbone: str = field(default="swin_b", metadata={"help": "torchvision name, 'timm:<name>' or a JSON backbone_config."})
    image_size: int = field(default=512, metadata={"help": "Training / evaluation resolution of a new SegFace."})
    config_overrides: str | None = field(
        default=None,
        metadata={"help": "Comma-separated overrides of a new model's config, e.g. 'decoder_hidden_size=64,num_pos_feats=32'."},
    )

    def __post_init__(self):
        if self.model_name_or_path and self.config_name:
            raise ValueError("Pass either --model_name_or_path or --config_name, not both.")
        if self.dataset_preset is not None and self.dataset_preset not in DATASET_LABELS:
            raise ValueError(f"--dataset_preset must be one of {sorted(DATASET_LABELS)}, got {self.dataset_preset!r}.")
        if self.model_name_or_path and self.config_overrides:
            raise ValueError("--config_overrides applies to a new model (--dataset_preset / --config_name), not to --model_name_or_path.")
        if self.image_size < 1:
            raise ValueError(f"--image_size must be positive, got {self.image_size}.")


@dataclass
class ParsingArguments:
    label_field: str | None = field(
        default=None, metadata={"help": "Label map to train on: synthetic mask / mask_lapa / mask_helen, or a file field name. Default: from the preset."}
    )
    augment: bool | None = field(default=None, metadata={"help": "LaPa-style random affine augmentation (default: only for lapa)."})
    lr_decay_steps: list[int] | None = field(
        default=None, metadata={"help": "Steps where the lr is multiplied by --lr_decay_gamma (default: 80/300 and 200/300 of max_steps).", "nargs": "+"}
    )
    lr_decay_gamma: float = field(default=0.1, metadata={"help": "Step-decay factor."})
    eval_files: list[str] | None = field(
        default=None, metadata={"help": "Glob patterns of the evaluation shards (default: synthetic faces of another seed).", "nargs": "+"}
    )
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every N optimizer steps (and always at the end)."})
    eval_num_samples: int = field(default=256, metadata={"help": "Synthetic evaluation faces."})
    eval_seed: int | None = field(default=None, metadata={"help": "Seed of the synthetic evaluation faces (default: seed + 1000)."})
    per_device_eval_batch_size: int = field(default=16, metadata={"help": "Evaluation batch per process."})

    def __post_init__(self):
        if self.lr_decay_gamma <= 0:
            raise ValueError(f"--lr_decay_gamma must be positive, got {self.lr_decay_gamma}.")
        for name in ("eval_steps",):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        for name in ("eval_num_samples", "per_device_eval_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")


@dataclass
class FaceParsingOptimizationArguments(OptimizationArguments):
    """`OptimizationArguments` with SegFace's defaults."""

    per_device_train_batch_size: int = field(default=4, metadata={"help": "Batch per process and micro-step (SegFace: 4 x 8 GPUs)."})
    learning_rate: float | None = field(default=1e-4, metadata={"help": "Absolute AdamW lr (not scaled by the batch)."})
    weight_decay: float = field(default=1e-5, metadata={"help": "AdamW weight decay, on all parameters as in SegFace."})
    adam_beta2: float = 0.999


def backbone_config(backbone: str) -> dict:
    if backbone.lstrip().startswith("{"):
        return json.loads(backbone)
    if backbone.startswith("timm:"):
        return {"library": "timm", "name": backbone.removeprefix("timm:")}
    return {"library": "torchvision", "name": backbone}


def build_model(args: ModelArguments):
    """The model and its image processor."""
    from transformers import AutoConfig, AutoImageProcessor, AutoModelForSemanticSegmentation

    if args.model_name_or_path:
        model = AutoModelForSemanticSegmentation.from_pretrained(args.model_name_or_path)
        try:
            return model, AutoImageProcessor.from_pretrained(args.model_name_or_path)
        except (OSError, ValueError):
            pass
    else:
        if args.config_name:
            config = AutoConfig.from_pretrained(args.config_name)
        else:
            config = SegFaceConfig.for_dataset(args.dataset_preset or "celebamask_hq", backbone_config(args.backbone), args.image_size)
        model = AutoModelForSemanticSegmentation.from_config(apply_config_overrides(config, args.config_overrides))
    size = getattr(model.config, "image_size", args.image_size)
    return model, SegFaceImageProcessor(size={"height": size, "width": size}, num_labels=model.config.num_labels)


def default_label_field(preset: str | None, num_labels: int) -> str:
    if preset:
        return PRESET_LABEL_FIELDS[preset]
    return "mask" if num_labels == 19 else "mask_lapa"


def step_decay(max_steps: int, warmup_steps: int, milestones: list[int] | None, gamma: float):
    """SegFace's MultiStepLR per optimizer step (optionally after a linear warm-up); milestones default to 80/300 and
    200/300 of the run, the epochs of the paper's 300-epoch schedule."""
    if milestones is None:
        milestones = [max(1, round(max_steps * 80 / 300)), max(1, round(max_steps * 200 / 300))]
    if any(m < 1 for m in milestones) or sorted(milestones) != list(milestones):
        raise ValueError(f"--lr_decay_steps must be increasing positive steps, got {milestones}.")

    def factor(step: int) -> float:
        warmup = (step + 1) / warmup_steps if step < warmup_steps else 1.0
        return warmup * gamma ** bisect.bisect_right(milestones, step)

    return milestones, factor


@torch.no_grad()
def evaluate(model, eval_shards, transform, accelerator, batch_size: int, num_labels: int, ignore_index: int = 255):
    """Dataset-level scores: every process adds its part of the eval set to a confusion matrix; the matrices are summed."""
    accumulator = FaceParsingAccumulator(num_labels, ignore_index=ignore_index)
    was_training = model.training
    model.eval()
    for batch in evaluation_batches(eval_shards, transform, batch_size, accelerator.process_index, accelerator.num_processes):
        logits = model(pixel_values=batch["pixel_values"].to(accelerator.device)).logits
        if logits.shape[-2:] != batch["labels"].shape[-2:]:
            logits = F.interpolate(logits.float(), size=batch["labels"].shape[-2:], mode="bilinear", align_corners=False)
        accumulator.update(logits.argmax(1).cpu(), batch["labels"])
    confusion = accelerator.reduce(torch.from_numpy(accumulator.confusion).to(accelerator.device), reduction="sum")
    accumulator.confusion = confusion.cpu().numpy()
    model.train(was_training)
    return accumulator.compute(id2label=model.config.id2label), accumulator


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, parsing_args, args = parse_arguments(
        (ModelArguments, DataArguments, ParsingArguments, FaceParsingOptimizationArguments), argv
    )
    accelerator = build_accelerator(args)
    setup_logging(accelerator)
    torch.manual_seed(args.seed)  # same initial weights on every process

    # ---- model, processor, data
    model, processor = build_model(model_args)
    config = model.config
    num_labels = config.num_labels
    ignore_index = getattr(config, "semantic_loss_ignore_index", 255)
    image_size = processor.size["height"]
    label_field = parsing_args.label_field or default_label_field(model_args.dataset_preset, num_labels)
    augment = parsing_args.augment if parsing_args.augment is not None else model_args.dataset_preset == "lapa"
    shards = data_args.resolve_shards(args.seed, image_size)
    if shards[0].kind == "synthetic" and label_field not in SYNTHETIC_LABEL_FIELDS:
        raise ValueError(f"--label_field {label_field!r} is not a synthetic label map {SYNTHETIC_LABEL_FIELDS}.")
    if shards[0].kind == "synthetic" and (label_field == "mask") != (num_labels == 19):
        raise ValueError(f"The synthetic {label_field!r} labels do not match the model's {num_labels} classes.")
    if parsing_args.eval_files:
        eval_shards = resolve_train_files(parsing_args.eval_files)
    else:
        eval_seed = parsing_args.eval_seed if parsing_args.eval_seed is not None else args.seed + 1000
        eval_shards = synthetic_shards(parsing_args.eval_num_samples, 8, seed=eval_seed, image_size=image_size)
    common = {"label_field": label_field, "num_labels": num_labels}
    transform = FaceParsingTransform.from_image_processor(processor, augment=augment, seed=args.seed, **common)
    eval_transform = FaceParsingTransform.from_image_processor(processor, **common)

    # ---- optimizer: AdamW over all parameters, step decay per optimizer step
    milestones, factor = step_decay(args.max_steps, args.warmup_steps, parsing_args.lr_decay_steps, parsing_args.lr_decay_gamma)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2), weight_decay=args.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process

    checkpoints = CheckpointManager(args.output_dir, args.checkpoints_total_limit)
    step, position = checkpoints.resume(accelerator, args.resume_from_checkpoint)
    batcher = build_batcher(shards, transform, accelerator, data_args, args.per_device_train_batch_size, args.seed, position)

    effective_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    if args.report_to != "none":
        hyperparameters = {**asdict(args), **asdict(data_args), **asdict(parsing_args), **asdict(model_args)}
        accelerator.init_trackers("train_face_parsing", config={k: str(v) for k, v in hyperparameters.items()})
    logger.info("***** Running face-parsing training *****")
    logger.info("  Model = %s, %d classes, %d px, labels from %r%s", config.model_type, num_labels, image_size, label_field, " + affine augmentation" if augment else "")
    logger.info("  Shards = %d (%s), eval shards = %d (%s), processes = %d", len(shards), shards[0].kind, len(eval_shards), eval_shards[0].kind, accelerator.num_processes)
    logger.info("  Total train batch size (w. parallel, distributed & accumulation) = %d", effective_batch)
    logger.info("  Optimizer steps = %d, lr = %.3g, x%g at steps %s", args.max_steps, args.learning_rate, parsing_args.lr_decay_gamma, milestones)

    def run_evaluation() -> dict[str, float]:
        scores, accumulator = evaluate(accelerator.unwrap_model(model), eval_shards, eval_transform, accelerator,
                                       parsing_args.per_device_eval_batch_size, num_labels, ignore_index)
        scores["num_pixels"] = int(accumulator.confusion.sum())  # summed over processes
        logger.info("step %d  eval mean_f1 %.4f  mean_iou %.4f  pixel_accuracy %.4f", step, scores["mean_f1"], scores["mean_iou"], scores["pixel_accuracy"])
        accelerator.log({f"eval/{k}": v for k, v in scores.items()}, step=step)
        return scores

    progress = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    throughput, history, evaluations = Throughput(), [], []
    model.train()
    while step < args.max_steps:
        loss_sum = torch.zeros((), device=accelerator.device)
        for micro in range(args.gradient_accumulation_steps):
            batch = {k: v.to(accelerator.device) for k, v in batcher.next_batch().items()}
            with micro_step(accelerator, model, micro, args.gradient_accumulation_steps):
                outputs = model(**batch)
                accelerator.backward(outputs.loss / args.gradient_accumulation_steps)
            loss_sum += outputs.loss.detach().float() / args.gradient_accumulation_steps
            throughput.update(len(batch["pixel_values"]) * accelerator.num_processes)
        if args.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)

        loss = accelerator.reduce(loss_sum, reduction="mean")
        check_finite(loss, step)
        history.append(loss.item())
        if step % args.logging_steps == 0 or step == args.max_steps:
            metrics = {"loss": loss.item(), "lr": scheduler.get_last_lr()[0], "images_per_second": throughput.tick()}
            logger.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            accelerator.log(metrics, step=step)
        if parsing_args.eval_steps and step % parsing_args.eval_steps == 0 and step < args.max_steps:
            evaluations.append({"step": step, **run_evaluation()})
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            checkpoints.save(accelerator, step, batcher.position)
    progress.close()
    batcher.log_skipped()
    final_scores = run_evaluation()
    evaluations.append({"step": step, **final_scores})

    # ---- final artefacts: the model + its processor, and the metrics
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # on every process: gathers FSDP shards
    result = {
        "steps": step,
        "first_loss": history[0] if history else float("nan"),
        "last_loss": history[-1] if history else float("nan"),
        "skipped": sum(batcher.skipped.values()),
        **{f"eval_{k}": v for k, v in final_scores.items()},
    }
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir, state_dict=state_dict)
        processor.save_pretrained(output_dir)
        metrics = {**result, "label_field": label_field, "loss_history": history, "evaluations": evaluations}
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        logger.info("Saved the model, its processor and metrics.json to %s.", output_dir)
        if args.push_to_hub:
            push_folder_to_hub(output_dir, args, commit_message=f"Face parsing, step {step}")
    accelerator.end_training()
    return result


if __name__ == "__main__":
    main()
