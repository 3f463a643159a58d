"""Part fViT face-recognition training (the LAFS / Part fViT recipe) with Accelerate on streamed, identity-labelled faces.

    accelerate launch examples/train_face_recognition.py --output_dir runs/part-fvit-webface \
        --model_name_or_path runs/lafs-teacher --train_files "/data/webface4m/train-*.tar" --num_labels 205990 \
        --per_device_train_batch_size 200 --gradient_accumulation_steps 3 --max_steps 119000 \
        --mixed_precision bf16 --eval_steps 3500 --checkpointing_steps 3500 --resume_from_checkpoint latest

The model is a `PartFViTForFaceRecognition`: from `--model_name_or_path` (a `PartFViTModel` or
`PartFViTForFaceRecognition` folder, e.g. a LAFS-pretrained or converted checkpoint; the margin head is new unless the
folder already has one for `--num_labels` identities) or from scratch (`PartFViTConfig` + `--config_overrides`).
Faces are pre-aligned crops (112 x 112 for the released models) with an integer identity each: synthetic faces by
default, WebDataset shards with a `cls` member (or `label` / `identity` in their `json`), parquet files with such a
column, or image folders laid out one sub-folder per identity (see `faceformers.data.recognition`).

Defaults follow LAFS `train_largescale.py` (ORIGINALS.md §7.5): AdamW (betas 0.9 / 0.999), base lr 1e-3 rescaled as
`lr = accumulation / 480 * lr * sqrt(processes * batch / 336) * 336`, weight decay 0.1 on >= 2-D parameters, 0.05 on
the >= 2-D landmark-CNN convolutions, none on 1-D parameters, linear warm-up from 0 over 5/34 of the run, then cosine
to 1e-6; CosFace (s = 64, m = 0.4); mixup alpha 0.2 with probability 0.1 (WebFace) and soft-target cross-entropy;
horizontal flips. LAFS builds layer-wise lr groups (decay 0.58) that its optimizer never reads, so
`--layer_wise_lr_decay` defaults to 1 (off). The landmark regularisation (`--landmark_loss_weight` or the LAFS
schedule `--landmark_loss_schedule lafs`) is off by default, as in the released script.

Every `--eval_steps` and at the end, verification accuracy (insightface 10-fold protocol, flip test) is measured on
deterministic same / different identity pairs of held-apart faces (`--eval_files`, default: synthetic faces of another
seed, i.e. other people). The run is deterministic and resumable like `pretrain_mcf.py`.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from faceformers import PartFViTConfig, PartFViTForFaceRecognition, PartFViTImageProcessor, PartFViTModel
from faceformers.data.parsing import evaluation_batches
from faceformers.data.recognition import FaceRecognitionTransform, check_first_record, identity_folder_labels, verification_pairs
from faceformers.data.streaming import Shard, resolve_train_files, synthetic_shards
from faceformers.metrics import verification_accuracy
from faceformers.training import (
    CheckpointManager,
    DataArguments,
    OptimizationArguments,
    Throughput,
    apply_config_overrides,
    build_accelerator,
    build_batcher,
    build_optimizer,
    check_finite,
    micro_step,
    parse_arguments,
    push_folder_to_hub,
    setup_logging,
    wrap_batch_norms_for_fsdp2,
)


logger = logging.getLogger("train_face_recognition")
LOSS_TERMS = ("loss", "classification_loss", "landmark_loss")
# LAFS `train_largescale.py`: 34 epochs, 5 of warm-up; beta = 1000 for epochs 0-7, 100 for 8-13, 1 for 14-20,
# 0.11 for 21-27, 0 from 28 on (0-based epochs).
LAFS_EPOCHS = 34
LAFS_WARMUP_EPOCHS = 5
LAFS_LANDMARK_SCHEDULE = ((0, 1000.0), (8, 100.0), (14, 1.0), (21, 0.11), (28, 0.0))
MIN_SYNTHETIC_SIZE = 32  # SyntheticFaces draws faces of at least 32 px


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A PartFViTModel / PartFViTForFaceRecognition folder or Hub id to fine-tune."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Overrides of a new model's PartFViTConfig, e.g. 'hidden_size=384,num_hidden_layers=6'."}
    )
    loss_type: str | None = field(default=None, metadata={"help": "Margin head: cosface or arcface (default: the checkpoint's, else cosface)."})
    num_labels: int | None = field(
        default=None, metadata={"help": "Training identities (default: synthetic identities, or the number of identity folders)."}
    )
    reference_landmarks_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Folder whose landmark CNN is the frozen reference of the landmark loss (default: the model's own initial one)."},
    )

    def __post_init__(self):
        if self.model_name_or_path and self.config_overrides:
            raise ValueError("--config_overrides applies to a new model, not to --model_name_or_path.")
        if self.loss_type is not None and self.loss_type.lower() not in ("cosface", "arcface"):
            raise ValueError(f"--loss_type must be cosface or arcface, got {self.loss_type!r}.")
        if self.num_labels is not None and self.num_labels < 2:
            raise ValueError(f"--num_labels must be >= 2, got {self.num_labels}.")


@dataclass
class RecognitionArguments:
    synthetic_num_identities: int = field(default=100, metadata={"help": "People in the synthetic training faces."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Random horizontal flips (p = 0.5)."})
    mixup_alpha: float = field(default=0.2, metadata={"help": "Mixup Beta(alpha, alpha) parameter; 0 turns mixup off (LAFS: 0.2)."})
    mixup_prob: float = field(default=0.1, metadata={"help": "Probability that a batch is mixed (LAFS: 0.1 WebFace, 0.2 MS1MV3)."})
    layer_wise_lr_decay: float = field(
        default=1.0, metadata={"help": "lr x decay^(depth + 1 - layer) per ViT block, embeddings lowest, head highest (1 = off)."}
    )
    landmark_weight_decay: float = field(default=0.05, metadata={"help": "Weight decay of the >= 2-D landmark-CNN convolutions."})
    landmark_loss_weight: float = field(
        default=0.0, metadata={"help": "Constant beta of the landmark regularisation against a frozen reference CNN (0 = off)."}
    )
    landmark_loss_schedule: str | None = field(
        default=None,
        metadata={"help": "beta per step: 'lafs' (1000, 100, 1, 0.11, 0 at 0, 8, 14, 21, 28 / 34 of the run) or 'step:beta,...'."},
    )
    eval_files: list[str] | None = field(
        default=None, metadata={"help": "Labelled held-apart faces (default: synthetic faces of another seed).", "nargs": "+"}
    )
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate every N optimizer steps (and always at the end)."})
    eval_num_samples: int = field(default=256, metadata={"help": "Synthetic evaluation faces."})
    eval_num_identities: int = field(default=32, metadata={"help": "People among the synthetic evaluation faces."})
    eval_seed: int | None = field(default=None, metadata={"help": "Seed of the synthetic evaluation faces (default: seed + 1000)."})
    eval_num_folds: int = field(default=10, metadata={"help": "Folds of the verification accuracy."})
    eval_max_pairs: int = field(default=6000, metadata={"help": "At most this many pairs (half genuine, half impostor)."})
    eval_flip_test: bool = field(default=True, metadata={"help": "Embed each face as embedding(face) + embedding(mirrored face)."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch."})

    def __post_init__(self):
        if self.mixup_alpha < 0 or not 0 <= self.mixup_prob <= 1:
            raise ValueError(f"--mixup_alpha must be >= 0 and --mixup_prob in [0, 1], got {self.mixup_alpha} and {self.mixup_prob}.")
        if not 0 < self.layer_wise_lr_decay <= 1:
            raise ValueError(f"--layer_wise_lr_decay must be in (0, 1], got {self.layer_wise_lr_decay}.")
        if self.landmark_weight_decay < 0 or self.landmark_loss_weight < 0:
            raise ValueError(
                f"--landmark_weight_decay ({self.landmark_weight_decay}) and --landmark_loss_weight "
                f"({self.landmark_loss_weight}) must be >= 0."
            )
        if self.landmark_loss_schedule and self.landmark_loss_weight > 0:
            raise ValueError("Pass either --landmark_loss_weight or --landmark_loss_schedule, not both.")
        if self.landmark_loss_schedule and self.landmark_loss_schedule != "lafs":
            parse_landmark_schedule(self.landmark_loss_schedule)  # fails early on a malformed schedule
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"--eval_steps must be >= 1, got {self.eval_steps}.")
        for name in ("synthetic_num_identities", "eval_num_samples", "per_device_eval_batch_size", "eval_max_pairs"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.eval_num_identities < 2 or self.eval_num_folds < 2:
            raise ValueError(f"--eval_num_identities ({self.eval_num_identities}) and --eval_num_folds ({self.eval_num_folds}) must be >= 2.")

    @property
    def uses_landmark_loss(self) -> bool:
        return self.landmark_loss_weight > 0 or bool(self.landmark_loss_schedule)


@dataclass
class FaceRecognitionOptimizationArguments(OptimizationArguments):
    """`OptimizationArguments` with the LAFS fine-tuning defaults (ORIGINALS.md §7.5)."""

    per_device_train_batch_size: int = field(default=200, metadata={"help": "Batch per process and micro-step (LAFS: 200 x 2 GPUs)."})
    gradient_accumulation_steps: int = field(default=3, metadata={"help": "Micro-steps per optimizer step (LAFS: 3)."})
    base_learning_rate: float = field(
        default=1e-3, metadata={"help": "lr = base * accumulation / 480 * sqrt(processes * batch / 336) * 336 (LAFS)."}
    )
    weight_decay: float = field(default=0.1, metadata={"help": "AdamW weight decay of >= 2-D parameters (1-D: none)."})
    adam_beta2: float = 0.999
    warmup_steps: int | None = field(default=None, metadata={"help": "Linear warm-up steps (default: 5/34 of max_steps)."})
    min_learning_rate: float = field(default=1e-6, metadata={"help": "lr the cosine decay ends at."})

    def __post_init__(self):
        if self.warmup_steps is None:
            self.warmup_steps = min(round(self.max_steps * LAFS_WARMUP_EPOCHS / LAFS_EPOCHS), max(self.max_steps - 1, 0))
        super().__post_init__()


# ------------------------------------------------------------------------------------------------------ schedules


def parse_landmark_schedule(spec: str) -> list[tuple[int, float]]:
    """'0:1000,500:100,900:0' -> [(0, 1000.0), (500, 100.0), (900, 0.0)]: beta from each step on."""
    try:
        milestones = [(int(step), float(beta)) for step, beta in (item.split(":") for item in spec.split(","))]
    except ValueError:
        raise ValueError(f"--landmark_loss_schedule must be 'lafs' or 'step:beta,step:beta,...', got {spec!r}.") from None
    steps = [step for step, _ in milestones]
    if steps[0] != 0 or steps != sorted(set(steps)) or any(beta < 0 for _, beta in milestones):
        raise ValueError(f"--landmark_loss_schedule needs increasing steps from 0 and betas >= 0, got {spec!r}.")
    return milestones


def landmark_loss_weights(args: RecognitionArguments, max_steps: int) -> Callable[[int], float]:
    """beta of optimizer step `step` (0-based): constant, the LAFS epoch schedule stretched over the run, or explicit."""
    if not args.landmark_loss_schedule:
        return lambda step: args.landmark_loss_weight
    if args.landmark_loss_schedule == "lafs":
        milestones = [(round(max_steps * epoch / LAFS_EPOCHS), beta) for epoch, beta in LAFS_LANDMARK_SCHEDULE]
    else:
        milestones = parse_landmark_schedule(args.landmark_loss_schedule)
    return lambda step: next(beta for start, beta in reversed(milestones) if step >= start)


def lafs_learning_rate(args: FaceRecognitionOptimizationArguments, num_processes: int) -> float:
    """`--learning_rate`, else LAFS's rule: `base * accumulation / 480 * sqrt(processes * batch / 336) * 336`
    (2.29e-3 for 2 processes x 200 x 3)."""
    if args.learning_rate is not None:
        return args.learning_rate
    batch = num_processes * args.per_device_train_batch_size
    return args.base_learning_rate * args.gradient_accumulation_steps / 480 * math.sqrt(batch / 336) * 336


# ------------------------------------------------------------------------------------------------------ optimizer


def vit_layer_id(name: str, num_hidden_layers: int) -> int:
    """LAFS / BEiT layer ids: 0 for the landmark CNN and the patch embeddings (CLS, positions), `i + 1` for block `i`,
    `num_hidden_layers + 1` for the final LayerNorm and the margin head."""
    if name.startswith(("part_fvit.landmark_net.", "part_fvit.embeddings.")):
        return 0
    if name.startswith("part_fvit.layers."):
        return int(name.split(".")[2]) + 1
    return num_hidden_layers + 1


def recognition_parameter_groups(
    model: PartFViTForFaceRecognition, lr: float, weight_decay: float, landmark_weight_decay: float, layer_decay: float
) -> list[dict]:
    """AdamW groups per (layer, decay kind): lr `lr * layer_decay ** (depth + 1 - layer)`; weight decay 0 for 1-D
    parameters, `landmark_weight_decay` for the landmark CNN's >= 2-D convolutions (LAFS `stn.*`; its regression layer,
    `output_layer`, gets the common decay), `weight_decay` for the rest (CLS / position embeddings included)."""
    depth = model.config.num_hidden_layers
    groups: dict[str, dict] = {}
    for name, parameter in model.named_parameters():
        if not parameter.requires_grad:  # the frozen reference landmark CNN
            continue
        if parameter.ndim <= 1:
            kind, decay = "no_decay", 0.0
        elif name.startswith("part_fvit.landmark_net.") and not name.startswith("part_fvit.landmark_net.head."):
            kind, decay = "landmark_cnn", landmark_weight_decay
        else:
            kind, decay = "decay", weight_decay
        layer = vit_layer_id(name, depth)
        scale = layer_decay ** (depth + 1 - layer)
        group = groups.setdefault(
            f"layer_{layer}_{kind}", {"params": [], "weight_decay": decay, "lr": lr * scale, "lr_scale": scale}
        )
        group["params"].append(parameter)
    return [{"group_name": name, **group} for name, group in groups.items()]


def build_recognition_optimizer(model, args: FaceRecognitionOptimizationArguments, recognition_args: RecognitionArguments, lr: float):
    """AdamW over `recognition_parameter_groups`, stepped by the shared warm-up + cosine schedule of `build_optimizer`
    (its factor applies to every group's own initial lr, so the layer-wise ratios hold throughout)."""
    _, shared_schedule = build_optimizer(model, args, lr)  # only its per-step factor is used
    groups = recognition_parameter_groups(
        model, lr, args.weight_decay, recognition_args.landmark_weight_decay, recognition_args.layer_wise_lr_decay
    )
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(args.adam_beta1, args.adam_beta2))
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, shared_schedule.lr_lambdas[0])


