"""Part fViT (Sun & Tzimiropoulos, BMVC 2022; the backbone of LAFS, CVPR 2024): a face ViT whose tokens are patches
sampled around landmarks that a small CNN predicts, trained end to end (no landmark labels) with a margin loss."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from .configuration_part_fvit import PartFViTConfig


logger = logging.get_logger(__name__)


def sample_landmark_patches(pixel_values: torch.Tensor, landmarks: torch.Tensor, patch_size: int) -> torch.Tensor:
    """Bilinearly sample a `patch_size x patch_size` patch around every landmark, as flattened tokens.

    Reproduces the original `extract_patches_pytorch_gridsample` followed by
    `rearrange('b c (h p1) (w p2) -> b (h w) (p1 p2 c)')` in one `grid_sample` call. Landmark `k = (x_k, y_k)`
    (column, row, in pixels) gives the token

        token_k[(a * patch_size + b) * C + c] = bilinear(pixel_values[:, c], row = y_k + b - patch_size / 2 - 0.5,
                                                         col = x_k + a - patch_size / 2 - 0.5)

    i.e. the first patch axis runs along image x and the second along image y (the original's patches are transposed
    compared with a plain crop), `align_corners=False` sampling (the -0.5) and zeros outside the image. The original
    normalises both coordinates by `pixel_values.shape[2] / 2`; inputs are square.

    Args:
        pixel_values: `(B, C, H, W)` images.
        landmarks: `(B, N, 2)` points `(x, y)` in pixels.
    Returns:
        `(B, N, patch_size * patch_size * C)` tokens.
    """
    batch_size, channels, height, _ = pixel_values.shape
    num_points = landmarks.shape[1]
    offsets = torch.arange(patch_size, device=landmarks.device, dtype=landmarks.dtype) - patch_size / 2
    half = height * 0.5
    # (B, N, p, 1): x varies along the first patch axis; (B, N, 1, p): y along the second
    grid_x = (landmarks[..., 0, None, None] + offsets.view(patch_size, 1)) / half - 1
    grid_y = (landmarks[..., 1, None, None] + offsets.view(1, patch_size)) / half - 1
    grid = torch.stack(torch.broadcast_tensors(grid_x, grid_y), dim=-1)  # (B, N, p, p, 2)
    grid = grid.reshape(batch_size, num_points * patch_size, patch_size, 2).to(pixel_values.dtype)
    sampled = F.grid_sample(pixel_values, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # (B, C, N * p, p) -> (B, N, p, p, C) -> (B, N, p * p * C)
    sampled = sampled.view(batch_size, channels, num_points, patch_size, patch_size).permute(0, 2, 3, 4, 1)
    return sampled.reshape(batch_size, num_points, patch_size * patch_size * channels)


def drop_path(hidden_states: torch.Tensor, drop_prob: float, training: bool) -> torch.Tensor:
    """Stochastic depth: zero whole samples of a residual branch with probability `drop_prob`, rescale the rest."""
    if drop_prob == 0.0 or not training:
        return hidden_states
    keep_prob = 1.0 - drop_prob
    shape = (hidden_states.shape[0],) + (1,) * (hidden_states.ndim - 1)
    mask = hidden_states.new_empty(shape).bernoulli_(keep_prob)
    return hidden_states * mask / keep_prob


@dataclass
class PartFViTModelOutput(ModelOutput):
    """
    Output of [`PartFViTModel`].

    Args:
        embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The face embedding: the CLS token after the final LayerNorm (the original `mlp_head`). Compare faces with
            the cosine similarity of these vectors.
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + num_patches, hidden_size)`):
            All tokens (CLS first, then one per landmark in landmark order) after the final LayerNorm.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Same tensor as `embeddings` (for the `image-feature-extraction` pipeline's `pool=True`).
        landmarks (`torch.FloatTensor` of shape `(batch_size, num_patches, 2)`):
            The points the patches were sampled around, `(x, y)` = (column, row) in pixels of the input. Predicted
            ones are min-max scaled per sample to `[0, image_size - 1]`, so each sample has a coordinate at 0 and one
            at `image_size - 1`.
        patches (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_size**2 * num_channels)`):
            The sampled patch tokens before the linear embedding, laid out as (x offset, y offset, channel).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Embedding output and the output of each block (before the final norm), each
            `(batch_size, 1 + num_patches, hidden_size)`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention probabilities of each block, `(batch_size, num_heads, 1 + num_patches, 1 + num_patches)`.
    """

    embeddings: torch.FloatTensor | None = None
    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    landmarks: torch.FloatTensor | None = None
    patches: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


@dataclass
class PartFViTFaceRecognitionOutput(ModelOutput):
    """
    Output of [`PartFViTForFaceRecognition`].

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*, returned when `labels` are given):
            `classification_loss + landmark_loss_weight * landmark_loss`.
        logits (`torch.FloatTensor` of shape `(batch_size, num_labels)`):
            Margin logits `s * (cos - margin at the label)` when `labels` are given, plain `s * cos` otherwise.
        embeddings (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            Face embeddings (LayerNorm-ed CLS token), before L2 normalisation.
        landmarks (`torch.FloatTensor` of shape `(batch_size, num_patches, 2)`):
            Predicted landmarks in pixels.
        classification_loss (`torch.FloatTensor` of shape `()`, *optional*):
            Cross-entropy of the margin logits (soft targets allowed).
        landmark_loss (`torch.FloatTensor` of shape `()`, *optional*):
            MSE between reference and predicted landmarks, both divided by `image_size - 1` (only when the landmark
            loss weight is positive).
        reference_landmarks (`torch.FloatTensor` of shape `(batch_size, num_patches, 2)`, *optional*):
            Landmarks of the frozen reference CNN (only when the landmark loss weight is positive).
        hidden_states (`tuple(torch.FloatTensor)`, *optional*): see [`PartFViTModelOutput`].
        attentions (`tuple(torch.FloatTensor)`, *optional*): see [`PartFViTModelOutput`].
    """

    loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    embeddings: torch.FloatTensor | None = None
    landmarks: torch.FloatTensor | None = None
    classification_loss: torch.FloatTensor | None = None
    landmark_loss: torch.FloatTensor | None = None
    reference_landmarks: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------------------------
# Landmark CNN (the authors' MobileNetV3-Large variant, truncated)
# ---------------------------------------------------------------------------------------------------------------------


class PartFViTHardSigmoid(nn.Module):
    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return F.relu6(hidden_states + 3.0) / 6.0


class PartFViTHardSwish(nn.Module):
    """`x * relu6(x + 3) / 6`, written out as in the original (torch's `hardswish` rounds differently)."""

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return hidden_states * F.relu6(hidden_states + 3.0) / 6.0


def _landmark_activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else PartFViTHardSwish()


class PartFViTSqueezeExcitation(nn.Module):
    """Channel gate: global average -> Linear (no bias) -> ReLU -> Linear (no bias) -> hard sigmoid."""

    def __init__(self, channels: int, reduction: int):
        super().__init__()
        hidden = max(channels // reduction, 1)
        self.reduce = nn.Linear(channels, hidden, bias=False)
        self.activation = nn.ReLU()
        self.expand = nn.Linear(hidden, channels, bias=False)
        self.gate = PartFViTHardSigmoid()
        for layer in (self.reduce, self.expand):  # MobileNetV3 initialises the SE Linears with N(0, 0.01)
            layer.part_fvit_init_std = 0.01

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (B, C, H, W) -> (B, C) -> (B, C, 1, 1)
        weights = self.gate(self.expand(self.activation(self.reduce(hidden_states.mean(dim=(-2, -1))))))
        return hidden_states * weights[:, :, None, None]


class PartFViTInvertedResidual(nn.Module):
    """1x1 expansion -> BN -> act -> depthwise kxk -> BN -> [SE] -> act -> 1x1 projection -> BN (+ input if the
    shapes agree).

    Unlike torchvision/timm MobileNetV3, the expansion conv is always present and the SE gate sits before the
    activation."""

    def __init__(self, config: PartFViTConfig, in_channels: int, block: list):
        super().__init__()
        kernel_size, expansion, out_channels, use_se, activation, stride = block
        eps = config.landmark_batch_norm_eps
        self.use_residual = stride == 1 and in_channels == out_channels
        self.expand_conv = nn.Conv2d(in_channels, expansion, 1, bias=False)
        self.expand_norm = nn.BatchNorm2d(expansion, eps=eps)
        self.expand_activation = _landmark_activation(activation)
        self.depthwise_conv = nn.Conv2d(
            expansion, expansion, kernel_size, stride, padding=(kernel_size - 1) // 2, groups=expansion, bias=False
        )
        self.depthwise_norm = nn.BatchNorm2d(expansion, eps=eps)
        self.squeeze_excitation = (
            PartFViTSqueezeExcitation(expansion, config.landmark_se_reduction) if use_se else nn.Identity()
        )
        self.depthwise_activation = _landmark_activation(activation)
        self.project_conv = nn.Conv2d(expansion, out_channels, 1, bias=False)
        self.project_norm = nn.BatchNorm2d(out_channels, eps=eps)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        residual = hidden_states
        hidden_states = self.expand_activation(self.expand_norm(self.expand_conv(hidden_states)))
        hidden_states = self.depthwise_norm(self.depthwise_conv(hidden_states))
        hidden_states = self.depthwise_activation(self.squeeze_excitation(hidden_states))
        hidden_states = self.project_norm(self.project_conv(hidden_states))
        return residual + hidden_states if self.use_residual else hidden_states


class PartFViTLandmarkStem(nn.Module):
    def __init__(self, config: PartFViTConfig):
        super().__init__()
        channels = config.landmark_stem_channels
        self.conv = nn.Conv2d(config.num_channels, channels, 3, stride=2, padding=1, bias=False)
        self.norm = nn.BatchNorm2d(channels, eps=config.landmark_batch_norm_eps)
        self.activation = PartFViTHardSwish()

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.activation(self.norm(self.conv(pixel_values)))


class PartFViTLandmarkNet(nn.Module):
    """The landmark CNN (`stn` + `output_layer` in the original): images -> `(B, num_patches, 2)` points in pixels.

    Features `(B, C, H/32, W/32)` are averaged over space, passed through dropout and a linear layer to
    `2 * num_patches` numbers, min-max scaled jointly per sample to `[0, image_size - 1]` and read as
    `(x_0, y_0, x_1, y_1, ...)`. No landmark supervision: it is trained through the patch sampler's gradients.
    """

    def __init__(self, config: PartFViTConfig):
        super().__init__()
        self.config = config
        self.stem = PartFViTLandmarkStem(config)
        blocks, in_channels = [], config.landmark_stem_channels
        for block in config.landmark_block_config:
            blocks.append(PartFViTInvertedResidual(config, in_channels, block))
            in_channels = block[2]
        self.blocks = nn.ModuleList(blocks)
        self.dropout = nn.Dropout(config.landmark_dropout_prob)
        self.head = nn.Linear(config.landmark_feature_size, 2 * config.num_patches)

    def forward_features(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, landmark_feature_size, H / 32, W / 32)` for the released block layout."""
        hidden_states = self.stem(pixel_values)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return hidden_states

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        raw = self.head(self.dropout(self.forward_features(pixel_values).mean(dim=(-2, -1))))  # (B, 2 * N)
        low = raw.min(dim=1, keepdim=True).values
        high = raw.max(dim=1, keepdim=True).values
        # clamp only guards a constant output (the original divides by zero there); otherwise exact
        spread = (high - low).clamp_min(torch.finfo(raw.dtype).tiny)
        scaled = (raw - low) / spread * (self.config.image_size - 1)
        return scaled.view(raw.shape[0], -1, 2)


# ---------------------------------------------------------------------------------------------------------------------
# ViT
# ---------------------------------------------------------------------------------------------------------------------


class PartFViTEmbeddings(nn.Module):
    """Patch tokens -> linear embedding, CLS token in front, learned positions (by token slot), dropout."""

    def __init__(self, config: PartFViTConfig):
        super().__init__()
        self.patch_projection = nn.Linear(config.patch_dim, config.hidden_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, config.hidden_size))
        self.dropout = nn.Dropout(config.embedding_dropout_prob)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        # (B, N, patch_dim) -> (B, 1 + N, D)
        embeddings = self.patch_projection(patches)
        cls_tokens = self.cls_token.expand(embeddings.shape[0], -1, -1)
        embeddings = torch.cat([cls_tokens, embeddings], dim=1)
        embeddings = embeddings + self.position_embeddings[:, : embeddings.shape[1]]
        return self.dropout(embeddings)


class PartFViTAttention(nn.Module):
    """Multi-head self-attention with inner width `heads * head_dim` (704 != 768 for the released model)."""

    def __init__(self, config: PartFViTConfig):
        super().__init__()
        self.config = config
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.scaling = config.attention_scaling
        self.dropout = config.attention_probs_dropout_prob
        inner = config.attention_inner_size
        self.q_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.k_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.v_proj = nn.Linear(config.hidden_size, inner, bias=config.qkv_bias)
        self.o_proj = nn.Linear(inner, config.hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_length, _ = hidden_states.shape
        shape = (batch_size, seq_length, self.num_heads, self.head_dim)
        # each (B, heads, L, head_dim)
        query = self.q_proj(hidden_states).view(shape).transpose(1, 2)
        key = self.k_proj(hidden_states).view(shape).transpose(1, 2)
        value = self.v_proj(hidden_states).view(shape).transpose(1, 2)
        dropout = self.dropout if self.training else 0.0

        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            weights = torch.softmax((query @ key.transpose(-2, -1)) * self.scaling, dim=-1, dtype=torch.float32)
            weights = weights.to(query.dtype)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        elif query.device.type == "cpu" and query.dtype == torch.bfloat16:
            # On CPU, torch's fused SDPA kernel is slower in bf16 than two matmuls and a softmax for these 197-token
            # sequences (about 65 vs 38 ms per layer at batch 32, see benchmarks/README.md); same result to bf16
            # rounding (the original computes it this way under CPU autocast too).
            scores = (query @ key.transpose(-2, -1)) * self.scaling
            context = F.dropout(scores.softmax(dim=-1), p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=self.scaling)
        # (B, heads, L, head_dim) -> (B, L, heads * head_dim)
        context = context.transpose(1, 2).reshape(batch_size, seq_length, self.num_heads * self.head_dim)
        return self.o_proj(context), weights


class PartFViTMLP(nn.Module):
    def __init__(self, config: PartFViTConfig):
        super().__init__()
        self.fc1 = nn.Linear(config.hidden_size, config.intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(config.intermediate_size, config.hidden_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.fc2(self.dropout(self.activation_fn(self.fc1(hidden_states)))))


class PartFViTLayer(GradientCheckpointingLayer):
    """Pre-norm block: `x + DropPath(Dropout(Attn(LN(x))))`, then `x + DropPath(MLP(LN(x)))`."""

    def __init__(self, config: PartFViTConfig):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.attention = PartFViTAttention(config)
        self.attention_dropout = nn.Dropout(config.hidden_dropout_prob)
        self.layernorm_after = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.mlp = PartFViTMLP(config)
        self.drop_path_rate = config.drop_path_rate

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        attention_output = self.attention_dropout(attention_output)
        hidden_states = hidden_states + drop_path(attention_output, self.drop_path_rate, self.training)
        mlp_output = self.mlp(self.layernorm_after(hidden_states))
        hidden_states = hidden_states + drop_path(mlp_output, self.drop_path_rate, self.training)
        return hidden_states, weights


# ---------------------------------------------------------------------------------------------------------------------
# Margin heads
# ---------------------------------------------------------------------------------------------------------------------


class PartFViTCosFaceHead(nn.Module):
    """CosFace (large margin cosine): `s * (cos(theta_j) - m * [j = label])`, weight `(num_labels, hidden_size)`."""

    def __init__(self, config: PartFViTConfig):
        super().__init__()
        self.scale = config.margin_scale
        self.margin = config.get_margin()
        self.weight = nn.Parameter(torch.zeros(config.num_labels, config.hidden_size))

    def cosine(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings), F.normalize(self.weight))

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        """`targets`: `(B, num_labels)` one-hot or soft (mixup) targets; `None` gives plain `s * cos`."""
        cosine = self.cosine(embeddings)
        if targets is None:
            return cosine * self.scale
        return (cosine - self.margin * targets.to(cosine.dtype)) * self.scale


class PartFViTArcFaceHead(PartFViTCosFaceHead):
    """ArcFace (additive angular margin): `s * cos(theta + m)` at the label, with the usual fallback
    `cos(theta) - m * sin(m)` where `theta + m > pi` (insightface `easy_margin=False`)."""

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor | None = None) -> torch.Tensor:
        cosine = self.cosine(embeddings).float()
        if targets is None:
            return cosine * self.scale
        # the clamp keeps the gradient finite at |cos| = 1 (the original has none)
        sine = (1.0 - cosine.pow(2)).clamp_min(1e-12).sqrt()
        with_margin = cosine * math.cos(self.margin) - sine * math.sin(self.margin)
        threshold = math.cos(math.pi - self.margin)
        fallback = cosine - math.sin(math.pi - self.margin) * self.margin
        with_margin = torch.where(cosine > threshold, with_margin, fallback)
        targets = targets.to(cosine.dtype)
        return (targets * with_margin + (1.0 - targets) * cosine) * self.scale


MARGIN_HEADS = {"cosface": PartFViTCosFaceHead, "arcface": PartFViTArcFaceHead}


# ---------------------------------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------------------------------


class PartFViTPreTrainedModel(PreTrainedModel):
    config_class = PartFViTConfig
    base_model_prefix = "part_fvit"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["PartFViTLandmarkNet", "PartFViTEmbeddings", "PartFViTLayer"]
    _supports_sdpa = True

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """The original initialisation: torch defaults for the ViT Linears, `randn` CLS token and positions,
        MobileNetV3's kaiming-normal (fan-out) convs and N(0, 0.01) SE Linears, xavier-uniform margin weights."""
        if isinstance(module, nn.Conv2d):
            init.kaiming_normal_(module.weight, mode="fan_out")
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            std = getattr(module, "part_fvit_init_std", None)
            if std is not None:
                init.normal_(module.weight, std=std)
            else:
                init.kaiming_uniform_(module.weight, a=math.sqrt(5))
            if module.bias is not None:
                bound = 1 / math.sqrt(module.weight.shape[1])
                init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm2d)):
            init.ones_(module.weight)
            init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm2d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, PartFViTEmbeddings):
            init.normal_(module.cls_token, std=self.config.initializer_range)
            init.normal_(module.position_embeddings, std=self.config.initializer_range)
        elif isinstance(module, PartFViTCosFaceHead):
            init.xavier_uniform_(module.weight)
        elif isinstance(module, PartFViTForFaceRecognition) and module.reference_landmark_net is not None:
            init.zeros_(module.has_reference_landmark_weights)


class PartFViTModel(PartFViTPreTrainedModel):
    """
    Part fViT backbone: landmark CNN -> patches sampled around the landmarks -> ViT -> face embedding.

    Example:

    ```python
    >>> import torch
    >>> from faceformers import PartFViTConfig, PartFViTModel

    >>> config = PartFViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, head_dim=16,
    ...                         intermediate_size=64, image_size=32, patch_size=4, num_patches=16)
    >>> model = PartFViTModel(config).eval()
    >>> outputs = model(torch.randn(1, 3, 32, 32))
    >>> outputs.embeddings.shape, outputs.landmarks.shape
    (torch.Size([1, 32]), torch.Size([1, 16, 2]))
    ```
    """

    _keys_to_ignore_on_load_unexpected = [
        r"^(margin_head|reference_landmark_net)\.",
        r"^has_reference_landmark_weights$",
    ]

    def __init__(self, config: PartFViTConfig):
        super().__init__(config)
        self.landmark_net = PartFViTLandmarkNet(config)
        self.embeddings = PartFViTEmbeddings(config)
        self.layers = nn.ModuleList([PartFViTLayer(config) for _ in range(config.num_hidden_layers)])
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> nn.Linear:
        return self.embeddings.patch_projection

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        config = self.config
        expected = (config.num_channels, config.image_size, config.image_size)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(
                f"Expected pixel_values of shape (batch_size, {config.num_channels}, {config.image_size}, "
                f"{config.image_size}), got {tuple(pixel_values.shape)}."
            )

    def forward(
        self,
        pixel_values: torch.Tensor,
        landmarks: torch.Tensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> PartFViTModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Normalised RGB faces (see [`PartFViTConfig`] for the two conventions).
            landmarks (`torch.FloatTensor` of shape `(batch_size, n, 2)`, *optional*):
                Use these points `(x, y)` in pixels instead of the landmark CNN's (e.g. a frozen reference CNN's, or
                perturbed / sub-sampled points as in LAFS). `n <= num_patches`; token `i` gets position embedding
                `1 + i` (by slot, as in the original).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        self._check_pixel_values(pixel_values)
        pixel_values = pixel_values.to(self.embeddings.patch_projection.weight.dtype)

        if landmarks is None:
            landmarks = self.landmark_net(pixel_values)  # (B, N, 2)
        elif (
            landmarks.ndim != 3
            or landmarks.shape[0] != pixel_values.shape[0]
            or landmarks.shape[-1] != 2
            or not 1 <= landmarks.shape[1] <= self.config.num_patches
        ):
            raise ValueError(
                f"Expected landmarks of shape ({pixel_values.shape[0]}, n, 2) with 1 <= n <= "
                f"{self.config.num_patches}, got {tuple(landmarks.shape)}."
            )
        patches = sample_landmark_patches(pixel_values, landmarks.to(pixel_values.dtype), self.config.patch_size)
        hidden_states = self.embeddings(patches)  # (B, 1 + N, D)

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)

        sequence_output = self.layernorm(hidden_states)
        embeddings = sequence_output[:, 0]
        outputs = PartFViTModelOutput(
            embeddings=embeddings,
            last_hidden_state=sequence_output,
            pooler_output=embeddings,
            landmarks=landmarks,
            patches=patches,
            hidden_states=all_hidden_states,
            attentions=all_attentions,
        )
        return outputs if return_dict else outputs.to_tuple()


class PartFViTForFaceRecognition(PartFViTPreTrainedModel):
    """
    Part fViT with the margin head used for training (CosFace in the released code, or ArcFace) and the optional LAFS
    landmark regularisation against a frozen reference landmark CNN.

    The reference CNN (built only with `config.use_reference_landmarks`) must be loaded before the landmark loss can be
    used: [`~PartFViTForFaceRecognition.load_reference_landmark_net`] with a state dict, or without one to copy the
    model's own (e.g. freshly converted stage-1) landmark CNN, which is the LAFS fine-tuning setup.
    """

    accepts_loss_kwargs = False
    _keys_to_ignore_on_load_unexpected = [r"^reference_landmark_net\.", r"^has_reference_landmark_weights$"]

    def __init__(self, config: PartFViTConfig):
        super().__init__(config)
        self.part_fvit = PartFViTModel(config)
        self.margin_head = MARGIN_HEADS[config.loss_type](config)
        self.reference_landmark_net = None
        if config.use_reference_landmarks:
            self.reference_landmark_net = PartFViTLandmarkNet(config)
            self.register_buffer("has_reference_landmark_weights", torch.zeros((), dtype=torch.bool))
        self.freeze_fixed_parameters()
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading replaces parameters with fresh ones (requires_grad=True): freeze the reference again.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, info) with output_loading_info
        model.freeze_fixed_parameters()
        return loaded

    def freeze_fixed_parameters(self) -> None:
        """The reference landmark CNN is never trained."""
        if self.reference_landmark_net is not None:
            self.reference_landmark_net.requires_grad_(False)
            self.reference_landmark_net.eval()

    def train(self, mode: bool = True):
        super().train(mode)
        if self.reference_landmark_net is not None:  # BatchNorm statistics and dropout of the reference stay fixed
            self.reference_landmark_net.eval()
        return self

    @torch.no_grad()
    def load_reference_landmark_net(self, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Load the frozen reference landmark CNN from a [`PartFViTLandmarkNet`] state dict (all keys required), or
        copy the model's own landmark CNN when `state_dict` is `None`."""
        if self.reference_landmark_net is None:
            raise ValueError("This model has no reference landmark CNN; build it with `use_reference_landmarks=True`.")
        if state_dict is None:
            state_dict = self.part_fvit.landmark_net.state_dict()
        self.reference_landmark_net.load_state_dict(state_dict, strict=True)
        self.has_reference_landmark_weights.fill_(True)

    def forward(
        self,
        pixel_values: torch.Tensor,
        labels: torch.Tensor | None = None,
        landmark_loss_weight: float | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> PartFViTFaceRecognitionOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Normalised RGB faces.
            labels (`torch.LongTensor` of shape `(batch_size,)` or `torch.FloatTensor` of shape
                `(batch_size, num_labels)`, *optional*):
                Identity indices, or soft targets (e.g. from mixup) whose rows sum to 1. The margin is applied at the
                target (weighted by the soft target) and the loss is the cross-entropy of the margin logits.
            landmark_loss_weight (`float`, *optional*):
                Weight `beta` of the landmark regularisation for this step (defaults to `config.landmark_loss_weight`;
                LAFS lowers it over the epochs). Needs a loaded reference landmark CNN when positive.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        beta = self.config.landmark_loss_weight if landmark_loss_weight is None else landmark_loss_weight
        outputs = self.part_fvit(
            pixel_values,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            return_dict=True,
        )
        targets = None if labels is None else self._targets(labels, outputs.embeddings)
        logits = self.margin_head(outputs.embeddings, targets)

        loss = classification_loss = landmark_loss = reference_landmarks = None
        if labels is not None:
            classification_loss = F.cross_entropy(logits.float(), targets.float())
            loss = classification_loss
        if beta > 0:
            reference_landmarks = self.reference_landmarks(pixel_values)
            normaliser = self.config.image_size - 1
            landmark_loss = F.mse_loss(outputs.landmarks / normaliser, reference_landmarks / normaliser)
            if loss is not None:
                loss = loss + beta * landmark_loss

        result = PartFViTFaceRecognitionOutput(
            loss=loss,
            logits=logits,
            embeddings=outputs.embeddings,
            landmarks=outputs.landmarks,
            classification_loss=classification_loss,
            landmark_loss=landmark_loss,
            reference_landmarks=reference_landmarks,
            hidden_states=outputs.hidden_states,
            attentions=outputs.attentions,
        )
        return result if return_dict else result.to_tuple()

    @torch.no_grad()
    def reference_landmarks(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """Landmarks `(B, num_patches, 2)` of the frozen reference CNN (always in eval mode)."""
        if self.reference_landmark_net is None:
            raise ValueError(
                "A positive landmark loss weight needs a reference landmark CNN; build the model with "
                "`use_reference_landmarks=True`."
            )
        if not bool(self.has_reference_landmark_weights):
            raise ValueError(
                "The reference landmark CNN has no weights yet; call `model.load_reference_landmark_net(state_dict)` "
                "(or without arguments to copy the model's own landmark CNN) or load a checkpoint that contains it."
            )
        self.reference_landmark_net.eval()
        return self.reference_landmark_net(pixel_values.to(self.part_fvit.embeddings.patch_projection.weight.dtype))

    def _targets(self, labels: torch.Tensor, embeddings: torch.Tensor) -> torch.Tensor:
        batch_size, num_labels = embeddings.shape[0], self.config.num_labels
        if labels.ndim == 1 and not labels.is_floating_point():
            if labels.shape[0] != batch_size:
                raise ValueError(f"Expected {batch_size} labels, got {labels.shape[0]}.")
            if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= num_labels):
                raise ValueError(
                    f"Labels must be in [0, {num_labels}), got values in [{int(labels.min())}, {int(labels.max())}]."
                )
            return F.one_hot(labels, num_labels).to(embeddings.dtype)
        if labels.shape != (batch_size, num_labels):
            raise ValueError(
                f"Expected labels of shape ({batch_size},) (identity indices) or ({batch_size}, {num_labels}) "
                f"(soft targets), got {tuple(labels.shape)}."
            )
        return labels.to(embeddings.dtype)


__all__ = [
    "PartFViTForFaceRecognition",
    "PartFViTLandmarkNet",
    "PartFViTModel",
    "PartFViTPreTrainedModel",
]
