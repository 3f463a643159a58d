"""Face-parsing samples: a `Record` -> `{"pixel_values": (3, S, S) float32, "labels": (S, S) int64}`.

Where the label map comes from:

* **synthetic records** (`{"index", "faces"}`): `faces.sample(index)[label_field]`, where `label_field` is `mask`
  (19 CelebAMask-HQ classes, order A), `mask_lapa` or `mask_helen` (11 classes);
* **files**: the image is the record's image field (`jpg`, `jpeg`, `png`, `webp`, `image`, ...; see
  `streaming.image_bytes`) and the label map is the first of these fields that the record has:

  1. `label_field` itself, then `<label_field>.png` (e.g. a parquet column `mask_lapa`, a tar member
     `<key>.mask_lapa.png`);
  2. `mask.png`, `mask`, `label.png`, `label`, `labels.png`, `labels`, `seg.png`, `segmentation.png`
     (WebDataset `<key>.mask.png`, parquet columns `mask` / `label`);
  3. `png`, only when the image itself is not the `png` field (WebDataset `<key>.jpg` + `<key>.png`).

  A label map is an 8- or 16-bit single-channel PNG (mode `L`, `P` - palette indices are the class ids -, `I;16`
  or `I`) holding class ids, the same size as the image; 255 means "no label" (ignored by the loss and the metrics).
  A parquet cell may also be an integer array / nested list instead of PNG bytes.

Numerics follow `SegFaceImageProcessorPil` (= SegFace's loaders): PIL bicubic resize of the image to `S x S`, PIL's
nearest-neighbour rule for the label map, `/ 255`, ImageNet mean / std. With `augment=True`, a LaPa-style random
affine transform (SegFace, ORIGINALS.md §6.4: rotation U(-30°, 30°), scale U(0.5, 3), translation U(±20 px) of the
original image; bicubic for the image, nearest for the labels, outside area = 0 / background) is applied before the
resize, with its parameters drawn from `sample_rng(seed, record)`: the same sample gets the same augmentation on every
process and after a resume.

A label map holding ids `>= num_labels` other than 255 raises `ValueError`, which `FaceStream` turns into a counted
skip; so does a label map whose size differs from its image.
"""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch

from .streaming import SKIP, Record, Shard, decode_image, read_shard
from .transforms import sample_rng


logger = logging.getLogger(__name__)

IGNORE_INDEX = 255
SYNTHETIC_LABEL_FIELDS = ("mask", "mask_lapa", "mask_helen")
MASK_FIELDS = ("mask.png", "mask", "label.png", "label", "labels.png", "labels", "seg.png", "segmentation.png")
_OTHER_IMAGE_FIELDS = ("jpg", "jpeg", "webp", "image", "img", "bmp", "tif", "tiff")

# LaPa augmentation of SegFace (train only): F.affine(angle, translate, scale, shear=0) on the original image
ROTATION_DEGREES = 30.0
SCALE_RANGE = (0.5, 3.0)
TRANSLATION_PIXELS = 20.0


def mask_field_name(record: Record, label_field: str = "mask") -> str:
    """The name of the record's label-map field, following the convention of the module docstring."""
    for name in (label_field, f"{label_field}.png", *MASK_FIELDS):
        if record.fields.get(name) is not None:
            return name
    if record.fields.get("png") is not None and any(record.fields.get(name) is not None for name in _OTHER_IMAGE_FIELDS):
        return "png"
    raise ValueError(
        f"Record {record.key} has no label map (fields: {sorted(record.fields)}); expected one of "
        f"{[label_field, f'{label_field}.png', *MASK_FIELDS]} or a `png` next to a `jpg` image."
    )


def decode_label_map(value: Any) -> np.ndarray:
    """PNG bytes (or an integer array / nested list) -> `(H, W)` int64 class ids."""
    if isinstance(value, (bytes, bytearray)):
        image = PIL.Image.open(io.BytesIO(value))
        image.load()
        array = np.array(image)
    else:
        array = np.asarray(value)
    if array.ndim == 3:  # an RGB-saved label map is accepted only if it is grey (all channels equal)
        if not (array == array[..., :1]).all():
            raise ValueError("Label map has differing colour channels; expected class ids in a single channel.")
        array = array[..., 0]
    if array.ndim != 2 or not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(f"Label map must be a 2-D integer map, got shape {array.shape} and dtype {array.dtype}.")
    return array.astype(np.int64)


def check_label_values(labels: np.ndarray, num_labels: int | None, key: str = "", ignore_index: int = IGNORE_INDEX) -> None:
    """Raise `ValueError` if `labels` holds negative ids or ids `>= num_labels` other than `ignore_index`."""
    invalid = (labels < 0) | (labels != ignore_index) & (labels >= (num_labels if num_labels is not None else ignore_index + 1))
    if invalid.any():
        values = np.unique(labels[invalid])[:10].tolist()
        raise ValueError(f"Label map of {key or 'a record'} holds ids {values} outside [0, {num_labels}) and != {ignore_index}.")


def pil_nearest_indices(input_length: int, output_length: int) -> np.ndarray:
    """Source indices of PIL's NEAREST resize along one axis (as `SegFaceImageProcessor` picks them)."""
    step = input_length / output_length
    positions = np.add.accumulate(np.r_[step * 0.5, np.full(output_length - 1, step)])
    return np.minimum(np.floor(positions).astype(np.int64), input_length - 1)


