"""Input checks shared by every faceformers image processor: accept the usual image types, reject the rest clearly."""

from __future__ import annotations

from typing import Any

import numpy as np
import PIL.Image
import torch


EXPECTED_INPUT = (
    "a PIL image, a numpy array or torch tensor of shape (H, W), (H, W, C) or (C, H, W) with C in {1, 3, 4} "
    "(or a batch (N, C, H, W)), or a list of those"
)


def standardize_images(images: Any) -> Any:
    """Return `images` in a form the transformers backends understand as RGB.

    Grayscale arrays gain three channels, single-channel arrays are repeated, 16-bit and 32-bit integer images are
    scaled to 8 bits (PIL would clip them), and PIL images keep their mode (the backends convert them to RGB).
    Anything else raises `ValueError` naming what was expected and what came.
    """
    if isinstance(images, (list, tuple)):
        if len(images) == 0:
            raise ValueError(f"Expected {EXPECTED_INPUT}; got an empty {type(images).__name__}.")
        return [_standardize_image(image) for image in images]
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 4:
        return [_standardize_image(image) for image in images]
    return _standardize_image(images)


def _standardize_image(image: Any) -> Any:
    if isinstance(image, PIL.Image.Image):
        if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):  # high bit depth: scale instead of clipping
            return _standardize_image(np.asarray(image))
        return image
    if isinstance(image, np.ndarray):
        return _standardize_array(image, channel_axis_first=False)
    if isinstance(image, torch.Tensor):
        return torch.from_numpy(_standardize_array(image.detach().cpu().numpy(), channel_axis_first=True))
    raise ValueError(f"Expected {EXPECTED_INPUT}; got {type(image).__name__}.")


def _standardize_array(array: np.ndarray, channel_axis_first: bool) -> np.ndarray:
    if array.ndim == 2:
        array = array[None] if channel_axis_first else array[..., None]
    if array.ndim != 3:
        raise ValueError(f"Expected {EXPECTED_INPUT}; got an array of shape {array.shape}.")
    if array.size == 0:
        raise ValueError(f"Expected a non-empty image; got an array of shape {array.shape}.")
    if array.dtype == np.bool_ or not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"Expected integer or floating-point pixels; got dtype {array.dtype}.")
    if np.issubdtype(array.dtype, np.integer) and array.dtype != np.uint8:
        maximum = np.iinfo(array.dtype).max if array.max() > 255 else 255
        array = np.clip(np.round(array.astype(np.float64) * (255.0 / maximum)), 0, 255).astype(np.uint8)

    channels_first = array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4)
    channels_last = array.shape[-1] in (1, 3, 4)
    if not (channels_first or channels_last):
        raise ValueError(f"Expected 1, 3 or 4 channels; got an array of shape {array.shape}.")
    if channels_first and not channels_last or (channel_axis_first and array.shape[0] in (1, 3, 4)):
        array = np.moveaxis(array, 0, -1)  # work channels-last from here on
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    elif array.shape[-1] == 4:
        array = array[..., :3]
    array = np.ascontiguousarray(array)
    return np.moveaxis(array, -1, 0).copy() if channel_axis_first else array


class StandardizedInputsMixin:
    """Put first in the bases of an image processor: checks and standardises inputs before either backend sees them."""

    def preprocess(self, images, *args, **kwargs):
        return super().preprocess(standardize_images(images), *args, **kwargs)
