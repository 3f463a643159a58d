"""Face-recognition samples: a `Record` -> `{"pixel_values": (3, S, S) float32, "labels": () int64}` (the identity).

Where the identity comes from:

* **synthetic records** (`{"index", "faces"}`): the person drawn, `faces.sample(index)["identity"]`
  (= `index % num_identities`);
* **image folders laid out one sub-folder per identity** (`root/<identity>/<image>.jpg`): the image's parent folder
  (relative to the root). `identity_folder_labels` numbers the folder names in sorted order, `0 ... K - 1`;
* **WebDataset shards and parquet files**: a `cls` member / column holding the integer class id (the WebDataset
  convention, `<key>.cls`), or a `label` / `identity` column, or an integer `label` / `identity` inside the record's
  `json`. Names (strings) are not mapped to ids here: write integer ids when building the shards.

Ids must lie in `[0, num_labels)`. A record without a usable identity raises `ValueError` naming the record (inside a
`FaceStream` that sample is then counted as skipped; `check_first_record` makes the same problem fail at start).

The image goes through decode -> RGB -> resize to `S x S` (bilinear, for pre-aligned crops such as the 112 x 112
insightface sets) -> random horizontal flip (p = 0.5, training) -> `(x / 255 - mean) / std`, with the flip drawn from
`sample_rng(seed, record)`: the same sample is flipped the same way on every process and after a resume.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import PIL.Image
import torch

from .streaming import IMAGE_EXTENSIONS, SKIP, Record, Shard, decode_image, decode_json, read_shard
from .transforms import sample_rng


logger = logging.getLogger(__name__)

LABEL_FIELDS = ("cls", "label", "identity")
JSON_LABEL_KEYS = ("label", "identity")


def _as_class_id(value: Any) -> int | None:
    """An int, a numpy integer, or text / bytes holding a decimal integer -> int; anything else -> None."""
    if isinstance(value, (bytes, bytearray)):
        value = value.decode("utf-8", errors="replace")
    if isinstance(value, str):
        text = value.strip()
        return int(text) if text.lstrip("-").isdigit() else None
    if isinstance(value, (bool, np.bool_)):
        return None
    if isinstance(value, (int, np.integer)):
        return int(value)
    return None


def identity_folder_labels(shards: Sequence[Shard]) -> dict[str, int]:
    """`{identity folder: class id}` over image-folder shards: every image's parent folder relative to its shard's
    root, numbered in sorted order. Raises `ValueError` if a shard holds images directly in its root (no identity
    folder) or no image at all."""
    names: set[str] = set()
    for shard in shards:
        root = Path(shard.location)
        images = [p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise ValueError(f"Image folder {root} holds no image.")
        for path in images:
            parent = path.relative_to(root).parent
            if parent == Path("."):
                raise ValueError(
                    f"Image {path} lies directly in {root}: face-recognition image folders need one sub-folder per "
                    f"identity (<root>/<identity>/<image>); pass the folder that contains the identity folders."
                )
            names.add(parent.as_posix())
    return {name: class_id for class_id, name in enumerate(sorted(names))}


def record_identity(record: Record, folder_labels: dict[str, int] | None = None) -> int:
    """The record's identity as an integer class id (see the module docstring for where it is read from)."""
    if "faces" in record.fields:  # synthetic
        return int(record.fields["faces"].identity_of(record.fields["index"]))
    if folder_labels is not None:
        folder = PurePath(record.key).parent.as_posix()
        if folder not in folder_labels:
            raise ValueError(f"Record {record.key}: identity folder {folder!r} is not one of the {len(folder_labels)} known identities.")
        return folder_labels[folder]
    for name in LABEL_FIELDS:
        if record.fields.get(name) is not None:
            class_id = _as_class_id(record.fields[name])
            if class_id is None:
                raise ValueError(f"Record {record.key}: field {name!r} = {record.fields[name]!r} is not an integer class id.")
            return class_id
    if record.fields.get("json") is not None:
        metadata = decode_json(record.fields["json"])
        for name in JSON_LABEL_KEYS:
            if isinstance(metadata, dict) and name in metadata:
                class_id = _as_class_id(metadata[name])
                if class_id is None or isinstance(metadata[name], (str, bytes)):
                    raise ValueError(
                        f"Record {record.key}: json {name!r} = {metadata[name]!r} is not an integer class id "
                        "(map identity names to integers 0 ... num_labels - 1 when writing the shards)."
                    )
                return class_id
    raise ValueError(
        f"Record {record.key} has no identity label (fields: {sorted(record.fields)}): expected a `cls` field holding "
        f"an integer class id, a `label` / `identity` column, or an integer `label` / `identity` in its `json`."
    )


def check_class_id(class_id: int, num_labels: int | None, key: str) -> None:
    if class_id < 0 or (num_labels is not None and class_id >= num_labels):
        bound = f"[0, {num_labels})" if num_labels is not None else "[0, inf)"
        raise ValueError(f"Record {key}: identity {class_id} is outside {bound}.")


