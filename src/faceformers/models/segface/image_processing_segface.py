"""Image processor for SegFace (torchvision backend): resize or five-point tanh-warp alignment, ImageNet mean/std.

The shared defaults and all SegFace-specific logic live in `SegFaceImageProcessorDefaults`; the torchvision and PIL
classes differ only in how they resize images (`image_processing_pil_segface.py` holds the PIL twin). No
`from __future__ import annotations` here: `valid_kwargs` types are checked at call time and must be real types.
"""

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from transformers.image_processing_utils import BatchFeature, get_size_dict
from transformers.image_utils import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    ChannelDimension,
    ImageInput,
    PILImageResampling,
    SizeDict,
)
from transformers.processing_utils import ImagesKwargs, Unpack
from transformers.utils import logging

from ...compat import TorchvisionBackend
from ...face_alignment import (
    check_align_matrices,
    get_face_align_matrix,
    landmarks_to_tensor,
    make_inverted_tanh_warp_grid,
    make_tanh_warp_grid,
)
from ...image_utils import StandardizedInputsMixin


logger = logging.get_logger(__name__)

IGNORE_INDEX = 255  # label value that losses skip; also given to warped pixels that fall outside the original image


class SegFaceImageProcessorKwargs(ImagesKwargs, total=False):
    r"""
    do_align (`bool`, *optional*, defaults to `self.do_align`):
        Warp each image onto the five-point face template with the tanh warp (needs `landmarks`) instead of resizing.
    warp_factor (`float`, *optional*, defaults to `self.warp_factor`):
        Tanh warp factor in `[0, 1]`: 0 is a plain similarity crop, 0.8 is SegFace's and FaRL's LaPa setting.
    face_scale (`float`, *optional*, defaults to `self.face_scale`):
        Size of the face template in the output frame (`target_face_scale` of facer); 1.0 for SegFace.
    align_pixel_centers (`bool`, *optional*, defaults to `self.align_pixel_centers`):
        `True`: facer's current `i + 0.5` pixel-centre convention; `False`: SegFace's copy without it, which its
        released LaPa weights were trained with. See `faceformers.face_alignment`.
    num_labels (`int`, *optional*, defaults to `self.num_labels`):
        When set, segmentation-map values `>= num_labels` other than 255 (ignore) raise a `ValueError`.
    """

    do_align: bool | None
    warp_factor: float | int | None
    face_scale: float | int | None
    align_pixel_centers: bool | None
    num_labels: int | None


