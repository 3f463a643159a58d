"""Convert a released FaRL checkpoint (OpenAI-CLIP key layout) to a `FaRLModel` folder.

The FaRL release (`FaRL-Base-Patch16-LAIONFace20M-ep16.pth`, `-ep64.pth`) is `{'state_dict': ...}` with the keys of
OpenAI CLIP's `model.CLIP` (image tower under `visual.`, text tower at the top level), possibly in fp16 and possibly
with the masked-image-modelling branch (`visual.mask_token`, `visual.lm_transformer.*`, `visual.ln_lm.*`,
`visual.lm_head.*`). The converter reads the architecture off the tensor shapes, splits the fused attention
projections, transposes the projection matrices, checks that every key is used, saves the model with the FaRL
processor (image processor + tokenizer) and verifies the reloaded folder.

    python -m faceformers.models.farl.convert_farl_to_hf \
        --checkpoint FaRL-Base-Patch16-LAIONFace20M-ep64.pth --output_dir farl-base-patch16-ep64

`--with_pretraining_head` writes a `FaRLForPreTraining` folder instead (MIM branch from the file when present);
`--image_tokenizer dall_e_encoder.safetensors` also fills its frozen DALL-E dVAE encoder.
"""

from __future__ import annotations

import argparse
import logging
import re
from pathlib import Path

import torch

from .configuration_farl import FaRLConfig
from .modeling_farl import FaRLForPreTraining, FaRLModel


logger = logging.getLogger(__name__)

MIM_PREFIXES = ("visual.mask_token", "visual.lm_transformer.", "visual.ln_lm.", "visual.lm_head.")

# One residual block of OpenAI CLIP -> CLIPEncoderLayer (the fused in_proj is split separately).
BLOCK_KEY_MAPPING = {
    "attn.out_proj.": "self_attn.out_proj.",
    "ln_1.": "layer_norm1.",
    "ln_2.": "layer_norm2.",
    "mlp.c_fc.": "mlp.fc1.",
    "mlp.c_proj.": "mlp.fc2.",
}
# Original top-level names -> FaRLModel names (blocks and projections are handled separately).
DIRECT_KEY_MAPPING = {
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
    "visual.mask_token": "mask_token",
    "visual.ln_lm.weight": "mim_layer_norm.weight",
    "visual.ln_lm.bias": "mim_layer_norm.bias",
    "visual.lm_head.weight": "mim_head.weight",
    "visual.lm_head.bias": "mim_head.bias",
}
TRANSPOSED_KEY_MAPPING = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
# Transformer stacks: original prefix -> our prefix.
STACKS = {
    "visual.transformer.resblocks.": "vision_model.encoder.layers.",
    "transformer.resblocks.": "text_model.encoder.layers.",
    "visual.lm_transformer.resblocks.": "mim_encoder.layers.",
}


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The fp32 state dict of a released file (`{'state_dict': ...}` or a bare state dict; `module.` stripped)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} holds no FaRL state dict (expected a dict of tensors, optionally under 'state_dict').")
    state_dict = {key.removeprefix("module."): value for key, value in checkpoint.items()}
    if "visual.conv1.weight" not in state_dict:
        raise ValueError(f"{path} is not in OpenAI-CLIP layout: 'visual.conv1.weight' is missing.")
    return {key: value.float() if value.is_floating_point() else value for key, value in state_dict.items()}


