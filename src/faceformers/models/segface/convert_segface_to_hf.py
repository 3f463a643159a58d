"""Convert the released SegFace checkpoints (Hub repository `kartiknarayan/SegFace`, `<variant>/model_299.pt`) to
faceformers `save_pretrained` folders.

A released file is a training checkpoint, `{'epoch': 299, 'iteration', 'state_dict_backbone', 'optimizer',
'scheduler'}`; only `state_dict_backbone` is converted. The scheduler state holds a `collections.Counter` (the
MultiStepLR milestones), which is allow-listed for the safe `weights_only=True` loader.

Usage:

    python -m faceformers.models.segface.convert_segface_to_hf --checkpoint swinb_celeba_512/model_299.pt \
        --variant swinb_celeba_512 --output_dir segface-swin-base-512-celebamask-hq

Every key is used, except Swin's final LayerNorm (`backbone.1.*`), which the released Swin models carry but never
evaluate. The per-class decoder tokens are stacked, in the original output-channel order, into one class-query matrix.
The written folder is reloaded and its logits compared with the in-memory conversion before the script reports
success.
"""

from __future__ import annotations

import argparse
import collections
import logging
import re
from pathlib import Path
from typing import NamedTuple

import torch

from .configuration_segface import SegFaceConfig
from .modeling_segface import SegFaceForSemanticSegmentation


logger = logging.getLogger(__name__)


class ReleasedVariant(NamedTuple):
    backbone: str  # torchvision builder name (our naming)
    dataset: str  # SegFaceConfig.for_dataset name
    image_size: int


RELEASED_VARIANTS: dict[str, ReleasedVariant] = {
    # The README reports "ConvNext"; the released code's convnext options are base, small and "tiny" (which builds a
    # ConvNeXt-S). The converter reads the actual width and depth off the checkpoint (`detect_backbone`), and the
    # entry below is only the expectation: ConvNeXt-B, whose stage widths (128..1024) equal Swin-B's.
    "convnext_celeba_512": ReleasedVariant("convnext_base", "celebamask_hq", 512),
    "efficientnet_celeba_512": ReleasedVariant("efficientnet_v2_m", "celebamask_hq", 512),
    "mobilenet_celeba_512": ReleasedVariant("mobilenet_v3_large", "celebamask_hq", 512),
    # The README says "ResNet100"; the code builds torchvision's resnet101.
    "resnet_celeba_512": ReleasedVariant("resnet101", "celebamask_hq", 512),
    **{f"swinb_celeba_{size}": ReleasedVariant("swin_b", "celebamask_hq", size) for size in (224, 256, 448, 512)},
    **{f"swinb_lapa_{size}": ReleasedVariant("swin_b", "lapa", size) for size in (224, 256, 448, 512)},
    "swinv2b_celeba_512": ReleasedVariant("swin_v2_b", "celebamask_hq", 512),
    "swinb_helen_512": ReleasedVariant("swin_b", "helen", 512),
}

# Original decoder token names in output-channel order (= the dataset's class-id order, ORIGINALS.md §3).
_ELEVEN_CLASS_TOKENS = (
    "background", "face", "leftbro", "rightbro", "lefteye", "righteye", "nose", "upperlip", "innermouth", "lowerlip",
    "hair",
)  # fmt: skip
ORIGINAL_CLASS_TOKENS: dict[str, tuple[str, ...]] = {
    "celebamask_hq": (
        "background", "neck", "face", "cloth", "rightear", "leftear", "rightbro", "leftbro", "righteye", "lefteye",
        "nose", "innermouth", "lowerlip", "upperlip", "hair", "glass", "hat", "earring", "necklace",
    ),  # fmt: skip
    "lapa": _ELEVEN_CLASS_TOKENS,
    "helen": _ELEVEN_CLASS_TOKENS,
}
CLASS_TOKEN_KEY = "face_decoder.{}_token.weight"

