"""SegFace model configuration."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig

from ...data.labels import CELEBAMASK_HQ_LABELS, HELEN_LABELS, LAPA_LABELS


# torchvision builders SegFace can use, with the channels of the four stage outputs it fuses.
TORCHVISION_BACKBONE_CHANNELS: dict[str, tuple[int, int, int, int]] = {
    "swin_b": (128, 256, 512, 1024),
    "swin_v2_b": (128, 256, 512, 1024),
    "convnext_base": (128, 256, 512, 1024),
    "convnext_small": (96, 192, 384, 768),
    "convnext_tiny": (96, 192, 384, 768),
    "mobilenet_v3_large": (24, 40, 112, 960),
    "efficientnet_v2_m": (48, 80, 176, 1280),
    "resnet101": (256, 512, 1024, 2048),
}
BACKBONE_LIBRARIES = ("torchvision", "timm")
_BACKBONE_KEYS = {"torchvision": {"library", "name"}, "timm": {"library", "name", "out_indices", "kwargs"}}

DATASET_LABELS: dict[str, tuple[str, ...]] = {
    "celebamask_hq": CELEBAMASK_HQ_LABELS,
    "lapa": LAPA_LABELS,
    "helen": HELEN_LABELS,
}


class SegFaceConfig(PreTrainedConfig):
    r"""
    Configuration of a SegFace face parser (Narayan et al., "SegFace: Face Segmentation of Long-Tail Classes",
    AAAI 2025): a multi-scale backbone, a per-stage linear projection + 1x1 fusion, and a SAM-style two-way transformer
    decoder with one learnable query per class whose outputs weight an upscaled pixel embedding.

    The defaults reproduce the released Swin-B CelebAMask-HQ model at 512 px (`swinb_celeba_512`). Use
    [`SegFaceConfig.for_dataset`] for the LaPa and Helen label sets and the other backbones.

    The class keeps the keyword-argument `__init__` style so that it works across the whole `transformers>=5.0`
    range.

    Args:
        backbone_config (`dict`, *optional*):
            Which backbone to build, always with random weights (checkpoints bring the trained ones):

            * `{"library": "torchvision", "name": <name>}` with `<name>` one of `swin_b`, `swin_v2_b`, `convnext_base`,
              `convnext_small`, `convnext_tiny`, `mobilenet_v3_large`, `efficientnet_v2_m`, `resnet101` (the
              backbones of the original code). `convnext_tiny` is a real ConvNeXt-T: the original code's
              `"convnext_tiny"` option built a ConvNeXt-S by mistake.
            * `{"library": "timm", "name": <any timm model>, "out_indices": [...], "kwargs": {...}}` for new
              training: `timm.create_model(name, features_only=True, pretrained=False, out_indices=..., **kwargs)`.
              `out_indices` defaults to timm's own choice; the first selected map should have stride 4 so that the
              logits come out at the input resolution without resizing.

            Defaults to `{"library": "torchvision", "name": "swin_b"}`. The per-stage channels are derived from the
            backbone.
        image_size (`int`, *optional*, defaults to 512): training/evaluation resolution (square). The released models
            use 224, 256, 448 or 512. The network itself accepts other sizes.
        decoder_hidden_size (`int`, *optional*, defaults to 256): width of the fused features, of the class queries
            and of the two-way transformer.
        decoder_num_hidden_layers (`int`, *optional*, defaults to 2): two-way transformer blocks.
        decoder_num_attention_heads (`int`, *optional*, defaults to 8): attention heads in the decoder.
        decoder_intermediate_size (`int`, *optional*, defaults to 2048): width of the decoder MLPs.
        decoder_hidden_act (`str`, *optional*, defaults to `"relu"`): activation of the decoder MLPs.
        attention_downsample_rate (`int`, *optional*, defaults to 2): the cross-attentions project queries, keys and
            values to `decoder_hidden_size // attention_downsample_rate` channels.
        num_pos_feats (`int`, *optional*, defaults to 128): random Fourier frequencies of the image positional
            encoding; it has `2 * num_pos_feats` channels (sine and cosine), which must equal `decoder_hidden_size`.
        decoder_upscaling_sizes (`list[int]`, *optional*, defaults to `[64, 32]`): channels after each of the two
            stride-2 transposed convolutions that bring the stride-4 features to the input resolution. The last one
            is also the output width of the hypernetwork MLP.
        decoder_hypernetwork_num_layers (`int`, *optional*, defaults to 3): Linear layers of the hypernetwork MLP
            shared by all class queries.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5): epsilon of the decoder's LayerNorms (the LayerNorm of
            the upscaling path uses 1e-6, as in SAM).
        ce_loss_weight (`float`, *optional*, defaults to 0.5): weight of the cross-entropy term of the loss.
        dice_loss_weight (`float`, *optional*, defaults to 0.5): weight of the Dice term of the loss.
        semantic_loss_ignore_index (`int`, *optional*, defaults to 255): label value excluded from both loss terms.
        id2label / label2id (`dict`, *optional*): class names in index order. Pass both. Without them (and without
            `num_labels`) the 19 CelebAMask-HQ classes are used.

    Example:

    ```python
    >>> from faceformers.models.segface import SegFaceConfig

    >>> config = SegFaceConfig.for_dataset("lapa", backbone="swin_b", image_size=448)
    >>> config.num_labels, config.id2label[4]
    (11, 'left_eye')
    ```
    """

    model_type = "segface"

    def __init__(
        self,
        backbone_config: dict[str, Any] | None = None,
        image_size: int = 512,
        decoder_hidden_size: int = 256,
        decoder_num_hidden_layers: int = 2,
        decoder_num_attention_heads: int = 8,
        decoder_intermediate_size: int = 2048,
        decoder_hidden_act: str = "relu",
        attention_downsample_rate: int = 2,
        num_pos_feats: int = 128,
        decoder_upscaling_sizes: list[int] | tuple[int, int] = (64, 32),
        decoder_hypernetwork_num_layers: int = 3,
        layer_norm_eps: float = 1e-5,
        ce_loss_weight: float = 0.5,
        dice_loss_weight: float = 0.5,
        semantic_loss_ignore_index: int = 255,
        **kwargs,
    ):
        self.backbone_config = _normalize_backbone_config(backbone_config)
        self.image_size = image_size
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        self.decoder_hidden_act = decoder_hidden_act
        self.attention_downsample_rate = attention_downsample_rate
        self.num_pos_feats = num_pos_feats
        self.decoder_upscaling_sizes = list(decoder_upscaling_sizes)
        self.decoder_hypernetwork_num_layers = decoder_hypernetwork_num_layers
        self.layer_norm_eps = layer_norm_eps
        self.ce_loss_weight = ce_loss_weight
        self.dice_loss_weight = dice_loss_weight
        self.semantic_loss_ignore_index = semantic_loss_ignore_index
        if "id2label" not in kwargs and "num_labels" not in kwargs:
            kwargs["id2label"] = dict(enumerate(CELEBAMASK_HQ_LABELS))
            kwargs["label2id"] = {name: index for index, name in enumerate(CELEBAMASK_HQ_LABELS)}
        # Eager attention by default: the decoder attends between K class queries and the stride-4 map, where SDPA
        # saves nothing, and eager math reproduces the original bit for bit (SDPA flips argmax ties of ~1e-8).
        kwargs.setdefault("attn_implementation", "eager")
        super().__init__(**kwargs)
        self.validate_segface()

    @classmethod
    def for_dataset(
        cls, dataset: str, backbone: str | dict[str, Any] = "swin_b", image_size: int = 512, **kwargs
    ) -> SegFaceConfig:
        """A config with the canonical label names of `dataset` (`"celebamask_hq"`, `"lapa"` or `"helen"`).

        `backbone` is a torchvision name (see `backbone_config`) or a full `backbone_config` dict. Left and right in
        the label names are the subject's (see `faceformers.data.labels`).
        """
        if dataset not in DATASET_LABELS:
            raise ValueError(f"Unknown dataset {dataset!r}; expected one of {sorted(DATASET_LABELS)}.")
        labels = DATASET_LABELS[dataset]
        backbone_config = {"library": "torchvision", "name": backbone} if isinstance(backbone, str) else backbone
        return cls(
            backbone_config=backbone_config,
            image_size=image_size,
            id2label=dict(enumerate(labels)),
            label2id={name: index for index, name in enumerate(labels)},
            **kwargs,
        )

    def validate_segface(self) -> None:
        """Raise `ValueError` naming the offending values if the configuration cannot build a model."""
        if not isinstance(self.image_size, int) or self.image_size <= 0 or self.image_size % 32:
            raise ValueError(
                f"`image_size` must be a positive multiple of 32 (square images), got {self.image_size!r}."
            )
        hidden, heads = self.decoder_hidden_size, self.decoder_num_attention_heads
        rate = self.attention_downsample_rate
        if hidden % heads:
            raise ValueError(
                f"The decoder_hidden_size ({hidden}) is not a multiple of the decoder_num_attention_heads ({heads})."
            )
        if rate < 1 or hidden % rate or (hidden // rate) % heads:
            raise ValueError(
                f"decoder_hidden_size ({hidden}) / attention_downsample_rate ({rate}) must be an integer multiple of "
                f"decoder_num_attention_heads ({heads})."
            )
        if 2 * self.num_pos_feats != hidden:
            raise ValueError(
                f"The positional encoding has 2 * num_pos_feats ({2 * self.num_pos_feats}) channels, which must equal "
                f"decoder_hidden_size ({hidden})."
            )
        if len(self.decoder_upscaling_sizes) != 2 or min(self.decoder_upscaling_sizes) < 1:
            raise ValueError(
                "`decoder_upscaling_sizes` must hold two positive channel counts (two stride-2 upscaling steps), "
                f"got {self.decoder_upscaling_sizes}."
            )
        if self.decoder_hypernetwork_num_layers < 1 or self.decoder_num_hidden_layers < 1:
            raise ValueError(
                f"`decoder_num_hidden_layers` ({self.decoder_num_hidden_layers}) and "
                f"`decoder_hypernetwork_num_layers` ({self.decoder_hypernetwork_num_layers}) must be at least 1."
            )
        if self.ce_loss_weight < 0 or self.dice_loss_weight < 0:
            raise ValueError(
                f"Loss weights must be non-negative, got ce_loss_weight={self.ce_loss_weight} and "
                f"dice_loss_weight={self.dice_loss_weight}."
            )
        if 0 <= self.semantic_loss_ignore_index < self.num_labels:
            raise ValueError(
                f"`semantic_loss_ignore_index` ({self.semantic_loss_ignore_index}) is a valid class id "
                f"(num_labels={self.num_labels}); pick a value outside [0, {self.num_labels})."
            )


def _normalize_backbone_config(backbone_config: dict[str, Any] | None) -> dict[str, Any]:
    """Validate the backbone description and return a JSON-friendly copy (lists, no tuples)."""
    if backbone_config is None:
        return {"library": "torchvision", "name": "swin_b"}
    if not isinstance(backbone_config, dict):
        raise ValueError(f"`backbone_config` must be a dict, got {type(backbone_config).__name__}.")
    library = backbone_config.get("library")
    if library not in BACKBONE_LIBRARIES:
        raise ValueError(f"`backbone_config['library']` must be one of {BACKBONE_LIBRARIES}, got {library!r}.")
    unknown = sorted(set(backbone_config) - _BACKBONE_KEYS[library])
    if unknown:
        raise ValueError(
            f"Unknown keys {unknown} in a {library} `backbone_config`; allowed: {sorted(_BACKBONE_KEYS[library])}."
        )
    name = backbone_config.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"`backbone_config['name']` must be a non-empty string, got {name!r}.")
    if library == "torchvision" and name not in TORCHVISION_BACKBONE_CHANNELS:
        raise ValueError(
            f"Unsupported torchvision backbone {name!r}; expected one of {sorted(TORCHVISION_BACKBONE_CHANNELS)} "
            "(or use `library='timm'`)."
        )
    normalized = {"library": library, "name": name}
    if library == "timm":
        out_indices = backbone_config.get("out_indices")
        if out_indices is not None:
            out_indices = list(out_indices)
            distinct = len(set(out_indices)) == len(out_indices)
            if not out_indices or not distinct or not all(isinstance(i, int) for i in out_indices):
                raise ValueError(f"`out_indices` must be distinct integers, got {out_indices}.")
            normalized["out_indices"] = out_indices
        model_kwargs = backbone_config.get("kwargs")
        if model_kwargs is not None:
            if not isinstance(model_kwargs, dict):
                raise ValueError(f"`backbone_config['kwargs']` must be a dict, got {type(model_kwargs).__name__}.")
            forbidden = sorted({"features_only", "pretrained", "out_indices"} & set(model_kwargs))
            if forbidden:
                raise ValueError(f"`backbone_config['kwargs']` must not set {forbidden}; SegFace sets them itself.")
            normalized["kwargs"] = {
                key: list(value) if isinstance(value, tuple) else value for key, value in model_kwargs.items()
            }
    return normalized


__all__ = ["SegFaceConfig"]
