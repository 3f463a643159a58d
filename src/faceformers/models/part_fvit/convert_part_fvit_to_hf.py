"""Convert Part fViT checkpoints (szlbiubiubiu/Part_fViT, szlbiubiubiu/LAFS_CVPR2024) to faceformers folders.

Accepted inputs (loaded with `torch.load(weights_only=True)`; `argparse.Namespace` is allow-listed for LAFS files):

* released Part fViT checkpoints (`torch.save(DDP_model.state_dict())`): a flat dict with a `module.` prefix holding
  the landmark CNN (`stn.*`, `output_layer.*`), the ViT and the CosFace classifier `loss.weight` `(num_ids, 768)`;
* LAFS stage-2 checkpoints `{'student': {'module.backbone.*', 'module.head.*'}, 'teacher': {'backbone.*', 'head.*'},
  'optimizer', 'epoch', 'args', 'dino_loss', 'fp16_scaler'}`: the `teacher` branch by default (`--branch student`
  for the other). The DINO head (`head.*`) and the unused 30,000-class `loss.weight` are dropped. These files hold no
  landmark CNN: take it from a stage-1 Part fViT checkpoint with `--landmark_checkpoint` (what LAFS stage 3 does), or
  pass `--random_landmark_net` to keep a freshly initialised one.

Mapping: `stn.features.0.{0,1}` -> `landmark_net.stem.{conv,norm}`; `stn.features.{i}.conv.{0,1,3,4,5.fc.0,5.fc.2,7,8}`
-> `landmark_net.blocks.{i-1}.{expand_conv, expand_norm, depthwise_conv, depthwise_norm, squeeze_excitation.reduce,
squeeze_excitation.expand, project_conv, project_norm}`; `output_layer.1` -> `landmark_net.head`; `patch_to_embedding`
-> `embeddings.patch_projection` (the (x offset, y offset, channel) token layout is kept); `cls_token`,
`pos_embedding` -> `embeddings.{cls_token, position_embeddings}`; `transformer.layers.{i}.0.fn.norm` ->
`layers.{i}.layernorm_before`; `...0.fn.fn.to_qkv` (rows `[q | k | v]`, each head-major) -> `q_proj`, `k_proj`,
`v_proj`; `...0.fn.fn.to_out.0` -> `o_proj`; `...1.fn.norm` -> `layernorm_after`; `...1.fn.fn.net.{0,3}` ->
`mlp.fc{1,2}`; `mlp_head.0` -> `layernorm`; `loss.weight` -> `margin_head.weight` (`--with_classifier`, released files
only; otherwise dropped).

Attention scale: the original multiplies the logits by `hidden_size ** -0.5` (768, not the head width 64). By default
the converted model keeps that (`attention_scale="model_width"`, weights copied unchanged). With
`--attention_scale head_dim` the model uses the standard `head_dim ** -0.5` and the query weights are multiplied by
`sqrt(head_dim / hidden_size)` (0.288675 for the released model), which gives the same logits.

Every source key must be used or be on the documented drop list (`num_batches_tracked` are copied when present). The
written model is reloaded and checked against a plain-torch re-computation of the original forward (per-landmark
`grid_sample`, 14 x 14 mosaic, `rearrange`) on seeded inputs.

Usage:

    python -m faceformers.models.part_fvit.convert_part_fvit_to_hf --checkpoint Backbone_VIT_land_8_checkpoint.pth \
        --output_dir part-fvit-b-webface4m [--with_classifier] [--attention_scale head_dim]
    python -m faceformers.models.part_fvit.convert_part_fvit_to_hf --checkpoint lafs_checkpoint.pth \
        --landmark_checkpoint part_fvit_stage1.pth --output_dir lafs-part-fvit-b [--branch student]
"""

from __future__ import annotations

import argparse
import logging
import math
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .configuration_part_fvit import PART_FVIT_LANDMARK_BLOCKS, PartFViTConfig
from .image_processing_part_fvit import PartFViTImageProcessor
from .modeling_part_fvit import PartFViTForFaceRecognition, PartFViTModel


