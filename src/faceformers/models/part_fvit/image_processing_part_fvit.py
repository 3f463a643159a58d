"""Image processor for Part fViT: 112 x 112 faces aligned to the ArcFace template, RGB, [-1, 1] or [-0.5, 0.5]."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature
from transformers.image_utils import ImageInput, PILImageResampling
from transformers.processing_utils import ImagesKwargs, Unpack

from ...compat import TorchvisionBackend
from ...face_alignment import arcface_align_matrix, check_align_matrices, landmarks_to_tensor, make_affine_warp_grid
from ...image_utils import StandardizedInputsMixin
from .configuration_part_fvit import PART_FVIT_TRAINING_MEAN, PART_FVIT_TRAINING_STD




class PartFViTImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_align (`bool`, *optional*, defaults to `self.do_align`):
        Warp each image onto the ArcFace five-point template with a similarity transform (needs `landmarks`), like
        insightface's `norm_crop` / `cv2.warpAffine` (bilinear, black border), instead of resizing a pre-aligned crop.
    do_flip_test (`bool`, *optional*, defaults to `self.do_flip_test`):
        Also return the horizontal flip of every image (the batch becomes `[images..., flipped images...]`); sum the
        halves of the embeddings with `post_process_flip_test`, as the authors' evaluation does.
    """

    do_align: bool | None
    do_flip_test: bool | None


class PartFViTImageProcessor(StandardizedInputsMixin, TorchvisionBackend):
    r"""
    Prepares faces for [`PartFViTModel`]: a 112 x 112 RGB crop aligned to the ArcFace template, rescaled to [0, 1]
    and normalised.

    * Pre-aligned crops (the usual face-recognition datasets): resized to 112 x 112 (bilinear) if needed.
    * `do_align=True` with five `landmarks` per image (eyes, nose tip, mouth corners, as a detector such as YuNet or
      RetinaFace gives them): similarity transform onto the ArcFace template and bilinear warp with a black border.
    * Normalisation: the default, mean 0.5 / std 0.5, gives [-1, 1], the range the released Part fViT and LAFS weights
      were **trained** on. The authors' **evaluation** scripts, which produced the published LFW/CFP/AgeDB/IJB
      numbers, feed [-0.5, 0.5] instead: `PartFViTImageProcessor(image_std=[1.0, 1.0, 1.0])` reproduces them.
    * `do_flip_test=True` appends the mirrored images; `post_process_flip_test` sums the two embeddings of each face.

    Example:

    ```python
    >>> from PIL import Image
    >>> from faceformers.models.part_fvit.image_processing_part_fvit import PartFViTImageProcessor

    >>> processor = PartFViTImageProcessor()
    >>> processor(Image.new("RGB", (112, 112)), return_tensors="pt")["pixel_values"].shape
    torch.Size([1, 3, 112, 112])
    ```
    """

    model_input_names = ["pixel_values"]
    valid_kwargs = PartFViTImageProcessorKwargs
    resample = PILImageResampling.BILINEAR
    size = {"height": 112, "width": 112}
    image_mean = PART_FVIT_TRAINING_MEAN  # [-1, 1], the training range (see the class docstring)
    image_std = PART_FVIT_TRAINING_STD
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_align = False
    do_flip_test = False

    def preprocess(
        self,
        images: ImageInput,
        landmarks: np.ndarray | torch.Tensor | list | None = None,
        **kwargs: Unpack[PartFViTImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Args:
            images (`ImageInput`): PIL images, numpy arrays or torch tensors; grayscale, RGB, RGBA or CMYK.
            landmarks (`array-like`, *optional*): `(5, 2)` or `(batch_size, 5, 2)` pixel coordinates `(x, y)` in the
                original image (image-left eye, image-right eye, nose tip, image-left and image-right mouth
                corner); used with `do_align=True`.

        Returns:
            [`BatchFeature`] with `pixel_values` `(batch_size, 3, 112, 112)` (`2 * batch_size` with `do_flip_test`).
        """
        return super().preprocess(images, landmarks, **kwargs)

    def _preprocess_image_like_inputs(
        self, images, landmarks, do_convert_rgb: bool, input_data_format, return_tensors, device=None, **kwargs
    ) -> BatchFeature:
        images = self._prepare_image_like_inputs(
            images, do_convert_rgb=do_convert_rgb, input_data_format=input_data_format, device=device
        )
        if kwargs["do_align"]:
            pixel_values = self._align(images, landmarks, **kwargs)
        else:
            pixel_values = [torch.as_tensor(p) for p in self._preprocess(images, return_tensors=None, **kwargs)["pixel_values"]]
        if kwargs["do_flip_test"]:
            pixel_values = pixel_values + [p.flip(-1) for p in pixel_values]
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def _align(self, images, landmarks, **kwargs) -> list[torch.Tensor]:
        """Warp the [0, 1] image (black outside the photo, as `cv2.warpAffine`), then normalise."""
        size = kwargs["size"]
        if size.height != size.width:
            raise ValueError(f"Alignment to the ArcFace template needs a square size; got {dict(size)}.")
        landmarks = landmarks_to_tensor(landmarks, len(images))
        matrices = arcface_align_matrix(landmarks, size.height)  # (B, 3, 3)
        check_align_matrices(matrices, landmarks)
        do_normalize = kwargs["do_normalize"]
        kwargs.update(do_resize=False, do_center_crop=False, do_pad=False, do_normalize=False)
        rescaled = self._preprocess(images, return_tensors=None, **kwargs)["pixel_values"]
        mean = torch.tensor(kwargs["image_mean"], dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(kwargs["image_std"], dtype=torch.float32).view(3, 1, 1)
        pixel_values = []
        for index, image in enumerate(rescaled):
            image = torch.as_tensor(image).float()  # (3, H, W) in [0, 1]
            grid = make_affine_warp_grid(matrices[index : index + 1], (size.height, size.width), image.shape[-2:])
            warped = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)[0]
            pixel_values.append((warped - mean.to(warped)) / std.to(warped) if do_normalize else warped)
        return pixel_values

    @staticmethod
    def post_process_flip_test(embeddings: torch.Tensor, normalize: bool = True) -> torch.Tensor:
        """`(2 * N, D)` embeddings of `[images, flipped images]` -> `(N, D)` sums (L2-normalised by default)."""
        if embeddings.ndim != 2 or embeddings.shape[0] % 2:
            raise ValueError(
                f"Expected (2 * num_images, dim) embeddings from do_flip_test=True; got {tuple(embeddings.shape)}."
            )
        half = embeddings.shape[0] // 2
        summed = embeddings[:half] + embeddings[half:]
        return F.normalize(summed, dim=-1) if normalize else summed


__all__ = ["PartFViTImageProcessor"]