def check_first_record(shards: Sequence[Shard], transform: FaceRecognitionTransform, what: str = "training") -> None:
    """Read the first record of the first shard and extract its identity, so that data without usable labels fails
    before training starts (inside the stream the same error only skips the sample)."""
    for record in read_shard(shards[0]):
        if SKIP in record.fields:
            raise ValueError(f"The first {what} shard {shards[0].location} is unreadable ({record.fields[SKIP]}).")
        try:
            transform.label(record)
        except ValueError as error:
            raise ValueError(f"{str(error).rstrip('.')} (first record of the {what} shard {shards[0].location}).") from None
        return
    raise ValueError(f"The first {what} shard {shards[0].location} yielded no record.")


class FaceRecognitionTransform:
    """Decode a face and its identity: resize to `image_size`, optional random horizontal flip, normalise.

    Args:
        image_size: output side `S` (square).
        image_mean, image_std: normalisation (the image processor's; Part fViT trains on mean = std = 0.5).
        horizontal_flip: mirror with probability 0.5 (training).
        seed: seeds the per-sample flip (with the record's epoch and key).
        num_labels: when set, identities outside `[0, num_labels)` raise `ValueError` (the sample is skipped).
        folder_labels: `{identity folder: id}` for image folders laid out one folder per identity
            (`identity_folder_labels`); `None` reads the identity from the record's fields.
    """

    def __init__(
        self,
        image_size: int,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        horizontal_flip: bool = True,
        seed: int = 0,
        num_labels: int | None = None,
        folder_labels: dict[str, int] | None = None,
    ):
        if image_size < 1:
            raise ValueError(f"image_size must be positive, got {image_size}.")
        self.image_size, self.horizontal_flip, self.seed = image_size, horizontal_flip, seed
        self.num_labels, self.folder_labels = num_labels, folder_labels
        std = torch.tensor(image_std, dtype=torch.float32).view(3, 1, 1)
        self.scale = 1.0 / (255.0 * std)
        self.shift = torch.tensor(image_mean, dtype=torch.float32).view(3, 1, 1) / std

    @classmethod
    def from_image_processor(cls, processor, **kwargs) -> FaceRecognitionTransform:
        size = processor.size
        if size.get("height") != size.get("width"):
            raise ValueError(f"Face recognition trains on square faces, got image processor size {dict(size)}.")
        return cls(size["height"], processor.image_mean, processor.image_std, **kwargs)

    def label(self, record: Record) -> int:
        class_id = record_identity(record, self.folder_labels)
        check_class_id(class_id, self.num_labels, record.key)
        return class_id

    def __call__(self, record: Record) -> dict[str, torch.Tensor]:
        class_id = self.label(record)
        if "faces" in record.fields:  # synthetic: `decode_image` would draw the face a second time
            image = record.fields["faces"].sample(record.fields["index"])["image"]
        else:
            image = decode_image(record)
        size = self.image_size
        if image.size != (size, size):
            image = image.resize((size, size), PIL.Image.BILINEAR)
        if self.horizontal_flip and sample_rng(self.seed, record).random() < 0.5:
            image = image.transpose(PIL.Image.FLIP_LEFT_RIGHT)
        pixels = torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous().float()  # (3, S, S)
        return {"pixel_values": pixels.mul_(self.scale).sub_(self.shift), "labels": torch.tensor(class_id, dtype=torch.long)}


def verification_pairs(identities: Sequence[int], max_pairs: int | None = None, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Deterministic verification pairs over a labelled set: `(first, second, issame)` index / label arrays.

    Genuine pairs are all same-identity pairs `(i, j)`, `i < j`, identity by identity (a fixed-seed subset of them when there are more than
    `max_pairs // 2`); as many impostor pairs are drawn with the same seed among images of different identities. The
    two kinds alternate (genuine, impostor, genuine, ...), so every contiguous fold of `verification_accuracy` holds
    both. Raises `ValueError` when there are fewer than two identities or no identity with two images.
    """
    labels = np.asarray(identities, dtype=np.int64)
    if np.unique(labels).size < 2:
        raise ValueError(f"Verification pairs need at least two identities, got {np.unique(labels).size}.")
    rng = np.random.default_rng(seed)
    groups = [np.flatnonzero(labels == identity) for identity in np.unique(labels)]
    genuine = np.concatenate(
        [np.stack([group[a], group[b]], axis=1) for group in groups for a, b in [np.triu_indices(group.size, k=1)]]
    )
    if genuine.size == 0:
        raise ValueError("Verification pairs need at least one identity with two or more images.")
    if max_pairs is not None and len(genuine) > max_pairs // 2:
        genuine = genuine[np.sort(rng.choice(len(genuine), size=max(1, max_pairs // 2), replace=False))]
    impostor = []
    while len(impostor) < len(genuine):
        i, j = (int(v) for v in rng.integers(labels.size, size=2))
        if labels[i] != labels[j]:
            impostor.append((i, j))
    pairs = np.stack([genuine, np.array(impostor, dtype=np.int64)], axis=1).reshape(-1, 2)  # interleaved
    issame = np.tile([True, False], len(genuine))
    return pairs[:, 0], pairs[:, 1], issame


__all__ = [
    "FaceRecognitionTransform",
    "check_first_record",
    "identity_folder_labels",
    "record_identity",
    "verification_pairs",
]
