"""SegFace (AAAI 2025, "Face Segmentation of Long-Tail Classes"): multi-scale backbone features fused by per-stage
linear projections, then a SAM-style two-way transformer decoder with one learnable query per class."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_outputs import SemanticSegmenterOutput
from transformers.utils import logging

from .configuration_segface import TORCHVISION_BACKBONE_CHANNELS, SegFaceConfig


logger = logging.get_logger(__name__)

# Index (in the torchvision `features` sequence) of each of the four stage outputs SegFace fuses, and whether the
# stage outputs are channels-last. ResNet has no `features`; its stem and layers are put in a sequence of the same
# order as `resnet.children()`, so that indices 4..7 are `layer1`..`layer4`.
TORCHVISION_STAGE_INDICES: dict[str, tuple[int, ...]] = {
    "swin_b": (1, 3, 5, 7),
    "swin_v2_b": (1, 3, 5, 7),
    "convnext_base": (1, 3, 5, 7),
    "convnext_small": (1, 3, 5, 7),
    "convnext_tiny": (1, 3, 5, 7),
    "mobilenet_v3_large": (3, 6, 12, 16),
    "efficientnet_v2_m": (2, 3, 5, 8),
    "resnet101": (4, 5, 6, 7),
}
CHANNELS_LAST_BACKBONES = ("swin_b", "swin_v2_b")


@dataclass
class SegFaceSemanticSegmenterOutput(SemanticSegmenterOutput):
    """
    Output of [`SegFaceForSemanticSegmentation`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            `config.ce_loss_weight * cross_entropy + config.dice_loss_weight * dice`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels, height, width)`):
            Per-class scores at the input resolution (for backbones whose first stage has stride 4).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*, returned when `output_hidden_states=True`):
            The raw backbone stage outputs that SegFace fuses, channels-first, from high to low resolution:
            `(batch_size, hidden_sizes[i], height / stride_i, width / stride_i)`.
        attentions: always `None` (kept for compatibility with [`SemanticSegmenterOutput`]).
        fused_hidden_state (`torch.FloatTensor` of shape `(batch_size, decoder_hidden_size, height / 4, width / 4)`,
            *optional*, returned when `output_hidden_states=True`): the fused multi-scale features the decoder attends
            to.
    """

    fused_hidden_state: torch.FloatTensor | None = None


def build_torchvision_stages(name: str) -> nn.Sequential:
    """The stage sequence of a torchvision classifier, randomly initialised (no weight download)."""
    import torchvision

    model = getattr(torchvision.models, name)(weights=None)
    if name == "resnet101":
        return nn.Sequential(
            model.conv1, model.bn1, model.relu, model.maxpool, model.layer1, model.layer2, model.layer3, model.layer4
        )
    return model.features


class SegFaceBackbone(nn.Module):
    """
    Multi-scale feature extractor: runs the backbone stage by stage and returns the selected stage outputs as
    channels-first maps, from high to low resolution (no forward hooks).

    * torchvision (`self.features`): the `features` sequence of the classifier (for `resnet101`, its stem and
      `layer1..4`); the classification head and Swin's final norm are not built.
    * timm (`self.timm_model`): `timm.create_model(name, features_only=True, pretrained=False, ...)`.

    Attributes:
        channels (`tuple[int]`): channels of each returned map.
        reductions (`tuple[int]`): stride of each returned map relative to the input.
    """

    def __init__(self, backbone_config: dict):
        super().__init__()
        self.library = backbone_config["library"]
        name = backbone_config["name"]
        if self.library == "torchvision":
            self.features = build_torchvision_stages(name)
            self.stage_indices = TORCHVISION_STAGE_INDICES[name]
            self.channels_last = name in CHANNELS_LAST_BACKBONES
            self.channels = TORCHVISION_BACKBONE_CHANNELS[name]
            self.reductions = (4, 8, 16, 32)
        else:
            import timm

            options = {"features_only": True, "pretrained": False, **backbone_config.get("kwargs", {})}
            if "out_indices" in backbone_config:
                options["out_indices"] = tuple(backbone_config["out_indices"])
            self.timm_model = timm.create_model(name, **options)
            self.channels_last = getattr(self.timm_model, "output_fmt", "NCHW") == "NHWC"
            self.channels = tuple(self.timm_model.feature_info.channels())
            self.reductions = tuple(self.timm_model.feature_info.reduction())
        # torchvision/timm modules keep their own initialisation (see SegFacePreTrainedModel._init_weights)
        for module in self.modules():
            if module is not self:
                module._segface_keeps_own_init = True

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.library == "torchvision":
            feature_maps = self._run_torchvision_stages(pixel_values)
        else:
            feature_maps = tuple(self.timm_model(pixel_values))
        if self.channels_last:  # (B, H, W, C) -> (B, C, H, W)
            feature_maps = tuple(feature.permute(0, 3, 1, 2).contiguous() for feature in feature_maps)
        return feature_maps

    def _run_torchvision_stages(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        hidden_states, outputs = pixel_values, []
        for index, stage in enumerate(self.features[: self.stage_indices[-1] + 1]):
            hidden_states = stage(hidden_states)
            if index in self.stage_indices:
                outputs.append(hidden_states)
        return tuple(outputs)


class SegFaceFeatureFusion(nn.Module):
    """Per-stage Linear projection to `decoder_hidden_size`, bilinear upsampling to the first (stride-4) map, and a
    bias-free 1x1 convolution over the maps concatenated from the deepest stage to the shallowest (original order)."""

    def __init__(self, config: SegFaceConfig, channels: tuple[int, ...]):
        super().__init__()
        dim = config.decoder_hidden_size
        self.projections = nn.ModuleList([nn.Linear(in_channels, dim) for in_channels in channels])
        self.linear_fuse = nn.Conv2d(dim * len(channels), dim, kernel_size=1, bias=False)

    def forward(self, feature_maps: tuple[torch.Tensor, ...]) -> torch.Tensor:
        target_size = feature_maps[0].shape[-2:]
        upsampled = []
        for feature, projection in zip(feature_maps, self.projections):
            batch_size, _, height, width = feature.shape
            # (B, C_i, h, w) -> (B, h * w, D) -> (B, D, h, w)
            projected = projection(feature.flatten(2).transpose(1, 2)).transpose(1, 2)
            projected = projected.reshape(batch_size, -1, height, width)
            if projected.shape[-2:] != target_size:
                projected = F.interpolate(projected, size=target_size, mode="bilinear", align_corners=False)
            upsampled.append(projected)
        return self.linear_fuse(torch.cat(upsampled[::-1], dim=1))  # (B, D, h_1, w_1)


class SegFacePositionalEmbedding(nn.Module):
    """Random Fourier features of pixel-centre coordinates (SAM's `PositionEmbeddingRandom`).

    The Gaussian frequency matrix is a persistent buffer: it is part of the trained model and is saved and loaded.
    """

    def __init__(self, config: SegFaceConfig):
        super().__init__()
        self.register_buffer("gaussian_matrix", torch.randn(2, config.num_pos_feats))

    def forward(self, height: int, width: int) -> torch.Tensor:
        matrix = self.gaussian_matrix
        rows = (torch.arange(height, device=matrix.device, dtype=matrix.dtype) + 0.5) / height
        cols = (torch.arange(width, device=matrix.device, dtype=matrix.dtype) + 0.5) / width
        # (h, w, 2) coordinates (x first, then y) in [-1, 1]
        coords = torch.stack(torch.broadcast_tensors(cols[None, :], rows[:, None]), dim=-1)
        angles = 2 * math.pi * ((2 * coords - 1) @ matrix)  # (h, w, F)
        return torch.cat([angles.sin(), angles.cos()], dim=-1).permute(2, 0, 1)  # (2F, h, w)


class SegFaceLayerNorm2d(nn.Module):
    """LayerNorm over the channels of a `(B, C, H, W)` map."""

    def __init__(self, num_channels: int, eps: float = 1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        mean = hidden_states.mean(1, keepdim=True)
        variance = (hidden_states - mean).pow(2).mean(1, keepdim=True)
        hidden_states = (hidden_states - mean) / torch.sqrt(variance + self.eps)
        return self.weight[:, None, None] * hidden_states + self.bias[:, None, None]


class SegFaceAttention(nn.Module):
    """Multi-head attention whose queries, keys and values are projected to `hidden_size // downsample_rate`."""

    def __init__(self, config: SegFaceConfig, downsample_rate: int = 1):
        super().__init__()
        self.config = config
        hidden_size = config.decoder_hidden_size
        internal_size = hidden_size // downsample_rate
        self.num_heads = config.decoder_num_attention_heads
        self.head_dim = internal_size // self.num_heads
        self.q_proj = nn.Linear(hidden_size, internal_size)
        self.k_proj = nn.Linear(hidden_size, internal_size)
        self.v_proj = nn.Linear(hidden_size, internal_size)
        self.out_proj = nn.Linear(internal_size, hidden_size)

    def _split_heads(self, hidden_states: torch.Tensor) -> torch.Tensor:
        batch_size, seq_length, _ = hidden_states.shape  # -> (B, heads, N, head_dim)
        return hidden_states.reshape(batch_size, seq_length, self.num_heads, self.head_dim).transpose(1, 2)

    def forward(self, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
        batch_size, num_queries, _ = query.shape
        query = self._split_heads(self.q_proj(query))
        key = self._split_heads(self.k_proj(key))
        value = self._split_heads(self.v_proj(value))
        if self.config._attn_implementation == "eager":
            weights = torch.softmax(query @ key.transpose(-2, -1) / math.sqrt(self.head_dim), dim=-1)
            context = weights @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value)
        context = context.transpose(1, 2).reshape(batch_size, num_queries, self.num_heads * self.head_dim)
        return self.out_proj(context)


