"""LAFS stage-2 pre-training (landmark-based DINO self-distillation, CVPR 2024) of a Part fViT with Accelerate on
streamed, unlabelled faces.

    accelerate launch examples/pretrain_lafs.py --output_dir runs/lafs \
        --landmark_model_name_or_path runs/part-fvit-webface --train_files "/data/webface4m/train-*.tar" \
        --per_device_train_batch_size 82 --max_steps 100000 --mixed_precision bf16 \
        --checkpointing_steps 2000 --resume_from_checkpoint latest

then fine-tune the teacher (stage 3):

    accelerate launch examples/train_face_recognition.py --model_name_or_path runs/lafs ...

What one step does (ORIGINALS.md §8, LAFS `lafs_train.py`):

1. Every face gives 2 global + 8 local views. Each view is a RandomResizedCrop (112 px, scale 0.4-1, bicubic) with a
   horizontal flip, in two versions: clean (normalised only) and augmented (colour jitter p 0.8, grayscale p 0.2,
   Gaussian blur p 1.0 / 0.1 / 0.5 for global 1 / global 2 / locals, solarisation p 0.2 on global 2). The local views
   are full-size crops with the *global* scale range, as in LAFS.
2. A frozen landmark CNN (stage 1: the landmark CNN of a supervised Part fViT, `--landmark_model_name_or_path`)
   predicts the points on every clean view. `faceformers.models.part_fvit.lafs.sample_landmark_views` shifts them by
   N(0, 5^2) px; global views keep all points, each local view keeps 36 points drawn with replacement.
3. Patches are cut around the points from the augmented views: the student (Part fViT ViT + DINO head) sees all 10
   views, the EMA teacher the 2 globals; DINO loss (student temperature 0.1, teacher 0.07 -> 0.04 linearly over 30/41
   of the run, centre momentum 0.9).
4. AdamW; lr `5e-4 * effective batch / 256`, 10/41 of the run linear warm-up from 0, cosine to 1e-6; weight decay
   cosine 0.04 -> 0.4 (not on biases / 1-D); per-parameter gradient clipping at 3.0; the head's last layer frozen for
   the first 1/41 of the run; teacher EMA with momentum cosine 0.996 -> 1.

LAFS counts in epochs (41); streams have none, so every epoch-based length is the same fraction of `--max_steps`.
LAFS never puts its teacher in eval mode, so the teacher's dropout (0.1) and drop-path (0.1) are active:
`--teacher_train_mode false` turns them off.

Output: `output_dir` holds the **teacher** as a `PartFViTModel` (ViT from the teacher, landmark CNN copied from stage 1,
i.e. exactly LAFS's stage-3 initialisation) and a `PartFViTImageProcessor`; `output_dir/pretraining` holds the student
backbone and both DINO heads (with the loss centre). Without --dataset_name / --train_files it trains on synthetic
faces. The run is deterministic and resumable: crops, augmentations and landmark draws are functions of (seed, sample)
or (seed, step, micro-step, process), and checkpoints store the teacher, the loss centre and the data position.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import PIL.Image
import PIL.ImageFilter
import PIL.ImageOps
import torch
import torchvision.transforms.functional as TF
from safetensors.torch import save_file
from tqdm.auto import tqdm

from faceformers import PartFViTConfig, PartFViTImageProcessor, PartFViTModel
from faceformers.data.streaming import Record, decode_image
from faceformers.data.transforms import sample_rng
from faceformers.models.part_fvit.lafs import (
    DINOHead,
    DINOLoss,
    LAFSMultiViewWrapper,
    cosine_schedule,
    make_teacher,
    sample_landmark_views,
    teacher_momentum,
    teacher_temperature,
    update_teacher,
)
from faceformers.training import (
    CheckpointManager,
    DataArguments,
    OptimizationArguments,
    Throughput,
    apply_config_overrides,
    build_accelerator,
    build_batcher,
    check_finite,
    learning_rate,
    micro_step,
    parameter_groups,
    parse_arguments,
    push_folder_to_hub,
    setup_logging,
)


logger = logging.getLogger("pretrain_lafs")
# LAFS `lafs_train.py` defaults: 41 epochs, 10 of lr warm-up, 30 of teacher-temperature warm-up, last layer frozen in 1.
LAFS_EPOCHS = 41
LAFS_WARMUP_EPOCHS = 10
LAFS_TEACHER_TEMPERATURE_EPOCHS = 30
LAFS_FREEZE_LAST_LAYER_EPOCHS = 1
NUM_GLOBAL_VIEWS = 2
MIN_SYNTHETIC_SIZE = 32  # SyntheticFaces draws faces of at least 32 px
LANDMARK_FIELDS = ("image_size", "num_channels", "num_patches", "landmark_stem_channels", "landmark_block_config",
                   "landmark_se_reduction", "landmark_batch_norm_eps")  # fmt: skip


def epochs_to_steps(epochs: int, max_steps: int) -> int:
    return round(max_steps * epochs / LAFS_EPOCHS)


@dataclass
class ModelArguments:
    landmark_model_name_or_path: str | None = field(
        default=None,
        metadata={"help": "Stage-1 Part fViT (PartFViTModel / PartFViTForFaceRecognition folder or Hub id): its frozen landmark CNN places the patches; its config is the base of the student's."},
    )
    random_landmark_net: bool = field(
        default=False, metadata={"help": "Explicitly use a randomly initialised (frozen) landmark CNN (demos, tests)."}
    )
    config_overrides: str | None = field(
        default=None, metadata={"help": "Overrides of the student's PartFViTConfig, e.g. 'hidden_size=384,num_hidden_layers=6' (not of the landmark CNN)."}
    )

    def __post_init__(self):
        if self.landmark_model_name_or_path and self.random_landmark_net:
            raise ValueError("Pass either --landmark_model_name_or_path or --random_landmark_net, not both.")


@dataclass
class LAFSArguments:
    """The LAFS recipe (defaults: `lafs_train.py`, ORIGINALS.md §8)."""

    out_dim: int = field(default=100_000, metadata={"help": "Prototypes of the DINO head (LAFS --out_dim 100000)."})
    norm_last_layer: bool = field(default=True, metadata={"help": "Freeze the weight-norm gain of the head's last layer at 1 (LAFS: true)."})
    use_bn_in_head: bool = field(default=False, metadata={"help": "BatchNorm in the DINO head's MLP (LAFS: false)."})
    head_hidden_dim: int = field(default=2048, metadata={"help": "Hidden width of the DINO head's MLP."})
    head_bottleneck_dim: int = field(default=256, metadata={"help": "Bottleneck (L2-normalised) width of the DINO head."})
    head_num_layers: int = field(default=3, metadata={"help": "Linear layers of the DINO head's MLP."})
    momentum_teacher: float = field(default=0.996, metadata={"help": "Teacher EMA momentum at step 0; cosine to 1."})
    student_temperature: float = field(default=0.1, metadata={"help": "Student softmax temperature."})
    warmup_teacher_temperature: float = field(default=0.07, metadata={"help": "Teacher temperature at step 0 (LAFS 0.07)."})
    teacher_temperature: float = field(default=0.04, metadata={"help": "Teacher temperature after the warm-up (LAFS 0.04)."})
    warmup_teacher_temperature_steps: int | None = field(
        default=None, metadata={"help": "Linear teacher-temperature warm-up steps (default: 30/41 of max_steps)."}
    )
    center_momentum: float = field(default=0.9, metadata={"help": "EMA momentum of the teacher-output centre."})
    freeze_last_layer_steps: int | None = field(
        default=None, metadata={"help": "Steps during which the head's last layer gets no update (default: 1/41 of max_steps)."}
    )
    num_local_views: int = field(default=8, metadata={"help": "Local views per face (LAFS 8)."})
    local_points: int = field(default=36, metadata={"help": "Landmarks per local view, drawn with replacement (LAFS 36)."})
    landmark_noise_std: float = field(default=5.0, metadata={"help": "Std (px) of the Gaussian shift of every landmark (LAFS 5)."})
    crop_scale_min: float = field(default=0.4, metadata={"help": "RandomResizedCrop area scale, lower bound (every view; LAFS 0.4)."})
    crop_scale_max: float = field(default=1.0, metadata={"help": "RandomResizedCrop area scale, upper bound."})
    horizontal_flip: bool = field(default=True, metadata={"help": "Flip every view with p = 0.5."})
    photometric_augmentation: bool = field(
        default=True, metadata={"help": "Colour jitter / grayscale / blur / solarisation on the version patches are cut from."}
    )
    teacher_train_mode: bool = field(
        default=True, metadata={"help": "Run the teacher in train mode (dropout, drop-path), as LAFS does."}
    )

    def __post_init__(self):
        for name in ("out_dim", "head_hidden_dim", "head_bottleneck_dim", "head_num_layers", "local_points"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.num_local_views < 0:
            raise ValueError(f"--num_local_views must be >= 0, got {self.num_local_views}.")
        if not 0 <= self.momentum_teacher <= 1 or not 0 <= self.center_momentum <= 1:
            raise ValueError(f"--momentum_teacher ({self.momentum_teacher}) and --center_momentum ({self.center_momentum}) must be in [0, 1].")
        for name in ("student_temperature", "warmup_teacher_temperature", "teacher_temperature"):
            if not getattr(self, name) > 0:
                raise ValueError(f"--{name} must be positive, got {getattr(self, name)}.")
        if self.landmark_noise_std < 0:
            raise ValueError(f"--landmark_noise_std must be >= 0, got {self.landmark_noise_std}.")
        if not 0 < self.crop_scale_min <= self.crop_scale_max <= 1:
            raise ValueError(f"Need 0 < --crop_scale_min <= --crop_scale_max <= 1, got {self.crop_scale_min} and {self.crop_scale_max}.")
        for name in ("warmup_teacher_temperature_steps", "freeze_last_layer_steps"):
            if getattr(self, name) is not None and getattr(self, name) < 0:
                raise ValueError(f"--{name} must be >= 0, got {getattr(self, name)}.")

    @property
    def num_views(self) -> int:
        return NUM_GLOBAL_VIEWS + self.num_local_views


@dataclass
class LAFSOptimizationArguments(OptimizationArguments):
    """`OptimizationArguments` with the LAFS stage-2 defaults (ORIGINALS.md §8.4)."""

    per_device_train_batch_size: int = field(default=82, metadata={"help": "Faces per process and micro-step (LAFS: 82 x 2 GPUs)."})
    base_learning_rate: float = field(default=5e-4, metadata={"help": "lr = base * effective_batch / 256 (LAFS/DINO 5e-4)."})
    warmup_steps: int | None = field(default=None, metadata={"help": "Linear lr warm-up steps from 0 (default: 10/41 of max_steps)."})
    min_learning_rate: float = field(default=1e-6, metadata={"help": "lr the cosine decay ends at."})
    weight_decay: float = field(default=0.04, metadata={"help": "Weight decay at step 0 (>= 2-D parameters only); cosine to --weight_decay_end."})
    weight_decay_end: float = field(default=0.4, metadata={"help": "Weight decay at the end of the run."})
    adam_beta2: float = 0.999
    clip_grad: float = field(default=3.0, metadata={"help": "Clip every parameter's gradient to this L2 norm (DINO's per-parameter clipping; 0 = off)."})

    def __post_init__(self):
        if self.warmup_steps is None:
            self.warmup_steps = min(epochs_to_steps(LAFS_WARMUP_EPOCHS, self.max_steps), max(self.max_steps - 1, 0))
        super().__post_init__()
        if self.weight_decay_end < 0 or self.clip_grad < 0:
            raise ValueError(f"--weight_decay_end ({self.weight_decay_end}) and --clip_grad ({self.clip_grad}) must be >= 0.")


# ------------------------------------------------------------------------------------------------------------ data


def random_resized_crop_box(rng: np.random.Generator, width: int, height: int, scale: tuple[float, float],
                            ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> tuple[int, int, int, int]:  # fmt: skip
    """torchvision's `RandomResizedCrop.get_params` with our generator: `(left, top, crop_width, crop_height)`."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w, h = round(math.sqrt(target_area * aspect)), round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height  # fallback: central crop
    if in_ratio < min(ratio):
        w, h = width, round(width / min(ratio))
    elif in_ratio > max(ratio):
        w, h = round(height * max(ratio)), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


