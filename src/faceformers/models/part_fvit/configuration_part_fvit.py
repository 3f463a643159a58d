"""Part fViT (part-based face ViT, BMVC 2022; the backbone of LAFS, CVPR 2024) model configuration."""

from __future__ import annotations

from typing import Any

from transformers import PreTrainedConfig


# Input normalisation conventions (applied to RGB values scaled to [0, 1]): `(x - mean) / std`.
# The authors train on [-1, 1] (`x / 255 * 2 - 1`, LAFS `train_largescale.py`) ...
PART_FVIT_TRAINING_MEAN = (0.5, 0.5, 0.5)
PART_FVIT_TRAINING_STD = (0.5, 0.5, 0.5)
# ... but both of their evaluation scripts (`IJB_evaluation.py`, `util/utils.py::perform_val`) feed [-0.5, 0.5]
# (`x / 255 - 0.5`); the published verification / IJB numbers of the released weights were produced this way.
PART_FVIT_EVALUATION_MEAN = (0.5, 0.5, 0.5)
PART_FVIT_EVALUATION_STD = (1.0, 1.0, 1.0)

# The authors' MobileNetV3-Large (kuan-wang style) truncated after the last 160-channel block: one row per inverted
# residual block, [kernel_size, expansion_channels, output_channels, squeeze_excitation, activation, stride].
PART_FVIT_LANDMARK_BLOCKS = [
    [3, 16, 16, False, "relu", 1],
    [3, 64, 24, False, "relu", 2],
    [3, 72, 24, False, "relu", 1],
    [5, 72, 40, True, "relu", 2],
    [5, 120, 40, True, "relu", 1],
    [5, 120, 40, True, "relu", 1],
    [3, 240, 80, False, "hardswish", 2],
    [3, 200, 80, False, "hardswish", 1],
    [3, 184, 80, False, "hardswish", 1],
    [3, 184, 80, False, "hardswish", 1],
    [3, 480, 112, True, "hardswish", 1],
    [3, 672, 112, True, "hardswish", 1],
    [5, 672, 160, True, "hardswish", 2],
    [5, 960, 160, True, "hardswish", 1],
    [5, 960, 160, True, "hardswish", 1],
]
LANDMARK_ACTIVATIONS = ("relu", "hardswish")
ATTENTION_SCALES = ("model_width", "head_dim")
LOSS_TYPES = ("cosface", "arcface")
DEFAULT_MARGINS = {"cosface": 0.4, "arcface": 0.5}