def count_blocks(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    indices = {int(match.group(1)) for key in state_dict if (match := pattern.match(key))}
    return max(indices) + 1 if indices else 0


def config_from_state_dict(state_dict: dict[str, torch.Tensor]) -> FaRLConfig:
    """The architecture of the checkpoint (heads = width / 64 as in OpenAI CLIP)."""
    width, _, patch_size, _ = state_dict["visual.conv1.weight"].shape
    grid = round((state_dict["visual.positional_embedding"].shape[0] - 1) ** 0.5)
    text_width = state_dict["ln_final.weight"].shape[0]
    vocab_size = state_dict["token_embedding.weight"].shape[0]
    vision_config = {
        "hidden_size": width,
        "intermediate_size": state_dict["visual.transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": count_blocks(state_dict, "visual.transformer.resblocks."),
        "num_attention_heads": width // 64,
        "image_size": grid * patch_size,
        "patch_size": patch_size,
    }
    text_config = {
        "vocab_size": vocab_size,
        "hidden_size": text_width,
        "intermediate_size": state_dict["transformer.resblocks.0.mlp.c_fc.weight"].shape[0],
        "num_hidden_layers": count_blocks(state_dict, "transformer.resblocks."),
        "num_attention_heads": text_width // 64,
        "max_position_embeddings": state_dict["positional_embedding"].shape[0],
        "bos_token_id": vocab_size - 2,
        "eos_token_id": vocab_size - 1,
    }
    mim = {}
    if "visual.lm_head.weight" in state_dict:
        mim = {
            "mim_num_hidden_layers": count_blocks(state_dict, "visual.lm_transformer.resblocks."),
            "mim_num_masking_patches": min(75, grid * grid),  # BEiT's 75 of 196; fewer on a smaller grid
            "image_tokenizer_config": {"vocab_size": state_dict["visual.lm_head.weight"].shape[0]},
        }
    return FaRLConfig(
        text_config=text_config,
        vision_config=vision_config,
        projection_dim=state_dict["text_projection"].shape[1],
        **mim,
    )


def convert_block(key: str, value: torch.Tensor, source: str, target: str) -> dict[str, torch.Tensor]:
    """One tensor of a residual block; the fused q/k/v projection becomes three."""
    rest = key[len(source) :]
    index, name = rest.split(".", 1)
    prefix = f"{target}{index}."
    if name in ("attn.in_proj_weight", "attn.in_proj_bias"):
        kind = name.rsplit("_", 1)[1]
        query, key_, value_ = value.chunk(3, dim=0)
        return {f"{prefix}self_attn.{p}_proj.{kind}": t for p, t in zip("qkv", (query, key_, value_))}
    for old, new in BLOCK_KEY_MAPPING.items():
        if name.startswith(old):
            return {prefix + new + name[len(old) :]: value}
    raise ValueError(f"Unknown block key {key!r}.")


def convert_state_dict(state_dict: dict[str, torch.Tensor], keep_mim: bool = False) -> dict[str, torch.Tensor]:
    """OpenAI-CLIP-layout FaRL state dict -> `FaRLModel` (or, with `keep_mim`, `FaRLForPreTraining`) state dict.

    Raises `ValueError` listing any key that is neither converted nor a deliberately dropped MIM key.
    """
    converted, unused, dropped = {}, [], []
    for key, value in state_dict.items():
        is_mim = key.startswith(MIM_PREFIXES)
        if is_mim and not keep_mim:
            dropped.append(key)
            continue
        stack = next((source for source in STACKS if key.startswith(source)), None)
        if stack is not None:
            converted.update(convert_block(key, value, stack, STACKS[stack]))
        elif key in TRANSPOSED_KEY_MAPPING:
            converted[TRANSPOSED_KEY_MAPPING[key]] = value.t().contiguous()
        elif key in DIRECT_KEY_MAPPING:
            converted[DIRECT_KEY_MAPPING[key]] = value
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"Unconverted keys in the FaRL checkpoint: {unused}")
    if dropped:
        logger.info("Dropped %d masked-image-modelling keys (not part of FaRLModel).", len(dropped))
    if keep_mim:  # FaRLForPreTraining holds the CLIP model under `farl.`
        prefixes = ("mask_token", "mim_")
        converted = {(k if k.startswith(prefixes) else f"farl.{k}"): v for k, v in converted.items()}
    return converted


def save_processor(output_dir: Path, config: FaRLConfig) -> bool:
    """Write the FaRL processor (image processor + tokenizer); only the image processor without open_clip."""
    from .image_processing_farl import FaRLImageProcessor
    from .processing_farl import FaRLProcessor
    from .tokenization_farl import build_farl_tokenizer

    size = config.vision_config.image_size
    image_processor = FaRLImageProcessor(size={"height": size, "width": size})
    try:
        tokenizer = build_farl_tokenizer(model_max_length=config.text_config.max_position_embeddings)
    except ImportError as error:
        logger.warning("%s Saving the image processor only.", error)
        image_processor.save_pretrained(output_dir)
        return False
    FaRLProcessor(image_processor, tokenizer).save_pretrained(output_dir)
    return True


@torch.no_grad()
def check_reloaded_model(model, output_dir: Path, atol: float = 1e-4) -> float:
    """Reload `output_dir` and compare image and text embeddings on seeded inputs; returns the max |diff|."""
    reloaded = type(model).from_pretrained(output_dir).eval()
    model.eval()
    farl, farl_reloaded = (getattr(m, "farl", m) for m in (model, reloaded))
    size = farl.config.vision_config.image_size
    pixel_values = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(0))
    text_config = farl.config.text_config
    input_ids = torch.tensor([[text_config.bos_token_id, 1, 2, 3, text_config.eos_token_id]])
    outputs, reloaded_outputs = (m(input_ids=input_ids, pixel_values=pixel_values) for m in (farl, farl_reloaded))
    difference = max(
        float((outputs.image_embeds - reloaded_outputs.image_embeds).abs().max()),
        float((outputs.text_embeds - reloaded_outputs.text_embeds).abs().max()),
    )
    if difference > atol:
        raise ValueError(f"The reloaded model differs from the converted one by {difference:.2e} (> {atol}).")
    return difference


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    with_pretraining_head: bool = False,
    image_tokenizer: str | Path | None = None,
) -> FaRLModel | FaRLForPreTraining:
    """Convert, save (safetensors + config + processor), reload and verify."""
    state_dict = load_original_checkpoint(checkpoint_path)
    config = config_from_state_dict(state_dict)
    has_mim = "visual.lm_head.weight" in state_dict
    if with_pretraining_head:
        model = FaRLForPreTraining(config)
        converted = convert_state_dict(state_dict, keep_mim=has_mim)
        missing, unexpected = model.load_state_dict(converted, strict=False)
        expected_missing = {k for k in model.state_dict() if k.startswith("image_tokenizer.")}
        if not has_mim:
            expected_missing |= {k for k in model.state_dict() if k.startswith(("mask_token", "mim_"))}
            logger.warning("The checkpoint has no MIM branch: the MIM head starts from random weights.")
        if unexpected or set(missing) - expected_missing:
            raise ValueError(f"Missing keys {sorted(set(missing) - expected_missing)}, unexpected keys {unexpected}.")
        if image_tokenizer is not None:
            model.load_image_tokenizer(str(image_tokenizer))
        else:
            logger.warning("No --image_tokenizer given: the dVAE encoder is random; load it before pre-training.")
    else:
        model = FaRLModel(config)
        model.load_state_dict(convert_state_dict(state_dict), strict=True)

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    save_processor(output_dir, config)
    difference = check_reloaded_model(model, output_dir)
    logger.info("Saved %s to %s; reload max |diff| %.1e. Looks ok!", type(model).__name__, output_dir, difference)
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="A released FaRL .pth file.")
    parser.add_argument("--output_dir", required=True, help="Where to write the transformers folder.")
    parser.add_argument("--with_pretraining_head", action="store_true", help="Save FaRLForPreTraining.")
    parser.add_argument("--image_tokenizer", help="Converted DALL-E encoder (.safetensors) for FaRLForPreTraining.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_checkpoint(args.checkpoint, args.output_dir, args.with_pretraining_head, args.image_tokenizer)


if __name__ == "__main__":
    main()