class SegFaceImageProcessorDefaults(StandardizedInputsMixin):
    """Defaults shared by both backends: SegFace's CelebAMask-HQ transform and its LaPa alignment settings."""

    model_input_names = ["pixel_values"]
    valid_kwargs = SegFaceImageProcessorKwargs
    resample = PILImageResampling.BICUBIC  # images; segmentation maps always use nearest
    size = {"height": 512, "width": 512}
    image_mean = IMAGENET_DEFAULT_MEAN
    image_std = IMAGENET_DEFAULT_STD
    do_resize = True
    do_rescale = True
    do_normalize = True
    do_convert_rgb = True
    do_align = False
    warp_factor = 0.8
    face_scale = 1.0
    align_pixel_centers = False
    num_labels = None

    def preprocess(
        self,
        images: ImageInput,
        segmentation_maps: ImageInput | None = None,
        landmarks: np.ndarray | torch.Tensor | list | None = None,
        **kwargs: Unpack[SegFaceImageProcessorKwargs],
    ) -> BatchFeature:
        r"""
        Prepare images (and optionally segmentation maps) for [`SegFaceForSemanticSegmentation`].

        Args:
            images (`ImageInput`):
                PIL images, numpy arrays or torch tensors; grayscale, RGB, RGBA or CMYK; 8 or 16 bit; one or a list.
            segmentation_maps (`ImageInput`, *optional*):
                One label map per image, `(height, width)` class ids of the same size as its image (PIL "L"/"P"/"I",
                numpy or torch integer arrays). Returned as `labels`, `(batch_size, height, width)` int64, resized
                with nearest neighbour (or warped with nearest neighbour when aligning).
            landmarks (`array-like`, *optional*):
                Five points per image, `(5, 2)` or `(batch_size, 5, 2)` pixel coordinates `(x, y)` in the original
                image: image-left eye, image-right eye, nose tip, image-left and image-right mouth corner. Used only
                when `do_align=True`.
            kwargs:
                Per-call overrides of the processor attributes (`size`, `do_align`, `warp_factor`, ...).

        Returns:
            [`BatchFeature`] with `pixel_values` `(batch_size, 3, height, width)`, `labels` if `segmentation_maps`
            were given, and with `do_align=True` also `face_align_matrix` `(batch_size, 3, 3)` (original pixels ->
            aligned frame) and `original_sizes` `(batch_size, 2)` (`height, width`), which
            `post_process_semantic_segmentation` needs to undo the warp. Pop those two before `model(**inputs)`.
        """
        return super().preprocess(images, segmentation_maps, landmarks, **kwargs)

    def _preprocess_image_like_inputs(
        self,
        images,
        segmentation_maps,
        landmarks,
        do_convert_rgb: bool,
        input_data_format,
        return_tensors,
        device=None,
        **kwargs,
    ) -> BatchFeature:
        # `StandardizedInputsMixin` left numpy arrays channels-last and tensors channels-first; make the layout
        # explicit so that tiny images such as 1 x 1 x 3 are not mistaken for channels-first
        images = self._prepare_image_like_inputs(
            _channels_last(images),
            do_convert_rgb=do_convert_rgb,
            input_data_format=ChannelDimension.LAST,
            device=device,
        )
        original_sizes = [tuple(int(side) for side in image.shape[-2:]) for image in images]
        masks = None
        if segmentation_maps is not None:
            masks = _segmentation_maps_to_arrays(segmentation_maps, original_sizes, kwargs["num_labels"])

        if kwargs["do_align"]:
            data = self._align(images, masks, landmarks, original_sizes, device=device, **kwargs)
        else:
            if landmarks is not None:
                logger.warning_once(
                    "`landmarks` are ignored because `do_align=False`; pass `do_align=True` to use them."
                )
            data = {"pixel_values": self._preprocess(images, return_tensors=None, **kwargs)["pixel_values"]}
            if masks is not None:
                output_sizes = [tuple(pixel_values.shape[-2:]) for pixel_values in data["pixel_values"]]
                data["labels"] = self._resize_segmentation_maps(masks, output_sizes, device=device)
        return BatchFeature(data=data, tensor_type=return_tensors)

    def _resize_segmentation_maps(self, masks: list[np.ndarray], output_sizes: list[tuple[int, int]], device=None):
        """Nearest-neighbour resize of `(H, W)` maps to the sizes of their resized images; int64 out.

        Both backends pick exactly the pixels `PIL.Image.resize(..., NEAREST)` picks (what SegFace's loaders did), so
        labels agree bit for bit between backends; torchvision's nearest modes differ from PIL at some sizes.
        """
        labels = []
        for mask, (height, width) in zip(masks, output_sizes):
            mask = mask[_pil_nearest_indices(mask.shape[0], height)][:, _pil_nearest_indices(mask.shape[1], width)]
            labels.append(self._from_torch(torch.from_numpy(mask.astype(np.int64)).to(device or "cpu")))
        return labels

    def _align(self, images, masks, landmarks, original_sizes, device=None, **kwargs) -> dict:
        """Rescale + normalise at the original size, then tanh-warp each image (and map) onto the face template.

        The warp runs on normalised pixels, as in SegFace, so the area outside the photo reads as the ImageNet mean
        colour (zero after normalisation) rather than black.
        """
        size = kwargs["size"]
        if not (size.height and size.width):
            raise ValueError(f"Alignment needs size={{'height': h, 'width': w}}; got {dict(size)}.")
        warp_factor = float(kwargs["warp_factor"])
        if not 0 <= warp_factor <= 1:
            raise ValueError(f"Expected warp_factor in [0, 1]; got {warp_factor}.")
        warped_shape = (size.height, size.width)
        landmarks = landmarks_to_tensor(landmarks, len(images))
        matrices = get_face_align_matrix(landmarks, warped_shape, float(kwargs["face_scale"]))  # (B, 3, 3)
        check_align_matrices(matrices, landmarks)

        kwargs.update(do_resize=False, do_center_crop=False, do_pad=False)
        normalized = self._preprocess(images, return_tensors=None, **kwargs)["pixel_values"]
        pixel_values, labels = [], []
        for index, image in enumerate(normalized):
            image = torch.as_tensor(image).float()  # (3, H, W)
            grid = make_tanh_warp_grid(
                matrices[index : index + 1].to(image.device),
                warp_factor,
                warped_shape,
                original_sizes[index],
                pixel_centers=bool(kwargs["align_pixel_centers"]),
            )  # (1, h, w, 2)
            warped = F.grid_sample(image[None], grid, mode="bilinear", padding_mode="zeros", align_corners=False)
            pixel_values.append(self._from_torch(warped[0]))
            if masks is not None:
                # shift ids by one so that zero padding marks pixels outside the photo, which become IGNORE_INDEX
                mask = torch.from_numpy(masks[index]).to(device=image.device, dtype=torch.float32)[None, None] + 1
                mask = F.grid_sample(mask, grid, mode="nearest", padding_mode="zeros", align_corners=False)[0, 0]
                mask = torch.where(mask == 0, IGNORE_INDEX + 1, mask) - 1
                labels.append(self._from_torch(mask.to(torch.int64)))
        data = {
            "pixel_values": pixel_values,
            "face_align_matrix": [self._from_torch(matrix) for matrix in matrices],
            "original_sizes": original_sizes,
        }
        if masks is not None:
            data["labels"] = labels
        return data

    def _from_torch(self, tensor: torch.Tensor):
        """Return a tensor in the backend's array type (the PIL twin overrides this to return numpy)."""
        return tensor

    def post_process_semantic_segmentation(
        self,
        outputs,
        target_sizes: list[tuple[int, int]] | torch.Tensor | None = None,
        face_align_matrix: torch.Tensor | list | None = None,
        warp_factor: float | None = None,
        align_pixel_centers: bool | None = None,
        size: dict[str, int] | None = None,
    ) -> list[torch.Tensor]:
        """
        Turn [`SegFaceForSemanticSegmentation`] logits into one `(height, width)` int64 map of class ids per image.

        Args:
            outputs: model output with `logits` of shape `(batch_size, num_labels, h, w)` (any resolution).
            target_sizes: `(height, width)` per image. Without alignment the logits are resized bilinearly to it
                (left at their resolution if `None`). With `face_align_matrix` it is required and must be the
                original image sizes (`inputs["original_sizes"]`): the frame the matrices were computed in.
            face_align_matrix: `(batch_size, 3, 3)` matrices from `preprocess(..., do_align=True)`. When given, the
                logits are warped back with the exact inverse tanh warp before the argmax.
            warp_factor, align_pixel_centers, size: the values used in `preprocess` if they were overridden per call;
                default to the processor's attributes.

        Returns:
            `list[torch.Tensor]`: `batch_size` maps of shape `target_sizes[i]` (or `(h, w)`), dtype int64.
        """
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs.logits
        if logits.ndim != 4:
            raise ValueError(f"Expected logits of shape (batch_size, num_labels, h, w); got {tuple(logits.shape)}.")
        if target_sizes is not None:
            if isinstance(target_sizes, torch.Tensor):
                target_sizes = target_sizes.tolist()
            if len(target_sizes) != len(logits):
                raise ValueError(
                    f"Got {len(target_sizes)} target sizes for a batch of {len(logits)} logits; pass one per image."
                )
            target_sizes = [(int(height), int(width)) for height, width in target_sizes]

        if face_align_matrix is None:
            if target_sizes is None:
                return list(logits.argmax(dim=1))
            return [
                F.interpolate(logit[None], size=target, mode="bilinear", align_corners=False)[0].argmax(dim=0)
                for logit, target in zip(logits, target_sizes)
            ]

        if target_sizes is None:
            raise ValueError(
                "Undoing the face alignment needs target_sizes: the original image sizes (inputs['original_sizes'])."
            )
        matrices = _stack_matrices(face_align_matrix)
        if len(matrices) != len(logits):
            raise ValueError(f"Got {len(matrices)} alignment matrices for a batch of {len(logits)} logits.")
        size = self.size if size is None else SizeDict(**get_size_dict(size))
        warp_factor = self.warp_factor if warp_factor is None else warp_factor
        pixel_centers = self.align_pixel_centers if align_pixel_centers is None else align_pixel_centers
        # grids and sampling in at least float32: coordinates of large photos need more than half precision
        dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
        segmentation = []
        for logit, matrix, target in zip(logits, matrices, target_sizes):
            grid = make_inverted_tanh_warp_grid(
                matrix[None].to(device=logit.device, dtype=dtype),
                float(warp_factor),
                (size.height, size.width),
                target,
                pixel_centers=bool(pixel_centers),
            )  # (1, H, W, 2)
            restored = F.grid_sample(logit[None].to(dtype), grid, mode="bilinear", align_corners=False)
            segmentation.append(restored[0].argmax(dim=0))
        return segmentation


