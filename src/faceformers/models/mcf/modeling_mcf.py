"""MCF (Mask Contrastive Face, ACM MM 2023): a ViT-B/16 encoder pre-trained with masked perceptual prediction and a
contrastive loss between two random masks of the same face."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.activations import ACT2FN
from transformers.modeling_layers import GradientCheckpointingLayer
from transformers.utils import ModelOutput, logging

from ...distributed import gather_across_processes
from .configuration_mcf import MCFConfig


logger = logging.get_logger(__name__)


def get_2d_sincos_position_embeddings(embed_dim: int, grid_size: int, add_cls_token: bool = True) -> torch.Tensor:
    """Fixed 2-D sine-cosine position embeddings of MAE, shape `(1 + grid_size**2, embed_dim)` (CLS row = 0).

    The first half of the channels encodes the column of a patch, the second half its row; each half is
    `[sin(pos * omega), cos(pos * omega)]` with `omega_i = 1 / 10000 ** (i / (embed_dim / 4))`. Computed in float64.
    """
    if embed_dim % 4 != 0:
        raise ValueError(f"Sin-cos position embeddings need a width divisible by 4, got {embed_dim}.")
    omega = 1.0 / 10000 ** (torch.arange(embed_dim // 4, dtype=torch.float64) / (embed_dim / 4))
    coords = torch.arange(grid_size, dtype=torch.float64)
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(positions: torch.Tensor) -> torch.Tensor:  # (grid_size**2,) -> (grid_size**2, embed_dim / 2)
        angles = positions.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    embeddings = torch.cat([encode(cols), encode(rows)], dim=1)
    if add_cls_token:
        embeddings = torch.cat([embeddings.new_zeros(1, embed_dim), embeddings], dim=0)
    return embeddings.float()


def random_masking(
    sequence: torch.Tensor, noise: torch.Tensor, len_keep: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Keep the `len_keep` tokens with the smallest noise (MAE's per-sample shuffle).

    Returns the kept tokens `(B, L_keep, D)`, the mask `(B, L)` with 1 for removed tokens and `ids_restore` `(B, L)`,
    the permutation that puts the shuffled sequence back in patch order.
    """
    batch_size, seq_length, dim = sequence.shape
    ids_shuffle = torch.argsort(noise, dim=1)
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    ids_keep = ids_shuffle[:, :len_keep]
    kept = torch.gather(sequence, 1, ids_keep.unsqueeze(-1).expand(-1, -1, dim))
    mask = torch.ones(batch_size, seq_length, device=sequence.device, dtype=sequence.dtype)
    mask[:, :len_keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return kept, mask, ids_restore


def masked_pos_to_noise(bool_masked_pos: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Turn a boolean mask (True = removed) into noise and `len_keep` for `random_masking`.

    Kept tokens stay in patch order."""
    num_masked = bool_masked_pos.sum(dim=1)
    if not bool(torch.all(num_masked == num_masked[0])):
        raise ValueError(
            "`bool_masked_pos` must remove the same number of patches in every sample, "
            f"got {num_masked.tolist()} removed patches per sample."
        )
    seq_length = bool_masked_pos.shape[1]
    num_keep = seq_length - int(num_masked[0])
    if num_keep < 1:
        raise ValueError("`bool_masked_pos` removes every patch; at least one must be kept.")
    # a stable ordering: kept positions first, each group in patch order
    order = torch.arange(seq_length, device=bool_masked_pos.device) / seq_length
    noise = bool_masked_pos.to(torch.float32) + order
    return noise, num_keep


@dataclass
class MCFModelOutput(ModelOutput):
    """
    Output of [`MCFModel`].

    Args:
        last_hidden_state (`torch.FloatTensor` of shape `(batch_size, 1 + num_kept_patches, hidden_size)`):
            Tokens after the final LayerNorm; the CLS token comes first. Without masking all patches are kept.
        pooler_output (`torch.FloatTensor` of shape `(batch_size, hidden_size)`):
            The CLS token after the final LayerNorm.
        hidden_states (`tuple(torch.FloatTensor)`, *optional*):
            Embedding output and the output of each block (before the final norm), each
            `(batch_size, 1 + num_kept_patches, hidden_size)`. `hidden_states[i + 1]` is the output of block `i`.
        attentions (`tuple(torch.FloatTensor)`, *optional*):
            Attention probabilities of each block, `(batch_size, num_heads, seq_length, seq_length)`.
        mask (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
            1 for patches removed by masking, 0 for kept ones (only when masking was requested).
        ids_restore (`torch.LongTensor` of shape `(batch_size, num_patches)`, *optional*):
            Permutation that restores patch order after masking (only when masking was requested).
    """

    last_hidden_state: torch.FloatTensor | None = None
    pooler_output: torch.FloatTensor | None = None
    hidden_states: tuple[torch.FloatTensor, ...] | None = None
    attentions: tuple[torch.FloatTensor, ...] | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None


@dataclass
class MCFForPreTrainingOutput(ModelOutput):
    """
    Output of [`MCFForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`):
            `perceptual_loss_weight * perceptual_loss + contrastive_loss`.
        perceptual_loss (`torch.FloatTensor` of shape `()`):
            MSE between normalised teacher features of the predicted and the input image, summed over layers.
        contrastive_loss (`torch.FloatTensor` of shape `()`):
            MoCo-v3 InfoNCE between the online query and the momentum key (times `2 * temperature`).
        logits (`torch.FloatTensor` of shape `(batch_size, num_patches, patch_size**2 * num_channels)`):
            Predicted (normalised) pixels of every patch, laid out as (row in patch, column in patch, channel).
        mask (`torch.FloatTensor` of shape `(batch_size, num_patches)`):
            1 for patches the online encoder did not see.
        ids_restore (`torch.LongTensor` of shape `(batch_size, num_patches)`):
            Permutation that restores patch order after the online masking.
        query_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Online branch output (projector + predictor), before L2 normalisation.
        key_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`):
            Momentum branch output (projector), before L2 normalisation.
    """

    loss: torch.FloatTensor | None = None
    perceptual_loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    logits: torch.FloatTensor | None = None
    mask: torch.FloatTensor | None = None
    ids_restore: torch.LongTensor | None = None
    query_embeds: torch.FloatTensor | None = None
    key_embeds: torch.FloatTensor | None = None


class MCFPatchEmbeddings(nn.Module):
    """`(batch_size, num_channels, height, width)` pixels -> `(batch_size, num_patches, hidden_size)` tokens."""

    def __init__(self, config: MCFConfig):
        super().__init__()
        self.num_channels = config.num_channels
        self.patch_size = config.patch_size
        self.projection = nn.Conv2d(
            config.num_channels, config.hidden_size, kernel_size=config.patch_size, stride=config.patch_size
        )

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.ndim != 4 or pixel_values.shape[1] != self.num_channels:
            raise ValueError(
                f"Expected pixel_values of shape (batch_size, {self.num_channels}, height, width), "
                f"got {tuple(pixel_values.shape)}."
            )
        height, width = pixel_values.shape[-2:]
        if height % self.patch_size or width % self.patch_size:
            raise ValueError(f"Image size ({height}*{width}) is not a multiple of the patch size ({self.patch_size}).")
        return self.projection(pixel_values).flatten(2).transpose(1, 2)


class MCFEmbeddings(nn.Module):
    """Patch embeddings + fixed sin-cos positions, optional MAE masking, then the CLS token in front."""

    def __init__(self, config: MCFConfig):
        super().__init__()
        self.config = config
        self.cls_token = nn.Parameter(torch.zeros(1, 1, config.hidden_size))
        self.patch_embeddings = MCFPatchEmbeddings(config)
        self.position_embeddings = nn.Parameter(
            torch.zeros(1, config.num_patches + 1, config.hidden_size), requires_grad=False
        )
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def interpolate_pos_encoding(self, height: int, width: int) -> torch.Tensor:
        """Bicubically resize the patch position grid to `height x width` pixels (as transformers' ViT does)."""
        grid = self.config.image_size // self.config.patch_size
        new_height, new_width = height // self.config.patch_size, width // self.config.patch_size
        if (new_height, new_width) == (grid, grid):
            return self.position_embeddings
        cls_pos, patch_pos = self.position_embeddings[:, :1], self.position_embeddings[:, 1:]
        dim = patch_pos.shape[-1]
        patch_pos = patch_pos.reshape(1, grid, grid, dim).permute(0, 3, 1, 2)
        patch_pos = F.interpolate(patch_pos, size=(new_height, new_width), mode="bicubic", align_corners=False)
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, new_height * new_width, dim)
        return torch.cat([cls_pos, patch_pos], dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        len_keep: int | None = None,
        interpolate_pos_encoding: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        height, width = pixel_values.shape[-2:]
        size = self.config.image_size
        if not interpolate_pos_encoding and (height, width) != (size, size):
            raise ValueError(
                f"Input image size ({height}*{width}) doesn't match the model ({size}*{size}); "
                "pass `interpolate_pos_encoding=True` to run at another resolution."
            )
        position_embeddings = self.interpolate_pos_encoding(height, width)
        # (B, L, D): patches with their positions, CLS excluded
        embeddings = self.patch_embeddings(pixel_values) + position_embeddings[:, 1:]

        mask = ids_restore = None
        if noise is not None:
            if noise.shape != embeddings.shape[:2]:
                raise ValueError(
                    f"Expected noise of shape {tuple(embeddings.shape[:2])} (batch_size, num_patches), "
                    f"got {tuple(noise.shape)}."
                )
            embeddings, mask, ids_restore = random_masking(embeddings, noise.to(embeddings.device), len_keep)

        cls_tokens = (self.cls_token + position_embeddings[:, :1]).expand(embeddings.shape[0], -1, -1)
        embeddings = torch.cat([cls_tokens, embeddings], dim=1)
        return self.dropout(embeddings), mask, ids_restore


class MCFAttention(nn.Module):
    """Multi-head self-attention with a fused query/key/value projection (SDPA unless weights are requested)."""

    def __init__(self, config: MCFConfig, hidden_size: int, num_attention_heads: int):
        super().__init__()
        self.config = config
        self.num_heads = num_attention_heads
        self.head_dim = hidden_size // num_attention_heads
        self.scaling = self.head_dim**-0.5
        self.dropout = config.attention_probs_dropout_prob
        self.qkv_proj = nn.Linear(hidden_size, 3 * hidden_size, bias=config.qkv_bias)
        self.o_proj = nn.Linear(hidden_size, hidden_size)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        batch_size, seq_length, hidden_size = hidden_states.shape
        # (3, B, heads, N, head_dim)
        qkv = self.qkv_proj(hidden_states).reshape(batch_size, seq_length, 3, self.num_heads, self.head_dim)
        query, key, value = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        dropout = self.dropout if self.training else 0.0

        weights = None
        if output_attentions or self.config._attn_implementation == "eager":
            weights = torch.softmax((query @ key.transpose(-2, -1)) * self.scaling, dim=-1, dtype=torch.float32)
            weights = weights.to(query.dtype)
            context = F.dropout(weights, p=dropout, training=self.training) @ value
        else:
            context = F.scaled_dot_product_attention(query, key, value, dropout_p=dropout, scale=self.scaling)
        context = context.transpose(1, 2).reshape(batch_size, seq_length, hidden_size)
        return self.o_proj(context), weights


class MCFMLP(nn.Module):
    def __init__(self, config: MCFConfig, hidden_size: int, intermediate_size: int):
        super().__init__()
        self.fc1 = nn.Linear(hidden_size, intermediate_size)
        self.activation_fn = ACT2FN[config.hidden_act]
        self.fc2 = nn.Linear(intermediate_size, hidden_size)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.activation_fn(self.fc1(hidden_states)))


class MCFLayer(GradientCheckpointingLayer):
    """Pre-norm transformer block (timm `Block` layout), shared by the encoder and the pixel decoder."""

    def __init__(self, config: MCFConfig, hidden_size: int, num_attention_heads: int, intermediate_size: int):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.attention = MCFAttention(config, hidden_size, num_attention_heads)
        self.layernorm_after = nn.LayerNorm(hidden_size, eps=config.layer_norm_eps)
        self.mlp = MCFMLP(config, hidden_size, intermediate_size)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(
        self, hidden_states: torch.Tensor, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        attention_output, weights = self.attention(self.layernorm_before(hidden_states), output_attentions)
        hidden_states = hidden_states + self.dropout(attention_output)
        hidden_states = hidden_states + self.dropout(self.mlp(self.layernorm_after(hidden_states)))
        return hidden_states, weights


class MCFBatchNorm1d(nn.BatchNorm1d):
    """BatchNorm1d that, when `synchronize` is set and several processes train, normalises with the statistics of the
    global batch (a differentiable all-reduce of sums; works on CPU/gloo, unlike `nn.SyncBatchNorm`)."""

    def __init__(self, num_features: int, affine: bool = True, synchronize: bool = False):
        super().__init__(num_features, affine=affine)
        self.synchronize = synchronize

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        distributed = torch.distributed.is_available() and torch.distributed.is_initialized()
        if not (self.synchronize and self.training and distributed and torch.distributed.get_world_size() > 1):
            return super().forward(features)
        from torch.distributed.nn.functional import all_reduce

        # (B, C) -> global count, mean and biased variance, in float32
        stats = torch.cat([features.float().sum(0), features.float().pow(2).sum(0), features.new_full((1,), features.shape[0], dtype=torch.float32)])
        stats = all_reduce(stats)
        channels = features.shape[1]
        count = stats[-1]
        mean = stats[:channels] / count
        variance = stats[channels : 2 * channels] / count - mean.pow(2)
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            unbiased = variance * count / (count - 1)
            self.running_mean.lerp_(mean.detach().to(self.running_mean.dtype), self.momentum)
            self.running_var.lerp_(unbiased.detach().to(self.running_var.dtype), self.momentum)
        normalized = (features - mean.to(features.dtype)) * torch.rsqrt(variance + self.eps).to(features.dtype)
        if self.affine:
            normalized = normalized * self.weight + self.bias
        return normalized


class MCFProjectionHead(nn.Module):
    """MoCo-v3 MLP: Linear -> BatchNorm -> ReLU -> Linear (-> BatchNorm without affine for the projector)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, last_batch_norm: bool, sync_batch_norm: bool = False):
        super().__init__()
        self.linear1 = nn.Linear(input_dim, hidden_dim, bias=False)
        self.norm1 = MCFBatchNorm1d(hidden_dim, synchronize=sync_batch_norm)
        self.activation = nn.ReLU()
        self.linear2 = nn.Linear(hidden_dim, output_dim, bias=False)
        self.norm2 = (
            MCFBatchNorm1d(output_dim, affine=False, synchronize=sync_batch_norm) if last_batch_norm else nn.Identity()
        )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.norm2(self.linear2(self.activation(self.norm1(self.linear1(features)))))


class MCFDecoder(nn.Module):
    """Lightweight transformer that fills in mask tokens and predicts the pixels of every patch."""

    def __init__(self, config: MCFConfig):
        super().__init__()
        self.config = config
        dim = config.decoder_hidden_size
        self.embed = nn.Linear(config.hidden_size, dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.position_embeddings = nn.Parameter(torch.zeros(1, config.num_patches + 1, dim), requires_grad=False)
        self.layers = nn.ModuleList(
            [
                MCFLayer(config, dim, config.decoder_num_attention_heads, config.decoder_intermediate_size)
                for _ in range(config.decoder_num_hidden_layers)
            ]
        )
        self.layernorm = nn.LayerNorm(dim, eps=config.layer_norm_eps)
        self.pred = nn.Linear(dim, config.patch_size**2 * config.num_channels)

    def forward(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        # latent: (B, 1 + L_keep, D) -> (B, 1 + L, D_dec)
        hidden_states = self.embed(latent)
        batch_size, num_tokens, dim = hidden_states.shape
        seq_length = ids_restore.shape[1]
        if seq_length + 1 != self.position_embeddings.shape[1]:
            raise ValueError(
                f"The decoder was built for {self.position_embeddings.shape[1] - 1} patches, got {seq_length}."
            )
        mask_tokens = self.mask_token.expand(batch_size, seq_length + 1 - num_tokens, -1)
        patches = torch.cat([hidden_states[:, 1:], mask_tokens], dim=1)
        patches = torch.gather(patches, 1, ids_restore.unsqueeze(-1).expand(-1, -1, dim))  # back to patch order
        hidden_states = torch.cat([hidden_states[:, :1], patches], dim=1) + self.position_embeddings

        for layer in self.layers:
            hidden_states = layer(hidden_states)[0]
        # (B, L, p * p * C), CLS dropped
        return self.pred(self.layernorm(hidden_states))[:, 1:]


class MCFPreTrainedModel(PreTrainedModel):
    config_class = MCFConfig
    base_model_prefix = "mcf"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    supports_gradient_checkpointing = True
    _no_split_modules = ["MCFEmbeddings", "MCFLayer"]
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading replaces parameters with fresh ones (requires_grad=True): freeze the fixed ones again.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, info) with output_loading_info
        model.freeze_fixed_parameters()
        return loaded

    def freeze_fixed_parameters(self) -> None:
        """Set `requires_grad=False` on what MCF never trains: the sin-cos position embeddings."""
        for module in self.modules():
            if isinstance(module, (MCFEmbeddings, MCFDecoder)):
                module.position_embeddings.requires_grad_(False)

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """MAE initialisation: xavier-uniform Linear (and patch projection seen as a Linear), normal(0.02) tokens."""
        std = self.config.initializer_range
        if isinstance(module, nn.Linear):
            init.xavier_uniform_(module.weight)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, MCFPatchEmbeddings):
            weight = module.projection.weight
            fan_out, fan_in = weight.shape[0], weight[0].numel()
            bound = (6.0 / (fan_in + fan_out)) ** 0.5
            init.uniform_(weight, -bound, bound)
            init.zeros_(module.projection.bias)
        elif isinstance(module, (nn.LayerNorm, nn.BatchNorm1d)):
            if module.weight is not None:
                init.ones_(module.weight)
                init.zeros_(module.bias)
            if isinstance(module, nn.BatchNorm1d):
                init.zeros_(module.running_mean)
                init.ones_(module.running_var)
                init.zeros_(module.num_batches_tracked)
        elif isinstance(module, MCFEmbeddings):
            init.normal_(module.cls_token, std=std)
            grid = module.config.image_size // module.config.patch_size
            init.copy_(module.position_embeddings, get_2d_sincos_position_embeddings(module.cls_token.shape[-1], grid)[None])
        elif isinstance(module, MCFDecoder):
            init.normal_(module.mask_token, std=std)
            grid = module.config.image_size // module.config.patch_size
            init.copy_(module.position_embeddings, get_2d_sincos_position_embeddings(module.mask_token.shape[-1], grid)[None])
        elif isinstance(module, MCFForPreTraining):
            module.initialize_momentum_branch()
            init.zeros_(module.has_perceptual_teacher_weights)


class MCFModel(MCFPreTrainedModel):
    """
    The MCF ViT encoder: what downstream tasks fine-tune. Without `noise` or `bool_masked_pos` it sees every patch.

    Example:

    ```python
    >>> import torch
    >>> from faceformers import MCFConfig, MCFModel

    >>> model = MCFModel(MCFConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128))
    >>> outputs = model(torch.randn(1, 3, 224, 224))
    >>> outputs.pooler_output.shape
    torch.Size([1, 64])
    ```
    """

    # loading the encoder out of an MCFForPreTraining checkpoint leaves these behind on purpose
    _keys_to_ignore_on_load_unexpected = [
        r"^(momentum_encoder|momentum_projector|perceptual_teacher|projector|predictor|decoder)\.",
        r"^has_perceptual_teacher_weights$",
    ]

    def __init__(self, config: MCFConfig):
        super().__init__(config)
        self.embeddings = MCFEmbeddings(config)
        self.layers = nn.ModuleList(
            [
                MCFLayer(config, config.hidden_size, config.num_attention_heads, config.intermediate_size)
                for _ in range(config.num_hidden_layers)
            ]
        )
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.post_init()

    def get_input_embeddings(self) -> MCFPatchEmbeddings:
        return self.embeddings.patch_embeddings

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        bool_masked_pos: torch.BoolTensor | None = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        interpolate_pos_encoding: bool = False,
        return_dict: bool | None = None,
    ) -> MCFModelOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, height, width)`):
                Normalised images (see [`MCFImageProcessor`]).
            noise (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
                Masks `config.mask_ratio` of the patches, removing those with the largest noise (MAE masking).
                Passing the same noise reproduces a masking.
            bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*):
                Patches to remove (True). Every sample must remove the same number of patches.
            interpolate_pos_encoding (`bool`, *optional*, defaults to `False`):
                Resize the position embeddings to the input resolution (e.g. 448 px).
        """
        output_attentions = output_attentions if output_attentions is not None else self.config.output_attentions
        output_hidden_states = (
            output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        )
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if noise is not None and bool_masked_pos is not None:
            raise ValueError("Pass either `noise` or `bool_masked_pos`, not both.")

        len_keep = int(self._num_patches(pixel_values) * (1 - self.config.mask_ratio))
        if bool_masked_pos is not None:
            expected = (pixel_values.shape[0], self._num_patches(pixel_values))
            if tuple(bool_masked_pos.shape) != expected:
                raise ValueError(
                    f"Expected bool_masked_pos of shape {expected} (batch_size, num_patches), "
                    f"got {tuple(bool_masked_pos.shape)}."
                )
            noise, len_keep = masked_pos_to_noise(bool_masked_pos.bool())

        pixel_values = pixel_values.to(self.embeddings.patch_embeddings.projection.weight.dtype)
        hidden_states, mask, ids_restore = self.embeddings(
            pixel_values, noise=noise, len_keep=len_keep, interpolate_pos_encoding=interpolate_pos_encoding
        )

        all_hidden_states = (hidden_states,) if output_hidden_states else None
        all_attentions = () if output_attentions else None
        for layer in self.layers:
            hidden_states, weights = layer(hidden_states, output_attentions)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
            if output_attentions:
                all_attentions += (weights,)

        sequence_output = self.layernorm(hidden_states)
        outputs = MCFModelOutput(
            last_hidden_state=sequence_output,
            pooler_output=sequence_output[:, 0],
            hidden_states=all_hidden_states,
            attentions=all_attentions,
            mask=mask,
            ids_restore=ids_restore,
        )
        return outputs if return_dict else outputs.to_tuple()

    def _num_patches(self, pixel_values: torch.Tensor) -> int:
        patch = self.config.patch_size
        return (pixel_values.shape[-2] // patch) * (pixel_values.shape[-1] // patch)


class MCFForPreTraining(MCFPreTrainedModel):
    """
    MCF pre-training: the online encoder (`self.mcf`) sees a random 25% of the patches; a decoder predicts the pixels
    of the whole image, which a frozen ViT teacher compares with the input after several blocks (perceptual loss);
    a projector + predictor on the online CLS token is contrasted with the CLS key of a momentum encoder that sees its
    own random mask of the same images (MoCo-v3 loss, keys gathered across processes).

    `forward` has no side effects. Call [`~MCFForPreTraining.update_momentum_encoder`] after each optimizer step.
    The perceptual teacher must be loaded explicitly (by the converter, `from_pretrained` of a pre-training checkpoint
    or [`~MCFForPreTraining.load_perceptual_teacher`]); computing the loss with a random teacher raises.
    """

    def __init__(self, config: MCFConfig):
        super().__init__(config)
        self.mcf = MCFModel(config)
        sync = config.sync_batch_norm
        self.projector = MCFProjectionHead(
            config.hidden_size, config.projector_hidden_size, config.projection_dim, last_batch_norm=True, sync_batch_norm=sync
        )
        self.predictor = MCFProjectionHead(
            config.projection_dim, config.projector_hidden_size, config.projection_dim, last_batch_norm=False, sync_batch_norm=sync
        )
        self.decoder = MCFDecoder(config)
        self.momentum_encoder = MCFModel(config)
        self.momentum_projector = MCFProjectionHead(
            config.hidden_size, config.projector_hidden_size, config.projection_dim, last_batch_norm=True, sync_batch_norm=sync
        )
        self.perceptual_teacher = MCFModel(config.get_perceptual_teacher_config())
        # Set when real teacher weights are loaded; saved with the checkpoint.
        self.register_buffer("has_perceptual_teacher_weights", torch.zeros((), dtype=torch.bool))
        self.freeze_fixed_parameters()
        self.post_init()

    def freeze_fixed_parameters(self) -> None:
        """Also freeze the momentum branch (EMA-updated) and the perceptual teacher."""
        super().freeze_fixed_parameters()
        for frozen in (self.momentum_encoder, self.momentum_projector, self.perceptual_teacher):
            frozen.requires_grad_(False)

    @torch.no_grad()
    def initialize_momentum_branch(self) -> None:
        """Copy the online encoder and projector into the momentum branch (skips tensors loaded from a checkpoint)."""
        for online, momentum in zip(self._online_parameters(), self._momentum_parameters()):
            init.copy_(momentum, online)

    @torch.no_grad()
    def update_momentum_encoder(self, momentum: float | None = None) -> None:
        """EMA step `momentum_param = m * momentum_param + (1 - m) * online_param` (BatchNorm statistics excluded).

        Call once after every optimizer step; `momentum` defaults to `config.momentum`.
        """
        m = self.config.momentum if momentum is None else momentum
        if not 0.0 <= m <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1], got {m}.")
        torch._foreach_lerp_(list(self._momentum_parameters()), list(self._online_parameters()), 1.0 - m)

    def _online_parameters(self):
        yield from self.mcf.parameters()
        yield from self.projector.parameters()

    def _momentum_parameters(self):
        yield from self.momentum_encoder.parameters()
        yield from self.momentum_projector.parameters()

    def load_perceptual_teacher(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Load the frozen teacher from an [`MCFModel`] state dict (all keys required) and mark it as loaded."""
        self.perceptual_teacher.load_state_dict(state_dict, strict=True)
        self.has_perceptual_teacher_weights.fill_(True)

    def patchify(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """`(B, C, H, W)` -> `(B, L, p * p * C)` with (row in patch, column in patch, channel) order."""
        batch_size, channels, height, width = pixel_values.shape
        p = self.config.patch_size
        patches = pixel_values.reshape(batch_size, channels, height // p, p, width // p, p)
        patches = torch.einsum("nchpwq->nhwpqc", patches)
        return patches.reshape(batch_size, (height // p) * (width // p), p * p * channels)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """`(B, L, p * p * C)` -> `(B, C, H, W)`, the inverse of [`~MCFForPreTraining.patchify`] for square grids."""
        batch_size, seq_length, _ = patches.shape
        p, channels = self.config.patch_size, self.config.num_channels
        grid = int(seq_length**0.5)
        if grid * grid != seq_length:
            raise ValueError(f"Expected a square number of patches, got {seq_length}.")
        images = patches.reshape(batch_size, grid, grid, p, p, channels)
        images = torch.einsum("nhwpqc->nchpwq", images)
        return images.reshape(batch_size, channels, grid * p, grid * p)

    def forward(
        self,
        pixel_values: torch.Tensor,
        noise: torch.Tensor | None = None,
        momentum_noise: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> MCFForPreTrainingOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, num_channels, image_size, image_size)`):
                Normalised images.
            noise (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
                Masking noise of the online encoder; drawn with `torch.rand` when omitted.
            momentum_noise (`torch.FloatTensor` of shape `(batch_size, num_patches)`, *optional*):
                Masking noise of the momentum encoder (its own, independent mask); drawn after `noise` when omitted.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if not bool(self.has_perceptual_teacher_weights):
            raise ValueError(
                "MCFForPreTraining has no perceptual-teacher weights (expected a frozen ViT such as MoCo-v3 ViT-B/16). "
                "Convert a checkpoint with `convert_mcf_to_hf.py --teacher_checkpoint ...`, load a pre-training "
                "checkpoint, or call `model.load_perceptual_teacher(state_dict)`."
            )
        batch_size = pixel_values.shape[0]
        shape = (batch_size, self.config.num_patches)
        if noise is None:
            noise = torch.rand(shape, device=pixel_values.device)
        if momentum_noise is None:
            momentum_noise = torch.rand(shape, device=pixel_values.device)

        online = self.mcf(pixel_values, noise=noise, return_dict=True)
        latent = online.last_hidden_state  # (B, 1 + L_keep, D)
        logits = self.decoder(latent, online.ids_restore)  # (B, L, p * p * C)
        query = self.predictor(self.projector(latent[:, 0]))
        with torch.no_grad():
            key_latent = self.momentum_encoder(pixel_values, noise=momentum_noise, return_dict=True).last_hidden_state
            key = self.momentum_projector(key_latent[:, 0])

        contrastive_loss = self.contrastive_loss(query, key)
        perceptual_loss = self.perceptual_loss(self.unpatchify(logits), pixel_values)
        loss = self.config.perceptual_loss_weight * perceptual_loss + contrastive_loss

        outputs = MCFForPreTrainingOutput(
            loss=loss,
            perceptual_loss=perceptual_loss,
            contrastive_loss=contrastive_loss,
            logits=logits,
            mask=online.mask,
            ids_restore=online.ids_restore,
            query_embeds=query,
            key_embeds=key,
        )
        return outputs if return_dict else outputs.to_tuple()

    def contrastive_loss(self, query: torch.Tensor, key: torch.Tensor) -> torch.Tensor:
        """InfoNCE of each query against the keys of the whole global batch, scaled by `2 * temperature`."""
        temperature = self.config.contrastive_temperature
        query = F.normalize(query, dim=1)
        keys, offset = gather_across_processes(F.normalize(key, dim=1))
        logits = query @ keys.T / temperature
        labels = torch.arange(query.shape[0], device=query.device) + offset
        return F.cross_entropy(logits, labels) * (2 * temperature)

    def perceptual_loss(self, predicted_images: torch.Tensor, pixel_values: torch.Tensor) -> torch.Tensor:
        """Sum over the teacher's `config.get_perceptual_layers()` of the MSE between normalised teacher features."""
        with torch.no_grad():
            targets = self.perceptual_features(pixel_values)
        predictions = self.perceptual_features(predicted_images)
        return sum(F.mse_loss(prediction, target) for prediction, target in zip(predictions, targets))

    def perceptual_features(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Teacher block outputs `(B, 1 + L, D)` at `config.perceptual_layers`, L2-normalised as configured."""
        teacher_size = self.perceptual_teacher.config.image_size
        if images.shape[-2:] != (teacher_size, teacher_size):
            images = F.interpolate(images, size=(teacher_size, teacher_size), mode="nearest")
        hidden_states = self.perceptual_teacher(images, output_hidden_states=True, return_dict=True).hidden_states
        dim = 1 if self.config.perceptual_normalization == "tokens" else -1
        return [F.normalize(hidden_states[i + 1], dim=dim) for i in self.config.get_perceptual_layers()]


__all__ = ["MCFModel", "MCFForPreTraining", "MCFPreTrainedModel"]