# Where the torchvision `features` sequence sits in the original state dict. Swin and ConvNeXt were wrapped as
# `Sequential(*model.children()[:-1])`, so `backbone.0.` is `features` (and, for Swin, `backbone.1.` the final norm);
# MobileNet and EfficientNet used `model.features` itself; ResNet's children come in the order of our sequence.
_WRAPPED_FEATURES = ("swin_b", "swin_v2_b", "convnext_base", "convnext_small", "convnext_tiny")
# Swin's final LayerNorm: present in the released files, never used by SegFace.
DROPPED_KEYS = {name: re.compile(r"^backbone\.1\.(weight|bias)$") for name in ("swin_b", "swin_v2_b")}

# Original head keys -> SegFaceForSemanticSegmentation keys.
HEAD_KEY_MAPPING = {
    r"^pe_layer\.positional_encoding_gaussian_matrix$": "positional_embedding.gaussian_matrix",
    r"^linear_c\.(\d+)\.proj\.": r"fusion.projections.\1.",
    r"^linear_fuse\.": "fusion.linear_fuse.",
    r"^face_decoder\.transformer\.layers\.(\d+)\.norm(\d)\.": r"decoder.transformer.layers.\1.layer_norm\2.",
    r"^face_decoder\.transformer\.layers\.(\d+)\.mlp\.lin(\d)\.": r"decoder.transformer.layers.\1.mlp.fc\2.",
    r"^face_decoder\.transformer\.layers\.(\d+)\.(self_attn|cross_attn_token_to_image|cross_attn_image_to_token)\.":
        r"decoder.transformer.layers.\1.\2.",
    r"^face_decoder\.transformer\.final_attn_token_to_image\.": "decoder.transformer.final_attn_token_to_image.",
    r"^face_decoder\.transformer\.norm_final_attn\.": "decoder.transformer.layer_norm_final_attn.",
    r"^face_decoder\.output_upscaling\.0\.": "decoder.upscale_conv1.",
    r"^face_decoder\.output_upscaling\.1\.": "decoder.upscale_layer_norm.",
    r"^face_decoder\.output_upscaling\.3\.": "decoder.upscale_conv2.",
    r"^face_decoder\.output_hypernetwork_mlps\.layers\.(\d+)\.": r"decoder.hypernetwork_mlp.layers.\1.",
}  # fmt: skip


def original_features_prefix(backbone: str) -> str:
    return "backbone.0." if backbone in _WRAPPED_FEATURES else "backbone."


def load_original_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """The network state dict of a released file (safe loader; `module.` prefixes stripped)."""
    torch.serialization.add_safe_globals([collections.Counter])
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict_backbone"), dict):
        checkpoint = checkpoint["state_dict_backbone"]
    if not isinstance(checkpoint, dict) or not all(isinstance(v, torch.Tensor) for v in checkpoint.values()):
        raise ValueError(
            f"{path} holds no SegFace state dict (expected a dict of tensors under 'state_dict_backbone')."
        )
    return {key.removeprefix("module."): value for key, value in checkpoint.items()}


def detect_backbone(state_dict: dict[str, torch.Tensor]) -> str | None:
    """Recognise the torchvision backbone from distinctive keys and shapes; `None` if none matches."""
    if "backbone.0.1.0.attn.cpb_mlp.0.weight" in state_dict:
        return "swin_v2_b"
    if "backbone.0.1.0.attn.relative_position_bias_table" in state_dict:
        return "swin_b"
    if "backbone.0.1.0.layer_scale" in state_dict:
        if state_dict["backbone.0.0.0.weight"].shape[0] == 128:
            return "convnext_base"
        return "convnext_small" if "backbone.0.5.26.layer_scale" in state_dict else "convnext_tiny"
    if "backbone.6.22.conv3.weight" in state_dict:
        return "resnet101"
    if "backbone.16.0.weight" in state_dict:
        return "mobilenet_v3_large"
    if "backbone.8.0.weight" in state_dict:
        return "efficientnet_v2_m"
    return None


def rename_key(key: str, mapping: dict[str, str]) -> str | None:
    for pattern, replacement in mapping.items():
        if re.search(pattern, key):
            return re.sub(pattern, replacement, key)
    return None


