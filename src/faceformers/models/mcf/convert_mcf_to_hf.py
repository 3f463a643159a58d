"""Convert MCF checkpoints (nomewang/MCF) to faceformers `save_pretrained` folders.

Accepted inputs (a `module.` DDP prefix is stripped everywhere):

* the released pre-training checkpoint, `{'model': MaskedAutoencoderViT.state_dict(), ...}` with `online_encoder.*`,
  `target_encoder.*` (each with its `fc.*` projector), `predictor.*`, the decoder (`decoder_*`, `mask_token`) and the
  perceptual teacher `perceptual_loss.model.*`;
* an encoder-only file in timm layout (`cls_token`, `pos_embed`, `patch_embed.*`, `blocks.*`, `norm.*`), bare or under
  `'model'` / `'state_dict'`;
* a MoCo-v3 ViT pre-training checkpoint (`{'state_dict': {'module.base_encoder.*', ...}}`), for the perceptual teacher
  (`--teacher_checkpoint`) or as an encoder.

Usage:

    python -m faceformers.models.mcf.convert_mcf_to_hf --checkpoint mcf_checkpoint.pth --output_dir mcf-vitb16
    python -m faceformers.models.mcf.convert_mcf_to_hf --checkpoint mcf_checkpoint.pth --output_dir mcf-pretraining \
        --pretraining [--teacher_checkpoint mocov3_vit_base.pth]

Every source key must be used, except the teacher's classification head (`head.*`), which MCF never evaluates, and a
MoCo-v3 file's projector/predictor/momentum-encoder keys. The written model is reloaded and its encoder outputs are
checked against a timm `VisionTransformer` built from the original tensors before the script reports success.
"""

from __future__ import annotations

import argparse
import logging
import re
from functools import partial
from pathlib import Path
from typing import Any

import torch

from .configuration_mcf import MCFConfig
from .image_processing_mcf import MCFImageProcessor
from .modeling_mcf import MCFForPreTraining, MCFModel


logger = logging.getLogger(__name__)