class SegFaceImageProcessor(SegFaceImageProcessorDefaults, TorchvisionBackend):
    r"""
    Prepares face images for [`SegFaceForSemanticSegmentation`] as the released SegFace code did.

    * Default (CelebAMask-HQ): resize to 512 x 512 (bicubic, aspect ratio not kept), rescale to [0, 1],
      ImageNet mean/std; segmentation maps become `labels` resized with nearest neighbour.
    * `do_align=True` (LaPa): needs five `landmarks` per image. Each image is warped onto facer's five-point
      template with the tanh warp (`warp_factor=0.8`, `face_scale=1.0`, `align_pixel_centers=False` as in SegFace)
      straight from the original photo to `size`; the output also holds `face_align_matrix` and `original_sizes` so
      that `post_process_semantic_segmentation` can warp the logits back. SegFace itself first resized the photo
      to 512 x 512 and scaled the landmarks; to reproduce it bit for bit, do that before calling the processor.
      Warped label pixels that fall outside the photo are 255 (ignore).

    `pipeline("image-segmentation")` can pass neither landmarks nor alignment matrices, so keep `do_align=False`
    for pipeline use and call the processor directly for aligned inference.

    Inputs may be PIL images, numpy arrays or torch tensors, grayscale, RGB, RGBA (alpha dropped) or CMYK, 8 or 16
    bit, of any size down to 1 x 1 (tiny images are simply upsampled). Inputs are never modified.

    Example:

    ```python
    >>> from PIL import Image
    >>> from faceformers.models.segface.image_processing_segface import SegFaceImageProcessor

    >>> processor = SegFaceImageProcessor()
    >>> inputs = processor(Image.new("RGB", (300, 400)), return_tensors="pt")
    >>> inputs["pixel_values"].shape
    torch.Size([1, 3, 512, 512])
    >>> aligned = processor(
    ...     Image.new("RGB", (300, 400)),
    ...     landmarks=[[120, 180], [180, 180], [150, 215], [128, 250], [172, 250]],
    ...     do_align=True,
    ...     return_tensors="pt",
    ... )
    >>> sorted(aligned.keys())
    ['face_align_matrix', 'original_sizes', 'pixel_values']

    ```
    """


