"""Face-parsing datasets as streaming shards: CelebAMask-HQ, LaPa, relabeled Helen, the CE7454 course release and
generic image/mask folders, read from their original (raw) layouts.

Every `*_shards` function turns a dataset root into a list of `Shard`s for `FaceStream`; `read_shard` turns each shard
into `Record`s with the raw fields

* `"image"`: the encoded image file (bytes; `streaming.decode_image` reads it),
* `"mask"`: the label map **in the target order**, either a `(H, W)` `np.uint8` array (when the reader had to build
  or remap it) or the label PNG's bytes (when the file already is the label map); `decode_mask` reads both,
* `"landmarks_5"` (LaPa, Helen): `np.float32` `(5, 2)`, pixel coordinates of the returned image, in the 5-point order
  of `labels.LANDMARKS_5_NAMES`; `"landmarks"`: the full annotation (106 or 68 points) in the same coordinates.

No resizing happens here: resizing to R x R, normalisation and augmentation belong to the transform.

How the readers are found. `read_shard(shard)` looks `shard.kind` up in `streaming.READERS` and calls the reader with
`shard.location` only. Importing this module adds its kinds (`READER_KINDS`) to that dict with `setdefault`, so
nothing in `streaming.py` changes. We chose this over re-using the `imagefolder`/`webdataset` kinds because those
readers cannot pair an image with a mask file, paint part masks or remap labels. The one consequence: the module must
be imported in every process that reads these shards. With the default `fork` DataLoader workers that is automatic;
with `spawn` workers, make sure the transform (or whatever is pickled into the workers) imports this module, e.g. by
using `decode_mask` from here. `register_readers()` is the same registration as an explicit call.

Since a reader only receives `shard.location`, a location is self-describing: the dataset root followed by the
sample selection as a query string, e.g. `/data/LaPa?split=train&shard=3&num_shards=8`. The reader lists the samples
of `split` again (sorted, so every process gets the same list) and keeps those with `index % num_shards == shard`.
The same settings are copied into `Shard.options` for readability only.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import numpy as np

from . import streaming
from .labels import CELEBAMASK_HQ_LABELS
from .streaming import IMAGE_EXTENSIONS, Record, Shard


# --------------------------------------------------------------------------------------------------------- labels

# CelebAMask-HQ per-part file suffixes in order A (FaRL / facer / SegFace, labels.CELEBAMASK_HQ_LABELS): part `i`
# (1-based) is painted with value `i`, later parts overwrite earlier ones (ORIGINALS.md §3.1, §6.4).
CELEBAMASK_HQ_PARTS_ORDER_A: tuple[str, ...] = (
    "neck", "skin", "cloth", "l_ear", "r_ear", "l_brow", "r_brow", "l_eye", "r_eye", "nose", "mouth", "l_lip", "u_lip",
    "hair", "eye_g", "hat", "ear_r", "neck_l",
)  # fmt: skip

# Order B: the official merged label maps, the MaskGAN demo masks, DML-CSR and the CE7454 release (ORIGINALS.md §3.2).
CELEBAMASK_HQ_PARTS_ORDER_B: tuple[str, ...] = (
    "skin", "nose", "eye_g", "l_eye", "r_eye", "l_brow", "r_brow", "l_ear", "r_ear", "mouth", "u_lip", "l_lip", "hair",
    "hat", "ear_r", "neck_l", "neck", "cloth",
)  # fmt: skip

# ORDER_B_TO_A[b] = a: remaps an order-B label map to order A with `ORDER_B_TO_A[mask]`.
ORDER_B_TO_A: np.ndarray = np.array(
    [0] + [1 + CELEBAMASK_HQ_PARTS_ORDER_A.index(part) for part in CELEBAMASK_HQ_PARTS_ORDER_B], dtype=np.uint8
)
ORDER_A_TO_B: np.ndarray = np.argsort(ORDER_B_TO_A).astype(np.uint8)

# Left/right class pairs (order A: ears, brows, eyes). In order B the same id pairs are eyes, brows, ears, so the same
# swap is valid in both orders.
CELEBAMASK_HQ_LEFT_RIGHT_PAIRS: tuple[tuple[int, int], ...] = ((4, 5), (6, 7), (8, 9))
assert {tuple(ORDER_B_TO_A[list(pair)]) for pair in CELEBAMASK_HQ_LEFT_RIGHT_PAIRS} == set(CELEBAMASK_HQ_LEFT_RIGHT_PAIRS)
assert len(CELEBAMASK_HQ_PARTS_ORDER_A) + 1 == len(CELEBAMASK_HQ_LABELS)


def swap_left_right(mask: np.ndarray, pairs: tuple[tuple[int, int], ...] = CELEBAMASK_HQ_LEFT_RIGHT_PAIRS) -> np.ndarray:
    """A copy of `mask` with the classes of every `(left, right)` pair exchanged (for mirrored images)."""
    table = np.arange(256, dtype=np.uint8)
    for left, right in pairs:
        table[left], table[right] = right, left
    return table[mask]


def paint_celebamask_parts(part_masks: dict[str, np.ndarray], size: int = 512) -> np.ndarray:
    """The 19-class order-A label map from per-part binary masks (`{suffix: (H, W) array}`, nonzero = part), painted
    in `CELEBAMASK_HQ_PARTS_ORDER_A` so that later parts overwrite earlier ones. Missing parts are simply absent."""
    label = np.zeros((size, size), dtype=np.uint8)
    for index, part in enumerate(CELEBAMASK_HQ_PARTS_ORDER_A, start=1):
        mask = part_masks.get(part)
        if mask is not None:
            label[mask > 0] = index
    return label


def decode_mask(record: Record | dict[str, Any]) -> np.ndarray:
    """The label map of a record as a `(H, W)` `np.uint8` array.

    Looks for the fields `mask`, `label`, `annotation`, `segmentation`, `mask.png`, `label.png` (WebDataset members
    `<key>.mask.png`), `seg.png` in that order; each may be an array, PNG bytes or a `{"bytes": ...}` dict. An RGB(A)
    mask keeps its first channel (class ids stored as grey levels)."""
    import PIL.Image

    fields = record.fields if isinstance(record, Record) else record
    for name in ("mask", "label", "annotation", "segmentation", "mask.png", "label.png", "seg.png"):
        value = fields.get(name)
        if value is None:
            continue
        if isinstance(value, dict):
            value = value["bytes"]
        if isinstance(value, (bytes, bytearray)):
            image = PIL.Image.open(io.BytesIO(value))
            value = np.asarray(image)  # palette ("P") PNGs give their indices, which are the class ids
        value = np.asarray(value)
        if value.ndim == 3:
            value = value[..., 0]
        return value.astype(np.uint8)
    raise ValueError(f"Record has no mask field (fields: {sorted(fields)}).")


# ------------------------------------------------------------------------------------------------------ locations


def _location(root: str | os.PathLike, **params: Any) -> str:
    return f"{os.fspath(root)}?{urlencode(params)}"


def _parse_location(location: str) -> tuple[Path, dict[str, str]]:
    root, _, query = location.rpartition("?")
    return Path(root), dict(parse_qsl(query, keep_blank_values=True))


def _make_shards(kind: str, root: str | os.PathLike, num_shards: int, **params: Any) -> list[Shard]:
    if num_shards < 1:
        raise ValueError(f"num_shards must be >= 1, got {num_shards}.")
    shards = []
    for shard in range(num_shards):
        settings = {**params, "shard": shard, "num_shards": num_shards}
        shards.append(Shard(kind, _location(root, **settings), tuple(settings.items())))
    return shards


def _take_shard(items: list, params: dict[str, str]) -> list:
    shard, num_shards = int(params.get("shard", 0)), int(params.get("num_shards", 1))
    return items[shard::num_shards]


def _encode_png(array: np.ndarray) -> bytes:
    import PIL.Image

    buffer = io.BytesIO()
    PIL.Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def _read_grey(path: Path) -> np.ndarray:
    import PIL.Image

    with PIL.Image.open(path) as image:
        array = np.asarray(image)
    return array[..., 0] if array.ndim == 3 else array


# -------------------------------------------------------------------------------------------------- CelebAMask-HQ

CELEBA_PARTITIONS = {"train": 0, "val": 1, "test": 2}
# 0-based CelebA indices where the official val and test ranges start (list_eval_partition.txt: files 000001-162770
# train, 162771-182637 val, 182638-202599 test).
CELEBA_VAL_START, CELEBA_TEST_START = 162770, 182637


def celebamask_hq_split(root: str | os.PathLike) -> dict[str, list[int]]:
    """The official CelebAMask-HQ train/val/test split: `{"train": [hq ids], "val": [...], "test": [...]}`, sorted.

    `CelebA-HQ-to-CelebA-mapping.txt` (header `idx orig_idx orig_file`) gives each CelebA-HQ image id `idx` its CelebA
    source image; the CelebA partition of that source decides the split. If `list_eval_partition.txt`
    (`<orig_file> <0|1|2>`) is present under the root, it is used; otherwise the 0-based `orig_idx` is compared with
    the official ranges: `< 162770` train, `< 182637` val, else test (the two agree). The split usually reported is
    24,183 / 2,993 / 2,824 images (not re-counted here: the full mapping file is not available offline).

    (The CelebAMask-HQ repository's own `g_partition.py` tests `orig_idx >= 162771` and `>= 182638`, i.e. it treats
    `orig_idx` as 1-based. That moves the images whose source is the first val (or test) file of CelebA into the
    previous split, if any such image exists in CelebA-HQ; we follow `list_eval_partition.txt`.)
    """
    root = Path(root)
    partition_of_file: dict[str, int] = {}
    partition_file = root / "list_eval_partition.txt"
    if partition_file.exists():
        for line in partition_file.read_text().split("\n"):
            parts = line.split()
            if len(parts) == 2 and parts[1].isdigit():
                partition_of_file[parts[0]] = int(parts[1])
    split: dict[str, list[int]] = {name: [] for name in CELEBA_PARTITIONS}
    names = {value: name for name, value in CELEBA_PARTITIONS.items()}
    for line in (root / "CelebA-HQ-to-CelebA-mapping.txt").read_text().split("\n"):
        parts = line.split()
        if len(parts) < 3 or not parts[0].isdigit():  # header or blank line
            continue
        hq_id, orig_idx, orig_file = int(parts[0]), int(parts[1]), parts[2]
        if orig_file in partition_of_file:
            partition = partition_of_file[orig_file]
        else:
            partition = 0 if orig_idx < CELEBA_VAL_START else 1 if orig_idx < CELEBA_TEST_START else 2
        split[names[partition]].append(hq_id)
    return {name: sorted(ids) for name, ids in split.items()}


def celebamask_hq_shards(
    root: str | os.PathLike, split: str = "train", num_shards: int = 1, mask_at_image_size: bool = True
) -> list[Shard]:
    """Shards of the raw CelebAMask-HQ release under `root`:

    ```
    root/CelebA-HQ-img/<id>.jpg                                  1024 x 1024 images, id = 0..29999
    root/CelebAMask-HQ-mask-anno/<id // 2000>/<id:05d>_<part>.png  512 x 512 binary part masks (0 / 255)
    root/CelebA-HQ-to-CelebA-mapping.txt                         (root/list_eval_partition.txt, optional)
    ```

    `split` is `train`, `val`, `test` (see `celebamask_hq_split`) or `all`. Records: `image` (the 1024 px JPEG bytes)
    and `mask` (the order-A map painted at 512 from the part files, `np.uint8`). With `mask_at_image_size` (default)
    the map is enlarged to the image size by pixel repetition (1024 = 2 x 512), so that image and mask agree in size
    as `faceformers.data.parsing.FaceParsingTransform` requires; a later PIL-nearest resize to R x R then picks exactly
    the pixels that SegFace's nearest resize of the 512 map picks (`floor(floor(x) / 2) = floor(x / 2)`). Without it
    the 512 map is passed as is.
    """
    if split not in (*CELEBA_PARTITIONS, "all"):
        raise ValueError(f"split must be one of train, val, test, all; got {split!r}.")
    return _make_shards("celebamask_hq", root, num_shards, split=split, mask_at_image_size=int(mask_at_image_size))


def _enlarge_to(mask: np.ndarray, width: int, height: int) -> np.ndarray:
    """`mask` at `(height, width)`: integer factors by repetition, anything else by PIL nearest."""
    import PIL.Image

    rows, columns = mask.shape
    if (height, width) == (rows, columns):
        return mask
    if height % rows == 0 and width % columns == 0:
        return np.repeat(np.repeat(mask, height // rows, 0), width // columns, 1)
    return np.asarray(PIL.Image.fromarray(mask).resize((width, height), PIL.Image.NEAREST))


def read_celebamask_hq(location: str) -> Iterator[Record]:
    root, params = _parse_location(location)
    split = params.get("split", "train")
    if split == "all":
        ids = sorted(int(p.stem) for p in (root / "CelebA-HQ-img").iterdir() if p.stem.isdigit())
    else:
        ids = celebamask_hq_split(root)[split]
    annotations = root / "CelebAMask-HQ-mask-anno"
    for hq_id in _take_shard(ids, params):
        folder = annotations / str(hq_id // 2000)
        parts = {}
        for part in CELEBAMASK_HQ_PARTS_ORDER_A:
            path = folder / f"{hq_id:05d}_{part}.png"
            if path.exists():
                parts[part] = _read_grey(path)
        size = next(iter(parts.values())).shape[0] if parts else 512
        image = (root / "CelebA-HQ-img" / f"{hq_id}.jpg").read_bytes()
        mask = paint_celebamask_parts(parts, size)
        if params.get("mask_at_image_size", "1") == "1":
            import PIL.Image

            mask = _enlarge_to(mask, *PIL.Image.open(io.BytesIO(image)).size)  # reads the header only
        yield Record(f"celebamask_hq/{hq_id}", {"image": image, "mask": mask})


# ----------------------------------------------------------------------------------------------------------- LaPa


def lapa_landmarks_5(landmarks_106: np.ndarray) -> np.ndarray:
    """SegFace's LaPa 5 points (ORIGINALS.md §3.5, §6.4): `[mean(74, 104), mean(83, 105), 54, 84, 90]` of the 106."""
    points = np.asarray(landmarks_106, dtype=np.float32)
    return np.stack(
        [(points[74] + points[104]) / 2, (points[83] + points[105]) / 2, points[54], points[84], points[90]]
    ).astype(np.float32)


