"""Image processor for MCF (torchvision backend): resize to 224 x 224, rescale to [0, 1], ImageNet mean/std, RGB."""

from __future__ import annotations

from transformers.image_utils import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD, PILImageResampling

from ...compat import TorchvisionBackend
from ...image_utils import StandardizedInputsMixin


class MCFImageProcessorDefaults(StandardizedInputsMixin):
    """The released pre-training transform: `Resize(224)` (bilinear) -> `ToTensor` -> ImageNet `Normalize`."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BILINEAR
    size = {"height": 224, "width": 224}
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


class MCFImageProcessor(MCFImageProcessorDefaults, TorchvisionBackend):
    r"""
    Prepares face crops for [`MCFModel`] and [`MCFForPreTraining`] as the released pre-training did:
    `Resize(224)` (bilinear) -> `ToTensor` -> `Normalize(IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD)`.

    MCF was trained on square face crops; non-square inputs are resized to `size` without keeping the aspect ratio.
    Accepts PIL images, numpy arrays and torch tensors, grayscale, RGB or RGBA (alpha is dropped), 8 or 16 bit.

    Example:

    ```python
    >>> from PIL import Image
    >>> from faceformers import MCFImageProcessor

    >>> processor = MCFImageProcessor()
    >>> processor(Image.new("RGB", (256, 256)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    ```
    """


__all__ = ["MCFImageProcessor"]
