"""Per-sample training transforms. Randomness comes from the sample itself (seed, epoch, key), never from a global
RNG, so a sample is augmented identically whichever process or worker reads it, and after a resume."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch

from .streaming import Record, decode_image, decode_json


def sample_rng(seed: int, record: Record) -> np.random.Generator:
    """A generator seeded by (seed, epoch, key): the same sample gets the same augmentation everywhere."""
    return np.random.default_rng([seed, record.epoch, zlib.crc32(record.key.encode("utf-8"))])


class MCFPretrainingTransform:
    """Decode -> RGB -> resize (bilinear) -> random horizontal flip -> normalise, plus the two masking noises.

    Returns `pixel_values` `(3, image_size, image_size)`, `noise` and `momentum_noise` `(num_patches,)`: the random
    masks of the online and the momentum encoder, drawn here so that masks too are a property of the sample.
    """

    def __init__(
        self,
        image_size: int,
        patch_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        horizontal_flip: bool = True,
        seed: int = 0,
    ):
        self.image_size, self.horizontal_flip, self.seed = image_size, horizontal_flip, seed
        self.num_patches = (image_size // patch_size) ** 2
        std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1) / std

    @classmethod
    def from_image_processor(cls, processor, patch_size: int, **kwargs) -> MCFPretrainingTransform:
        size = processor.size
        if size.get("height") != size.get("width"):
            raise ValueError(f"MCF pre-training needs square images, got image processor size {dict(size)}.")
        return cls(size["height"], patch_size, processor.image_mean, processor.image_std, **kwargs)

    def __call__(self, record: Record) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, record)
        image = decode_image(record)
        if image.size != (self.image_size, self.image_size):
            image = image.resize((self.image_size, self.image_size), PIL.Image.BILINEAR)
        if self.horizontal_flip and rng.random() < 0.5:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        # (3, H, W) in [0, 255]; contiguous before the float ops halves their cost
        pixels = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous().float()
        return {
            "pixel_values": pixels.mul_(self.scale).sub_(self.shift),
            "noise": torch.from_numpy(rng.random(self.num_patches, dtype=np.float32)),
            "momentum_noise": torch.from_numpy(rng.random(self.num_patches, dtype=np.float32)),
        }


CAPTION_FIELDS = ("txt", "caption", "text")


def record_caption(record: Record) -> str:
    """The caption of an image-text record: a `txt`/`caption`/`text` field, or `caption`/`text` inside its `json`
    (the img2dataset layout stores both). Raises `ValueError` when there is none, which skips the sample."""
    for name in CAPTION_FIELDS:
        value = record.fields.get(name)
        if value is not None:
            return value.decode("utf-8") if isinstance(value, (bytes, bytearray)) else str(value)
    if "json" in record.fields:
        metadata = decode_json(record.fields["json"])
        for name in ("caption", "text"):
            if isinstance(metadata, dict) and isinstance(metadata.get(name), str):
                return metadata[name]
    raise ValueError(f"Record {record.key} has no caption (fields: {sorted(record.fields)}).")


def decode_image_and_caption(record: Record) -> tuple[PIL.Image.Image, str]:
    if "faces" in record.fields:  # synthetic: one procedural draw gives both
        sample = record.fields["faces"].sample(record.fields["index"])
        return sample["image"], sample["caption"]
    return decode_image(record), record_caption(record)


class FaRLPretrainingTransform:
    """Image-text pairs for `FaRLForPreTraining`: decode -> RGB -> resize (bicubic) -> random horizontal flip ->
    CLIP normalisation; the caption tokenised to `context_length`; a BEiT block mask; the dVAE's view of the same
    (flipped) image at 8 px per patch in [0, 1] (Lanczos, as BEiT's tokenizer view).

    Returns `pixel_values` `(3, S, S)`, `input_ids` and `attention_mask` `(context_length,)`, `bool_masked_pos`
    `(num_patches,)` and `tokenizer_pixel_values` `(3, 8 * S / patch, 8 * S / patch)`; every random choice is a
    function of (seed, epoch, key).
    """

    def __init__(
        self,
        tokenizer,
        image_size: int,
        patch_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        context_length: int = 77,
        num_masking_patches: int = 75,
        min_patches_per_block: int = 16,
        horizontal_flip: bool = True,
        mim: bool = True,
        seed: int = 0,
    ):
        from ..models.farl.modeling_farl import DALL_E_DOWNSAMPLING, BlockMaskGenerator

        self.tokenizer, self.context_length = tokenizer, context_length
        self.image_size, self.horizontal_flip, self.mim, self.seed = image_size, horizontal_flip, mim, seed
        grid = image_size // patch_size
        self.tokenizer_size = grid * DALL_E_DOWNSAMPLING
        self.mask_generator = BlockMaskGenerator(grid, num_masking_patches, min_patches_per_block)
        std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1) / std

    @classmethod
    def from_model(cls, model, image_processor, tokenizer, **kwargs) -> FaRLPretrainingTransform:
        config = model.config
        vision = config.vision_config
        return cls(
            tokenizer,
            vision.image_size,
            vision.patch_size,
            image_processor.image_mean,
            image_processor.image_std,
            context_length=config.text_config.max_position_embeddings,
            num_masking_patches=config.mim_num_masking_patches,
            min_patches_per_block=config.mim_min_patches_per_block,
            mim=config.mim_loss_weight > 0,
            **kwargs,
        )

    def tokenize(self, caption: str) -> dict[str, torch.Tensor]:
        encoded = self.tokenizer(
            caption, padding="max_length", max_length=self.context_length, truncation=True, return_tensors="pt"
        )
        return {"input_ids": encoded["input_ids"][0], "attention_mask": encoded["attention_mask"][0]}

    def __call__(self, record: Record) -> dict[str, torch.Tensor]:
        rng = sample_rng(self.seed, record)
        image, caption = decode_image_and_caption(record)
        if self.horizontal_flip and rng.random() < 0.5:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        resized = image.resize((self.image_size, self.image_size), PIL.Image.BICUBIC)
        pixels = torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous().float()
        sample = {"pixel_values": pixels.mul_(self.scale).sub_(self.shift), **self.tokenize(caption)}
        if self.mim:
            generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
            sample["bool_masked_pos"] = self.mask_generator(generator)
            view = image.resize((self.tokenizer_size, self.tokenizer_size), PIL.Image.LANCZOS)
            sample["tokenizer_pixel_values"] = torch.from_numpy(np.array(view)).permute(2, 0, 1).float().div_(255)
        return sample