def read_landmarks_txt(data: str | bytes, num_points: int | None = None) -> np.ndarray:
    """Points of a LaPa-style landmark file: an optional first line with the point count, then one `x y` per line."""
    text = data.decode() if isinstance(data, (bytes, bytearray)) else data
    rows = [line.split() for line in text.splitlines() if line.strip()]
    if rows and len(rows[0]) == 1:  # the count header
        rows = rows[1:]
    points = np.array([[float(x), float(y)] for x, y, *_ in rows], dtype=np.float32)
    if num_points is not None and len(points) != num_points:
        raise ValueError(f"Expected {num_points} landmarks, got {len(points)}.")
    return points


def lapa_shards(root: str | os.PathLike, split: str = "train", num_shards: int = 1) -> list[Shard]:
    """Shards of the raw LaPa release: `root/<split>/images/<name>.jpg`, `root/<split>/labels/<name>.png` (11-class
    ids, `labels.LAPA_LABELS`), `root/<split>/landmarks/<name>.txt` (106 points: a `106` line, then `x y` lines).

    Records: `image` (JPEG bytes), `mask` (the label PNG bytes, already in LaPa order), `landmarks` `(106, 2)` and
    `landmarks_5` `(5, 2)` (`lapa_landmarks_5`), in original pixel coordinates (SegFace rescales them to R x R along
    with the non-aspect-preserving resize).
    """
    return _make_shards("lapa", root, num_shards, split=split)