logger = logging.getLogger(__name__)

LANDMARK_PREFIXES = ("stn.", "output_layer.")
# MobileBottleneck `conv` Sequential index -> PartFViTInvertedResidual attribute
BLOCK_LAYERS = {
    "0": "expand_conv",
    "1": "expand_norm",
    "3": "depthwise_conv",
    "4": "depthwise_norm",
    "5.fc.0": "squeeze_excitation.reduce",
    "5.fc.2": "squeeze_excitation.expand",
    "7": "project_conv",
    "8": "project_norm",
}
KEY_MAPPING = {
    r"^stn\.features\.0\.0\.": "landmark_net.stem.conv.",
    r"^stn\.features\.0\.1\.": "landmark_net.stem.norm.",
    **{
        rf"^stn\.features\.(\d+)\.conv\.{re.escape(index)}\.": rf"landmark_net.blocks.<\1>.{name}."
        for index, name in BLOCK_LAYERS.items()
    },
    r"^output_layer\.1\.": "landmark_net.head.",
    r"^pos_embedding$": "embeddings.position_embeddings",
    r"^cls_token$": "embeddings.cls_token",
    r"^patch_to_embedding\.": "embeddings.patch_projection.",
    r"^transformer\.layers\.(\d+)\.0\.fn\.norm\.": r"layers.\1.layernorm_before.",
    r"^transformer\.layers\.(\d+)\.0\.fn\.fn\.to_out\.0\.": r"layers.\1.attention.o_proj.",
    r"^transformer\.layers\.(\d+)\.1\.fn\.norm\.": r"layers.\1.layernorm_after.",
    r"^transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.0\.": r"layers.\1.mlp.fc1.",
    r"^transformer\.layers\.(\d+)\.1\.fn\.fn\.net\.3\.": r"layers.\1.mlp.fc2.",
    r"^mlp_head\.0\.": "layernorm.",
}
QKV_PATTERN = re.compile(r"^transformer\.layers\.(\d+)\.0\.fn\.fn\.to_qkv\.(weight|bias)$")
LAFS_DROPPED = re.compile(r"^(head\.|loss\.weight$)")


def _load(path: str | Path) -> Any:
    with torch.serialization.safe_globals([argparse.Namespace]):
        return torch.load(path, map_location="cpu", weights_only=True)


def _strip(key: str, prefixes: tuple[str, ...]) -> str:
    changed = True
    while changed:
        changed = False
        for prefix in prefixes:
            if key.startswith(prefix):
                key, changed = key[len(prefix) :], True
    return key


def _check_tensors(state_dict: Any, path: str | Path) -> None:
    if (
        not isinstance(state_dict, dict)
        or not state_dict
        or not all(isinstance(v, torch.Tensor) for v in state_dict.values())
    ):
        raise ValueError(f"{path} does not contain a state dict (a dict of tensors).")


def load_original_state_dict(
    path: str | Path, branch: str = "teacher"
) -> tuple[dict[str, torch.Tensor], str, list[str]]:
    """Load a released Part fViT or LAFS stage-2 checkpoint.

    Returns the state dict with `module.` / `backbone.` prefixes removed, the layout (`"part_fvit"` or `"lafs"`) and
    the original names of the keys that were dropped on purpose (LAFS DINO head and placeholder classifier).
    """
    if branch not in ("teacher", "student"):
        raise ValueError(f"`branch` must be 'teacher' or 'student', got {branch!r}.")
    checkpoint = _load(path)
    if (
        isinstance(checkpoint, dict)
        and isinstance(checkpoint.get("teacher"), dict)
        and isinstance(checkpoint.get("student"), dict)
    ):
        raw = checkpoint[branch]
        _check_tensors(raw, path)
        state_dict, dropped = {}, []
        for key, value in raw.items():
            name = _strip(key, ("module.", "backbone.", "encoder."))
            if LAFS_DROPPED.search(name):
                dropped.append(key)
            else:
                state_dict[name] = value
        return state_dict, "lafs", dropped
    for wrapper in ("state_dict", "model"):
        if isinstance(checkpoint, dict) and isinstance(checkpoint.get(wrapper), dict):
            checkpoint = checkpoint[wrapper]
            break
    _check_tensors(checkpoint, path)
    state_dict = {_strip(key, ("module.",)): value for key, value in checkpoint.items()}
    if "cls_token" not in state_dict or "transformer.layers.0.0.fn.fn.to_qkv.weight" not in state_dict:
        raise ValueError(
            f"Unrecognised Part fViT checkpoint layout in {path}: expected `cls_token` and `transformer.layers.*` "
            "keys "
            f"(optionally under `module.`) or a LAFS `{{'student', 'teacher'}}` dict; found keys such as "
            f"{sorted(state_dict)[:5]}."
        )
    return state_dict, "part_fvit", []


