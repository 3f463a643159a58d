"""Image processor for FaRL (torchvision backend): aligned face -> 224 x 224, bicubic, [0, 1], CLIP mean/std, RGB."""

from __future__ import annotations

from transformers.image_utils import OPENAI_CLIP_MEAN, OPENAI_CLIP_STD, PILImageResampling

from ...compat import TorchvisionBackend
from ...image_utils import StandardizedInputsMixin


class FaRLImageProcessorDefaults(StandardizedInputsMixin):
    """OpenAI CLIP's normalisation on a face crop resized to the model's 224 x 224."""

    model_input_names = ["pixel_values"]
    resample = PILImageResampling.BICUBIC
    size = {"height": 224, "width": 224}
    image_mean = OPENAI_CLIP_MEAN
    image_std = OPENAI_CLIP_STD
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True


class FaRLImageProcessor(FaRLImageProcessorDefaults, TorchvisionBackend):
    r"""
    Prepares images for [`FaRLModel`]: resize to `size` (bicubic), rescale to [0, 1], normalise with the OpenAI CLIP
    mean and std.

    FaRL was pre-trained on face crops of LAION-Face and its downstream models read faces **aligned to a mean face**
    (five landmarks warped onto fixed positions). This processor only resizes: give it aligned crops (see
    `faceformers.face_alignment`), not whole photos, or the embeddings describe the background as much as the face.
    Non-square inputs are resized to `size` without keeping the aspect ratio. Accepts PIL images, numpy arrays and
    torch tensors, grayscale, RGB or RGBA (alpha is dropped).

    Example:

    ```python
    >>> from PIL import Image
    >>> from faceformers import FaRLImageProcessor

    >>> processor = FaRLImageProcessor()
    >>> processor(Image.new("RGB", (256, 256)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 224, 224])
    ```
    """


__all__ = ["FaRLImageProcessor"]
