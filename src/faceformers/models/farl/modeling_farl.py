"""PyTorch FaRL: a CLIP image-text model for faces, and its pre-training objective (image-text contrast + MIM).

The towers are built from transformers' CLIP blocks (`CLIPVisionEmbeddings`, `CLIPTextEmbeddings`,
`CLIPEncoderLayer`), so the math, and the parameter names, are CLIP's: a FaRL checkpoint in OpenAI-CLIP layout maps
onto `FaRLModel` key by key (`convert_farl_to_hf.py`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutputWithPooling
from transformers.models.clip.modeling_clip import CLIPEncoderLayer, CLIPTextEmbeddings, CLIPVisionEmbeddings
from transformers.utils import ModelOutput

from ...distributed import gather_with_gradient
from .configuration_farl import FaRLConfig
from .dall_e import DallEEncoder


logger = logging.getLogger(__name__)

OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
DALL_E_DOWNSAMPLING = 8  # the dVAE encoder maps an 8x8 pixel block to one visual token


@dataclass
class FaRLOutput(ModelOutput):
    """
    Output of [`FaRLModel`]. With only images (or only texts) the fields of the other modality are `None`.

    Args:
        loss (`torch.FloatTensor` of shape `()`, *optional*): symmetric image-text contrastive loss (`return_loss`).
        logits_per_image (`torch.FloatTensor` of shape `(image_batch_size, text_batch_size)`):
            scaled cosine similarities between every image and every text.
        logits_per_text (`torch.FloatTensor` of shape `(text_batch_size, image_batch_size)`): the transpose.
        text_embeds (`torch.FloatTensor` of shape `(text_batch_size, projection_dim)`): L2-normalised text embeddings.
        image_embeds (`torch.FloatTensor` of shape `(image_batch_size, projection_dim)`): L2-normalised image
            embeddings.
        text_model_output (`BaseModelOutputWithPooling`): output of the text tower (pooled = end-of-text token).
        vision_model_output (`BaseModelOutputWithPooling`): output of the image tower (pooled = CLS after the final
            LayerNorm).
    """

    loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_model_output: BaseModelOutputWithPooling | None = None
    vision_model_output: BaseModelOutputWithPooling | None = None

    def to_tuple(self) -> tuple:
        return tuple(v.to_tuple() if isinstance(v, ModelOutput) else v for v in self.values())


@dataclass
class FaRLForPreTrainingOutput(ModelOutput):
    """
    Output of [`FaRLForPreTraining`].

    Args:
        loss (`torch.FloatTensor` of shape `()`): `contrastive_loss + mim_loss_weight * mim_loss`.
        contrastive_loss (`torch.FloatTensor` of shape `()`): symmetric InfoNCE over the (gathered) batch.
        mim_loss (`torch.FloatTensor` of shape `()`, *optional*): cross-entropy of the predicted visual tokens of the
            masked patches.
        logits_per_image (`torch.FloatTensor` of shape `(batch_size, global_batch_size)`): this process's images
            against the texts of every process.
        logits_per_text (`torch.FloatTensor` of shape `(batch_size, global_batch_size)`): this process's texts
            against the images of every process.
        image_embeds, text_embeds (`torch.FloatTensor` of shape `(batch_size, projection_dim)`): normalised
            embeddings of the unmasked images and of the texts.
        mim_logits (`torch.FloatTensor` of shape `(num_masked_patches, image_tokenizer_vocab_size)`, *optional*):
            predictions for the masked patches of the whole batch, in row-major order.
        mim_labels (`torch.LongTensor` of shape `(num_masked_patches,)`, *optional*): their visual tokens.
        bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*): the masks used.
    """

    loss: torch.FloatTensor | None = None
    contrastive_loss: torch.FloatTensor | None = None
    mim_loss: torch.FloatTensor | None = None
    logits_per_image: torch.FloatTensor | None = None
    logits_per_text: torch.FloatTensor | None = None
    image_embeds: torch.FloatTensor | None = None
    text_embeds: torch.FloatTensor | None = None
    mim_logits: torch.FloatTensor | None = None
    mim_labels: torch.LongTensor | None = None
    bool_masked_pos: torch.BoolTensor | None = None


class FaRLEncoder(nn.Module):
    """A stack of pre-norm CLIP blocks that can return the hidden state after every block."""

    def __init__(self, config, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList([CLIPEncoderLayer(config) for _ in range(num_layers)])

    def forward(
        self, hidden_states: torch.Tensor, attention_mask: torch.Tensor | None = None, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        all_hidden_states = (hidden_states,) if output_hidden_states else None
        for layer in self.layers:
            hidden_states = layer(hidden_states, attention_mask)  # (B, L, D)
            if output_hidden_states:
                all_hidden_states += (hidden_states,)
        return hidden_states, all_hidden_states


class FaRLTextTransformer(nn.Module):
    """CLIP's causal text transformer; pooled output = final-LayerNormed state at the first end-of-text token."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = CLIPTextEmbeddings(config)
        self.encoder = FaRLEncoder(config, config.num_hidden_layers)
        self.final_layer_norm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPooling:
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be (batch_size, sequence_length), got shape {tuple(input_ids.shape)}.")
        max_length = self.config.max_position_embeddings
        if input_ids.shape[1] > max_length:
            raise ValueError(f"input_ids are {input_ids.shape[1]} tokens long; the text tower takes at most {max_length}.")
        end_of_text = input_ids == self.config.eos_token_id
        if not bool(end_of_text.any(dim=1).all()):
            raise ValueError(
                f"Every text needs an end-of-text token (id {self.config.eos_token_id}), which FaRL pools; "
                "tokenize with the FaRL tokenizer."
            )
        hidden_states = self.embeddings(input_ids=input_ids)  # (B, L, D)
        mask = causal_attention_mask(attention_mask, input_ids.shape, hidden_states.dtype, hidden_states.device)
        hidden_states, all_hidden_states = self.encoder(hidden_states, mask, output_hidden_states)
        hidden_states = self.final_layer_norm(hidden_states)
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        pooled = hidden_states[rows, end_of_text.int().argmax(dim=1)]  # (B, D)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states
        )