class SegFaceMLP(nn.Module):
    def __init__(self, config: SegFaceConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.decoder_hidden_size, config.decoder_intermediate_size)
        self.activation_fn = ACT2FN[config.decoder_hidden_act]
        self.fc2 = nn.Linear(config.decoder_intermediate_size, config.decoder_hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class SegFaceTwoWayAttentionBlock(nn.Module):
    """Self-attention of the class queries, queries -> image cross-attention, MLP, image -> queries cross-attention;
    post-norm residuals. The first block's self-attention sees no positional term and has no residual (as in SAM)."""

    def __init__(self, config: SegFaceConfig, skip_first_layer_pe: bool):
        super().__init__()
        eps, rate = config.layer_norm_eps, config.attention_downsample_rate
        self.skip_first_layer_pe = skip_first_layer_pe
        self.self_attn = SegFaceAttention(config)
        self.layer_norm1 = nn.LayerNorm(config.decoder_hidden_size, eps=eps)
        self.cross_attn_token_to_image = SegFaceAttention(config, downsample_rate=rate)
        self.layer_norm2 = nn.LayerNorm(config.decoder_hidden_size, eps=eps)
        self.mlp = SegFaceMLP(config)
        self.layer_norm3 = nn.LayerNorm(config.decoder_hidden_size, eps=eps)
        self.layer_norm4 = nn.LayerNorm(config.decoder_hidden_size, eps=eps)
        self.cross_attn_image_to_token = SegFaceAttention(config, downsample_rate=rate)

    def forward(
        self, queries: torch.Tensor, keys: torch.Tensor, query_pe: torch.Tensor, key_pe: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # queries: (B, K, D) class tokens; keys: (B, h * w, D) image tokens
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            positioned = queries + query_pe
            queries = queries + self.self_attn(positioned, positioned, queries)
        queries = self.layer_norm1(queries)

        positioned_keys = keys + key_pe
        queries = self.layer_norm2(queries + self.cross_attn_token_to_image(queries + query_pe, positioned_keys, keys))
        queries = self.layer_norm3(queries + self.mlp(queries))
        keys = self.layer_norm4(keys + self.cross_attn_image_to_token(positioned_keys, queries + query_pe, queries))
        return queries, keys


class SegFaceTwoWayTransformer(nn.Module):
    def __init__(self, config: SegFaceConfig):
        super().__init__()
        self.layers = nn.ModuleList(
            [
                SegFaceTwoWayAttentionBlock(config, skip_first_layer_pe=i == 0)
                for i in range(config.decoder_num_hidden_layers)
            ]
        )
        self.final_attn_token_to_image = SegFaceAttention(config, downsample_rate=config.attention_downsample_rate)
        self.layer_norm_final_attn = nn.LayerNorm(config.decoder_hidden_size, eps=config.layer_norm_eps)

    def forward(
        self, image_embeddings: torch.Tensor, image_pe: torch.Tensor, query_embeddings: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        # (B, D, h, w) -> (B, h * w, D); image_pe: (D, h, w) -> (1, h * w, D)
        keys = image_embeddings.flatten(2).transpose(1, 2)
        key_pe = image_pe.flatten(1).transpose(0, 1)[None]
        queries = query_embeddings
        for layer in self.layers:
            queries, keys = layer(queries, keys, query_pe=query_embeddings, key_pe=key_pe)
        attention = self.final_attn_token_to_image(queries + query_embeddings, keys + key_pe, keys)
        return self.layer_norm_final_attn(queries + attention), keys


class SegFaceHypernetworkMLP(nn.Module):
    """Maps every class query to the weights of a 1x1 classifier over the upscaled pixel embedding (ReLU between)."""

    def __init__(self, config: SegFaceConfig):
        super().__init__()
        dim, num_layers = config.decoder_hidden_size, config.decoder_hypernetwork_num_layers
        sizes = [dim] * num_layers + [config.decoder_upscaling_sizes[-1]]
        self.layers = nn.ModuleList([nn.Linear(sizes[i], sizes[i + 1]) for i in range(num_layers)])

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        for layer in self.layers[:-1]:
            hidden_states = F.relu(layer(hidden_states))
        return self.layers[-1](hidden_states)


class SegFaceMaskDecoder(nn.Module):
    """Class queries attend to the fused features (two-way transformer); the attended image tokens are upscaled 4x
    and every class's logit map is the dot product of its hypernetwork vector with the upscaled embedding."""

    def __init__(self, config: SegFaceConfig):
        super().__init__()
        dim = config.decoder_hidden_size
        first, second = config.decoder_upscaling_sizes
        self.class_queries = nn.Embedding(config.num_labels, dim)
        self.transformer = SegFaceTwoWayTransformer(config)
        self.upscale_conv1 = nn.ConvTranspose2d(dim, first, kernel_size=2, stride=2)
        self.upscale_layer_norm = SegFaceLayerNorm2d(first, eps=1e-6)
        self.upscale_conv2 = nn.ConvTranspose2d(first, second, kernel_size=2, stride=2)
        self.activation = nn.GELU()
        self.hypernetwork_mlp = SegFaceHypernetworkMLP(config)

    def forward(self, image_embeddings: torch.Tensor, image_pe: torch.Tensor) -> torch.Tensor:
        batch_size, dim, height, width = image_embeddings.shape
        queries = self.class_queries.weight[None].expand(batch_size, -1, -1)  # (B, K, D)
        queries, keys = self.transformer(image_embeddings, image_pe, queries)
        image_tokens = keys.transpose(1, 2).reshape(batch_size, dim, height, width)
        upscaled = self.activation(self.upscale_layer_norm(self.upscale_conv1(image_tokens)))
        upscaled = self.activation(self.upscale_conv2(upscaled))  # (B, C_up, 4h, 4w)
        class_weights = self.hypernetwork_mlp(queries)  # (B, K, C_up)
        logits = class_weights @ upscaled.flatten(2)  # (B, K, 16 h w)
        return logits.reshape(batch_size, -1, *upscaled.shape[-2:])


def segface_dice_loss(
    logits: torch.Tensor, labels: torch.Tensor, ignore_index: int, smooth: float = 1e-5
) -> torch.Tensor:
    """SegFace's Dice loss: per class `1 - (2 sum(p t) + s) / (sum(p^2) + sum(t^2) + s)` over the whole batch, with
    softmax probabilities `p` and one-hot targets `t`, averaged over all classes (background included). Pixels labelled
    `ignore_index` are left out of every sum."""
    valid = (labels != ignore_index).unsqueeze(1)  # (B, 1, H, W)
    probabilities = logits.float().softmax(dim=1) * valid
    # one-hot (B, K, H, W) in float; ignored pixels get an all-zero target
    targets = torch.zeros_like(probabilities).scatter_(1, labels.unsqueeze(1).masked_fill(~valid, 0), 1.0) * valid
    dims = (0, 2, 3)
    intersection = (probabilities * targets).sum(dims)
    denominator = probabilities.pow(2).sum(dims) + targets.sum(dims)  # targets are 0/1: t^2 = t
    return (1 - (2 * intersection + smooth) / (denominator + smooth)).mean()


def segface_loss(logits: torch.Tensor, labels: torch.Tensor, config: SegFaceConfig) -> torch.Tensor:
    """`ce_loss_weight * CE + dice_loss_weight * Dice`; logits are resized (bilinear) to the labels if needed."""
    labels = labels.to(device=logits.device, dtype=torch.long)
    if logits.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(logits, size=labels.shape[-2:], mode="bilinear", align_corners=False)
    ignore_index = config.semantic_loss_ignore_index
    cross_entropy = F.cross_entropy(logits.float(), labels, ignore_index=ignore_index)
    dice = segface_dice_loss(logits, labels, ignore_index)
    return config.ce_loss_weight * cross_entropy + config.dice_loss_weight * dice


class SegFacePreTrainedModel(PreTrainedModel):
    config_class = SegFaceConfig
    base_model_prefix = "segface"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = False
    _supports_sdpa = True
    _no_split_modules = ["SegFaceBackbone", "SegFaceTwoWayAttentionBlock"]

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation for SegFace's own layers (as in the original), N(0, 1) for the class
        queries and the positional frequencies.

        Backbone modules (torchvision/timm) keep their library's initialisation; only their non-persistent buffers are
        rebuilt, which `from_pretrained` would otherwise leave uninitialised (it never loads them). torchvision's
        SegFace backbones have none; timm modules provide `init_non_persistent_buffers` (e.g. Swin's relative position
        index and attention mask).
        """
        if getattr(module, "_segface_keeps_own_init", False):
            restore_buffers = getattr(module, "init_non_persistent_buffers", None)
            if callable(restore_buffers):
                restore_buffers()
            return
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                fan_in, _ = nn.init._calculate_fan_in_and_fan_out(module.weight)
                bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0.0
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight)
        elif isinstance(module, (nn.LayerNorm, SegFaceLayerNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, SegFacePositionalEmbedding):
            init.normal_(module.gaussian_matrix)


class SegFaceForSemanticSegmentation(SegFacePreTrainedModel):
    """
    SegFace face parser. Returns per-class logits at the input resolution; with `labels`, also the SegFace loss
    (`0.5 * cross-entropy + 0.5 * Dice` by default).

    Unlike the original LaPa model, the network does not warp its input: the face alignment of LaPa images belongs to
    the image processor (and the inverse warp to its post-processing).

    Example:

    ```python
    >>> import torch
    >>> from faceformers.models.segface import SegFaceConfig, SegFaceForSemanticSegmentation

    >>> config = SegFaceConfig.for_dataset(
    ...     "lapa", backbone={"library": "timm", "name": "convnext_atto", "kwargs": {"dims": [8, 16, 24, 32]}},
    ...     image_size=64, decoder_hidden_size=32, num_pos_feats=16, decoder_num_attention_heads=2,
    ...     decoder_intermediate_size=64, decoder_upscaling_sizes=[8, 4])
    >>> model = SegFaceForSemanticSegmentation(config).eval()
    >>> model(torch.randn(1, 3, 64, 64)).logits.shape
    torch.Size([1, 11, 64, 64])
    ```
    """

    accepts_loss_kwargs = False

    def __init__(self, config: SegFaceConfig):
        super().__init__(config)
        self.backbone = SegFaceBackbone(config.backbone_config)
        self.fusion = SegFaceFeatureFusion(config, self.backbone.channels)
        self.positional_embedding = SegFacePositionalEmbedding(config)
        self.decoder = SegFaceMaskDecoder(config)
        self.post_init()

    def get_multi_scale_features(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The backbone stage outputs `(batch_size, channels[i], height / reductions[i], width / reductions[i])`,
        channels-first, from high to low resolution (`self.backbone.channels`, `self.backbone.reductions`)."""
        return self.backbone(self._check_pixel_values(pixel_values))

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.LongTensor | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> SegFaceSemanticSegmenterOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, height, width)`):
                ImageNet-normalised RGB images (see `SegFaceImageProcessor`).
            labels (`torch.LongTensor` of shape `(batch_size, height, width)`, *optional*):
                Class ids; `config.semantic_loss_ignore_index` marks pixels without a label.
            output_hidden_states (`bool`, *optional*):
                Also return the backbone stage outputs and the fused features.
        """
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict

        feature_maps = self.get_multi_scale_features(pixel_values)
        fused = self.fusion(feature_maps)  # (B, D, H / 4, W / 4)
        image_pe = self.positional_embedding(*fused.shape[-2:])  # (D, H / 4, W / 4)
        logits = self.decoder(fused, image_pe)  # (B, K, H, W) for stride-4 first stages
        if logits.shape[-2:] != pixel_values.shape[-2:]:
            logits = F.interpolate(logits, size=pixel_values.shape[-2:], mode="bilinear", align_corners=False)

        loss = segface_loss(logits, labels, self.config) if labels is not None else None
        outputs = SegFaceSemanticSegmenterOutput(
            loss=loss,
            logits=logits,
            hidden_states=feature_maps if output_hidden_states else None,
            fused_hidden_state=fused if output_hidden_states else None,
        )
        return outputs if return_dict else outputs.to_tuple()

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != 3:
            raise ValueError(
                f"Expected pixel_values of shape (batch_size, 3, height, width), got {tuple(pixel_values.shape)}."
            )
        return pixel_values.to(self.decoder.class_queries.weight.dtype)


__all__ = [
    "SegFaceBackbone",
    "SegFaceForSemanticSegmentation",
    "SegFacePreTrainedModel",
    "SegFaceSemanticSegmenterOutput",
]