class LAFSViewsTransform:
    """A face -> its views, each as a clean version (for the landmark CNN) and an augmented one (for the patches).

    Returns `clean_pixel_values` and `pixel_values`, both `(num_views, 3, S, S)`, globals first. Per view: a random
    resized crop (bicubic, area scale `crop_scale`, aspect 3/4-4/3) and a horizontal flip shared by both versions;
    the augmented version adds, when `photometric`, colour jitter (brightness 0.4, contrast 0.4, saturation 0.2,
    hue 0.1, random order; p 0.8), grayscale (p 0.2), Gaussian blur (radius U(0.1, 2); p 1.0 for global 1, 0.1 for
    global 2, 0.5 for locals) and solarisation (threshold 128, p 0.2, global 2 only), as LAFS's
    `DataAugmentation_LAFS`. Every draw comes from `sample_rng(seed, record)`.
    """

    BLUR_PROBABILITIES = (1.0, 0.1)  # global 1, global 2; locals 0.5

    def __init__(self, image_size: int, image_mean: Sequence[float], image_std: Sequence[float], num_local_views: int = 8,
                 crop_scale: tuple[float, float] = (0.4, 1.0), horizontal_flip: bool = True, photometric: bool = True, seed: int = 0):  # fmt: skip
        self.image_size, self.num_local_views, self.crop_scale = image_size, num_local_views, crop_scale
        self.horizontal_flip, self.photometric, self.seed = horizontal_flip, photometric, seed
        std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1) / std

    @classmethod
    def from_image_processor(cls, processor, **kwargs) -> LAFSViewsTransform:
        size = processor.size
        if size.get("height") != size.get("width"):
            raise ValueError(f"LAFS trains on square faces, got image processor size {dict(size)}.")
        return cls(size["height"], processor.image_mean, processor.image_std, **kwargs)

    def normalise(self, image: PIL.Image.Image) -> torch.Tensor:
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous().float()
        return pixels.mul_(self.scale).sub_(self.shift)

    def augment(self, image: PIL.Image.Image, view: int, rng: np.random.Generator) -> PIL.Image.Image:
        if rng.random() < 0.8:  # ColorJitter(0.4, 0.4, 0.2, 0.1), its four ops in random order
            factors = (rng.uniform(0.6, 1.4), rng.uniform(0.6, 1.4), rng.uniform(0.8, 1.2), rng.uniform(-0.1, 0.1))
            ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
            for index in rng.permutation(4):
                image = ops[index](image, factors[index])
        if rng.random() < 0.2:
            image = TF.to_grayscale(image, num_output_channels=3)
        blur = self.BLUR_PROBABILITIES[view] if view < NUM_GLOBAL_VIEWS else 0.5
        if rng.random() <= blur:
            image = image.filter(PIL.ImageFilter.GaussianBlur(radius=rng.uniform(0.1, 2.0)))
        if view == 1 and rng.random() < 0.2:
            image = PIL.ImageOps.solarize(image)
        return image

    def __call__(self, record: Record) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, record)
        image = decode_image(record)
        size = self.image_size
        clean, augmented = [], []
        for view in range(NUM_GLOBAL_VIEWS + self.num_local_views):
            left, top, width, height = random_resized_crop_box(rng, image.width, image.height, self.crop_scale)
            crop = image.resize((size, size), PIL.Image.BICUBIC, box=(left, top, left + width, top + height))
            if self.horizontal_flip and rng.random() < 0.5:
                crop = crop.transpose(PIL.Image.FLIP_LEFT_RIGHT)
            clean.append(self.normalise(crop))
            augmented.append(self.normalise(self.augment(crop, view, rng)) if self.photometric else clean[-1])
        return {"clean_pixel_values": torch.stack(clean), "pixel_values": torch.stack(augmented)}