# timm ViT block / encoder keys -> MCFModel keys (applied after the encoder prefix is removed)
ENCODER_KEY_MAPPING = {
    r"^cls_token$": "embeddings.cls_token",
    r"^pos_embed$": "embeddings.position_embeddings",
    r"^patch_embed\.proj\.": "embeddings.patch_embeddings.projection.",
    r"^norm\.": "layernorm.",
}
BLOCK_KEY_MAPPING = {
    r"^blocks\.(\d+)\.norm1\.": r"layers.\1.layernorm_before.",
    r"^blocks\.(\d+)\.attn\.qkv\.": r"layers.\1.attention.qkv_proj.",
    r"^blocks\.(\d+)\.attn\.proj\.": r"layers.\1.attention.o_proj.",
    r"^blocks\.(\d+)\.norm2\.": r"layers.\1.layernorm_after.",
    r"^blocks\.(\d+)\.mlp\.fc(\d)\.": r"layers.\1.mlp.fc\2.",
}
# MoCo-v3 style MLP (nn.Sequential indices) -> MCFProjectionHead
PROJECTION_KEY_MAPPING = {r"^0\.": "linear1.", r"^1\.": "norm1.", r"^3\.": "linear2.", r"^4\.": "norm2."}
DECODER_KEY_MAPPING = {
    r"^decoder_embed\.": "embed.",
    r"^mask_token$": "mask_token",
    r"^decoder_pos_embed$": "position_embeddings",
    r"^decoder_norm\.": "layernorm.",
    r"^decoder_pred\.": "pred.",
    **{pattern.replace("blocks", "decoder_blocks"): target for pattern, target in BLOCK_KEY_MAPPING.items()},
}
# What each prefix of the released pre-training checkpoint becomes in MCFForPreTraining.
PRETRAINING_PREFIXES = {
    "online_encoder.fc.": ("projector.", PROJECTION_KEY_MAPPING),
    "target_encoder.fc.": ("momentum_projector.", PROJECTION_KEY_MAPPING),
    "online_encoder.": ("mcf.", {**ENCODER_KEY_MAPPING, **BLOCK_KEY_MAPPING}),
    "target_encoder.": ("momentum_encoder.", {**ENCODER_KEY_MAPPING, **BLOCK_KEY_MAPPING}),
    "perceptual_loss.model.": ("perceptual_teacher.", {**ENCODER_KEY_MAPPING, **BLOCK_KEY_MAPPING}),
    "predictor.": ("predictor.", PROJECTION_KEY_MAPPING),
    "": ("decoder.", DECODER_KEY_MAPPING),
}
# Keys that are deliberately dropped: the teacher's 1000-class head is never used by the perceptual loss.
DISCARDED_PRETRAINING_KEYS = re.compile(r"^perceptual_loss\.model\.head\.")
MOCOV3_ENCODER_PREFIX = "base_encoder."


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """Load a checkpoint safely (`weights_only=True`), unwrap `model`/`state_dict` and strip `module.` prefixes."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    for wrapper in ("model", "state_dict"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(f"{path} does not contain a state dict (expected a dict of tensors, optionally under 'model').")
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def detect_layout(state_dict: dict[str, torch.Tensor]) -> str:
    """One of `pretraining`, `mocov3` or `encoder`."""
    if any(key.startswith("online_encoder.") for key in state_dict):
        return "pretraining"
    if any(key.startswith(MOCOV3_ENCODER_PREFIX) for key in state_dict):
        return "mocov3"
    if "cls_token" in state_dict and "blocks.0.attn.qkv.weight" in state_dict:
        return "encoder"
    raise ValueError(
        "Unrecognised MCF checkpoint layout: expected `online_encoder.*` (pre-training), `base_encoder.*` (MoCo-v3) "
        f"or timm ViT keys (`cls_token`, `blocks.0.attn.qkv.weight`); found keys such as {sorted(state_dict)[:5]}."
    )


def encoder_prefix(layout: str, encoder: str = "online") -> str:
    """Where the ViT encoder lives in a checkpoint of `layout` (`encoder`: online, target or teacher)."""
    if layout == "pretraining":
        return {"online": "online_encoder.", "target": "target_encoder.", "teacher": "perceptual_loss.model."}[encoder]
    return MOCOV3_ENCODER_PREFIX if layout == "mocov3" else ""


def rename_key(key: str, mapping: dict[str, str]) -> str | None:
    for pattern, replacement in mapping.items():
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def extract_encoder(state_dict: dict[str, torch.Tensor], prefix: str) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """The ViT under `prefix` as (`MCFModel` state dict, timm-layout state dict).

    A projector (`fc.*`) or classification/MoCo head (`head.*`) under the prefix is not part of the encoder and is
    left out; every other key under the prefix must convert.
    """
    timm_layout = {
        key[len(prefix) :]: value
        for key, value in state_dict.items()
        if key.startswith(prefix) and not key[len(prefix) :].startswith(("fc.", "head."))
    }
    if not timm_layout:
        raise ValueError(f"No encoder keys under the prefix {prefix!r}.")
    mapping = {**ENCODER_KEY_MAPPING, **BLOCK_KEY_MAPPING}
    converted = {rename_key(key, mapping): value for key, value in timm_layout.items()}
    unused = [prefix + key for key, new_key in zip(timm_layout, converted) if new_key is None]
    if unused:
        raise ValueError(f"Unconverted encoder keys: {unused}")
    return converted, timm_layout


def convert_pretraining_state_dict(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Released `MaskedAutoencoderViT` state dict -> `MCFForPreTraining` state dict (every key accounted for)."""
    converted, unused = {}, []
    for key, value in state_dict.items():
        if DISCARDED_PRETRAINING_KEYS.search(key):
            continue
        for source_prefix, (target_prefix, mapping) in PRETRAINING_PREFIXES.items():
            new_key = rename_key(key[len(source_prefix) :], mapping) if key.startswith(source_prefix) else None
            if new_key is not None:
                converted[target_prefix + new_key] = value
                break
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"Unconverted keys in the pre-training checkpoint: {unused}")
    return converted