def load_landmark_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The landmark CNN (`stn.*`, `output_layer.*`) of a stage-1 checkpoint, as LAFS' `load_part_checkpoint_landmark`
    reads it (everything else in that file is ignored)."""
    checkpoint = _load(path)
    if isinstance(checkpoint, dict) and isinstance(checkpoint.get("state_dict"), dict):
        checkpoint = checkpoint["state_dict"]
    _check_tensors(checkpoint, path)
    landmark = {}
    for key, value in checkpoint.items():
        name = _strip(key, ("module.", "backbone."))
        if name.startswith(LANDMARK_PREFIXES):
            landmark[name] = value
    if not landmark:
        raise ValueError(f"{path} has no landmark CNN keys (`stn.*`, `output_layer.*`).")
    return landmark


def _count(state_dict: dict[str, torch.Tensor], pattern: str) -> int:
    indices = {int(m.group(1)) for key in state_dict if (m := re.match(pattern, key))}
    return max(indices) + 1 if indices else 0


def infer_config_fields(state_dict: dict[str, torch.Tensor], head_dim: int = 64) -> dict[str, Any]:
    """Architecture read off the original tensors. Head count, image size, activations and strides cannot be read:
    heads = inner width / `head_dim`; the landmark blocks' activations/strides come from the released layout when
    the block shapes match it (otherwise pass `landmark_block_config`)."""
    hidden_size = state_dict["cls_token"].shape[-1]
    patch_weight = state_dict["patch_to_embedding.weight"]
    inner = state_dict["transformer.layers.0.0.fn.fn.to_qkv.weight"].shape[0] // 3
    if inner % head_dim:
        raise ValueError(f"The attention width {inner} is not a multiple of head_dim {head_dim}; pass --head_dim.")
    num_channels = state_dict["stn.features.0.0.weight"].shape[1] if "stn.features.0.0.weight" in state_dict else 3
    patch_size = math.isqrt(patch_weight.shape[1] // num_channels)
    fields: dict[str, Any] = {
        "hidden_size": hidden_size,
        "num_hidden_layers": _count(state_dict, r"^transformer\.layers\.(\d+)\."),
        "num_attention_heads": inner // head_dim,
        "head_dim": head_dim,
        "intermediate_size": state_dict["transformer.layers.0.1.fn.fn.net.0.weight"].shape[0],
        "qkv_bias": "transformer.layers.0.0.fn.fn.to_qkv.bias" in state_dict,
        "num_patches": state_dict["pos_embedding"].shape[1] - 1,
        "patch_size": patch_size,
        "num_channels": num_channels,
    }
    if "stn.features.0.0.weight" in state_dict:
        fields["landmark_stem_channels"] = state_dict["stn.features.0.0.weight"].shape[0]
        shapes = []
        for index in range(1, _count(state_dict, r"^stn\.features\.(\d+)\.")):
            prefix = f"stn.features.{index}.conv."
            shapes.append(
                [
                    state_dict[prefix + "3.weight"].shape[-1],
                    state_dict[prefix + "0.weight"].shape[0],
                    state_dict[prefix + "7.weight"].shape[0],
                    prefix + "5.fc.0.weight" in state_dict,
                ]
            )
        if shapes == [block[:4] for block in PART_FVIT_LANDMARK_BLOCKS]:
            fields["landmark_block_config"] = [list(block) for block in PART_FVIT_LANDMARK_BLOCKS]
        else:
            fields["_landmark_block_shapes"] = shapes
    return fields


def convert_state_dict(
    original: dict[str, torch.Tensor], config: PartFViTConfig, with_classifier: bool = False
) -> dict[str, torch.Tensor]:
    """Original keys -> `PartFViTModel` keys (`part_fvit.`-prefixed plus `margin_head.weight` with the classifier).

    Raises if a key is left over. `loss.weight` is consumed only with `with_classifier`."""
    converted, unused = {}, []
    query_factor = 1.0 if config.attention_scale == "model_width" else math.sqrt(config.head_dim / config.hidden_size)
    inner = config.attention_inner_size
    for key, value in original.items():
        if key == "loss.weight":
            if with_classifier:
                converted["margin_head.weight"] = value
            continue
        qkv = QKV_PATTERN.match(key)
        if qkv:
            layer, kind = qkv.groups()
            if value.shape[0] != 3 * inner:
                raise ValueError(f"{key} has {value.shape[0]} rows, expected 3 * {inner}.")
            query, key_part, value_part = value.split(inner, dim=0)
            converted[f"layers.{layer}.attention.q_proj.{kind}"] = query * query_factor
            converted[f"layers.{layer}.attention.k_proj.{kind}"] = key_part
            converted[f"layers.{layer}.attention.v_proj.{kind}"] = value_part
            continue
        for pattern, replacement in KEY_MAPPING.items():
            if re.search(pattern, key):
                new_key = re.sub(pattern, replacement, key)
                # stn.features.{i} (i >= 1) is blocks.{i - 1}
                new_key = re.sub(r"<(\d+)>", lambda m: str(int(m.group(1)) - 1), new_key)
                converted[new_key] = value
                break
        else:
            unused.append(key)
    if unused:
        raise ValueError(f"Unconverted keys in the Part fViT checkpoint: {unused}")
    return {(k if k.startswith("margin_head.") else f"part_fvit.{k}"): v for k, v in converted.items()}


# ---------------------------------------------------------------------------------------------------------------------
# Plain-torch re-computation of the original forward, used to verify a conversion
# ---------------------------------------------------------------------------------------------------------------------


def _batch_norm(x: torch.Tensor, sd: dict[str, torch.Tensor], prefix: str) -> torch.Tensor:
    return F.batch_norm(
        x,
        sd[prefix + "running_mean"],
        sd[prefix + "running_var"],
        sd[prefix + "weight"],
        sd[prefix + "bias"],
        eps=1e-5,
    )


def _hswish(x: torch.Tensor) -> torch.Tensor:
    return x * F.relu6(x + 3.0) / 6.0


def original_landmarks(sd: dict[str, torch.Tensor], images: torch.Tensor, blocks: list[list[Any]]) -> torch.Tensor:
    """`stn` + `output_layer` + min-max scaling of `ViT_face_landmark_patch8.forward` (eval mode)."""
    x = _hswish(
        _batch_norm(F.conv2d(images, sd["stn.features.0.0.weight"], stride=2, padding=1), sd, "stn.features.0.1.")
    )
    for index, (kernel, expansion, _, se, activation, stride) in enumerate(blocks, start=1):
        p = f"stn.features.{index}.conv."
        act = F.relu if activation == "relu" else _hswish
        y = act(_batch_norm(F.conv2d(x, sd[p + "0.weight"]), sd, p + "1."))
        y = _batch_norm(
            F.conv2d(y, sd[p + "3.weight"], stride=stride, padding=(kernel - 1) // 2, groups=expansion), sd, p + "4."
        )
        if se:
            gate = F.linear(F.relu(F.linear(y.mean((2, 3)), sd[p + "5.fc.0.weight"])), sd[p + "5.fc.2.weight"])
            y = y * (F.relu6(gate + 3.0) / 6.0)[:, :, None, None]
        y = _batch_norm(F.conv2d(act(y), sd[p + "7.weight"]), sd, p + "8.")
        x = x + y if stride == 1 and x.shape == y.shape else y
    theta = F.linear(x.mean(dim=(-2, -1)), sd["output_layer.1.weight"], sd["output_layer.1.bias"])
    t_min, t_max = theta.min(1, keepdim=True)[0], theta.max(1, keepdim=True)[0]
    theta = (theta - t_min) / (t_max - t_min) * (images.shape[-1] - 1)
    return theta.view(images.shape[0], -1, 2)


def original_patch_tokens(images: torch.Tensor, landmarks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """`extract_patches_pytorch_gridsample` (one grid_sample per landmark, mosaic) + the `rearrange` to tokens."""
    batch, channels, size = images.shape[0], images.shape[1], images.shape[2]
    half = patch_size / 2
    offsets = torch.arange(-half, half)
    grid = torch.stack(torch.meshgrid(offsets, offsets, indexing="ij"), dim=0)  # (2, p, p)
    grid = grid.transpose(0, 2).transpose(0, 1)  # (p, p, 2): [i, j] = (offset_i, offset_j)
    patches = []
    for k in range(landmarks.shape[1]):
        patch_grid = (grid[None] + landmarks[:, k, None, None, :]) / (size * 0.5) - 1
        patches.append(F.grid_sample(images, patch_grid, align_corners=False))
    patches = torch.stack(patches, dim=2)  # (B, C, N, p, p)
    row = math.isqrt(landmarks.shape[1])
    if row * row != landmarks.shape[1]:  # no square mosaic (never the case in the released code): same token order
        return patches.permute(0, 2, 3, 4, 1).reshape(batch, landmarks.shape[1], -1)
    mosaic = patches.reshape(batch, channels, row, row, patch_size, patch_size).permute(0, 1, 2, 4, 3, 5)
    mosaic = mosaic.reshape(batch, channels, row * patch_size, row * patch_size)
    # 'b c (h p1) (w p2) -> b (h w) (p1 p2 c)'
    tokens = mosaic.reshape(batch, channels, row, patch_size, row, patch_size).permute(0, 2, 4, 3, 5, 1)
    return tokens.reshape(batch, row * row, patch_size * patch_size * channels)


def original_vit(
    sd: dict[str, torch.Tensor], tokens: torch.Tensor, num_heads: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """ViT part (eval): returns the embedding `mlp_head(x[:, 0])` and the final tokens (before `mlp_head`)."""
    dim = sd["cls_token"].shape[-1]
    x = F.linear(tokens, sd["patch_to_embedding.weight"], sd["patch_to_embedding.bias"])
    x = torch.cat([sd["cls_token"].expand(x.shape[0], -1, -1), x], dim=1) + sd["pos_embedding"][:, : x.shape[1] + 1]
    for layer in range(_count(sd, r"^transformer\.layers\.(\d+)\.")):
        p = f"transformer.layers.{layer}."
        h = F.layer_norm(x, (dim,), sd[p + "0.fn.norm.weight"], sd[p + "0.fn.norm.bias"], eps=1e-5)
        q, k, v = F.linear(h, sd[p + "0.fn.fn.to_qkv.weight"], sd.get(p + "0.fn.fn.to_qkv.bias")).chunk(3, dim=-1)
        q, k, v = (t.reshape(t.shape[0], t.shape[1], num_heads, -1).transpose(1, 2) for t in (q, k, v))
        attention = (torch.einsum("bhid,bhjd->bhij", q, k) * dim**-0.5).softmax(dim=-1)
        out = torch.einsum("bhij,bhjd->bhid", attention, v).transpose(1, 2).reshape(x.shape[0], x.shape[1], -1)
        x = x + F.linear(out, sd[p + "0.fn.fn.to_out.0.weight"], sd[p + "0.fn.fn.to_out.0.bias"])
        h = F.layer_norm(x, (dim,), sd[p + "1.fn.norm.weight"], sd[p + "1.fn.norm.bias"], eps=1e-5)
        h = F.linear(
            F.gelu(F.linear(h, sd[p + "1.fn.fn.net.0.weight"], sd[p + "1.fn.fn.net.0.bias"])),
            sd[p + "1.fn.fn.net.3.weight"],
            sd[p + "1.fn.fn.net.3.bias"],
        )
        x = x + h
    embedding = F.layer_norm(x[:, 0], (dim,), sd["mlp_head.0.weight"], sd["mlp_head.0.bias"], eps=1e-5)
    return embedding, x


@torch.no_grad()
def check_against_original(
    model: PartFViTModel | PartFViTForFaceRecognition, original: dict[str, torch.Tensor], atol: float = 1e-4
) -> float:
    """Compare landmarks, patch tokens, embeddings, all tokens (and cosine logits) with the re-computed original on a
    seeded batch of 2; returns the largest |difference| (landmarks divided by `image_size - 1`)."""
    backbone = model.part_fvit if isinstance(model, PartFViTForFaceRecognition) else model
    config = backbone.config
    generator = torch.Generator().manual_seed(0)
    images = torch.rand(2, config.num_channels, config.image_size, config.image_size, generator=generator) - 0.5
    outputs = backbone.eval()(images, output_hidden_states=True)
    has_landmark_net = "stn.features.0.0.weight" in original
    landmarks = (
        original_landmarks(original, images, config.landmark_block_config) if has_landmark_net else outputs.landmarks
    )
    tokens = original_patch_tokens(images, landmarks, config.patch_size)
    embedding, final = original_vit(original, tokens, config.num_attention_heads)
    differences = {
        "landmarks / (image_size - 1)": (outputs.landmarks - landmarks).abs().max() / (config.image_size - 1),
        "patches": (outputs.patches - tokens).abs().max(),
        "embeddings": (outputs.embeddings - embedding).abs().max(),
        "tokens": (outputs.hidden_states[-1] - final).abs().max(),
    }
    if isinstance(model, PartFViTForFaceRecognition) and "loss.weight" in original:
        cosine = F.linear(F.normalize(embedding), F.normalize(original["loss.weight"])) * config.margin_scale
        differences["logits"] = (model.eval()(images).logits - cosine).abs().max()
    for name, value in differences.items():
        logger.info("max |diff| %s: %.2e", name, float(value))
    worst = max(float(v) for v in differences.values())
    if not worst <= atol:
        raise ValueError(f"The converted model differs from the original re-computation: {differences} (atol {atol}).")
    return worst


def convert_checkpoint(
    checkpoint_path: str | Path,
    output_dir: str | Path,
    branch: str = "teacher",
    landmark_checkpoint: str | Path | None = None,
    random_landmark_net: bool = False,
    with_classifier: bool = False,
    attention_scale: str = "model_width",
    head_dim: int = 64,
    config_overrides: dict[str, Any] | None = None,
) -> PartFViTModel | PartFViTForFaceRecognition:
    """Convert, save (safetensors + config + image processor), reload and verify. Returns the reloaded model (`PartFViTForFaceRecognition` with the classifier,
    `PartFViTModel` otherwise)."""
    original, layout, dropped = load_original_state_dict(checkpoint_path, branch)
    if dropped:
        logger.info("Dropped %d LAFS keys (DINO head, placeholder classifier), e.g. %s", len(dropped), dropped[:3])
    if landmark_checkpoint is not None:
        landmark = load_landmark_state_dict(landmark_checkpoint)
        replaced = sorted(set(landmark) & set(original))
        if replaced:
            logger.warning(
                "Replacing the checkpoint's own landmark CNN (%d tensors) with %s.", len(replaced), landmark_checkpoint
            )
        original = {k: v for k, v in original.items() if not k.startswith(LANDMARK_PREFIXES)}
        original.update(landmark)
    has_landmark_net = any(key.startswith(LANDMARK_PREFIXES) for key in original)
    if not has_landmark_net and not random_landmark_net:
        raise ValueError(
            f"The {layout} checkpoint has no landmark CNN (`stn.*`, `output_layer.*`); pass --landmark_checkpoint "
            "(a stage-1 Part fViT checkpoint, as LAFS fine-tuning does) or --random_landmark_net."
        )
    if with_classifier and "loss.weight" not in original:
        raise ValueError(
            "--with_classifier needs `loss.weight` in a released Part fViT checkpoint (LAFS files only hold an unused "
            "placeholder, which is always dropped)."
        )

    fields = infer_config_fields(original, head_dim=head_dim)
    fields.update(config_overrides or {})
    shapes = fields.pop("_landmark_block_shapes", None)
    if shapes is not None and "landmark_block_config" not in (config_overrides or {}):
        raise ValueError(
            f"The landmark CNN blocks {shapes} ([kernel, expansion, out, se]) differ from the released layout; pass "
            "`landmark_block_config` (with activations and strides) in config_overrides."
        )
    fields["attention_scale"] = attention_scale
    if with_classifier:
        fields["num_labels"] = original["loss.weight"].shape[0]
    config = PartFViTConfig(**fields)

    converted = convert_state_dict(original, config, with_classifier=with_classifier)
    model = PartFViTForFaceRecognition(config) if with_classifier else PartFViTModel(config)
    if not with_classifier:
        converted = {k.removeprefix("part_fvit."): v for k, v in converted.items()}
    missing, unexpected = model.load_state_dict(converted, strict=False)
    allowed_missing = re.compile(r"num_batches_tracked$" + ("|landmark_net\\." if not has_landmark_net else ""))
    missing = [key for key in missing if not allowed_missing.search(key)]
    if missing or unexpected:
        raise ValueError(f"State dict mismatch after conversion: missing {missing}, unexpected {unexpected}.")

    output_dir = Path(output_dir)
    model.save_pretrained(output_dir)
    size = config.image_size
    PartFViTImageProcessor(size={"height": size, "width": size}).save_pretrained(output_dir)
    reloaded = type(model).from_pretrained(output_dir).eval()
    for (name, tensor), other in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        if not torch.equal(tensor, other):
            raise ValueError(f"{name} changed when saving and reloading.")
    difference = check_against_original(reloaded, original)
    logger.info(
        "Saved %s to %s (max |diff| to the original %.2e). Looks ok!", type(reloaded).__name__, output_dir, difference
    )
    return reloaded


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="Released Part fViT .pth or LAFS stage-2 checkpoint.")
    parser.add_argument("--output_dir", required=True)
    parser.add_argument("--branch", choices=("teacher", "student"), default="teacher", help="LAFS branch to export.")
    parser.add_argument("--landmark_checkpoint", help="Stage-1 Part fViT checkpoint to take the landmark CNN from.")
    parser.add_argument("--random_landmark_net", action="store_true", help="Allow a checkpoint without landmark CNN.")
    parser.add_argument(
        "--with_classifier", action="store_true", help="Write PartFViTForFaceRecognition with loss.weight."
    )
    parser.add_argument("--attention_scale", choices=("model_width", "head_dim"), default="model_width")
    parser.add_argument("--head_dim", type=int, default=64)
    parser.add_argument("--image_size", type=int, default=112)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_checkpoint(
        args.checkpoint,
        args.output_dir,
        branch=args.branch,
        landmark_checkpoint=args.landmark_checkpoint,
        random_landmark_net=args.random_landmark_net,
        with_classifier=args.with_classifier,
        attention_scale=args.attention_scale,
        head_dim=args.head_dim,
        config_overrides={"image_size": args.image_size},
    )


if __name__ == "__main__":
    main()