def convert_state_dict(state_dict: dict[str, torch.Tensor], backbone: str, dataset: str) -> dict[str, torch.Tensor]:
    """Original `SegFace{Celeb,Lapa,Helen}` state dict -> `SegFaceForSemanticSegmentation` state dict.

    Raises `ValueError` listing any key that is neither converted nor deliberately dropped, and any missing token.
    """
    token_keys = [CLASS_TOKEN_KEY.format(name) for name in ORIGINAL_CLASS_TOKENS[dataset]]
    missing_tokens = [key for key in token_keys if key not in state_dict]
    if missing_tokens:
        raise ValueError(f"Missing class tokens for {dataset}: {missing_tokens}")
    converted = {"decoder.class_queries.weight": torch.cat([state_dict[key] for key in token_keys], dim=0)}

    features_prefix = original_features_prefix(backbone)
    dropped = DROPPED_KEYS.get(backbone)
    unused = []
    for key, value in state_dict.items():
        if key in token_keys or (dropped is not None and dropped.search(key)):
            continue
        if key.startswith(features_prefix):
            converted["backbone.features." + key[len(features_prefix) :]] = value
        elif (new_key := rename_key(key, HEAD_KEY_MAPPING)) is not None:
            converted[new_key] = value
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"Unconverted keys in the SegFace checkpoint: {unused}")
    return converted


def resolve_config(variant: str, state_dict: dict[str, torch.Tensor]) -> SegFaceConfig:
    """The config of a released variant; the backbone read off the checkpoint wins over the table."""
    if variant not in RELEASED_VARIANTS:
        raise ValueError(f"Unknown SegFace variant {variant!r}; expected one of {sorted(RELEASED_VARIANTS)}.")
    expected = RELEASED_VARIANTS[variant]
    backbone = detect_backbone(state_dict) or expected.backbone
    if backbone != expected.backbone:
        logger.warning(
            "%s: the checkpoint holds a %s backbone, not %s; converting as %s.",
            variant, backbone, expected.backbone, backbone,
        )
    return SegFaceConfig.for_dataset(expected.dataset, backbone=backbone, image_size=expected.image_size)


def save_image_processor(output_dir: Path, config: SegFaceConfig) -> bool:
    """Write `preprocessor_config.json` if the SegFace image processor is available."""
    try:
        from .image_processing_segface import SegFaceImageProcessor
    except ImportError:
        logger.info("SegFaceImageProcessor is not available; no preprocessor_config.json written.")
        return False
    size = config.image_size
    SegFaceImageProcessor(size={"height": size, "width": size}).save_pretrained(output_dir)
    return True


@torch.no_grad()
def check_reloaded_model(model: SegFaceForSemanticSegmentation, output_dir: Path, atol: float = 1e-4) -> float:
    """Reload `output_dir` and compare its logits with `model` on a seeded 224-px input; returns the max |diff|."""
    reloaded = SegFaceForSemanticSegmentation.from_pretrained(output_dir).eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(1, 3, 224, 224, generator=generator)
    difference = float((reloaded(pixel_values).logits - model.eval()(pixel_values).logits).abs().max())
    if difference > atol:
        raise ValueError(f"The reloaded model differs from the converted one by {difference:.2e} (> {atol}).")
    return difference


def convert_checkpoint(
    checkpoint_path: str | Path, variant: str, output_dir: str | Path
) -> SegFaceForSemanticSegmentation:
    """Convert, save (safetensors + config, and the image processor if available), reload and verify."""
    state_dict = load_original_checkpoint(checkpoint_path)
    config = resolve_config(variant, state_dict)
    converted = convert_state_dict(state_dict, config.backbone_config["name"], RELEASED_VARIANTS[variant].dataset)
    model = SegFaceForSemanticSegmentation(config)
    model.load_state_dict(converted, strict=True)

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    save_image_processor(output_dir, config)
    difference = check_reloaded_model(model, output_dir)
    logger.info(
        "Saved %s (%s) to %s; reload max |diff| %.1e. Looks ok!",
        variant, config.backbone_config["name"], output_dir, difference,
    )
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="A released model_299.pt.")
    parser.add_argument("--variant", required=True, choices=sorted(RELEASED_VARIANTS), help="Hub folder of the file.")
    parser.add_argument("--output_dir", required=True)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_checkpoint(args.checkpoint, args.variant, args.output_dir)


if __name__ == "__main__":
    main()
