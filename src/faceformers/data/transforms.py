"""Per-sample training transforms. Randomness comes from the sample itself (seed, epoch, key), never from a global
RNG, so a sample is augmented identically whichever process or worker reads it, and after a resume."""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import numpy as np
import PIL.Image
import torch

from .streaming import Record, decode_image


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