def _pil_nearest_indices(input_length: int, output_length: int) -> np.ndarray:
    """Source indices of PIL's NEAREST resize along one axis.

    PIL steps through the source by accumulating `input / output` in double precision from half a step; repeating the
    same additions reproduces its choice at exact ties, which a closed form `floor((i + 0.5) * scale)` does not.
    """
    step = input_length / output_length
    positions = np.add.accumulate(np.r_[step * 0.5, np.full(output_length - 1, step)])
    return np.minimum(np.floor(positions).astype(np.int64), input_length - 1)


def _channels_last(images):
    """Tensors come out of `standardize_images` channels-first; turn them into channels-last numpy like the rest."""
    if isinstance(images, (list, tuple)):
        return [_channels_last(image) for image in images]
    if isinstance(images, torch.Tensor):
        return images.permute(1, 2, 0).numpy()
    return images


def _segmentation_maps_to_arrays(
    segmentation_maps, image_sizes: list[tuple[int, int]], num_labels: int | None
) -> list[np.ndarray]:
    """Validate label maps against their images and return them as uint8 `(H, W)` arrays (new copies)."""
    if isinstance(segmentation_maps, (list, tuple)):
        maps = list(segmentation_maps)
    elif isinstance(segmentation_maps, (np.ndarray, torch.Tensor)) and (
        segmentation_maps.ndim == 4 or (segmentation_maps.ndim == 3 and len(image_sizes) > 1)
    ):
        maps = list(segmentation_maps)  # a stacked batch
    else:
        maps = [segmentation_maps]
    if len(maps) != len(image_sizes):
        raise ValueError(f"Got {len(maps)} segmentation maps for {len(image_sizes)} images; pass one per image.")

    arrays = []
    for index, (segmentation_map, image_size) in enumerate(zip(maps, image_sizes)):
        array = _segmentation_map_to_array(segmentation_map, index)
        if array.shape != image_size:
            raise ValueError(
                f"Segmentation map {index} has size {array.shape} (height, width) but its image has size "
                f"{image_size}; resize the map with nearest neighbour to the image size first."
            )
        values = np.unique(array)
        if values.min() < 0 or values.max() > IGNORE_INDEX:
            raise ValueError(
                f"Segmentation map {index} has values outside [0, {IGNORE_INDEX}]: {_describe(values)}; class ids "
                f"must be small non-negative integers and {IGNORE_INDEX} marks ignored pixels."
            )
        if num_labels is not None:
            invalid = values[(values >= num_labels) & (values != IGNORE_INDEX)]
            if invalid.size:
                raise ValueError(
                    f"Segmentation map {index} has values {_describe(invalid)} but num_labels={num_labels}; valid "
                    f"ids are 0..{num_labels - 1} and {IGNORE_INDEX} (ignore)."
                )
        arrays.append(array.astype(np.uint8))
    return arrays