def infer_encoder_fields(encoder: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Read an encoder's architecture off its tensors; heads cannot be read and default to `hidden_size // 64`."""
    hidden_size = encoder["embeddings.cls_token"].shape[-1]
    patch_weight = encoder["embeddings.patch_embeddings.projection.weight"]
    grid = round((encoder["embeddings.position_embeddings"].shape[1] - 1) ** 0.5)
    return {
        "hidden_size": hidden_size,
        "num_hidden_layers": _count_layers(encoder, "layers."),
        "num_attention_heads": hidden_size // 64,
        "intermediate_size": encoder["layers.0.mlp.fc1.weight"].shape[0],
        "patch_size": patch_weight.shape[-1],
        "image_size": grid * patch_weight.shape[-1],
        "num_channels": patch_weight.shape[1],
        "qkv_bias": "layers.0.attention.qkv_proj.bias" in encoder,
    }


def infer_pretraining_fields(converted: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Architecture of an `MCFForPreTraining` state dict (encoder, decoder, heads and, if it differs, the teacher)."""
    online = _submodule(converted, "mcf.")
    fields = infer_encoder_fields(online)
    fields.update(
        decoder_hidden_size=converted["decoder.embed.weight"].shape[0],
        decoder_num_hidden_layers=_count_layers(converted, "decoder.layers."),
        decoder_intermediate_size=converted["decoder.layers.0.mlp.fc1.weight"].shape[0],
        projector_hidden_size=converted["projector.linear1.weight"].shape[0],
        projection_dim=converted["projector.linear2.weight"].shape[0],
    )
    teacher_fields = infer_encoder_fields(_submodule(converted, "perceptual_teacher."))
    if any(fields[name] != value for name, value in teacher_fields.items()):
        fields["perceptual_teacher_config"] = teacher_fields
    return fields


def _submodule(state_dict: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix) :]: value for key, value in state_dict.items() if key.startswith(prefix)}


def _count_layers(state_dict: dict[str, torch.Tensor], prefix: str) -> int:
    indices = {int(key[len(prefix) :].split(".")[0]) for key in state_dict if key.startswith(prefix)}
    return max(indices) + 1


def timm_reference_encoder(state_dict: dict[str, torch.Tensor], config: MCFConfig) -> torch.nn.Module:
    """A timm `VisionTransformer` holding the original (timm-layout) encoder tensors: the independent reference."""
    from timm.models.vision_transformer import VisionTransformer

    model = VisionTransformer(
        img_size=config.image_size,
        patch_size=config.patch_size,
        in_chans=config.num_channels,
        embed_dim=config.hidden_size,
        depth=config.num_hidden_layers,
        num_heads=config.num_attention_heads,
        mlp_ratio=config.intermediate_size / config.hidden_size,
        qkv_bias=config.qkv_bias,
        norm_layer=partial(torch.nn.LayerNorm, eps=config.layer_norm_eps),
        num_classes=0,
    )
    model.load_state_dict(state_dict, strict=True)
    return model.eval()


@torch.no_grad()
def check_encoder_against_timm(model: MCFModel, timm_state_dict: dict[str, torch.Tensor], atol: float = 1e-4) -> float:
    """Compare CLS-after-norm and every block output with timm on a seeded input; returns the max |difference|."""
    config = model.config
    reference = timm_reference_encoder(timm_state_dict, config)
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, config.num_channels, config.image_size, config.image_size, generator=generator)
    outputs = model.eval()(pixel_values, output_hidden_states=True)
    blocks = reference.forward_intermediates(pixel_values, norm=False, intermediates_only=True, output_fmt="NLC")
    differences = [(outputs.pooler_output - reference.forward_features(pixel_values)[:, 0]).abs().max()]
    # timm's intermediates leave out the CLS token: compare the patch tokens after every block
    differences += [(hidden[:, 1:] - block).abs().max() for hidden, block in zip(outputs.hidden_states[1:], blocks)]
    max_difference = float(torch.stack(differences).max())
    if max_difference > atol:
        raise ValueError(f"Converted encoder differs from the timm reference by {max_difference:.2e} (> {atol}).")
    return max_difference


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    pretraining: bool = False,
    encoder: str = "online",
    teacher_checkpoint: str | Path | None = None,
    num_attention_heads: int | None = None,
    decoder_num_attention_heads: int | None = None,
) -> MCFModel | MCFForPreTraining:
    """Convert, save (safetensors + config + image processor), reload and verify. Returns the reloaded model."""
    if encoder not in ("online", "target"):
        raise ValueError(f"`encoder` must be 'online' or 'target', got {encoder!r}.")
    state_dict = load_original_checkpoint(checkpoint_path)
    layout = detect_layout(state_dict)
    overrides = {"num_attention_heads": num_attention_heads, "decoder_num_attention_heads": decoder_num_attention_heads}
    overrides = {key: value for key, value in overrides.items() if value is not None}

    references = {}  # MCFModel attribute -> timm-layout tensors it must reproduce
    if pretraining:
        if layout != "pretraining":
            raise ValueError(f"--pretraining needs a pre-training checkpoint (online_encoder.* keys); got a {layout} file.")
        converted = convert_pretraining_state_dict(state_dict)
        teacher_source = state_dict
        if teacher_checkpoint is not None:
            teacher_source = load_original_checkpoint(teacher_checkpoint)
            teacher_prefix = encoder_prefix(detect_layout(teacher_source), "teacher")
            teacher, _ = extract_encoder(teacher_source, teacher_prefix)
            converted = {k: v for k, v in converted.items() if not k.startswith("perceptual_teacher.")}
            converted.update({f"perceptual_teacher.{k}": v for k, v in teacher.items()})
        elif not any(key.startswith("perceptual_teacher.") for key in converted):
            raise ValueError("The checkpoint has no perceptual teacher; pass --teacher_checkpoint (a MoCo-v3 ViT).")
        else:
            teacher_prefix = encoder_prefix("pretraining", "teacher")
        config = MCFConfig(**{**infer_pretraining_fields(converted), **overrides})
        model = MCFForPreTraining(config)
        model.load_state_dict({**converted, "has_perceptual_teacher_weights": torch.tensor(True)}, strict=True)
        references["mcf"] = extract_encoder(state_dict, "online_encoder.")[1]
        references["momentum_encoder"] = extract_encoder(state_dict, "target_encoder.")[1]
        references["perceptual_teacher"] = extract_encoder(teacher_source, teacher_prefix)[1]
    else:
        converted, references[""] = extract_encoder(state_dict, encoder_prefix(layout, encoder))
        model = MCFModel(MCFConfig(**{**infer_encoder_fields(converted), **overrides}))
        model.load_state_dict(converted, strict=True)

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    size = model.config.image_size
    MCFImageProcessor(size={"height": size, "width": size}).save_pretrained(output_dir)

    reloaded = type(model).from_pretrained(output_dir).eval()
    for name, timm_state_dict in references.items():
        difference = check_encoder_against_timm(reloaded.get_submodule(name), timm_state_dict)
        logger.info("%s matches the timm reference (max |diff| %.2e).", name or "encoder", difference)
    logger.info("Saved %s to %s. Looks ok!", type(reloaded).__name__, output_dir)
    return reloaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="Original .pth file (pre-training, encoder-only or MoCo-v3).")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--pretraining", action="store_true", help="Write MCFForPreTraining instead of MCFModel.")
    parser.add_argument("--encoder", choices=("online", "target"), default="online", help="Encoder to export as MCFModel.")
    parser.add_argument("--teacher_checkpoint", help="MoCo-v3 ViT checkpoint for the perceptual teacher.")
    parser.add_argument("--num_attention_heads", type=int, help="Encoder heads (default: hidden_size // 64).")
    parser.add_argument("--decoder_num_attention_heads", type=int, help="Decoder heads (default: 16).")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_checkpoint(
        args.checkpoint,
        args.output_dir,
        pretraining=args.pretraining,
        encoder=args.encoder,
        teacher_checkpoint=args.teacher_checkpoint,
        num_attention_heads=args.num_attention_heads,
        decoder_num_attention_heads=args.decoder_num_attention_heads,
    )


if __name__ == "__main__":
    main()
