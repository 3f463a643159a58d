"""FaRL pre-training (image-text contrastive + masked image modelling) with Accelerate on streamed image-text pairs.

    accelerate launch examples/pretrain_farl.py --output_dir runs/farl \
        --train_files "/data/laion-face/{00000..01999}.tar" --image_tokenizer dall_e_encoder.safetensors \
        --per_device_train_batch_size 128 --gradient_accumulation_steps 4 --max_steps 100000 --warmup_steps 2000 \
        --mixed_precision bf16 --checkpointing_steps 1000 --resume_from_checkpoint latest

Pairs are WebDataset shards with an image and a caption (`.txt`, or `caption` inside `.json`: the img2dataset layout of
LAION-Face), parquet files with image and caption columns, or, without --train_files / --dataset_name, synthetic faces
with captions. The defaults follow the paper: AdamW (weight decay 0.05), lr warm-up 1e-6 -> 1e-3, then cosine to 9e-4.
`--image_tokenizer` is the DALL-E dVAE encoder converted by `faceformers.models.farl.convert_dall_e_to_hf`; without it
pass `--random_image_tokenizer` (MIM then predicts the codes of a random frozen encoder: demos and tests only) or
`--config_overrides mim_loss_weight=0` (contrastive only).

Every `--eval_steps` and at the end, image->text and text->image retrieval (R@1) is measured on held-apart pairs
(`--eval_files`, default: synthetic faces of another seed); a retrieved caption counts as right when its text equals the
true one (attribute-derived captions repeat), and the recall of a random ranking is logged next to it.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import AutoTokenizer

from faceformers import FaRLConfig, FaRLForPreTraining, FaRLImageProcessor, FaRLProcessor, build_farl_tokenizer
from faceformers.data.parsing import evaluation_batches
from faceformers.data.streaming import resolve_train_files, synthetic_shards
from faceformers.data.transforms import FaRLPretrainingTransform
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
)


logger = logging.getLogger("pretrain_farl")


@dataclass
class ModelArguments:
    model_name_or_path: str | None = field(
        default=None, metadata={"help": "A FaRLForPreTraining (or FaRLModel) folder or Hub id to continue from."}
    )
    config_name: str | None = field(default=None, metadata={"help": "A config.json to train from scratch."})
    config_overrides: str | None = field(
        default=None, metadata={"help": "Comma-separated overrides, e.g. 'vision_config.hidden_size=256,mim_loss_weight=0'."}
    )
    image_tokenizer: str | None = field(
        default=None, metadata={"help": "The DALL-E dVAE encoder giving the MIM targets: encoder.pkl or its .safetensors conversion."}
    )
    random_image_tokenizer: bool = field(
        default=False, metadata={"help": "Explicitly use a random frozen dVAE encoder for the MIM targets (demos, tests)."}
    )


@dataclass
class EvaluationArguments:
    eval_files: list[str] | None = field(
        default=None, metadata={"help": "Glob patterns of held-apart pairs (default: synthetic faces of another seed).", "nargs": "+"}
    )
    eval_steps: int | None = field(default=None, metadata={"help": "Evaluate retrieval every N optimizer steps (and at the end)."})
    eval_num_samples: int = field(default=256, metadata={"help": "Synthetic evaluation pairs."})
    per_device_eval_batch_size: int = field(default=64, metadata={"help": "Evaluation batch."})
    eval_pool_size: int = field(default=16, metadata={"help": "Pairs per pool of the pooled image->text top-1."})

    def __post_init__(self):
        if self.eval_steps is not None and self.eval_steps < 1:
            raise ValueError(f"--eval_steps must be >= 1, got {self.eval_steps}.")
        for name in ("eval_num_samples", "per_device_eval_batch_size", "eval_pool_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name} must be >= 1, got {getattr(self, name)}.")


@dataclass
class FaRLOptimizationArguments(OptimizationArguments):
    """`OptimizationArguments` with the FaRL paper's defaults."""

    learning_rate: float | None = field(default=1e-3, metadata={"help": "Peak AdamW lr (not scaled by the batch)."})
    warmup_start_learning_rate: float = field(default=1e-6, metadata={"help": "lr at step 0 of the warm-up."})
    min_learning_rate: float = field(default=9e-4, metadata={"help": "lr the cosine decay ends at."})
    weight_decay: float = field(default=0.05, metadata={"help": "AdamW weight decay (not on biases and norms)."})
    adam_beta2: float = 0.98