def causal_attention_mask(
    attention_mask: torch.Tensor | None, shape: torch.Size, dtype: torch.dtype, device: torch.device
) -> torch.Tensor:
    """Additive (B, 1, L, L) mask: a token sees itself and earlier tokens that are not padding."""
    batch_size, length = shape
    blocked = torch.ones(length, length, dtype=torch.bool, device=device).triu(1)[None, None]  # (1, 1, L, L)
    if attention_mask is not None:
        blocked = blocked | (attention_mask[:, None, None, :] == 0)  # (B, 1, L, L)
    mask = torch.zeros(blocked.shape, dtype=dtype, device=device).masked_fill(blocked, torch.finfo(dtype).min)
    return mask.expand(batch_size, 1, length, length)


class FaRLVisionTransformer(nn.Module):
    """CLIP's ViT: patch embedding, CLS, position embedding, `pre_layrnorm`, blocks; pooled = `post_layernorm(CLS)`.

    `bool_masked_pos` replaces the embeddings of the marked patches with `mask_token` (before the CLS and the
    position embeddings are added), as FaRL's masked-image-modelling branch does.
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.embeddings = CLIPVisionEmbeddings(config)
        self.pre_layrnorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)  # (sic) CLIP's name
        self.encoder = FaRLEncoder(config, config.num_hidden_layers)
        self.post_layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def embed(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        bool_masked_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> torch.Tensor:
        check_pixel_values(pixel_values, self.config, interpolate_pos_encoding)
        embeddings = self.embeddings
        height, width = pixel_values.shape[-2:]
        dtype = embeddings.patch_embedding.weight.dtype
        patches = embeddings.patch_embedding(pixel_values.to(dtype)).flatten(2).transpose(1, 2)  # (B, N, D)
        if bool_masked_pos is not None:
            weight = bool_masked_pos.unsqueeze(-1).to(patches.dtype)  # (B, N, 1)
            patches = patches * (1 - weight) + mask_token.to(patches.dtype) * weight
        cls = embeddings.class_embedding.to(patches.dtype).expand(patches.shape[0], 1, -1)
        tokens = torch.cat([cls, patches], dim=1)  # (B, 1 + N, D)
        if interpolate_pos_encoding:
            return tokens + embeddings.interpolate_pos_encoding(tokens, height, width)
        return tokens + embeddings.position_embedding.weight[None]

    def forward(
        self,
        pixel_values: torch.Tensor,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool = False,
        bool_masked_pos: torch.Tensor | None = None,
        mask_token: torch.Tensor | None = None,
    ) -> BaseModelOutputWithPooling:
        hidden_states = self.embed(pixel_values, interpolate_pos_encoding, bool_masked_pos, mask_token)
        hidden_states = self.pre_layrnorm(hidden_states)
        hidden_states, all_hidden_states = self.encoder(hidden_states, None, output_hidden_states)
        pooled = self.post_layernorm(hidden_states[:, 0])  # (B, D)
        return BaseModelOutputWithPooling(
            last_hidden_state=hidden_states, pooler_output=pooled, hidden_states=all_hidden_states
        )


def check_pixel_values(pixel_values: torch.Tensor, config, interpolate_pos_encoding: bool) -> None:
    if pixel_values.ndim != 4 or pixel_values.shape[1] != config.num_channels:
        raise ValueError(
            f"pixel_values must be (batch_size, {config.num_channels}, height, width), got {tuple(pixel_values.shape)}."
        )
    height, width = pixel_values.shape[-2:]
    if height % config.patch_size or width % config.patch_size:
        raise ValueError(f"Image size {height}x{width} is not a multiple of the patch size {config.patch_size}.")
    if not interpolate_pos_encoding and (height, width) != (config.image_size, config.image_size):
        raise ValueError(
            f"Image size {height}x{width} does not match the model's {config.image_size}x{config.image_size}; "
            "pass interpolate_pos_encoding=True to use another resolution."
        )


class FaRLPreTrainedModel(PreTrainedModel):
    config_class = FaRLConfig
    base_model_prefix = "farl"
    main_input_name = "pixel_values"
    input_modalities = ("image", "text")
    supports_gradient_checkpointing = True
    _no_split_modules = ["CLIPTextEmbeddings", "CLIPEncoderLayer", "CLIPVisionEmbeddings"]
    _supports_sdpa = True

    def __init__(self, config: FaRLConfig, *inputs, **kwargs):
        super().__init__(config, *inputs, **kwargs)
        # The towers are plain modules reading their own sub-config: give them the resolved attention backend.
        for key in config.sub_configs:
            getattr(config, key)._attn_implementation = config._attn_implementation

    @torch.no_grad()
    def _init_weights(self, module: nn.Module) -> None:
        """FaRL's initialisation: truncated normal(0.02) linear and conv weights, width^-0.5 tokens and projections."""
        std = 0.02 * self.config.initializer_factor
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            init.trunc_normal_(module.weight, std=std)
            if module.bias is not None:
                init.zeros_(module.bias)
        elif isinstance(module, nn.LayerNorm):
            init.ones_(module.weight)
            init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            init.normal_(module.weight, std=std)
        if isinstance(module, CLIPTextEmbeddings):
            init.copy_(module.position_ids, torch.arange(module.position_ids.shape[-1]).expand((1, -1)))
        elif isinstance(module, CLIPVisionEmbeddings):
            scale = module.embed_dim**-0.5
            init.normal_(module.class_embedding, std=scale)
            init.normal_(module.position_embedding.weight, std=scale)
            init.copy_(module.position_ids, torch.arange(module.num_positions).expand((1, -1)))
        elif isinstance(module, FaRLModel):
            init.normal_(module.visual_projection.weight, std=module.visual_projection.in_features**-0.5)
            init.normal_(module.text_projection.weight, std=module.text_projection.in_features**-0.5)
            init.constant_(module.logit_scale, self.config.logit_scale_init_value)
        elif isinstance(module, FaRLForPreTraining) and module.mask_token is not None:
            init.trunc_normal_(module.mask_token, std=std)