def read_lapa(location: str) -> Iterator[Record]:
    root, params = _parse_location(location)
    folder = root / params.get("split", "train")
    images = sorted(p for p in (folder / "images").iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    for path in _take_shard(images, params):
        fields: dict[str, Any] = {"image": path.read_bytes(), "mask": (folder / "labels" / f"{path.stem}.png").read_bytes()}
        landmark_file = folder / "landmarks" / f"{path.stem}.txt"
        if landmark_file.exists():
            points = read_landmarks_txt(landmark_file.read_text(), 106)
            fields["landmarks"], fields["landmarks_5"] = points, lapa_landmarks_5(points)
        yield Record(f"lapa/{folder.name}/{path.stem}", fields)


# ---------------------------------------------------------------------------------------------------------- Helen


def landmarks_68_to_5(landmarks_68: np.ndarray) -> np.ndarray:
    """Eye centroids (36-41, 42-47), nose tip 30, mouth corners 48 and 54 of the iBUG 68 points."""
    points = np.asarray(landmarks_68, dtype=np.float32)
    return np.stack([points[36:42].mean(0), points[42:48].mean(0), points[30], points[48], points[54]]).astype(np.float32)


def helen_crop_box(landmarks: np.ndarray, width: int, height: int, scale: float = 1.2) -> tuple[int, int, int, int]:
    """SegFace's Helen crop `(x1, y1, x2, y2)`: a square of side `int(scale * max(w, h))` of the landmark box
    (`w = max - min + 1`) centred on `int(min + w / 2)`, clipped at the image borders (no padding), with the same
    integer rounding as `datasets/helen.py`."""
    low, high = landmarks.min(0).astype(np.float32), landmarks.max(0).astype(np.float32)
    size = high - low + 1
    center = (low + size / 2).astype(np.int32)
    side = int(np.max(size) * scale)
    x1, y1 = (center - side // 2).tolist()
    x2, y2 = x1 + side, y1 + side
    return max(0, x1), max(0, y1), min(width, x2), min(height, y2)


def read_helen_landmarks(path: str | os.PathLike, scale: float = 0.5) -> dict[str, np.ndarray]:
    """`landmarks.txt` of the relabeled Helen: one line per image, 136 numbers (68 `x y` pairs) then the image name.
    SegFace multiplies the points by 0.5 (`scale`) to bring them to the resolution of the released images."""
    landmarks = {}
    for line in Path(path).read_text().splitlines():
        parts = line.split()
        if len(parts) >= 137:
            landmarks[parts[-1]] = np.asarray(parts[:136], dtype=np.float32).reshape(68, 2) * scale
    return landmarks


def helen_shards(root: str | os.PathLike, split: str = "train", num_shards: int = 1, crop: bool = True) -> list[Shard]:
    """Shards of the relabeled Helen (JPlin) as SegFace reads it: `root/<split>/<name>_image.jpg`,
    `root/<split>/<name>_label.png` (11 classes, `labels.HELEN_LABELS`; `<name>_viz.jpg` files are ignored) and
    `root/landmarks.txt` (see `read_helen_landmarks`); `split` is `train` or `test`.

    With `crop` (default) the reader applies SegFace's 1.2x square landmark crop (`helen_crop_box`): `image` becomes
    the cropped image as PNG bytes (lossless re-encoding), `mask` the cropped `np.uint8` map, and the landmarks are
    shifted into the crop; `crop_box` holds `(x1, y1, x2, y2)` in the original image. Without `crop`, the files are
    passed through (`mask` = the label PNG bytes) and `crop_box` tells the transform where to crop. Images without
    landmarks get no crop and no landmark fields.
    """
    return _make_shards("helen", root, num_shards, split=split, crop=int(crop))


def read_helen(location: str) -> Iterator[Record]:
    import PIL.Image

    root, params = _parse_location(location)
    folder = root / params.get("split", "train")
    crop = params.get("crop", "1") == "1"
    landmark_file = root / "landmarks.txt"
    landmarks = read_helen_landmarks(landmark_file) if landmark_file.exists() else {}
    names = sorted(p.name[: -len("_image.jpg")] for p in folder.glob("*_image.jpg"))
    for name in _take_shard(names, params):
        image_data = (folder / f"{name}_image.jpg").read_bytes()
        mask_data = (folder / f"{name}_label.png").read_bytes()
        fields: dict[str, Any] = {"image": image_data, "mask": mask_data}
        points = landmarks.get(name)
        if points is not None:
            image = PIL.Image.open(io.BytesIO(image_data))
            box = helen_crop_box(points, *image.size)
            fields["crop_box"] = np.array(box, dtype=np.int64)
            if crop:
                x1, y1, x2, y2 = box
                fields["image"] = _encode_png(np.asarray(image.convert("RGB"))[y1:y2, x1:x2])
                fields["mask"] = np.ascontiguousarray(decode_mask({"mask": mask_data})[y1:y2, x1:x2])
                points = points - np.array([x1, y1], dtype=np.float32)
            fields["landmarks"], fields["landmarks_5"] = points.astype(np.float32), landmarks_68_to_5(points)
        yield Record(f"helen/{folder.name}/{name}", fields)


# ---------------------------------------------------------------------------------------- image / mask folders


def image_mask_folder_shards(
    root: str | os.PathLike, images: str = "images", masks: str = "masks", num_shards: int = 1
) -> list[Shard]:
    """Shards of a folder of images and a parallel folder of label maps paired by file stem
    (`root/<images>/<name>.<jpg|png|...>` and `root/<masks>/<name>.png`), as in many Hub face-parsing datasets.
    Records: `image` (bytes) and `mask` (the mask PNG bytes, labels passed through unchanged). Images without a mask
    are skipped.

    For parquet files with an image column and a mask column use the generic reader
    (`resolve_train_files(["data/*.parquet"])`): each column becomes a field of that name, image structs are
    unwrapped to bytes, and `decode_mask` finds a column named `mask`, `label`, `annotation` or `segmentation`;
    `streaming.decode_image` finds a column named `image` (or `jpg`, `png`, ...). WebDataset tars work the same way
    with members `<key>.jpg` + `<key>.mask.png` (field `mask.png`).
    """
    return _make_shards("image_mask_folder", root, num_shards, images=images, masks=masks)


def read_image_mask_folder(location: str) -> Iterator[Record]:
    root, params = _parse_location(location)
    image_folder, mask_folder = root / params.get("images", "images"), root / params.get("masks", "masks")
    pairs = []
    for path in sorted(p for p in image_folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS):
        mask = mask_folder / f"{path.stem}.png"
        if mask.exists():
            pairs.append((path, mask))
    for image_path, mask_path in _take_shard(pairs, params):
        yield Record(str(image_path.relative_to(root)), {"image": image_path.read_bytes(), "mask": mask_path.read_bytes()})


# ------------------------------------------------------------------------------------------ CE7454 course release


def ce7454_rows(root: str | os.PathLike) -> list[dict[str, str]]:
    """Rows of `root/index.csv` (`image`, `mask` (absent for the unlabelled test folder), ..., `mirrored`), in file
    order (sorted by image name)."""
    with open(Path(root) / "index.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def ce7454_split_rows(root: str | os.PathLike, split: str = "all", num_eval: int = 40) -> list[dict[str, str]]:
    """The dev split of the CE7454 release, which defines none itself: `train` = all rows of `index.csv` but the last
    `num_eval`, `eval` = the last `num_eval` rows, `all` = every row. `index.csv` is sorted by image name (random hex
    ids), so this is a fixed pseudo-random split: 160 train / 40 eval for `dev_200`."""
    rows = ce7454_rows(root)
    if split == "all":
        return rows
    if not 0 < num_eval < len(rows):
        raise ValueError(f"num_eval must be in 1..{len(rows) - 1}, got {num_eval}.")
    if split == "train":
        return rows[:-num_eval]
    if split == "eval":
        return rows[-num_eval:]
    raise ValueError(f"split must be train, eval or all; got {split!r}.")


def ce7454_shards(
    root: str | os.PathLike,
    split: str = "all",
    num_eval: int = 40,
    num_shards: int = 1,
    label_order: str = "A",
    fix_mirrored: bool = True,
) -> list[Shard]:
    """Shards of the CE7454 CelebAMask-HQ course release (`realdata/celebamask_hq_ce7454_parsing/dev_200` or
    `unlabeled_test_public_100`): `root/index.csv`, `root/images/<hex>.jpg` (512 px) and `root/masks/<hex>.png`
    (512 px palette PNG, pixel = class id in CelebAMask-HQ **order B**).

    Records: `image` (JPEG bytes) and, when the row has a mask, `mask` (`np.uint8`): remapped to order A
    (`ORDER_B_TO_A`; SegFace/FaRL/facer order) unless `label_order="B"`, and for rows with `mirrored=1` (images that
    are horizontal mirrors of CelebA-HQ whose masks were mirrored without exchanging left and right) the ear, brow
    and eye classes are swapped back (`swap_left_right`) when `fix_mirrored`, so that `left_*` is the subject's left
    as in every other image. `split`/`num_eval`: see `ce7454_split_rows`.
    """
    if label_order not in ("A", "B"):
        raise ValueError(f"label_order must be 'A' or 'B', got {label_order!r}.")
    return _make_shards(
        "ce7454", root, num_shards, split=split, num_eval=num_eval, label_order=label_order, fix_mirrored=int(fix_mirrored)
    )


def read_ce7454(location: str) -> Iterator[Record]:
    root, params = _parse_location(location)
    rows = ce7454_split_rows(root, params.get("split", "all"), int(params.get("num_eval", 40)))
    to_a, fix_mirrored = params.get("label_order", "A") == "A", params.get("fix_mirrored", "1") == "1"
    for row in _take_shard(rows, params):
        fields: dict[str, Any] = {"image": (root / row["image"]).read_bytes()}
        if row.get("mask"):
            mask = _read_grey(root / row["mask"])
            if fix_mirrored and row.get("mirrored", "0").strip() == "1":
                mask = swap_left_right(mask)  # the same id pairs in order A and B
            fields["mask"] = ORDER_B_TO_A[mask] if to_a else mask.astype(np.uint8)
        fields["mirrored"] = int(row.get("mirrored", "0") or 0)
        yield Record(f"ce7454/{Path(row['image']).stem}", fields)


# ------------------------------------------------------------------------------------------------- registration

READER_KINDS: dict[str, Callable[[str], Iterator[Record]]] = {
    "celebamask_hq": read_celebamask_hq,
    "lapa": read_lapa,
    "helen": read_helen,
    "ce7454": read_ce7454,
    "image_mask_folder": read_image_mask_folder,
}


def register_readers() -> None:
    """Adds this module's shard kinds to `streaming.READERS` (idempotent; done at import time)."""
    for kind, reader in READER_KINDS.items():
        streaming.READERS.setdefault(kind, reader)


register_readers()


__all__ = [
    "CELEBAMASK_HQ_PARTS_ORDER_A",
    "CELEBAMASK_HQ_PARTS_ORDER_B",
    "ORDER_A_TO_B",
    "ORDER_B_TO_A",
    "READER_KINDS",
    "celebamask_hq_shards",
    "celebamask_hq_split",
    "ce7454_shards",
    "ce7454_split_rows",
    "decode_mask",
    "helen_crop_box",
    "helen_shards",
    "image_mask_folder_shards",
    "landmarks_68_to_5",
    "lapa_landmarks_5",
    "lapa_shards",
    "paint_celebamask_parts",
    "register_readers",
    "swap_left_right",
]
