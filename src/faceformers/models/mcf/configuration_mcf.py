"""MCF (Mask Contrastive Face) model configuration."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig


# Fields that describe a ViT encoder; the perceptual teacher is described by a subset of them.
ENCODER_FIELDS = (
    "hidden_size",
    "num_hidden_layers",
    "num_attention_heads",
    "intermediate_size",
    "hidden_act",
    "layer_norm_eps",
    "qkv_bias",
    "image_size",
    "patch_size",
    "num_channels",
)

PERCEPTUAL_NORMALIZATIONS = ("tokens", "channels")


class MCFConfig(PreTrainedConfig):
    r"""
    Configuration of an MCF model: the ViT encoder users fine-tune (`MCFModel`) and everything that only pre-training
    needs (`MCFForPreTraining`: decoder, projector, predictor, momentum encoder, perceptual teacher, loss weights).

    The defaults reproduce the released ViT-B/16 (`mae_vit_base_patch16` in nomewang/MCF).

    The class keeps the keyword-argument `__init__` style so that it works across the whole `transformers>=5.0`
    range (the dataclass style only exists from 5.5 on).

    Args:
        hidden_size (`int`, *optional*, defaults to 768): width of the encoder.
        num_hidden_layers (`int`, *optional*, defaults to 12): number of encoder blocks.
        num_attention_heads (`int`, *optional*, defaults to 12): attention heads per encoder block.
        intermediate_size (`int`, *optional*, defaults to 3072): width of the encoder MLPs.
        hidden_act (`str`, *optional*, defaults to `"gelu"`): MLP activation (`"gelu"` is the exact erf GELU).
        hidden_dropout_prob (`float`, *optional*, defaults to 0.0): dropout after attention and MLP.
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0): dropout on attention probabilities.
        initializer_range (`float`, *optional*, defaults to 0.02): std of the CLS and mask tokens at initialisation.
        layer_norm_eps (`float`, *optional*, defaults to 1e-6): LayerNorm epsilon (encoder and decoder).
        image_size (`int`, *optional*, defaults to 224): input resolution (square).
        patch_size (`int`, *optional*, defaults to 16): patch size (square).
        num_channels (`int`, *optional*, defaults to 3): input channels.
        qkv_bias (`bool`, *optional*, defaults to `True`): bias on the fused query/key/value projection.
        mask_ratio (`float`, *optional*, defaults to 0.75): fraction of patches removed before the encoder.
        decoder_hidden_size (`int`, *optional*, defaults to 512): width of the pixel decoder.
        decoder_num_hidden_layers (`int`, *optional*, defaults to 8): decoder depth. The released code builds 8
            blocks; the paper's final setting is 2.
        decoder_num_attention_heads (`int`, *optional*, defaults to 16): decoder attention heads.
        decoder_intermediate_size (`int`, *optional*, defaults to 2048): width of the decoder MLPs.
        projector_hidden_size (`int`, *optional*, defaults to 4096): hidden width of projector and predictor.
        projection_dim (`int`, *optional*, defaults to 256): output width of projector and predictor.
        contrastive_temperature (`float`, *optional*, defaults to 0.2): temperature of the contrastive loss.
        sync_batch_norm (`bool`, *optional*, defaults to `False`): compute the BatchNorm statistics of projector and
            predictor over the global batch of all processes (MoCo-v3 style). The released MCF code uses per-process
            statistics; with `True`, N processes with batch b train exactly like one process with batch N * b.
        momentum (`float`, *optional*, defaults to 0.99): EMA coefficient of the momentum encoder.
        perceptual_layers (`list[int]`, *optional*): 0-based teacher blocks whose outputs (before the final norm) are
            compared by the perceptual loss. `None` takes the last block of each quarter of the teacher,
            `[2, 5, 8, 11]` for the released 12-block ViT-B/16.
        perceptual_loss_weight (`float`, *optional*, defaults to 1000.0): weight of the perceptual loss.
        perceptual_normalization (`str`, *optional*, defaults to `"tokens"`): axis along which teacher features are
            L2-normalised before the MSE. The released code normalises over the token axis (`"tokens"`); `"channels"`
            normalises each token's feature vector, which is what the paper's description suggests.
        perceptual_teacher_config (`dict`, *optional*): architecture of the frozen perceptual teacher, as a dict of
            encoder fields (`hidden_size`, `num_hidden_layers`, ...). `None` gives the teacher the same architecture
            as the encoder, which is the released setting (a ViT-B/16 teacher, MoCo-v3 ImageNet weights in the paper).

    Example:

    ```python
    >>> from faceformers import MCFConfig, MCFModel

    >>> config = MCFConfig()
    >>> model = MCFModel(config)
    ```
    """

    model_type = "mcf"

    def __init__(
        self,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 12,
        intermediate_size: int = 3072,
        hidden_act: str = "gelu",
        hidden_dropout_prob: float = 0.0,
        attention_probs_dropout_prob: float = 0.0,
        initializer_range: float = 0.02,
        layer_norm_eps: float = 1e-6,
        image_size: int = 224,
        patch_size: int = 16,
        num_channels: int = 3,
        qkv_bias: bool = True,
        mask_ratio: float = 0.75,
        decoder_hidden_size: int = 512,
        decoder_num_hidden_layers: int = 8,
        decoder_num_attention_heads: int = 16,
        decoder_intermediate_size: int = 2048,
        projector_hidden_size: int = 4096,
        projection_dim: int = 256,
        contrastive_temperature: float = 0.2,
        sync_batch_norm: bool = False,
        momentum: float = 0.99,
        perceptual_layers: list[int] | tuple[int, ...] | None = None,
        perceptual_loss_weight: float = 1000.0,
        perceptual_normalization: str = "tokens",
        perceptual_teacher_config: dict[str, Any] | None = None,
        **kwargs,
    ):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.initializer_range = initializer_range
        self.layer_norm_eps = layer_norm_eps
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_channels = num_channels
        self.qkv_bias = qkv_bias
        self.mask_ratio = mask_ratio
        self.decoder_hidden_size = decoder_hidden_size
        self.decoder_num_hidden_layers = decoder_num_hidden_layers
        self.decoder_num_attention_heads = decoder_num_attention_heads
        self.decoder_intermediate_size = decoder_intermediate_size
        self.projector_hidden_size = projector_hidden_size
        self.projection_dim = projection_dim
        self.contrastive_temperature = contrastive_temperature
        self.sync_batch_norm = sync_batch_norm
        self.momentum = momentum
        self.perceptual_layers = list(perceptual_layers) if perceptual_layers is not None else None
        self.perceptual_loss_weight = perceptual_loss_weight
        self.perceptual_normalization = perceptual_normalization
        self.perceptual_teacher_config = dict(perceptual_teacher_config) if perceptual_teacher_config else None
        super().__init__(**kwargs)
        self.validate_mcf()

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def encoder_kwargs(self) -> dict[str, Any]:
        """The encoder fields of this config, e.g. to build another encoder of the same shape."""
        return {name: getattr(self, name) for name in ENCODER_FIELDS}

    def get_perceptual_teacher_config(self) -> MCFConfig:
        """The config of the frozen perceptual teacher (an encoder-only `MCFConfig`)."""
        fields = self.encoder_kwargs()
        fields.update(self.perceptual_teacher_config or {})
        return MCFConfig(**fields, perceptual_layers=self.perceptual_layers)

    def get_perceptual_layers(self) -> list[int]:
        """The teacher blocks compared by the perceptual loss (resolving the `None` default)."""
        if self.perceptual_layers is not None:
            return list(self.perceptual_layers)
        depth = {**self.encoder_kwargs(), **(self.perceptual_teacher_config or {})}["num_hidden_layers"]
        return sorted({max(0, quarter * depth // 4 - 1) for quarter in range(1, 5)})

    def validate_mcf(self) -> None:
        """Raise `ValueError` naming the offending values if the configuration cannot build a model."""
        for name in ("image_size", "patch_size"):
            if not isinstance(getattr(self, name), int):
                raise ValueError(f"`{name}` must be an int (square images and patches), got {getattr(self, name)!r}.")
        if self.image_size % self.patch_size != 0:
            raise ValueError(
                f"The image size ({self.image_size}) is not a multiple of the patch size ({self.patch_size})."
            )
        for prefix in ("", "decoder_"):
            hidden, heads = getattr(self, f"{prefix}hidden_size"), getattr(self, f"{prefix}num_attention_heads")
            if hidden % heads != 0:
                raise ValueError(
                    f"The {prefix}hidden_size ({hidden}) is not a multiple of the {prefix}num_attention_heads ({heads})."
                )
            if hidden % 4 != 0:
                raise ValueError(f"The {prefix}hidden_size ({hidden}) must be divisible by 4 (2-D sin-cos positions).")
        if not 0.0 <= self.mask_ratio < 1.0:
            raise ValueError(f"`mask_ratio` must be in [0, 1), got {self.mask_ratio}.")
        if int(self.num_patches * (1 - self.mask_ratio)) < 1:
            raise ValueError(
                f"`mask_ratio` {self.mask_ratio} keeps no patch out of {self.num_patches}; lower it or use more patches."
            )
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"`momentum` must be in [0, 1], got {self.momentum}.")
        if self.contrastive_temperature <= 0:
            raise ValueError(f"`contrastive_temperature` must be positive, got {self.contrastive_temperature}.")
        if self.perceptual_normalization not in PERCEPTUAL_NORMALIZATIONS:
            raise ValueError(
                f"`perceptual_normalization` must be one of {PERCEPTUAL_NORMALIZATIONS}, "
                f"got {self.perceptual_normalization!r}."
            )
        self._validate_perceptual_teacher()

    def _validate_perceptual_teacher(self) -> None:
        unknown = sorted(set(self.perceptual_teacher_config or {}) - set(ENCODER_FIELDS))
        if unknown:
            raise ValueError(f"Unknown keys {unknown} in `perceptual_teacher_config`; expected a subset of {ENCODER_FIELDS}.")
        teacher = {**self.encoder_kwargs(), **(self.perceptual_teacher_config or {})}
        if teacher["hidden_size"] % teacher["num_attention_heads"] != 0:
            raise ValueError(
                f"The perceptual teacher's hidden_size ({teacher['hidden_size']}) is not a multiple of its "
                f"num_attention_heads ({teacher['num_attention_heads']})."
            )
        depth = teacher["num_hidden_layers"]
        layers = self.get_perceptual_layers()
        if not layers or len(set(layers)) != len(layers) or any(not 0 <= i < depth for i in layers):
            raise ValueError(
                f"`perceptual_layers` must be distinct block indices in [0, {depth}) of the perceptual teacher, "
                f"got {layers}."
            )


__all__ = ["MCFConfig"]