class FaRLModel(FaRLPreTrainedModel):
    """FaRL image and text towers with their projections into the joint embedding space."""

    def __init__(self, config: FaRLConfig):
        super().__init__(config)
        self.text_model = FaRLTextTransformer(config.text_config)
        self.vision_model = FaRLVisionTransformer(config.vision_config)
        self.visual_projection = nn.Linear(config.vision_config.hidden_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(config.text_config.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(config.logit_scale_init_value))
        self.post_init()

    def get_image_features(
        self, pixel_values: torch.Tensor, interpolate_pos_encoding: bool = False, output_hidden_states: bool = False
    ) -> BaseModelOutputWithPooling:
        """Image tower output with `pooler_output` = the projected (unnormalised) image embedding `(B, projection_dim)`."""
        outputs = self.vision_model(pixel_values, interpolate_pos_encoding, output_hidden_states)
        outputs.pooler_output = self.visual_projection(outputs.pooler_output)
        return outputs

    def get_text_features(
        self,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> BaseModelOutputWithPooling:
        """Text tower output with `pooler_output` = the projected (unnormalised) text embedding `(B, projection_dim)`."""
        outputs = self.text_model(input_ids, attention_mask, output_hidden_states)
        outputs.pooler_output = self.text_projection(outputs.pooler_output)
        return outputs

    def similarity_scale(self) -> torch.Tensor:
        """`exp(logit_scale)`, clamped at `config.max_logit_scale` as in CLIP."""
        return self.logit_scale.exp().clamp(max=self.config.max_logit_scale)

    def forward(
        self,
        input_ids: torch.LongTensor | None = None,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        return_loss: bool | None = None,
        interpolate_pos_encoding: bool = False,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
    ) -> FaRLOutput | tuple:
        r"""
        Args:
            input_ids (`torch.LongTensor` of shape `(text_batch_size, sequence_length)`, *optional*): FaRL tokenizer
                ids (each text ends with the end-of-text token).
            pixel_values (`torch.FloatTensor` of shape `(image_batch_size, 3, height, width)`, *optional*): aligned
                face crops, CLIP-normalised (`FaRLImageProcessor`).
            attention_mask (`torch.Tensor` of shape `(text_batch_size, sequence_length)`, *optional*): 0 on padding.
            return_loss (`bool`, *optional*): also return the contrastive loss (pairs = same index).
            interpolate_pos_encoding (`bool`, *optional*): accept images of another size than `image_size`, with
                bicubically resized position embeddings (FaRL's downstream models run at 448 px this way).
        """
        if input_ids is None and pixel_values is None:
            raise ValueError("FaRLModel needs pixel_values, input_ids or both.")
        output_hidden_states = output_hidden_states if output_hidden_states is not None else self.config.output_hidden_states
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        image_embeds = text_embeds = vision_outputs = text_outputs = None
        if pixel_values is not None:
            vision_outputs = self.get_image_features(pixel_values, interpolate_pos_encoding, output_hidden_states)
            image_embeds = F.normalize(vision_outputs.pooler_output, dim=-1)
        if input_ids is not None:
            text_outputs = self.get_text_features(input_ids, attention_mask, output_hidden_states)
            text_embeds = F.normalize(text_outputs.pooler_output, dim=-1)

        loss = logits_per_image = logits_per_text = None
        if image_embeds is not None and text_embeds is not None:
            logits_per_image = self.similarity_scale() * image_embeds @ text_embeds.t()  # (B_img, B_txt)
            logits_per_text = logits_per_image.t()
            if return_loss:
                loss = symmetric_contrastive_loss(logits_per_image, logits_per_text, offset=0)
        elif return_loss:
            raise ValueError("return_loss=True needs both pixel_values and input_ids.")

        output = FaRLOutput(
            loss=loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            text_embeds=text_embeds,
            image_embeds=image_embeds,
            text_model_output=text_outputs,
            vision_model_output=vision_outputs,
        )
        return output if return_dict else output.to_tuple()


def symmetric_contrastive_loss(
    logits_per_image: torch.Tensor, logits_per_text: torch.Tensor, offset: int
) -> torch.Tensor:
    """Mean of image->text and text->image cross-entropy; row i of this process pairs with column `offset + i`."""
    targets = torch.arange(logits_per_image.shape[0], device=logits_per_image.device) + offset
    return (F.cross_entropy(logits_per_image, targets) + F.cross_entropy(logits_per_text, targets)) / 2


class BlockMaskGenerator:
    """BEiT's block-wise masking: rectangles of random area and aspect ratio until `num_masking_patches` are masked.

    Each rectangle's target area is drawn between `min_patches_per_block` and the patches still to mask, its aspect
    ratio log-uniformly in [0.3, 1/0.3]; it is kept only if it adds between 1 and that many new patches. So at most
    `num_masking_patches` patches end up masked (fewer when no rectangle fits in `max_attempts` draws).
    """

    def __init__(self, grid_size: int, num_masking_patches: int, min_patches_per_block: int = 16,
                 min_aspect: float = 0.3, max_attempts: int = 10):  # fmt: skip
        self.grid_size = grid_size
        self.num_masking_patches = num_masking_patches
        self.min_patches_per_block = min_patches_per_block
        self.log_aspect_range = (math.log(min_aspect), math.log(1 / min_aspect))
        self.max_attempts = max_attempts

    def _add_block(self, mask: torch.Tensor, budget: int, generator: torch.Generator) -> int:
        """Mask one new rectangle of at most `budget` patches; returns how many patches it added (0: none fitted)."""
        grid = self.grid_size
        for _ in range(self.max_attempts):
            area = self.min_patches_per_block + (budget - self.min_patches_per_block) * _uniform(generator)
            aspect = math.exp(self.log_aspect_range[0] + (self.log_aspect_range[1] - self.log_aspect_range[0]) * _uniform(generator))
            height, width = round(math.sqrt(area * aspect)), round(math.sqrt(area / aspect))
            if not (0 < height < grid and 0 < width < grid):
                continue
            top = int(torch.randint(0, grid - height + 1, (), generator=generator))
            left = int(torch.randint(0, grid - width + 1, (), generator=generator))
            block = mask[top : top + height, left : left + width]
            added = height * width - int(block.sum())
            if 0 < added <= budget:
                block.fill_(True)
                return added
        return 0

    def __call__(self, generator: torch.Generator | None = None) -> torch.Tensor:
        """A `(grid_size * grid_size,)` boolean mask, row-major."""
        generator = generator if generator is not None else torch.Generator().manual_seed(int(torch.randint(0, 2**62, ())))
        mask = torch.zeros(self.grid_size, self.grid_size, dtype=torch.bool)
        count = 0
        while count < self.num_masking_patches:
            added = self._add_block(mask, self.num_masking_patches - count, generator)
            if added == 0:
                break
            count += added
        return mask.flatten()


def _uniform(generator: torch.Generator) -> float:
    return float(torch.rand((), generator=generator))


class FaRLForPreTraining(FaRLPreTrainedModel):
    """FaRL pre-training: image-text contrastive loss plus masked image modelling with visual-token targets.

    The masked-image-modelling branch follows the paper (and the `forward_mim` left in the authors' encoder): BEiT
    block masks of at most `mim_num_masking_patches` patches, whose patch embeddings are replaced by a learnable mask
    token; the clean and the masked copy of each image go through the image tower in one batch; the clean copy gives
    the contrastive image embedding, the masked copy goes through `mim_num_hidden_layers` more blocks, a LayerNorm and
    a linear head that predicts, for each masked patch, the token a frozen DALL-E dVAE encoder (`image_tokenizer`)
    assigns to it. Load the released dVAE weights with `load_image_tokenizer` before pre-training.
    """

    def __init__(self, config: FaRLConfig):
        super().__init__(config)
        self.farl = FaRLModel(config)
        self.mask_token = self.mim_encoder = self.mim_layer_norm = self.mim_head = self.image_tokenizer = None
        if config.mim_loss_weight > 0:
            if not 0 < config.mim_num_masking_patches <= config.num_patches:
                raise ValueError(
                    f"mim_num_masking_patches must be in [1, {config.num_patches}] (the number of patches), "
                    f"got {config.mim_num_masking_patches}."
                )
            vision = config.vision_config
            tokenizer = config.image_tokenizer_config
            self.mask_token = nn.Parameter(torch.zeros(vision.hidden_size))
            self.mim_encoder = FaRLEncoder(vision, config.mim_num_hidden_layers)
            self.mim_layer_norm = nn.LayerNorm(vision.hidden_size, eps=vision.layer_norm_eps)
            self.mim_head = nn.Linear(vision.hidden_size, tokenizer["vocab_size"])
            self.image_tokenizer = DallEEncoder(**tokenizer).requires_grad_(False)
            grid = vision.image_size // vision.patch_size
            self.mask_generator = BlockMaskGenerator(grid, config.mim_num_masking_patches, config.mim_min_patches_per_block)
        self.post_init()

    @classmethod
    def from_pretrained(cls, *args, **kwargs):
        # Loading replaces parameters with fresh ones (requires_grad=True): freeze the visual tokenizer again.
        loaded = super().from_pretrained(*args, **kwargs)
        model = loaded[0] if isinstance(loaded, tuple) else loaded  # (model, info) with output_loading_info
        if model.image_tokenizer is not None:
            model.image_tokenizer.requires_grad_(False)
        return loaded

    def train(self, mode: bool = True) -> FaRLForPreTraining:
        super().train(mode)
        if self.image_tokenizer is not None:
            self.image_tokenizer.eval()
        return self

    def load_image_tokenizer(self, path: str) -> None:
        """Load DALL-E dVAE encoder weights into `image_tokenizer`: OpenAI's `encoder.pkl` or its conversion by
        `convert_dall_e_to_hf.py` (`.safetensors`)."""
        if self.image_tokenizer is None:
            raise ValueError("This model has no MIM branch (config.mim_loss_weight == 0).")
        self.image_tokenizer.load_state_dict(DallEEncoder.from_file(path).state_dict(), strict=True)
        self.image_tokenizer.requires_grad_(False)

    def tokenizer_inputs(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """The dVAE's view of CLIP-normalised `pixel_values`: [0, 1] pixels at 8 px per patch (112 px for 224)."""
        mean = pixel_values.new_tensor(OPENAI_CLIP_MEAN).view(1, -1, 1, 1)
        std = pixel_values.new_tensor(OPENAI_CLIP_STD).view(1, -1, 1, 1)
        grid = pixel_values.shape[-1] // self.config.vision_config.patch_size
        size = grid * DALL_E_DOWNSAMPLING
        images = (pixel_values * std + mean).clamp(0, 1)
        return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)

    def generate_masks(self, batch_size: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.stack([self.mask_generator(generator) for _ in range(batch_size)])

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.LongTensor,
        attention_mask: torch.Tensor | None = None,
        bool_masked_pos: torch.Tensor | None = None,
        tokenizer_pixel_values: torch.Tensor | None = None,
        return_dict: bool | None = None,
    ) -> FaRLForPreTrainingOutput | tuple:
        r"""
        Args:
            pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, image_size, image_size)`): CLIP-normalised
                images; image i is paired with text i.
            input_ids (`torch.LongTensor` of shape `(batch_size, sequence_length)`): their captions.
            attention_mask (`torch.Tensor` of shape `(batch_size, sequence_length)`, *optional*): 0 on padding.
            bool_masked_pos (`torch.BoolTensor` of shape `(batch_size, num_patches)`, *optional*): patches to mask
                for MIM; drawn with BEiT block masking when not given.
            tokenizer_pixel_values (`torch.FloatTensor` of shape `(batch_size, 3, 8 * grid, 8 * grid)`, *optional*):
                the images the dVAE reads, in [0, 1]; derived from `pixel_values` when not given.
        """
        return_dict = return_dict if return_dict is not None else self.config.return_dict
        if pixel_values.shape[0] != input_ids.shape[0]:
            raise ValueError(
                f"Got {pixel_values.shape[0]} images and {input_ids.shape[0]} texts; pre-training needs pairs."
            )
        batch_size = pixel_values.shape[0]
        farl = self.farl
        use_mim = self.mim_head is not None
        if use_mim:
            if bool_masked_pos is None:
                bool_masked_pos = self.generate_masks(batch_size).to(pixel_values.device)
            expected = (batch_size, self.config.num_patches)
            if tuple(bool_masked_pos.shape) != expected:
                raise ValueError(f"bool_masked_pos must have shape {expected}, got {tuple(bool_masked_pos.shape)}.")
            bool_masked_pos = bool_masked_pos.bool()
            # One pass through the image tower for the clean and the masked copy of every image.
            images = torch.cat([pixel_values, pixel_values])
            masks = torch.cat([torch.zeros_like(bool_masked_pos), bool_masked_pos])
            vision = farl.vision_model(images, bool_masked_pos=masks, mask_token=self.mask_token)
            clean_cls, masked_tokens = vision.pooler_output[:batch_size], vision.last_hidden_state[batch_size:]
        else:
            clean_cls = farl.vision_model(pixel_values).pooler_output

        image_embeds = F.normalize(farl.visual_projection(clean_cls), dim=-1)
        text_embeds = F.normalize(farl.get_text_features(input_ids, attention_mask).pooler_output, dim=-1)
        offset = 0
        all_image_embeds, all_text_embeds = image_embeds, text_embeds
        if self.config.gather_across_processes:
            all_image_embeds, offset = gather_with_gradient(image_embeds)
            all_text_embeds, _ = gather_with_gradient(text_embeds)
        scale = farl.similarity_scale()
        logits_per_image = scale * image_embeds @ all_text_embeds.t()  # (B, global B)
        logits_per_text = scale * text_embeds @ all_image_embeds.t()
        contrastive_loss = symmetric_contrastive_loss(logits_per_image, logits_per_text, offset)
        loss = contrastive_loss

        mim_loss = mim_logits = mim_labels = None
        if use_mim:
            hidden_states, _ = self.mim_encoder(masked_tokens)
            predictions = self.mim_head(self.mim_layer_norm(hidden_states[:, 1:]))  # (B, N, vocab)
            mim_logits = predictions[bool_masked_pos]  # (num_masked, vocab)
            mim_labels = self.visual_tokens(pixel_values, tokenizer_pixel_values)[bool_masked_pos]
            mim_loss = F.cross_entropy(mim_logits.float(), mim_labels)
            loss = loss + self.config.mim_loss_weight * mim_loss

        output = FaRLForPreTrainingOutput(
            loss=loss,
            contrastive_loss=contrastive_loss,
            mim_loss=mim_loss,
            logits_per_image=logits_per_image,
            logits_per_text=logits_per_text,
            image_embeds=image_embeds,
            text_embeds=text_embeds,
            mim_logits=mim_logits,
            mim_labels=mim_labels,
            bool_masked_pos=bool_masked_pos,
        )
        return output if return_dict else output.to_tuple()

    @torch.no_grad()
    def visual_tokens(self, pixel_values: torch.Tensor, tokenizer_pixel_values: torch.Tensor | None) -> torch.Tensor:
        """The dVAE's token for every patch, `(B, num_patches)`."""
        if tokenizer_pixel_values is None:
            tokenizer_pixel_values = self.tokenizer_inputs(pixel_values)
        grid = self.config.vision_config.image_size // self.config.vision_config.patch_size
        expected = (pixel_values.shape[0], 3, grid * DALL_E_DOWNSAMPLING, grid * DALL_E_DOWNSAMPLING)
        if tuple(tokenizer_pixel_values.shape) != expected:
            raise ValueError(
                f"tokenizer_pixel_values must have shape {expected}, got {tuple(tokenizer_pixel_values.shape)}."
            )
        dtype = next(self.image_tokenizer.parameters()).dtype
        return self.image_tokenizer.get_codebook_indices(tokenizer_pixel_values.to(dtype))


__all__ = [
    "BlockMaskGenerator",
    "FaRLForPreTraining",
    "FaRLForPreTrainingOutput",
    "FaRLModel",
    "FaRLOutput",
    "FaRLPreTrainedModel",
]