def mixup(pixel_values: torch.Tensor, labels: torch.Tensor, num_labels: int, alpha: float, probability: float,
          rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """timm's batch-mode mixup (LAFS `Mixup(mixup_alpha, prob, mode='batch', label_smoothing=0)`): with probability
    `probability`, images and one-hot targets become `lam * x + (1 - lam) * x.flip(0)`, `lam ~ Beta(alpha, alpha)`.
    Unmixed batches keep their class indices (the same loss as one-hot targets)."""
    if alpha <= 0 or rng.random() >= probability:
        return pixel_values, labels
    lam = float(rng.beta(alpha, alpha))
    targets = torch.nn.functional.one_hot(labels, num_labels).float()
    return pixel_values * lam + pixel_values.flip(0) * (1 - lam), targets * lam + targets.flip(0) * (1 - lam)


# ------------------------------------------------------------------------------------------------------ data, model


def is_synthetic(data_args: DataArguments) -> bool:
    return not data_args.train_files and data_args.dataset_name in (None, "synthetic")


def folder_labels_for(shards: list[Shard], what: str) -> dict[str, int] | None:
    """Identity-folder ids when the shards are image folders, `None` for record-labelled shards; mixing both is refused."""
    kinds = {shard.kind for shard in shards}
    if "imagefolder" not in kinds:
        return None
    if kinds != {"imagefolder"}:
        raise ValueError(f"The {what} data mixes image folders with {sorted(kinds - {'imagefolder'})} shards; identities would be ambiguous.")
    return identity_folder_labels(shards)


def build_model(args: ModelArguments, num_labels: int, reference_landmarks: bool) -> tuple[PartFViTForFaceRecognition, PartFViTImageProcessor]:
    """The model (margin head for `num_labels` identities) and its image processor."""
    if args.model_name_or_path:
        config = PartFViTConfig.from_pretrained(args.model_name_or_path)
        loss_type = (args.loss_type or config.loss_type).lower()
        keeps_head = "PartFViTForFaceRecognition" in (config.architectures or []) and config.num_labels == num_labels
        model = PartFViTForFaceRecognition.from_pretrained(
            args.model_name_or_path,
            num_labels=num_labels,
            loss_type=loss_type,
            use_reference_landmarks=reference_landmarks or config.use_reference_landmarks,
            ignore_mismatched_sizes=True,  # a margin head for another number of identities is replaced
        )
        logger.info("Loaded %s; %s margin head (%s, %d identities).", args.model_name_or_path,
                    "its" if keeps_head else "a NEW", loss_type, num_labels)  # fmt: skip
        try:
            processor = PartFViTImageProcessor.from_pretrained(args.model_name_or_path)
        except (OSError, ValueError):
            processor = PartFViTImageProcessor(size={"height": config.image_size, "width": config.image_size})
    else:
        config = PartFViTConfig(num_labels=num_labels, loss_type=args.loss_type or "cosface", use_reference_landmarks=reference_landmarks)
        config = apply_config_overrides(config, args.config_overrides)
        if config.num_labels != num_labels:
            raise ValueError(f"--config_overrides sets num_labels={config.num_labels}; use --num_labels ({num_labels}).")
        model = PartFViTForFaceRecognition(config)
        processor = PartFViTImageProcessor(size={"height": config.image_size, "width": config.image_size})
    if processor.size["height"] != model.config.image_size:
        raise ValueError(f"The image processor's size {dict(processor.size)} differs from the model's image_size {model.config.image_size}.")
    if reference_landmarks and not bool(model.has_reference_landmark_weights):
        if args.reference_landmarks_name_or_path:
            model.load_reference_landmark_net(PartFViTModel.from_pretrained(args.reference_landmarks_name_or_path).landmark_net.state_dict())
            logger.info("Reference landmark CNN: %s.", args.reference_landmarks_name_or_path)
        else:
            model.load_reference_landmark_net()
            logger.info("Reference landmark CNN: a frozen copy of the model's initial landmark CNN%s.",
                        "" if args.model_name_or_path else " (RANDOM: the model is new)")  # fmt: skip
    return model, processor


@torch.no_grad()
def evaluate_verification(model: PartFViTForFaceRecognition, eval_shards: list[Shard], transform, batch_size: int, device,
                          num_folds: int, max_pairs: int, flip_test: bool) -> dict[str, float]:  # fmt: skip
    """Verification accuracy on the deterministic pairs of the eval set (every process scores the whole set)."""
    was_training = model.training
    model.eval()
    embeddings, identities = [], []
    for batch in evaluation_batches(eval_shards, transform, batch_size):
        pixel_values = batch["pixel_values"].to(device)
        embedding = model.part_fvit(pixel_values).embeddings.float()
        if flip_test:
            embedding = embedding + model.part_fvit(pixel_values.flip(-1)).embeddings.float()
        embeddings.append(embedding.cpu())
        identities.append(batch["labels"])
    model.train(was_training)
    embeddings, identities = torch.cat(embeddings).numpy(), torch.cat(identities).numpy()
    first, second, issame = verification_pairs(identities, max_pairs=max_pairs)
    scores = verification_accuracy(embeddings[first], embeddings[second], issame, num_folds=min(num_folds, len(issame)))
    return {"accuracy": scores["accuracy"], "accuracy_std": scores["accuracy_std"], "num_pairs": scores["num_pairs"], "num_images": len(identities)}


# ------------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, recognition_args, args = parse_arguments(
        (ModelArguments, DataArguments, RecognitionArguments, FaceRecognitionOptimizationArguments), argv
    )
    accelerator = build_accelerator(args)
    setup_logging(accelerator)
    torch.manual_seed(args.seed)  # same initial weights on every process

    # ---- identities: how many, and where they come from
    synthetic = is_synthetic(data_args)
    file_shards = None if synthetic else data_args.resolve_shards(args.seed, 0)
    folder_labels = None if synthetic else folder_labels_for(file_shards, "training")
    if synthetic:
        found = recognition_args.synthetic_num_identities
    else:
        found = len(folder_labels) if folder_labels is not None else None
    num_labels = model_args.num_labels or found
    if num_labels is None:
        raise ValueError("--num_labels is needed for WebDataset / parquet data (the number of training identities).")
    if found is not None and found > num_labels:
        raise ValueError(f"The training data holds {found} identities but --num_labels is {num_labels}.")

    # ---- model, processor, data
    model, processor = build_model(model_args, num_labels, recognition_args.uses_landmark_loss)
    config = model.config
    size = config.image_size
    if folder_labels is not None:
        config.id2label = {class_id: name for name, class_id in folder_labels.items()}
        config.label2id = dict(folder_labels)
    common = {"num_labels": num_labels, "seed": args.seed}
    transform = FaceRecognitionTransform.from_image_processor(processor, horizontal_flip=recognition_args.horizontal_flip, folder_labels=folder_labels, **common)
    shards = file_shards or synthetic_shards(data_args.synthetic_num_samples, data_args.synthetic_num_shards, seed=args.seed,
                                             image_size=max(size, MIN_SYNTHETIC_SIZE), num_identities=recognition_args.synthetic_num_identities)  # fmt: skip
    if recognition_args.eval_files:
        eval_shards = resolve_train_files(recognition_args.eval_files)
        eval_folder_labels = folder_labels_for(eval_shards, "evaluation")
    else:
        eval_seed = recognition_args.eval_seed if recognition_args.eval_seed is not None else args.seed + 1000
        eval_shards = synthetic_shards(recognition_args.eval_num_samples, 8, seed=eval_seed, image_size=max(size, MIN_SYNTHETIC_SIZE),
                                       num_identities=recognition_args.eval_num_identities)  # fmt: skip
        eval_folder_labels = None
    eval_transform = FaceRecognitionTransform.from_image_processor(processor, horizontal_flip=False, folder_labels=eval_folder_labels)
    check_first_record(shards, transform, "training")
    check_first_record(eval_shards, eval_transform, "evaluation")
    beta_at = landmark_loss_weights(recognition_args, args.max_steps)

    # ---- optimizer: LAFS groups (+ optional layer-wise lr decay), warm-up + cosine per optimizer step
    lr = lafs_learning_rate(args, accelerator.num_processes)
    wrap_batch_norms_for_fsdp2(accelerator, model)
    optimizer, scheduler = build_recognition_optimizer(model, args, recognition_args, lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process

    checkpoints = CheckpointManager(args.output_dir, args.checkpoints_total_limit)
    step, position = checkpoints.resume(accelerator, args.resume_from_checkpoint)
    batcher = build_batcher(shards, transform, accelerator, data_args, args.per_device_train_batch_size, args.seed, position)

    effective_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    if args.report_to != "none":
        hyperparameters = {**asdict(args), **asdict(data_args), **asdict(recognition_args), **asdict(model_args)}
        accelerator.init_trackers("train_face_recognition", config={k: str(v) for k, v in hyperparameters.items()})
    logger.info("***** Running face-recognition training *****")
    logger.info("  Model = Part fViT (%d blocks, %d px, %s head), %d identities", config.num_hidden_layers, size, config.loss_type, num_labels)
    logger.info("  Shards = %d (%s), eval shards = %d (%s), processes = %d", len(shards), shards[0].kind, len(eval_shards), eval_shards[0].kind, accelerator.num_processes)
    logger.info("  Total train batch size (w. parallel, distributed & accumulation) = %d", effective_batch)
    logger.info("  Optimizer steps = %d (warm-up %d), peak lr = %.3g, layer-wise decay %g, %d parameter groups",
                args.max_steps, args.warmup_steps, lr, recognition_args.layer_wise_lr_decay, len(optimizer.param_groups))  # fmt: skip
    logger.info("  Mixup alpha %g (p = %g), landmark loss %s", recognition_args.mixup_alpha, recognition_args.mixup_prob,
                recognition_args.landmark_loss_schedule or recognition_args.landmark_loss_weight)  # fmt: skip

    def run_evaluation() -> dict[str, float]:
        scores = evaluate_verification(accelerator.unwrap_model(model), eval_shards, eval_transform, recognition_args.per_device_eval_batch_size,
                                       accelerator.device, recognition_args.eval_num_folds, recognition_args.eval_max_pairs,
                                       recognition_args.eval_flip_test)  # fmt: skip
        logger.info("step %d  eval verification accuracy %.4f ± %.4f (%d pairs of %d faces)", step, scores["accuracy"], scores["accuracy_std"], scores["num_pairs"], scores["num_images"])
        accelerator.log({f"eval/{k}": v for k, v in scores.items()}, step=step)
        return {"step": step, **scores}

    progress = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="train")
    throughput, history, evaluations = Throughput(), [], []
    model.train()
    while step < args.max_steps:
        beta = beta_at(step)
        terms = torch.zeros(len(LOSS_TERMS), device=accelerator.device)
        for micro in range(args.gradient_accumulation_steps):
            batch = {k: v.to(accelerator.device) for k, v in batcher.next_batch().items()}
            rng = np.random.default_rng([args.seed, step, micro, accelerator.process_index])  # resumable mixup draws
            pixel_values, labels = mixup(batch["pixel_values"], batch["labels"], num_labels, recognition_args.mixup_alpha, recognition_args.mixup_prob, rng)
            with micro_step(accelerator, model, micro, args.gradient_accumulation_steps):
                outputs = model(pixel_values=pixel_values, labels=labels, landmark_loss_weight=beta)
                accelerator.backward(outputs.loss / args.gradient_accumulation_steps)
            values = [outputs.loss, outputs.classification_loss, outputs.landmark_loss if outputs.landmark_loss is not None else torch.zeros(())]
            terms += torch.stack([value.detach().float().to(terms.device) for value in values]) / args.gradient_accumulation_steps
            throughput.update(len(pixel_values) * accelerator.num_processes)
        if args.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)

        terms = accelerator.reduce(terms, reduction="mean")
        check_finite(terms[0], step)
        history.append({name: value.item() for name, value in zip(LOSS_TERMS, terms)})
        if step % args.logging_steps == 0 or step == args.max_steps:
            metrics = dict(history[-1], landmark_loss_weight=beta, lr=max(scheduler.get_last_lr()), images_per_second=throughput.tick())
            logger.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            accelerator.log(metrics, step=step)
        if recognition_args.eval_steps and step % recognition_args.eval_steps == 0 and step < args.max_steps:
            evaluations.append(run_evaluation())
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            checkpoints.save(accelerator, step, batcher.position)
    progress.close()
    batcher.log_skipped()
    final_scores = run_evaluation()
    evaluations.append(final_scores)

    # ---- final artefacts: the model with its margin head (PartFViTModel.from_pretrained reads the backbone) + processor
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # on every process: gathers FSDP shards
    result = {
        "steps": step,
        "first_loss": history[0]["loss"] if history else float("nan"),
        "last_loss": history[-1]["loss"] if history else float("nan"),
        "learning_rate": lr,
        "num_labels": num_labels,
        "skipped": sum(batcher.skipped.values()),
        **{f"eval_{k}": v for k, v in final_scores.items() if k != "step"},
    }
    if accelerator.is_main_process:
        unwrapped.save_pretrained(output_dir, state_dict=state_dict)
        processor.save_pretrained(output_dir)
        metrics = {**result, "loss_history": history, "evaluations": evaluations}
        (output_dir / "metrics.json").write_text(json.dumps(metrics, indent=1))
        logger.info("Saved PartFViTForFaceRecognition, its processor and metrics.json to %s.", output_dir)
        if args.push_to_hub:
            push_folder_to_hub(output_dir, args, commit_message=f"Part fViT face recognition, step {step}")
    accelerator.end_training()
    return result


if __name__ == "__main__":
    main()
