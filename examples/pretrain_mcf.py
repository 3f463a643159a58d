"""MCF pre-training with Accelerate on streamed face images.

    accelerate launch examples/pretrain_mcf.py --output_dir runs/mcf \
        --train_files "/data/laion-face/train-*.tar" --teacher_name_or_path mocov3-vitb16 \
        --per_device_train_batch_size 64 --gradient_accumulation_steps 8 --max_steps 80000 --warmup_steps 5000 \
        --mixed_precision bf16 --checkpointing_steps 1000 --resume_from_checkpoint latest

Without --dataset_name / --train_files it trains on synthetic faces. The run is deterministic and resumable: data
order, augmentations and masks are functions of (seed, sample), and checkpoints store the data position.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from faceformers import MCFConfig, MCFForPreTraining, MCFImageProcessor, MCFModel
from faceformers.data.transforms import MCFPretrainingTransform
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
    learning_rate,
    micro_step,
    parse_arguments,
    push_folder_to_hub,
    setup_logging,
    wrap_batch_norms_for_fsdp2,
)


logger = logging.getLogger("pretrain_mcf")
LOSS_TERMS = ("loss", "perceptual_loss", "contrastive_loss")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "An MCFForPreTraining checkpoint (folder or Hub id) to continue from."}
    )
    config_name: str | None = field(default=None, metadata={"help": "A config.json to train from scratch."})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated config overrides, e.g. 'hidden_size=128,num_hidden_layers=4'."}
    )
    teacher_name_or_path: str | None = field(
        default=None, metadata={"help": "MCFModel checkpoint of the perceptual teacher (e.g. converted MoCo-v3)."}
    )
    random_teacher: bool = field(
        default=False, metadata={"help": "Explicitly train against a randomly initialised teacher (demos, tests)."}
    )


def build_model(args: ModelArguments) -> MCFForPreTraining:
    if args.model_name_or_path:
        model = MCFForPreTraining.from_pretrained(args.model_name_or_path)
    else:
        config = MCFConfig.from_json_file(args.config_name) if args.config_name else MCFConfig()
        model = MCFForPreTraining(apply_config_overrides(config, args.config_overrides))
    if args.teacher_name_or_path:
        model.load_perceptual_teacher(MCFModel.from_pretrained(args.teacher_name_or_path).state_dict())
    elif not bool(model.has_perceptual_teacher_weights):
        if not args.random_teacher:
            raise ValueError(
                "No perceptual teacher: pass --teacher_name_or_path (an MCFModel folder, e.g. a converted MoCo-v3 "
                "ViT-B/16), a --model_name_or_path that contains one, or --random_teacher to train against random features."
            )
        logger.warning("Training against a RANDOMLY INITIALISED perceptual teacher (--random_teacher).")
        model.load_perceptual_teacher(MCFModel(model.config.get_perceptual_teacher_config()).state_dict())
    return model


def main(argv: list[str] | None = None) -> dict[str, float]:
    model_args, data_args, args = parse_arguments((ModelArguments, DataArguments, OptimizationArguments), argv)
    accelerator = build_accelerator(args)
    setup_logging(accelerator)
    torch.manual_seed(args.seed)  # same initial weights on every process

    # ---- model, processor, data
    model = build_model(model_args)
    config = model.config
    processor = MCFImageProcessor(size={"height": config.image_size, "width": config.image_size})
    shards = data_args.resolve_shards(args.seed, config.image_size)
    transform = MCFPretrainingTransform.from_image_processor(processor, config.patch_size, seed=args.seed)

    # ---- optimizer (lr scaled by the effective batch), schedule stepped per optimizer step
    effective_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    lr = learning_rate(args, effective_batch)
    wrap_batch_norms_for_fsdp2(accelerator, model)
    optimizer, scheduler = build_optimizer(model, args, lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process

    checkpoints = CheckpointManager(args.output_dir, args.checkpoints_total_limit)
    step, position = checkpoints.resume(accelerator, args.resume_from_checkpoint)
    batcher = build_batcher(shards, transform, accelerator, data_args, args.per_device_train_batch_size, args.seed, position)

    if args.report_to != "none":
        accelerator.init_trackers("pretrain_mcf", config={k: str(v) for k, v in {**asdict(args), **asdict(data_args)}.items()})
    logger.info("***** Running MCF pre-training *****")
    logger.info("  Shards = %d (%s), processes = %d", len(shards), shards[0].kind, accelerator.num_processes)
    logger.info("  Per-device batch = %d, accumulation = %d", args.per_device_train_batch_size, args.gradient_accumulation_steps)
    logger.info("  Total train batch size (w. parallel, distributed & accumulation) = %d", effective_batch)
    logger.info("  Optimizer steps = %d (warm-up %d), peak lr = %.3g", args.max_steps, args.warmup_steps, lr)

    progress = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="pretrain")
    throughput, history = Throughput(), []
    model.train()
    while step < args.max_steps:
        terms = torch.zeros(len(LOSS_TERMS), device=accelerator.device)
        for micro in range(args.gradient_accumulation_steps):
            batch = {k: v.to(accelerator.device) for k, v in batcher.next_batch().items()}
            with micro_step(accelerator, model, micro, args.gradient_accumulation_steps):
                outputs = model(**batch)
                accelerator.backward(outputs.loss / args.gradient_accumulation_steps)
            terms += torch.stack([outputs[name].detach().float() for name in LOSS_TERMS]) / args.gradient_accumulation_steps
            throughput.update(len(batch["pixel_values"]) * accelerator.num_processes)
        if args.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        accelerator.unwrap_model(model).update_momentum_encoder()
        step += 1
        progress.update(1)

        terms = accelerator.reduce(terms, reduction="mean")
        check_finite(terms[0], step)
        history.append(terms[0].item())
        if step % args.logging_steps == 0 or step == args.max_steps:
            metrics = {name: value.item() for name, value in zip(LOSS_TERMS, terms)}
            metrics.update(lr=scheduler.get_last_lr()[0], images_per_second=throughput.tick())
            logger.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            accelerator.log(metrics, step=step)
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            checkpoints.save(accelerator, step, batcher.position)
    progress.close()
    batcher.log_skipped()

    # ---- final artefacts: the encoder users fine-tune, and the full pre-training model to continue from
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)  # on every process: gathers FSDP shards
    if accelerator.is_main_process:
        encoder_state = {key.removeprefix("mcf."): value for key, value in state_dict.items() if key.startswith("mcf.")}
        unwrapped.mcf.save_pretrained(output_dir, state_dict=encoder_state)
        processor.save_pretrained(output_dir)
        unwrapped.save_pretrained(output_dir / "pretraining", state_dict=state_dict)
        processor.save_pretrained(output_dir / "pretraining")
        (output_dir / "loss_history.json").write_text(json.dumps(history))
        logger.info("Saved MCFModel to %s and MCFForPreTraining to %s.", output_dir, output_dir / "pretraining")
        if args.push_to_hub:
            push_folder_to_hub(output_dir, args, commit_message=f"MCF pre-training, step {step}")
    accelerator.end_training()
    return {"first_loss": history[0] if history else float("nan"), "last_loss": history[-1] if history else float("nan"), "steps": step, "skipped": sum(batcher.skipped.values())}


if __name__ == "__main__":
    main()
