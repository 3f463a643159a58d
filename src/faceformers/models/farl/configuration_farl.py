"""FaRL (Facial Representation Learning, CVPR'22) model configuration."""

from __future__ import annotations

from typing import Any

from transformers import CLIPTextConfig, CLIPVisionConfig, PreTrainedConfig


# FaRL-Base: OpenAI CLIP ViT-B/16 (QuickGELU, LayerNorm eps 1e-5) and the CLIP text transformer.
DEFAULT_VISION_CONFIG: dict[str, Any] = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "image_size": 224,
    "patch_size": 16,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
}
DEFAULT_TEXT_CONFIG: dict[str, Any] = {
    "vocab_size": 49408,
    "hidden_size": 512,
    "intermediate_size": 2048,
    "num_hidden_layers": 12,
    "num_attention_heads": 8,
    "max_position_embeddings": 77,
    "hidden_act": "quick_gelu",
    "layer_norm_eps": 1e-5,
    "projection_dim": 512,
    # The CLIP BPE ids: text is pooled at the first end-of-text token.
    "bos_token_id": 49406,
    "eos_token_id": 49407,
    "pad_token_id": 0,
}
# The frozen DALL-E dVAE encoder whose codes are FaRL's masked-image-modelling targets (8,192 visual tokens).
DEFAULT_IMAGE_TOKENIZER_CONFIG: dict[str, Any] = {
    "num_groups": 4,
    "hidden_size": 256,
    "blocks_per_group": 2,
    "vocab_size": 8192,
}


class FaRLConfig(PreTrainedConfig):
    r"""
    Configuration of a FaRL model: a CLIP image tower and text tower with projections and a learnable logit scale
    (`FaRLModel`), plus what only pre-training needs (`FaRLForPreTraining`: masked image modelling head, the frozen
    visual tokenizer and the loss weights).

    The defaults are FaRL-Base (ViT-B/16 at 224 px, the released `FaRL-Base-Patch16-LAIONFace20M-ep{16,64}`).

    Args:
        text_config (`dict` or `CLIPTextConfig`, *optional*): the text transformer; `None` gives the CLIP text tower.
        vision_config (`dict` or `CLIPVisionConfig`, *optional*): the image transformer; `None` gives ViT-B/16.
        projection_dim (`int`, *optional*, defaults to 512): width of the joint image-text embedding space.
        logit_scale_init_value (`float`, *optional*, defaults to 2.6592): initial log of the inverse temperature,
            `log(1 / 0.07)` as in CLIP.
        max_logit_scale (`float`, *optional*, defaults to 100.0): the inverse temperature is clamped to this value.
        initializer_factor (`float`, *optional*, defaults to 1.0): scales every initialisation std (tests use 1.0).
        mim_loss_weight (`float`, *optional*, defaults to 1.0): weight of the masked-image-modelling loss; the
            total pre-training loss is `contrastive_loss + mim_loss_weight * mim_loss`. `0` disables the MIM branch.
        mim_num_hidden_layers (`int`, *optional*, defaults to 1): depth of the transformer that predicts the visual
            tokens of the masked patches.
        mim_num_masking_patches (`int`, *optional*, defaults to 75): the most patches masked per image (BEiT); at
            most the number of patches (checked by `FaRLForPreTraining`).
        mim_min_patches_per_block (`int`, *optional*, defaults to 16): smallest block of the block-wise masking.
        image_tokenizer_config (`dict`, *optional*): architecture of the frozen DALL-E dVAE encoder (`num_groups`,
            `hidden_size`, `blocks_per_group`, `vocab_size`); its `vocab_size` sets the MIM head's output size.
        gather_across_processes (`bool`, *optional*, defaults to `True`): contrast each process's images and texts
            with those of every process (the global batch), as CLIP does. The gather is differentiable, so N
            processes with batch b compute the gradient of one process with batch N * b.

    Example:

    ```python
    >>> from faceformers import FaRLConfig, FaRLModel

    >>> config = FaRLConfig()  # FaRL-Base
    >>> model = FaRLModel(config)
    ```
    """

    model_type = "farl"
    sub_configs = {"text_config": CLIPTextConfig, "vision_config": CLIPVisionConfig}

    def __init__(
        self,
        text_config: dict[str, Any] | CLIPTextConfig | None = None,
        vision_config: dict[str, Any] | CLIPVisionConfig | None = None,
        projection_dim: int = 512,
        logit_scale_init_value: float = 2.6592,
        max_logit_scale: float = 100.0,
        initializer_factor: float = 1.0,
        mim_loss_weight: float = 1.0,
        mim_num_hidden_layers: int = 1,
        mim_num_masking_patches: int = 75,
        mim_min_patches_per_block: int = 16,
        image_tokenizer_config: dict[str, Any] | None = None,
        gather_across_processes: bool = True,
        **kwargs,
    ):
        self.text_config = _sub_config(CLIPTextConfig, DEFAULT_TEXT_CONFIG, text_config, projection_dim)
        self.vision_config = _sub_config(CLIPVisionConfig, DEFAULT_VISION_CONFIG, vision_config, projection_dim)
        self.projection_dim = projection_dim
        self.logit_scale_init_value = logit_scale_init_value
        self.max_logit_scale = max_logit_scale
        self.initializer_factor = initializer_factor
        self.mim_loss_weight = mim_loss_weight
        self.mim_num_hidden_layers = mim_num_hidden_layers
        self.mim_num_masking_patches = mim_num_masking_patches
        self.mim_min_patches_per_block = mim_min_patches_per_block
        self.image_tokenizer_config = {**DEFAULT_IMAGE_TOKENIZER_CONFIG, **(image_tokenizer_config or {})}
        self.gather_across_processes = gather_across_processes
        super().__init__(**kwargs)
        self.validate_farl()

    def validate_farl(self) -> None:
        vision = self.vision_config
        if vision.image_size % vision.patch_size:
            raise ValueError(
                f"vision_config.image_size ({vision.image_size}) must be a multiple of patch_size ({vision.patch_size})."
            )
        if self.mim_loss_weight < 0 or self.max_logit_scale <= 0:
            raise ValueError(
                f"mim_loss_weight must be >= 0 and max_logit_scale > 0, "
                f"got {self.mim_loss_weight} and {self.max_logit_scale}."
            )

    @property
    def num_patches(self) -> int:
        return (self.vision_config.image_size // self.vision_config.patch_size) ** 2


def _sub_config(config_class, defaults: dict[str, Any], value, projection_dim: int):
    if isinstance(value, config_class):
        return value
    if value is not None and not isinstance(value, dict):
        raise ValueError(f"Expected a dict or {config_class.__name__}, got {type(value).__name__}.")
    arguments = {**defaults, "projection_dim": projection_dim, **(value or {})}
    arguments.pop("model_type", None)
    arguments.pop("transformers_version", None)
    return config_class(**arguments)


__all__ = ["FaRLConfig"]