# ------------------------------------------------------------------------------------------------------ model, loss


def build_networks(model_args: ModelArguments, lafs_args: LAFSArguments) -> tuple[LAFSMultiViewWrapper, LAFSMultiViewWrapper, torch.nn.Module]:
    """(student, teacher, frozen landmark CNN). The student's own landmark CNN holds the same frozen weights (it is
    never run; it travels with the saved teacher for stage 3)."""
    if model_args.landmark_model_name_or_path:
        stage1 = PartFViTModel.from_pretrained(model_args.landmark_model_name_or_path)
        base, landmark_state = stage1.config, stage1.landmark_net.state_dict()
        logger.info("Landmark CNN: %s (frozen).", model_args.landmark_model_name_or_path)
    elif model_args.random_landmark_net:
        base, landmark_state = PartFViTConfig(), None
        logger.warning("Placing patches with a RANDOMLY INITIALISED landmark CNN (--random_landmark_net).")
    else:
        raise ValueError(
            "No landmark CNN: pass --landmark_model_name_or_path (a stage-1 Part fViT folder; convert released .pth "
            "files with faceformers.models.part_fvit.convert_part_fvit_to_hf) or --random_landmark_net."
        )
    fields = {k: v for k, v in base.to_dict().items() if k not in ("architectures", "id2label", "label2id", "num_labels")}
    fields.update(use_reference_landmarks=False, landmark_loss_weight=0.0)  # stage-1 training settings do not carry over
    config = apply_config_overrides(PartFViTConfig.from_dict(fields), model_args.config_overrides)
    changed = [name for name in LANDMARK_FIELDS if landmark_state is not None and getattr(config, name) != getattr(base, name)]
    if changed:
        raise ValueError(f"--config_overrides changes {changed}, which the landmark CNN of --landmark_model_name_or_path fixes.")
    if lafs_args.local_points > config.num_patches:
        raise ValueError(f"--local_points ({lafs_args.local_points}) exceeds the model's num_patches ({config.num_patches}).")
    config.architectures = ["PartFViTModel"]
    backbone = PartFViTModel(config)
    if landmark_state is not None:
        backbone.landmark_net.load_state_dict(landmark_state, strict=True)
    backbone.landmark_net.requires_grad_(False)
    head = DINOHead(config.hidden_size, lafs_args.out_dim, use_bn=lafs_args.use_bn_in_head, norm_last_layer=lafs_args.norm_last_layer,
                    num_layers=lafs_args.head_num_layers, hidden_dim=lafs_args.head_hidden_dim, bottleneck_dim=lafs_args.head_bottleneck_dim)  # fmt: skip
    student = LAFSMultiViewWrapper(backbone, head)
    teacher = make_teacher(student)
    landmark_net = make_teacher(backbone.landmark_net).eval()
    return student, teacher, landmark_net