def build_model(args: ModelArguments) -> FaRLForPreTraining:
    if args.model_name_or_path:
        model = FaRLForPreTraining.from_pretrained(args.model_name_or_path)
    else:
        config = FaRLConfig.from_json_file(args.config_name) if args.config_name else FaRLConfig()
        model = FaRLForPreTraining(apply_config_overrides(config, args.config_overrides))
    if model.image_tokenizer is None:
        return model
    if args.image_tokenizer:
        model.load_image_tokenizer(args.image_tokenizer)
    elif not args.model_name_or_path:
        if not args.random_image_tokenizer:
            raise ValueError(
                "No visual tokenizer for the MIM targets: pass --image_tokenizer (the DALL-E encoder converted with "
                "faceformers.models.farl.convert_dall_e_to_hf), --random_image_tokenizer, or "
                "--config_overrides mim_loss_weight=0."
            )
        logger.warning("MIM targets come from a RANDOMLY INITIALISED dVAE encoder (--random_image_tokenizer).")
    return model


def load_tokenizer(args: ModelArguments):
    """The checkpoint's own tokenizer when it has one, else the CLIP BPE tokenizer built from open_clip's vocabulary."""
    if args.model_name_or_path and (Path(args.model_name_or_path) / "tokenizer_config.json").is_file():
        return AutoTokenizer.from_pretrained(args.model_name_or_path)
    return build_farl_tokenizer()


@torch.no_grad()
def evaluate_retrieval(model, eval_shards, transform, batch_size: int, device, pool_size: int = 16) -> dict[str, float]:
    """Retrieval over all eval pairs, image->text R@1/5/10 and text->image R@1 (a hit = the same caption text), with
    the recall a random ranking would get, and top-1 accuracy inside pools of `pool_size` pairs."""
    model.eval()
    image_embeds, text_embeds, captions = [], [], []
    for batch in evaluation_batches(eval_shards, transform, batch_size):
        outputs = model.farl(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
            pixel_values=batch["pixel_values"].to(device),
        )
        image_embeds.append(outputs.image_embeds.float())
        text_embeds.append(outputs.text_embeds.float())
        captions.append(batch["input_ids"])
    model.train()
    image_embeds, text_embeds, captions = torch.cat(image_embeds), torch.cat(text_embeds), torch.cat(captions)
    same_caption = (captions[:, None, :] == captions[None, :, :]).all(-1).to(device)  # (N, N)
    similarity = image_embeds @ text_embeds.t()
    rows = torch.arange(len(captions), device=device)
    scores = {"text_to_image_r1": same_caption[similarity.argmax(0), rows].float().mean().item()}
    ranked = similarity.argsort(dim=1, descending=True)  # texts by similarity, per image
    matches = same_caption.gather(1, ranked).cpu()  # (N, N): the ranked texts that carry the true caption
    for k in (1, 5, 10):
        scores[f"image_to_text_r{k}"] = matches[:, :k].any(1).float().mean().item()
        scores[f"chance_r{k}"] = chance_recall(same_caption.sum(1).tolist(), k)
    scores.update(pool_accuracy(similarity, same_caption, pool_size))
    return {**scores, "num_pairs": len(captions)}


def pool_accuracy(similarity: torch.Tensor, same_caption: torch.Tensor, pool_size: int) -> dict[str, float]:
    """Image->text top-1 inside consecutive pools of `pool_size` pairs (a CLIP-batch-like task), and its chance."""
    hits, chance, count = 0.0, 0.0, 0
    for start in range(0, len(similarity) - pool_size + 1, pool_size):
        pool = slice(start, start + pool_size)
        same = same_caption[pool, pool]
        rows = torch.arange(pool_size, device=similarity.device)
        hits += same[rows, similarity[pool, pool].argmax(1)].float().sum().item()
        chance += same.float().mean(1).sum().item()
        count += pool_size
    return {f"pool{pool_size}_top1": hits / max(count, 1), f"chance_pool{pool_size}_top1": chance / max(count, 1)}


def chance_recall(num_true: list[int], k: int) -> float:
    """Expected recall@k of a random ranking when image i has `num_true[i]` matching texts among N."""
    total = len(num_true)
    return sum(1 - math.comb(total - m, k) / math.comb(total, k) for m in num_true) / total


