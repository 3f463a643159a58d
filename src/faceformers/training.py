"""What every faceformers training script repeats: arguments, data, optimizer groups, schedule, checkpoint/resume,
logging and throughput. Small and plain on purpose: scripts stay linear and readable, this module keeps them short.

Needs the `training` extra (`pip install faceformers[training]`).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader

from .data.streaming import Batcher, FaceStream, Shard, resolve_dataset_name, resolve_train_files, synthetic_shards


logger = logging.getLogger(__name__)

MIXED_PRECISION = ("no", "bf16", "fp16")
CHECKPOINT_PREFIX = "step_"


@dataclass
class DataArguments:
    """Where the training images stream from. Without `dataset_name` or `train_files`, synthetic faces are used."""

    dataset_name: str | None = field(
        default=None, metadata={"help": "Hub dataset id or local dataset folder with .tar/.parquet files; 'synthetic'."}
    )
    train_files: list[str] | None = field(
        default=None, metadata={"help": "Glob patterns of WebDataset .tar shards, .parquet files or image folders.", "nargs": "+"}
    )
    dataset_split: str = field(default="train", metadata={"help": "Split of --dataset_name to use."})
    synthetic_num_samples: int = field(default=4096, metadata={"help": "Samples per epoch of the synthetic faces."})
    synthetic_num_shards: int = field(default=8, metadata={"help": "Shards of the synthetic faces."})
    shuffle_buffer_size: int = field(default=1000, metadata={"help": "Per-shard shuffle buffer (0: shard order)."})
    dataloader_num_workers: int = field(default=0, metadata={"help": "DataLoader worker processes per process."})

    def __post_init__(self):
        if self.dataset_name and self.train_files:
            raise ValueError("Pass either --dataset_name or --train_files, not both.")
        for name in ("synthetic_num_samples", "synthetic_num_shards"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if self.shuffle_buffer_size < 0 or self.dataloader_num_workers < 0:
            raise ValueError(
                f"--shuffle_buffer_size ({self.shuffle_buffer_size}) and --dataloader_num_workers "
                f"({self.dataloader_num_workers}) must be >= 0."
            )

    def resolve_shards(self, seed: int, image_size: int) -> list[Shard]:
        if self.train_files:
            return resolve_train_files(self.train_files)
        if self.dataset_name and self.dataset_name != "synthetic":
            return resolve_dataset_name(self.dataset_name, self.dataset_split)
        return synthetic_shards(self.synthetic_num_samples, self.synthetic_num_shards, seed=seed, image_size=image_size)


@dataclass
class OptimizationArguments:
    """Optimizer, schedule, precision and the run's bookkeeping (defaults: the MCF recipe)."""

    output_dir: str = field(metadata={"help": "Where checkpoints and the final model go."})
    per_device_train_batch_size: int = field(default=64, metadata={"help": "Batch per process and micro-step."})
    gradient_accumulation_steps: int = field(default=1, metadata={"help": "Micro-steps per optimizer step."})
    max_steps: int = field(default=1000, metadata={"help": "Optimizer steps to train (streams have no epochs)."})
    warmup_steps: int = field(default=0, metadata={"help": "Linear warm-up steps, then cosine decay."})
    warmup_start_learning_rate: float = field(default=0.0, metadata={"help": "lr at step 0 of the warm-up."})
    min_learning_rate: float = field(default=0.0, metadata={"help": "lr the cosine decay ends at."})
    base_learning_rate: float = field(default=1.5e-4, metadata={"help": "lr = base_lr * effective_batch / 256."})
    learning_rate: float | None = field(default=None, metadata={"help": "Absolute lr; overrides --base_learning_rate."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    adam_beta1: float = 0.9
    adam_beta2: float = 0.95
    max_grad_norm: float | None = field(default=None, metadata={"help": "Clip gradients to this norm."})
    mixed_precision: str = field(default="no", metadata={"help": "no, bf16 or fp16."})
    seed: int = 0
    logging_steps: int = field(default=10, metadata={"help": "Log every N optimizer steps."})
    checkpointing_steps: int | None = field(default=None, metadata={"help": "Save a resumable state every N steps."})
    checkpoints_total_limit: int | None = field(default=2, metadata={"help": "Keep the last K checkpoints."})
    resume_from_checkpoint: str | None = field(default=None, metadata={"help": "A checkpoint folder or 'latest'."})
    report_to: str = field(default="none", metadata={"help": "Tracker: none or tensorboard."})
    push_to_hub: bool = field(default=False, metadata={"help": "Publish the final folder (see faceformers-publish)."})
    hub_model_id: str | None = field(default=None, metadata={"help": "Hub repository org/name for --push_to_hub."})
    hub_revision: str | None = field(default=None, metadata={"help": "Branch to push to (default: main)."})
    hub_private_repo: bool = field(default=False, metadata={"help": "Create the Hub repository as private."})
    hub_model_card: str | None = field(default=None, metadata={"help": "Card source (.yaml) for the pushed model."})
    cpu: bool = field(default=False, metadata={"help": "Train on CPU even if an accelerator is present."})

    def __post_init__(self):
        positive = ("per_device_train_batch_size", "gradient_accumulation_steps", "max_steps", "logging_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")
        if not 0 <= self.warmup_steps < self.max_steps:
            raise ValueError(f"--warmup_steps must be in [0, max_steps={self.max_steps}), got {self.warmup_steps}.")
        for name in ("base_learning_rate", "learning_rate"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise ValueError(f"--{name} must be positive, got {value}.")
        if self.warmup_start_learning_rate < 0 or self.min_learning_rate < 0:
            raise ValueError(
                f"--warmup_start_learning_rate ({self.warmup_start_learning_rate}) and --min_learning_rate "
                f"({self.min_learning_rate}) must be >= 0."
            )
        if self.weight_decay < 0 or not (0 <= self.adam_beta1 < 1 and 0 <= self.adam_beta2 < 1):
            raise ValueError(
                f"Invalid optimizer settings: weight_decay={self.weight_decay}, betas=({self.adam_beta1}, {self.adam_beta2})."
            )
        if self.max_grad_norm is not None and self.max_grad_norm <= 0:
            raise ValueError(f"--max_grad_norm must be positive, got {self.max_grad_norm}.")
        if self.mixed_precision not in MIXED_PRECISION:
            raise ValueError(f"--mixed_precision must be one of {MIXED_PRECISION}, got {self.mixed_precision!r}.")
        if self.checkpointing_steps is not None and self.checkpointing_steps < 1:
            raise ValueError(f"--checkpointing_steps must be >= 1, got {self.checkpointing_steps}.")
        if self.checkpoints_total_limit is not None and self.checkpoints_total_limit < 1:
            raise ValueError(f"--checkpoints_total_limit must be >= 1, got {self.checkpoints_total_limit}.")
        if self.report_to not in ("none", "tensorboard"):
            raise ValueError(f"--report_to must be 'none' or 'tensorboard', got {self.report_to!r}.")
        if self.push_to_hub and not self.hub_model_id:
            raise ValueError("--push_to_hub needs --hub_model_id.")


def parse_arguments(dataclass_types: tuple, argv: list[str] | None = None) -> tuple:
    """`HfArgumentParser` over the dataclasses; a single `.json` argument is read as a file of arguments."""
    from transformers import HfArgumentParser

    parser = HfArgumentParser(dataclass_types)
    argv = sys.argv[1:] if argv is None else list(argv)
    if len(argv) == 1 and argv[0].endswith(".json"):
        return parser.parse_json_file(json_file=os.path.abspath(argv[0]))
    return parser.parse_args_into_dataclasses(args=argv)


def _split_overrides(overrides: str) -> list[str]:
    """'a=1,b=[1,2],c={"x": 1}' -> ['a=1', 'b=[1,2]', 'c={"x": 1}']: commas inside brackets stay."""
    items, depth, current = [], 0, ""
    for character in overrides:
        if character in "[{(":
            depth += 1
        elif character in "]})":
            depth -= 1
        if character == "," and depth == 0:
            items.append(current)
            current = ""
        else:
            current += character
    return items + [current] if current else items


def apply_config_overrides(config, overrides: str | None):
    """'a=1,b=x,vision_config.hidden_size=64' -> a new validated config of the same class; values are parsed as JSON
    when possible, and a dotted name sets a field of a sub-config."""
    if not overrides:
        return config
    fields = config.to_dict()
    for item in _split_overrides(overrides):
        name, separator, value = item.partition("=")
        head, _, sub_field = name.strip().partition(".")
        if not separator or not hasattr(config, head) or (sub_field and not isinstance(fields.get(head), dict)):
            raise ValueError(f"Invalid --config_overrides item {item!r}: expected name=value with a known config field.")
        target = fields[head] if sub_field else fields
        try:
            target[sub_field or head] = json.loads(value)
        except json.JSONDecodeError:
            target[sub_field or head] = value
    return type(config).from_dict(fields)


def build_accelerator(args: OptimizationArguments):
    """An `Accelerator` for this run. Gradient accumulation is explicit in the scripts (see `micro_step`)."""
    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    return Accelerator(
        mixed_precision=args.mixed_precision,
        cpu=args.cpu,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
    )


def micro_step(accelerator, model, index: int, accumulation_steps: int):
    """Context of micro-step `index`: gradients are synchronised across processes only on the last one."""
    import contextlib

    return contextlib.nullcontext() if index == accumulation_steps - 1 else accelerator.no_sync(model)


def setup_logging(accelerator) -> None:
    """INFO on the local main process, WARNING elsewhere; transformers' own logs one level quieter."""
    import transformers

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO)
    if accelerator.is_local_main_process:
        transformers.utils.logging.set_verbosity_warning()
    else:
        logging.getLogger().setLevel(logging.WARNING)
        transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def parameter_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Trainable parameters, without weight decay for 1-D tensors (biases, norms) as in MAE / timm."""
    decay, no_decay = [], []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (no_decay if parameter.ndim <= 1 else decay).append(parameter)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def learning_rate(args: OptimizationArguments, effective_batch_size: int) -> float:
    return args.learning_rate if args.learning_rate is not None else args.base_learning_rate * effective_batch_size / 256


def build_optimizer(model: torch.nn.Module, args: OptimizationArguments, lr: float):
    """AdamW over `parameter_groups` and a per-optimizer-step schedule: linear warm-up from
    `warmup_start_learning_rate` to `lr`, then cosine decay to `min_learning_rate` at `max_steps`."""
    optimizer = torch.optim.AdamW(parameter_groups(model, args.weight_decay), lr=lr, betas=(args.adam_beta1, args.adam_beta2))
    start, end = args.warmup_start_learning_rate / lr, args.min_learning_rate / lr

    def factor(step: int) -> float:
        if step < args.warmup_steps:
            return start + (1 - start) * step / args.warmup_steps
        progress = (step - args.warmup_steps) / max(1, args.max_steps - args.warmup_steps)
        return end + (1 - end) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def wrap_batch_norms_for_fsdp2(accelerator, model: torch.nn.Module) -> None:
    """Under FSDP2 with bf16, give every BatchNorm its own fp32 unit (else: "expected scalar type BFloat16 but found
    Float", pytorch/torchtitan#674). Call before building the optimizer and `accelerator.prepare`."""
    if not (getattr(accelerator, "is_fsdp2", False) and accelerator.mixed_precision == "bf16"):
        return
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    policy = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32, output_dtype=torch.bfloat16)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            fully_shard(module, mp_policy=policy)


def build_batcher(
    shards: list[Shard], transform, accelerator, data_args: DataArguments, batch_size: int, seed: int, position: int
) -> Batcher:
    """This process's batches: its part of the deterministic stream, starting at `position` (resume)."""
    stream = FaceStream(
        shards,
        transform,
        rank=accelerator.process_index,
        world_size=accelerator.num_processes,
        seed=seed,
        shuffle_buffer=data_args.shuffle_buffer_size,
        start_position=position,
    )
    stream.check_workers(data_args.dataloader_num_workers)
    workers = data_args.dataloader_num_workers
    # The loader draws a base seed when iteration starts: from its own generator, so that it never consumes the
    # global RNG (which a resume restores, and dropout then reads).
    loader = DataLoader(
        stream,
        batch_size=None,
        num_workers=workers,
        prefetch_factor=4 * batch_size if workers else None,
        generator=torch.Generator().manual_seed(seed),
    )
    return Batcher(loader, batch_size, start_position=position)


class CheckpointManager:
    """`output_dir/checkpoints/step_<n>`: `accelerator.save_state` + `trainer_state.json` (step, data positions).

    A checkpoint is written under a temporary name and renamed when complete, so a run killed while saving never
    leaves a checkpoint that `latest` would pick up half-written.
    """

    def __init__(self, output_dir: str, keep_last: int | None):
        self.root = Path(output_dir) / "checkpoints"
        self.keep_last = keep_last

    def complete_checkpoints(self) -> list[Path]:
        if not self.root.is_dir():
            return []
        found = [p for p in self.root.glob(f"{CHECKPOINT_PREFIX}*") if (p / "trainer_state.json").exists() and not p.name.endswith(".tmp")]
        return sorted(found, key=lambda p: int(p.name[len(CHECKPOINT_PREFIX) :]))

    def resolve(self, resume_from_checkpoint: str) -> Path:
        if resume_from_checkpoint == "latest":
            checkpoints = self.complete_checkpoints()
            if not checkpoints:
                raise ValueError(f"--resume_from_checkpoint latest: no complete checkpoint in {self.root}.")
            return checkpoints[-1]
        path = Path(resume_from_checkpoint)
        if not (path / "trainer_state.json").exists():
            raise ValueError(f"--resume_from_checkpoint {path} is not a complete checkpoint (no trainer_state.json).")
        return path

    def save(self, accelerator, step: int, data_position: int, extra: dict[str, Any] | None = None) -> Path:
        final = self.root / f"{CHECKPOINT_PREFIX}{step:08d}"
        temporary = final.with_name(final.name + ".tmp")
        positions = accelerator.gather(torch.tensor([data_position], device=accelerator.device)).tolist()
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        if accelerator.is_main_process:
            state = {"step": step, "data_positions": positions, **(extra or {})}
            (temporary / "trainer_state.json").write_text(json.dumps(state, indent=1))
            shutil.rmtree(final, ignore_errors=True)
            temporary.rename(final)
            self._prune()
        accelerator.wait_for_everyone()
        return final

    def resume(self, accelerator, resume_from_checkpoint: str | None) -> tuple[int, int]:
        """(step, data position) to start from: (0, 0), or restored from a checkpoint folder or 'latest'."""
        if not resume_from_checkpoint:
            return 0, 0
        path = self.resolve(resume_from_checkpoint)
        step, position = self.load(accelerator, path)
        logger.info("Resumed from %s at step %d (data position %d).", path, step, position)
        return step, position

    def load(self, accelerator, path: Path) -> tuple[int, int]:
        """Restore model/optimizer/schedule/RNG states; returns (step, this process's data position)."""
        accelerator.load_state(str(path))
        state = json.loads((path / "trainer_state.json").read_text())
        positions = state["data_positions"]
        if len(positions) != accelerator.num_processes:
            raise ValueError(
                f"Checkpoint {path} was written by {len(positions)} processes; resuming with "
                f"{accelerator.num_processes} would change the data order. Resume with the same number of processes."
            )
        return state["step"], positions[accelerator.process_index]

    def _prune(self) -> None:
        if self.keep_last is None:
            return
        for old in self.complete_checkpoints()[: -self.keep_last]:
            shutil.rmtree(old, ignore_errors=True)


class Throughput:
    """Images per second between two `tick`s."""

    def __init__(self):
        self.start, self.images = time.perf_counter(), 0

    def update(self, images: int) -> None:
        self.images += images

    def tick(self) -> float:
        now = time.perf_counter()
        rate = self.images / max(now - self.start, 1e-9)
        self.start, self.images = now, 0
        return rate


def push_folder_to_hub(folder: str | Path, args: OptimizationArguments, commit_message: str):
    """`--push_to_hub`: publish the saved folder the way `faceformers-publish --pretrained_dir` does (card, checks,
    safetensors and JSON/text only, one commit); the token comes from the environment or the HF login."""
    from .publish import publish_pretrained

    with tempfile.TemporaryDirectory() as staging:
        return publish_pretrained(
            folder,
            args.hub_model_id,
            Path(staging) / "publish",
            card=args.hub_model_card,
            revision=args.hub_revision,
            private=args.hub_private_repo,
            commit_message=commit_message,
        )


def check_finite(loss: torch.Tensor, step: int) -> None:
    if not math.isfinite(loss.item()):
        raise FloatingPointError(f"Loss is {loss.item()} at step {step}; stopping (lower the lr or use bf16).")