def view_generator(seed: int, step: int, micro: int, process_index: int) -> torch.Generator:
    """The landmark draws of one micro-step: a function of (seed, step, micro-step, process), so a resume repeats them."""
    return torch.Generator().manual_seed(int(np.random.default_rng([seed, step, micro, process_index]).integers(2**62)))


def lafs_loss(student, teacher, landmark_net, dino_loss: DINOLoss, batch: dict[str, torch.Tensor], generator: torch.Generator,
              lafs_args: LAFSArguments, temperature: float) -> torch.Tensor:  # fmt: skip
    """One micro-batch: landmarks on the clean views -> LAFS landmark views -> student (all views) and teacher
    (globals, no gradient) on the augmented views -> DINO loss (updates the loss centre)."""
    clean, augmented = batch["clean_pixel_values"], batch["pixel_values"]  # (B, V, C, S, S)
    batch_size, num_views = clean.shape[:2]
    with torch.no_grad():
        points = landmark_net(clean.transpose(0, 1).flatten(0, 1))  # view-major (V * B, N, 2)
    points = points.float().view(num_views, batch_size, -1, 2)
    views = sample_landmark_views(points, NUM_GLOBAL_VIEWS, lafs_args.num_local_views, lafs_args.local_points,
                                  lafs_args.landmark_noise_std, generator)  # fmt: skip
    images = list(augmented.transpose(0, 1))
    with torch.no_grad():
        teacher_output = teacher(images[:NUM_GLOBAL_VIEWS], views.landmarks[:NUM_GLOBAL_VIEWS])
    student_output = student(images, views.landmarks)
    return dino_loss(student_output, teacher_output, temperature)