def main(argv: list[str] | None = None) -> dict:
    model_args, data_args, eval_args, args = parse_arguments(
        (ModelArguments, DataArguments, EvaluationArguments, FaRLOptimizationArguments), argv
    )
    accelerator = build_accelerator(args)
    setup_logging(accelerator)
    torch.manual_seed(args.seed)  # same initial weights on every process

    # ---- model, processor, data
    model = build_model(model_args)
    config = model.config
    size = config.vision_config.image_size
    processor = FaRLProcessor(FaRLImageProcessor(size={"height": size, "width": size}), load_tokenizer(model_args))
    transform = FaRLPretrainingTransform.from_model(model, processor.image_processor, processor.tokenizer, seed=args.seed)
    eval_transform = FaRLPretrainingTransform.from_model(
        model, processor.image_processor, processor.tokenizer, horizontal_flip=False, seed=args.seed
    )
    shards = data_args.resolve_shards(args.seed, size)
    if eval_args.eval_files:
        eval_shards = resolve_train_files(eval_args.eval_files)
    else:
        eval_shards = synthetic_shards(eval_args.eval_num_samples, 8, seed=args.seed + 1000, image_size=size)

    # ---- optimizer, schedule stepped per optimizer step
    effective_batch = args.per_device_train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    lr = learning_rate(args, effective_batch)
    optimizer, scheduler = build_optimizer(model, args, lr)
    model, optimizer = accelerator.prepare(model, optimizer)
    accelerator.register_for_checkpointing(scheduler)  # not prepared: accelerate would step it once per process

    checkpoints = CheckpointManager(args.output_dir, args.checkpoints_total_limit)
    step, position = checkpoints.resume(accelerator, args.resume_from_checkpoint)
    batcher = build_batcher(shards, transform, accelerator, data_args, args.per_device_train_batch_size, args.seed, position)
    loss_terms = ("loss", "contrastive_loss") + (("mim_loss",) if config.mim_loss_weight > 0 else ())

    if args.report_to != "none":
        accelerator.init_trackers("pretrain_farl", config={k: str(v) for k, v in {**asdict(args), **asdict(data_args)}.items()})
    logger.info("***** Running FaRL pre-training *****")
    logger.info("  Shards = %d (%s), eval shards = %d (%s), processes = %d", len(shards), shards[0].kind, len(eval_shards), eval_shards[0].kind, accelerator.num_processes)
    logger.info("  Total train batch size (w. parallel, distributed & accumulation) = %d", effective_batch)
    logger.info("  Optimizer steps = %d (warm-up %d), peak lr = %.3g", args.max_steps, args.warmup_steps, lr)

    def run_evaluation() -> dict[str, float]:
        scores = evaluate_retrieval(accelerator.unwrap_model(model), eval_shards, eval_transform,
                                    eval_args.per_device_eval_batch_size, accelerator.device, eval_args.eval_pool_size)  # fmt: skip
        logger.info("step %d  eval %s", step, "  ".join(f"{k} {v:.4g}" for k, v in scores.items()))
        accelerator.log({f"eval/{k}": v for k, v in scores.items()}, step=step)
        return {"step": step, **scores}

    evaluations = [run_evaluation()] if step == 0 else []
    progress = tqdm(total=args.max_steps, initial=step, disable=not accelerator.is_local_main_process, desc="pretrain")
    throughput, history = Throughput(), []
    model.train()
    while step < args.max_steps:
        terms = torch.zeros(len(loss_terms), device=accelerator.device)
        for micro in range(args.gradient_accumulation_steps):
            batch = {k: v.to(accelerator.device) for k, v in batcher.next_batch().items()}
            with micro_step(accelerator, model, micro, args.gradient_accumulation_steps):
                outputs = model(**batch)
                accelerator.backward(outputs.loss / args.gradient_accumulation_steps)
            terms += torch.stack([outputs[name].detach().float() for name in loss_terms]) / args.gradient_accumulation_steps
            throughput.update(len(batch["pixel_values"]) * accelerator.num_processes)
        if args.max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        progress.update(1)

        terms = accelerator.reduce(terms, reduction="mean")
        check_finite(terms[0], step)
        history.append({name: value.item() for name, value in zip(loss_terms, terms)})
        if step % args.logging_steps == 0 or step == args.max_steps:
            metrics = dict(history[-1], lr=scheduler.get_last_lr()[0], images_per_second=throughput.tick())
            logger.info("step %d  %s", step, "  ".join(f"{k} {v:.4g}" for k, v in metrics.items()))
            accelerator.log(metrics, step=step)
        if args.checkpointing_steps and step % args.checkpointing_steps == 0:
            checkpoints.save(accelerator, step, batcher.position)
        if eval_args.eval_steps and step % eval_args.eval_steps == 0 and step < args.max_steps:
            evaluations.append(run_evaluation())
    progress.close()
    batcher.log_skipped()
    evaluations.append(run_evaluation())

    # ---- final artefacts: FaRLModel + processor (what users load), and the full pre-training model
    accelerator.wait_for_everyone()
    output_dir = Path(args.output_dir)
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    if accelerator.is_main_process:
        farl_state = {key.removeprefix("farl."): value for key, value in state_dict.items() if key.startswith("farl.")}
        unwrapped.farl.save_pretrained(output_dir, state_dict=farl_state)
        processor.save_pretrained(output_dir)
        unwrapped.save_pretrained(output_dir / "pretraining", state_dict=state_dict)
        processor.save_pretrained(output_dir / "pretraining")
        (output_dir / "loss_history.json").write_text(json.dumps(history))
        (output_dir / "eval_history.json").write_text(json.dumps(evaluations, indent=1))
        logger.info("Saved FaRLModel to %s and FaRLForPreTraining to %s.", output_dir, output_dir / "pretraining")
        if args.push_to_hub:
            push_folder_to_hub(output_dir, args, commit_message=f"FaRL pre-training, step {step}")
    accelerator.end_training()
    return {"history": history, "evaluations": evaluations, "steps": step, "skipped": sum(batcher.skipped.values())}


if __name__ == "__main__":
    main()