class FaceParsingTransform:
    """Decode an image and its label map, optionally augment (LaPa-style affine), resize to `image_size`, normalise.

    Args:
        image_size: output side `S` (square; the aspect ratio is not preserved, as in SegFace).
        image_mean, image_std: normalisation (the image processor's, ImageNet for SegFace).
        label_field: synthetic data: which mask of `faces.sample` (`mask`, `mask_lapa`, `mask_helen`); files: the
            first field name tried for the label map (see the module docstring).
        augment: apply the random affine transform (SegFace trains LaPa with it, CelebAMask-HQ and Helen without).
        seed: seeds the per-sample augmentation (with the record's epoch and key).
        num_labels: when set, label ids `>= num_labels` other than 255 raise `ValueError` (the sample is skipped).
    """

    def __init__(
        self,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        label_field: str = "mask",
        augment: bool = False,
        seed: int = 0,
        num_labels: int | None = None,
    ):
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        self.image_size, self.label_field, self.augment, self.seed = image_size, label_field, augment, seed
        self.num_labels = num_labels
        std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1) / std

    @classmethod
    def from_image_processor(cls, processor, **kwargs) -> FaceParsingTransform:
        size = processor.size
        if size.get("height") != size.get("width"):
            raise ValueError(f"Face parsing trains on square images, got image processor size {dict(size)}.")
        return cls(size["height"], processor.image_mean, processor.image_std, **kwargs)

    def decode(self, record: Record) -> tuple[PIL.Image.Image, np.ndarray]:
        """The record's RGB image and `(H, W)` int64 label map, at their original size, validated."""
        if "faces" in record.fields:  # synthetic
            if self.label_field not in SYNTHETIC_LABEL_FIELDS:
                raise ValueError(f"label_field {self.label_field!r} is not a synthetic mask {SYNTHETIC_LABEL_FIELDS}.")
            sample = record.fields["faces"].sample(record.fields["index"])
            image, labels = sample["image"], sample[self.label_field].astype(np.int64)
        else:
            labels = decode_label_map(record.fields[mask_field_name(record, self.label_field)])
            image = decode_image(record)
        if labels.shape != (image.height, image.width):
            raise ValueError(f"Record {record.key}: label map {labels.shape} and image {image.height}x{image.width} differ.")
        check_label_values(labels, self.num_labels, record.key)
        return image, labels

    def random_affine(self, image: PIL.Image.Image, labels: np.ndarray, rng: np.random.Generator):
        """SegFace's LaPa augmentation, `torchvision.transforms.functional.affine` around the image centre."""
        import torchvision.transforms.functional as F
        from torchvision.transforms import InterpolationMode

        angle = float(rng.uniform(-ROTATION_DEGREES, ROTATION_DEGREES))
        scale = float(rng.uniform(*SCALE_RANGE))
        translate = [int(round(v)) for v in rng.uniform(-TRANSLATION_PIXELS, TRANSLATION_PIXELS, 2)]
        image = F.affine(image, angle, translate, scale, [0.0, 0.0], interpolation=InterpolationMode.BICUBIC, fill=0)
        label_image = torch.from_numpy(labels)[None]  # (1, H, W) int64: nearest keeps exact ids
        label_image = F.affine(label_image, angle, translate, scale, [0.0, 0.0], interpolation=InterpolationMode.NEAREST, fill=0)
        return image, label_image[0].numpy()

    def __call__(self, record: Record) -> dict[str, torch.Tensor]:
        image, labels = self.decode(record)
        if self.augment:
            image, labels = self.random_affine(image, labels, sample_rng(self.seed, record))
        size = self.image_size
        if image.size != (size, size):
            image = image.resize((size, size), PIL.Image.BICUBIC)
        if labels.shape != (size, size):
            labels = labels[pil_nearest_indices(labels.shape[0], size)][:, pil_nearest_indices(labels.shape[1], size)]
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).float()  # (3, S, S) in [0, 255]
        return {"pixel_values": pixels.mul_(self.scale).sub_(self.shift), "labels": torch.from_numpy(np.ascontiguousarray(labels, dtype=np.int64))}


def evaluation_batches(
    shards: list[Shard], transform, batch_size: int, rank: int = 0, world_size: int = 1, skipped: Counter | None = None
) -> Iterator[dict[str, torch.Tensor]]:
    """One finite pass, in order, over this process's shards (`shards[rank::world_size]`), in batches.

    Unlike `FaceStream` (endless, for training), evaluation reads every record once. Records the transform rejects
    are counted in `skipped` (by exception type) and left out.
    """
    samples = []
    for shard in shards[rank::world_size]:
        for record in read_shard(shard):
            if SKIP in record.fields:
                reason = record.fields[SKIP]
            else:
                try:
                    samples.append(transform(record))
                    reason = None
                except Exception as error:  # noqa: BLE001 - a bad sample must not stop an evaluation
                    reason = f"undecodable:{type(error).__name__}"
                    logger.debug("Skipping %s: %s", record.key, error)
            if reason is not None and skipped is not None:
                skipped[reason] += 1
            if len(samples) == batch_size:
                yield {key: torch.stack([s[key] for s in samples]) for key in samples[0]}
                samples = []
    if samples:
        yield {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


__all__ = ["FaceParsingTransform", "check_label_values", "decode_label_map", "evaluation_batches", "mask_field_name"]