@torch.no_grad()
def clip_gradients_per_parameter(parameters, max_norm: float) -> None:
    """DINO's `utils.clip_gradients`: every gradient with L2 norm above `max_norm` is scaled to `max_norm`."""
    for parameter in parameters:
        if parameter.grad is not None:
            factor = max_norm / (parameter.grad.norm(2) + 1e-6)
            parameter.grad.mul_(factor.clamp(max=1.0))


# ------------------------------------------------------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, lafs_args, args = parse_arguments((ModelArguments, DataArguments, LAFSArguments, LAFSOptimizationArguments), argv)
    accelerator = build_accelerator(args)
    if accelerator.distributed_type.value in ("FSDP", "DEEPSPEED"):
        raise ValueError("pretrain_lafs.py runs single-process or DDP: the teacher EMA reads the student's full parameters.")
    setup_logging(accelerator)
    torch.manual_seed(args.seed)  # same initial weights on every process
    max_steps = args.max_steps
    temperature_steps = lafs_args.warmup_teacher_temperature_steps
    temperature_steps = epochs_to_steps(LAFS_TEACHER_TEMPERATURE_EPOCHS, max_steps) if temperature_steps is None else temperature_steps
    freeze_steps = lafs_args.freeze_last_layer_steps
    freeze_steps = epochs_to_steps(LAFS_FREEZE_LAST_LAYER_EPOCHS, max_steps) if freeze_steps is None else freeze_steps

    # ---- networks, processor, data
    student, teacher, landmark_net = build_networks(model_args, lafs_args)
    config = student.backbone.config
    size = config.image_size
    processor = PartFViTImageProcessor(size={"height": size, "width": size})
    dino_loss = DINOLoss(lafs_args.out_dim, lafs_args.num_views, NUM_GLOBAL_VIEWS, lafs_args.student_temperature, lafs_args.center_momentum)
    transform = LAFSViewsTransform.from_image_processor(
        processor, num_local_views=lafs_args.num_local_views, crop_scale=(lafs_args.crop_scale_min, lafs_args.crop_scale_max),
        horizontal_flip=lafs_args.horizontal_flip, photometric=lafs_args.photometric_augmentation, seed=args.seed,
    )  # fmt: skip
    shards = data_args.resolve_shards(args.seed, max(size, MIN_SYNTHETIC_SIZE))

    # ---- optimizer (lr scaled by the effective batch); lr / weight decay set per step from DINO's schedules
    effective_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    lr = learning_rate(args, effective_batch)
    optimizer = torch.optim.AdamW(parameter_groups(student, args.weight_decay), lr=lr, betas=(args.adam_beta1, args.adam_beta2))
    student, optimizer = accelerator.prepare(student, optimizer)
    teacher.to(accelerator.device).train(lafs_args.teacher_train_mode)
    landmark_net.to(accelerator.device).eval()
    dino_loss.to(accelerator.device)
    accelerator.register_for_checkpointing(teacher)
    accelerator.register_for_checkpointing(dino_loss)  # the centre

    checkpoints = CheckpointManager(args.output_dir, args.checkpoints_total_limit)
    step, position = checkpoints.resume(accelerator, args.resume_from_checkpoint)
    batcher = build_batcher(shards, transform, accelerator, data_args, args.per_device_train_batch_size, args.seed, position)

    if args.report_to != "none":
        hyperparameters = {**asdict(args), **asdict(data_args), **asdict(lafs_args), **asdict(model_args)}
        accelerator.init_trackers("pretrain_lafs", config={k: str(v) for k, v in hyperparameters.items()})
    logger.info("***** Running LAFS pre-training *****")
    logger.info("  Model = Part fViT (%d blocks, %d px, %d points), DINO head %d prototypes", config.num_hidden_layers, size, config.num_patches, lafs_args.out_dim)
    logger.info("  Views = %d global (%d points) + %d local (%d points), landmark noise %g px", NUM_GLOBAL_VIEWS, config.num_patches,
                lafs_args.num_local_views, lafs_args.local_points, lafs_args.landmark_noise_std)  # fmt: skip
    logger.info("  Shards = %d (%s), processes = %d", len(shards), shards[0].kind, accelerator.num_processes)
    logger.info("  Total train batch size (w. parallel, distributed & accumulation) = %d", effective_batch)
    logger.info("  Optimizer steps = %d (warm-up %d), peak lr = %.3g, teacher temperature warm-up %d, last layer frozen %d",
                max_steps, args.warmup_steps, lr, temperature_steps, freeze_steps)  # fmt: skip

    progress = tqdm(total=max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="lafs")
    throughput, history = Throughput(), []
    student.train()
    unwrapped = accelerator.unwrap_model(student)
    while step < max_steps:
        step_lr = cosine_schedule(step, max_steps, lr, args.min_learning_rate, args.warmup_steps, args.warmup_start_learning_rate)
        step_wd = cosine_schedule(step, max_steps, args.weight_decay, args.weight_decay_end)
        temperature = teacher_temperature(step, lafs_args.warmup_teacher_temperature, lafs_args.teacher_temperature, temperature_steps)
        momentum = teacher_momentum(step, max_steps, lafs_args.momentum_teacher)
        for index, group in enumerate(optimizer.param_groups):
            group["lr"] = step_lr
            if index == 0:  # only the first group (>= 2-D parameters) is regularised
                group["weight_decay"] = step_wd

        loss_value = torch.zeros((), device=accelerator.device)
        for micro in range(args.gradient_accumulation_steps):
            batch = {k: v.to(accelerator.device) for k, v in batcher.next_batch().items()}
            generator = view_generator(args.seed, step, micro, accelerator.process_index)
            with micro_step(accelerator, student, micro, args.gradient_accumulation_steps):
                with accelerator.autocast():  # the teacher and the landmark CNN are not prepared: autocast them too
                    loss = lafs_loss(student, teacher, landmark_net, dino_loss, batch, generator, lafs_args, temperature)
                accelerator.backward(loss / args.gradient_accumulation_steps)
            loss_value += loss.detach().float() / args.gradient_accumulation_steps
            throughput.update(len(batch["pixel_values"]) * accelerator.num_processes)
        if args.clip_grad or args.max_grad_norm is not None:
            accelerator.unscale_gradients()  # fp16: clip the real gradients
        if args.clip_grad:
            clip_gradients_per_parameter(unwrapped.parameters(), args.clip_grad)
        if args.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(unwrapped.parameters(), args.max_grad_norm)
        if step < freeze_steps:  # DINO's cancel_gradients_last_layer: no update (nor weight decay) for the prototypes
            for parameter in unwrapped.head.last_layer.parameters():
                parameter.grad = None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        update_teacher(unwrapped, teacher, momentum)
        step += 1
        progress.update(1)

        loss_value = accelerator.reduce(loss_value, reduction="mean")
        check_finite(loss_value, step)
        history.append({"loss": loss_value.item(), "lr": step_lr, "weight_decay": step_wd, "teacher_temperature": temperature, "teacher_momentum": momentum})
        if step % args.logging_steps == 0 or step == max_steps:
            metrics = dict(history[-1], images_per_second=throughput.tick())
            logger.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            accelerator.log(metrics, step=step)
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            checkpoints.save(accelerator, step, batcher.position)
    progress.close()
    batcher.log_skipped()

    # ---- final artefacts: the teacher as a PartFViTModel (stage-3 initialisation) + processor; student and heads
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    result = {
        "steps": step,
        "first_loss": history[0]["loss"] if history else float("nan"),
        "last_loss": history[-1]["loss"] if history else float("nan"),
        "learning_rate": lr,
        "skipped": sum(batcher.skipped.values()),
    }
    if accelerator.is_main_process:
        teacher.backbone.save_pretrained(output_dir)
        processor.save_pretrained(output_dir)
        unwrapped.backbone.save_pretrained(output_dir / "pretraining" / "student")
        heads = {f"student_head.{k}": v for k, v in unwrapped.head.state_dict().items()}
        heads.update({f"teacher_head.{k}": v for k, v in teacher.head.state_dict().items()})
        heads["center"] = dino_loss.center
        save_file({k: v.detach().cpu().contiguous() for k, v in heads.items()}, str(output_dir / "pretraining" / "dino_heads.safetensors"))
        (output_dir / "metrics.json").write_text(json.dumps({**result, "loss_history": history}, indent=1))
        logger.info("Saved the teacher PartFViTModel + processor to %s, the student and DINO heads to %s.", output_dir, output_dir / "pretraining")
        if args.push_to_hub:
            push_folder_to_hub(output_dir, args, commit_message=f"LAFS pre-training, step {step}")
    accelerator.end_training()
    return result


if __name__ == "__main__":
    main()