def _segmentation_map_to_array(segmentation_map, index: int) -> np.ndarray:
    if segmentation_map is None:
        raise ValueError(f"Segmentation map {index} is None; pass one label map per image or none at all.")
    if isinstance(segmentation_map, PIL.Image.Image):
        if segmentation_map.mode not in ("1", "L", "P", "I", "I;16", "I;16B", "I;16L", "F"):
            raise ValueError(
                f"Segmentation map {index} is a PIL image in mode {segmentation_map.mode!r}; expected a "
                "single-channel label map (mode 'L', 'P' or 'I')."
            )
        array = np.array(segmentation_map)
    elif isinstance(segmentation_map, torch.Tensor):
        array = segmentation_map.detach().cpu().numpy()
    elif isinstance(segmentation_map, np.ndarray):
        array = segmentation_map
    else:
        raise ValueError(
            f"Segmentation map {index} is a {type(segmentation_map).__name__}; expected a PIL image, numpy array or "
            "torch tensor of shape (height, width)."
        )
    if array.ndim == 3 and 1 in (array.shape[0], array.shape[-1]):
        array = array[0] if array.shape[0] == 1 else array[..., 0]  # (1, H, W) or (H, W, 1)
    if array.ndim != 2:
        raise ValueError(
            f"Segmentation map {index} has shape {array.shape}; expected a single-channel (height, width) map."
        )
    if array.dtype == np.bool_:
        array = array.astype(np.uint8)
    elif np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.all(array == np.round(array)):
            raise ValueError(f"Segmentation map {index} has non-integer values; expected class ids.")
    elif not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"Segmentation map {index} has dtype {array.dtype}; expected integer class ids.")
    return array.astype(np.int64)


def _describe(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(str(int(value)) for value in values[:limit])
    return f"[{shown}{', ...' if len(values) > limit else ''}]"


def _stack_matrices(face_align_matrix) -> torch.Tensor:
    if isinstance(face_align_matrix, (list, tuple)):
        return torch.stack([torch.as_tensor(matrix) for matrix in face_align_matrix])
    matrices = torch.as_tensor(face_align_matrix)
    if matrices.ndim != 3 or matrices.shape[-2:] != (3, 3):
        raise ValueError(f"Expected face_align_matrix of shape (batch_size, 3, 3); got {tuple(matrices.shape)}.")
    return matrices


__all__ = ["SegFaceImageProcessor"]