class PartFViTConfig(PreTrainedConfig):
    r"""
    Configuration of a Part fViT model: a landmark CNN predicts `num_patches` facial points, a patch of
    `patch_size x patch_size` pixels is bilinearly sampled around each point, and a pre-norm ViT encodes the patches
    (plus a CLS token) into a face embedding (the LayerNorm-ed CLS token).

    The defaults reproduce the released Part fViT-B (`ViT_face_landmark_patch8(num_patches=196, image_size=112,
    patch_size=8, dim=768, depth=12, heads=11, mlp_dim=2048, dropout=0.1, emb_dropout=0.1, with_land=True)` in
    szlbiubiubiu/Part_fViT and szlbiubiubiu/LAFS_CVPR2024): 66,955,616 parameters without the margin head.

    Input normalisation (see the module constants): the authors train on `x / 255 * 2 - 1` (mean = std = 0.5,
    `PART_FVIT_TRAINING_MEAN/STD`) but their evaluation scripts, which produced the published numbers of the released
    checkpoints, feed `x / 255 - 0.5` (mean 0.5, std 1, `PART_FVIT_EVALUATION_MEAN/STD`). The model itself does not
    normalise; both the landmark CNN and the patch sampler see `pixel_values` as given. Inputs are RGB, 112 x 112 faces
    aligned to the ArcFace 5-point template.

    Args:
        image_size (`int`, *optional*, defaults to 112): input resolution (square). Landmarks are scaled to
            `[0, image_size - 1]` pixels.
        patch_size (`int`, *optional*, defaults to 8): side of the square patch sampled around each landmark.
        num_patches (`int`, *optional*, defaults to 196): number of landmarks, i.e. patch tokens.
        num_channels (`int`, *optional*, defaults to 3): input channels.
        hidden_size (`int`, *optional*, defaults to 768): width of the ViT (and of the face embedding).
        num_hidden_layers (`int`, *optional*, defaults to 12): number of transformer blocks.
        num_attention_heads (`int`, *optional*, defaults to 11): attention heads per block.
        head_dim (`int`, *optional*, defaults to 64): width of each head. The attention inner width is
            `num_attention_heads * head_dim` (704 for the released model), which need not equal `hidden_size`.
        intermediate_size (`int`, *optional*, defaults to 2048): width of the MLPs.
        hidden_act (`str`, *optional*, defaults to `"gelu"`): MLP activation (exact erf GELU).
        qkv_bias (`bool`, *optional*, defaults to `False`): bias on the query/key/value projections.
        attention_scale (`str`, *optional*, defaults to `"model_width"`): `"model_width"` scales the attention logits
            by `hidden_size ** -0.5` as the original code does; `"head_dim"` uses the standard `head_dim ** -0.5`. The
            converter can fold the original scale into the query weights to produce a `"head_dim"` model.
        hidden_dropout_prob (`float`, *optional*, defaults to 0.1): dropout after the attention output projection and
            after both MLP layers (the original `dropout`).
        attention_probs_dropout_prob (`float`, *optional*, defaults to 0.0): dropout on attention probabilities (none
            in the original).
        embedding_dropout_prob (`float`, *optional*, defaults to 0.1): dropout on the token embeddings (`emb_dropout`).
        drop_path_rate (`float`, *optional*, defaults to 0.1): stochastic depth on every residual branch; the original
            uses the same rate (0.1) in every block.
        layer_norm_eps (`float`, *optional*, defaults to 1e-5): LayerNorm epsilon.
        initializer_range (`float`, *optional*, defaults to 1.0): standard deviation of the CLS token and position
            embeddings at initialisation (the original draws them with `torch.randn`).
        landmark_stem_channels (`int`, *optional*, defaults to 16): channels of the landmark CNN's stride-2 stem conv.
        landmark_block_config (`list[list]`, *optional*): the landmark CNN's inverted residual blocks, one
            `[kernel_size, expansion_channels, output_channels, squeeze_excitation, activation, stride]` row per block
            (`activation` in `"relu"`, `"hardswish"`). Defaults to the released MobileNetV3-Large variant
            (`PART_FVIT_LANDMARK_BLOCKS`, 160 output channels, stride 32).
        landmark_se_reduction (`int`, *optional*, defaults to 4): squeeze-excitation reduction.
        landmark_batch_norm_eps (`float`, *optional*, defaults to 1e-5): BatchNorm epsilon of the landmark CNN.
        landmark_dropout_prob (`float`, *optional*, defaults to 0.5): dropout before the landmark regression layer.
        loss_type (`str`, *optional*, defaults to `"cosface"`): margin head of [`PartFViTForFaceRecognition`],
            `"cosface"` (released) or `"arcface"`.
        margin_scale (`float`, *optional*, defaults to 64.0): logit scale `s` of the margin head.
        margin (`float`, *optional*): margin `m`; `None` gives 0.4 for CosFace and 0.5 for ArcFace.
        use_reference_landmarks (`bool`, *optional*, defaults to `False`): build a frozen reference landmark CNN in
            [`PartFViTForFaceRecognition`] for the LAFS landmark regularisation.
        landmark_loss_weight (`float`, *optional*, defaults to 0.0): weight `beta` of
            `MSE(reference / (image_size - 1), landmarks / (image_size - 1))` added to the loss (needs
            `use_reference_landmarks`); LAFS schedules it per epoch (1000, 100, 1, 0.11, 0), so `forward` takes it
            too.
        num_labels (`int`, *optional*, defaults to 2): number of training identities of the margin head (93,431 for
            MS1MV3, 205,990 for WebFace4M).

    Example:

    ```python
    >>> from faceformers import PartFViTConfig, PartFViTModel

    >>> model = PartFViTModel(PartFViTConfig())
    ```
    """

    model_type = "part_fvit"

    def __init__(
        self,
        image_size: int = 112,
        patch_size: int = 8,
        num_patches: int = 196,
        num_channels: int = 3,
        hidden_size: int = 768,
        num_hidden_layers: int = 12,
        num_attention_heads: int = 11,
        head_dim: int = 64,
        intermediate_size: int = 2048,
        hidden_act: str = "gelu",
        qkv_bias: bool = False,
        attention_scale: str = "model_width",
        hidden_dropout_prob: float = 0.1,
        attention_probs_dropout_prob: float = 0.0,
        embedding_dropout_prob: float = 0.1,
        drop_path_rate: float = 0.1,
        layer_norm_eps: float = 1e-5,
        initializer_range: float = 1.0,
        landmark_stem_channels: int = 16,
        landmark_block_config: list[list[Any]] | None = None,
        landmark_se_reduction: int = 4,
        landmark_batch_norm_eps: float = 1e-5,
        landmark_dropout_prob: float = 0.5,
        loss_type: str = "cosface",
        margin_scale: float = 64.0,
        margin: float | None = None,
        use_reference_landmarks: bool = False,
        landmark_loss_weight: float = 0.0,
        **kwargs,
    ):
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_patches = num_patches
        self.num_channels = num_channels
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.head_dim = head_dim
        self.intermediate_size = intermediate_size
        self.hidden_act = hidden_act
        self.qkv_bias = qkv_bias
        self.attention_scale = attention_scale
        self.hidden_dropout_prob = hidden_dropout_prob
        self.attention_probs_dropout_prob = attention_probs_dropout_prob
        self.embedding_dropout_prob = embedding_dropout_prob
        self.drop_path_rate = drop_path_rate
        self.layer_norm_eps = layer_norm_eps
        self.initializer_range = initializer_range
        self.landmark_stem_channels = landmark_stem_channels
        blocks = PART_FVIT_LANDMARK_BLOCKS if landmark_block_config is None else landmark_block_config
        self.landmark_block_config = [list(block) for block in blocks]
        self.landmark_se_reduction = landmark_se_reduction
        self.landmark_batch_norm_eps = landmark_batch_norm_eps
        self.landmark_dropout_prob = landmark_dropout_prob
        self.loss_type = loss_type.lower() if isinstance(loss_type, str) else loss_type
        self.margin_scale = margin_scale
        self.margin = margin
        self.use_reference_landmarks = use_reference_landmarks
        self.landmark_loss_weight = landmark_loss_weight
        super().__init__(**kwargs)
        self.validate_part_fvit()

    @property
    def patch_dim(self) -> int:
        """Length of one flattened patch, `patch_size ** 2 * num_channels`."""
        return self.patch_size**2 * self.num_channels

    @property
    def attention_inner_size(self) -> int:
        """`num_attention_heads * head_dim` (704 for the released model, not `hidden_size`)."""
        return self.num_attention_heads * self.head_dim

    @property
    def attention_scaling(self) -> float:
        """The factor applied to query-key dot products."""
        width = self.hidden_size if self.attention_scale == "model_width" else self.head_dim
        return width**-0.5

    @property
    def landmark_feature_size(self) -> int:
        """Channels of the landmark CNN's last block (160 for the released model)."""
        return self.landmark_block_config[-1][2] if self.landmark_block_config else self.landmark_stem_channels

    def get_margin(self) -> float:
        """The margin `m` of the configured head (resolving the `None` default)."""
        return DEFAULT_MARGINS[self.loss_type] if self.margin is None else self.margin

    def validate_part_fvit(self) -> None:
        """Raise `ValueError` naming the offending values if the configuration cannot build a model."""
        for name in (
            "image_size",
            "patch_size",
            "num_patches",
            "num_channels",
            "hidden_size",
            "num_attention_heads",
            "head_dim",
            "intermediate_size",
            "landmark_stem_channels",
            "landmark_se_reduction",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"`{name}` must be a positive int, got {value!r}.")
        if self.patch_size > self.image_size:
            raise ValueError(f"The patch size ({self.patch_size}) is larger than the image size ({self.image_size}).")
        if self.attention_scale not in ATTENTION_SCALES:
            raise ValueError(f"`attention_scale` must be one of {ATTENTION_SCALES}, got {self.attention_scale!r}.")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"`loss_type` must be one of {LOSS_TYPES}, got {self.loss_type!r}.")
        for name in (
            "hidden_dropout_prob",
            "attention_probs_dropout_prob",
            "embedding_dropout_prob",
            "drop_path_rate",
            "landmark_dropout_prob",
        ):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"`{name}` must be in [0, 1), got {getattr(self, name)}.")
        if self.margin_scale <= 0:
            raise ValueError(f"`margin_scale` must be positive, got {self.margin_scale}.")
        if self.landmark_loss_weight < 0:
            raise ValueError(f"`landmark_loss_weight` must be >= 0, got {self.landmark_loss_weight}.")
        if self.landmark_loss_weight > 0 and not self.use_reference_landmarks:
            raise ValueError(
                f"`landmark_loss_weight` {self.landmark_loss_weight} needs a reference landmark CNN; "
                "set `use_reference_landmarks=True`."
            )
        self._validate_landmark_blocks()

    def _validate_landmark_blocks(self) -> None:
        if not self.landmark_block_config:
            raise ValueError("`landmark_block_config` must contain at least one block.")
        for index, block in enumerate(self.landmark_block_config):
            if len(block) != 6:
                raise ValueError(
                    f"landmark_block_config[{index}] must be [kernel_size, expansion_channels, output_channels, "
                    f"squeeze_excitation, activation, stride], got {block!r}."
                )
            kernel, expansion, output, _, activation, stride = block
            if not (isinstance(kernel, int) and kernel % 2 == 1 and kernel > 0):
                raise ValueError(
                    f"landmark_block_config[{index}]: kernel_size must be a positive odd int, got {kernel!r}."
                )
            if not (isinstance(expansion, int) and isinstance(output, int) and expansion > 0 and output > 0):
                raise ValueError(
                    f"landmark_block_config[{index}]: channels must be positive ints, "
                    f"got {expansion!r} and {output!r}."
                )
            if activation not in LANDMARK_ACTIVATIONS:
                raise ValueError(
                    f"landmark_block_config[{index}]: activation must be one of {LANDMARK_ACTIVATIONS}, "
                    f"got {activation!r}."
                )
            if stride not in (1, 2):
                raise ValueError(f"landmark_block_config[{index}]: stride must be 1 or 2, got {stride!r}.")


__all__ = [
    "PART_FVIT_EVALUATION_MEAN",
    "PART_FVIT_EVALUATION_STD",
    "PART_FVIT_LANDMARK_BLOCKS",
    "PART_FVIT_TRAINING_MEAN",
    "PART_FVIT_TRAINING_STD",
    "PartFViTConfig",
]
