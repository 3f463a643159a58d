"""Deterministic, resumable streaming of face images from WebDataset tars, parquet files, image folders, Hub dataset
repositories or the built-in synthetic faces.

The order of samples is defined once, independently of how many processes and DataLoader workers read it:

* every shard is a *stream* that loops over its records forever (one pass = one epoch of that shard), optionally through
  a shuffle buffer seeded by (seed, shard, epoch);
* the global sequence interleaves the streams round-robin: global sample `i` is the `i // K`-th record of stream `i % K`
  (`K` = number of shards);
* process `r` of `W` takes the global samples `i ≡ r (mod W)`; its DataLoader worker `w` of `N` takes every `N`-th of
  those. This needs `K % (W * N) == 0`, so that every stream is read by exactly one worker.

Hence one process with batch `2b` sees, at every step, exactly the union of what two processes with batch `b` see, each
record is read once per epoch, and the position in the stream is a single integer: resuming skips that many records of
each stream without decoding them. A record that cannot be decoded becomes a *skip marker* that still counts as a
position, so resuming stays exact on dirty data; a broken tar ends that shard's pass early. Nothing on the data side
raises during a run; problems are counted and logged.
"""

from __future__ import annotations

import glob
import io
import json
import logging
import os
import tarfile
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import IterableDataset, get_worker_info


logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
SKIP = "__skip__"  # key of a skip marker: {"__skip__": "reason"}


@dataclass(frozen=True)
class Shard:
    """One unit of the stream: `kind` is webdataset, parquet, imagefolder or synthetic."""

    kind: str
    location: str
    options: tuple = ()


@dataclass
class Record:
    """A raw, undecoded sample: `fields` maps a field name (file extension or column) to bytes or a value."""

    key: str
    fields: dict[str, Any]
    epoch: int = 0


# ---------------------------------------------------------------------------------------------------------- readers


def _open(location: str):
    if "://" in location:  # hf://datasets/... and other fsspec URLs
        import fsspec

        return fsspec.open(location, "rb").open()
    return open(location, "rb")


def read_webdataset(location: str) -> Iterator[Record]:
    """Group tar members by key (`dir/name.ext` -> key `dir/name`); a truncated or corrupt tar ends the shard."""
    current, fields = None, {}
    try:
        with _open(location) as stream, tarfile.open(fileobj=stream, mode="r|*") as archive:
            for member in archive:
                if not member.isfile():
                    continue
                directory, name = os.path.split(member.name)
                stem, _, extension = name.partition(".")
                key = os.path.join(directory, stem)
                if key != current and fields:
                    yield Record(current, fields)
                    fields = {}
                current = key
                data = archive.extractfile(member).read()
                if len(data) != member.size:
                    raise tarfile.ReadError(f"unexpected end of data in {member.name}")
                fields[extension.lower()] = data
    except (tarfile.TarError, OSError, EOFError) as error:
        logger.warning("Shard %s is broken after %s: %s; skipping the rest of it.", location, current, error)
        yield Record(f"{location}#broken", {SKIP: "broken_shard"})
        return
    if fields:
        yield Record(current, fields)


def read_parquet(location: str) -> Iterator[Record]:
    """Rows of a parquet file; image columns stored as `{"bytes", "path"}` structs are unwrapped to bytes."""
    import pyarrow.parquet as pq

    try:
        with _open(location) as stream:
            rows = 0
            for batch in pq.ParquetFile(stream).iter_batches(batch_size=256):
                for row in batch.to_pylist():
                    fields = {name: value["bytes"] if isinstance(value, dict) and "bytes" in value else value for name, value in row.items()}
                    yield Record(f"{location}#{rows}", fields)
                    rows += 1
    except (OSError, ValueError) as error:  # pyarrow raises ArrowInvalid (a ValueError) on corrupt files
        logger.warning("Parquet shard %s is unreadable: %s; skipping the rest of it.", location, error)
        yield Record(f"{location}#broken", {SKIP: "broken_shard"})


def read_imagefolder(location: str) -> Iterator[Record]:
    """Every image file below a folder, sorted; a sibling `<name>.json` or `.txt` is attached to its image."""
    root = Path(location)
    for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS):
        fields = {path.suffix.lower().lstrip("."): path.read_bytes()}
        for extension in ("json", "txt"):
            sidecar = path.with_suffix(f".{extension}")
            if sidecar.exists():
                fields[extension] = sidecar.read_bytes()
        yield Record(str(path.relative_to(root)), fields)


def read_synthetic(location: str, options: tuple) -> Iterator[Record]:
    """Synthetic faces: shard `s` of `K` yields indices s, s + K, ... below `num_samples`."""
    from .synthetic import SyntheticFaces

    settings = dict(options)
    shard, num_shards = int(location), settings.pop("num_shards")
    num_samples = settings.pop("num_samples")
    faces = SyntheticFaces(**settings)
    for index in range(shard, num_samples, num_shards):
        yield Record(f"synthetic/{index}", {"index": index, "faces": faces})


READERS: dict[str, Callable[[str], Iterator[Record]]] = {
    "webdataset": read_webdataset,
    "parquet": read_parquet,
    "imagefolder": read_imagefolder,
}


def read_shard(shard: Shard) -> Iterator[Record]:
    if shard.kind == "synthetic":
        return read_synthetic(shard.location, shard.options)
    return READERS[shard.kind](shard.location)


# ------------------------------------------------------------------------------------------------------- resolution


def shard_kind(path: str) -> str:
    if path.endswith(".tar") or path.endswith(".tar.gz") or path.endswith(".tgz"):
        return "webdataset"
    if path.endswith(".parquet"):
        return "parquet"
    if os.path.isdir(path):
        return "imagefolder"
    raise ValueError(
        f"Unknown data format for {path!r}: expected WebDataset shards (.tar), parquet files (.parquet) or image folders."
    )


def resolve_train_files(patterns: list[str]) -> list[Shard]:
    """Expand glob patterns into sorted shards; every pattern must match something."""
    shards = []
    for pattern in patterns:
        matches = sorted(glob.glob(os.path.expanduser(pattern)))
        if not matches:
            raise ValueError(f"--train_files pattern {pattern!r} matches no file or folder.")
        shards += [Shard(shard_kind(path), path) for path in matches]
    return shards


def resolve_dataset_name(dataset_name: str, split: str = "train", revision: str | None = None) -> list[Shard]:
    """A local dataset folder or a Hub dataset repository: its tar/parquet files of `split` become the shards."""
    if os.path.isdir(dataset_name):
        files = sorted(str(p) for p in Path(dataset_name).rglob("*") if p.is_file())
        prefix = ""
    else:
        from huggingface_hub import HfApi

        files = sorted(HfApi().list_repo_files(dataset_name, repo_type="dataset", revision=revision))
        prefix = f"hf://datasets/{dataset_name}@{revision or 'main'}/"
    data = [f for f in files if f.endswith((".tar", ".parquet"))]
    in_split = [f for f in data if split in Path(f).name or f"/{split}/" in f"/{f}"]
    selected = in_split or data
    if not selected:
        raise ValueError(f"Dataset {dataset_name!r} has no .tar or .parquet files (found {files[:5]}...).")
    return [Shard(shard_kind(f), prefix + f) for f in selected]


def synthetic_shards(num_samples: int, num_shards: int = 8, seed: int = 0, image_size: int = 128, num_identities: int = 100) -> list[Shard]:
    options = (("num_shards", num_shards), ("num_samples", num_samples), ("seed", seed), ("image_size", image_size), ("num_identities", num_identities))
    return [Shard("synthetic", str(shard), options) for shard in range(num_shards)]


# ---------------------------------------------------------------------------------------------------------- streams


def _shuffled(records: Iterator[Record], buffer_size: int, rng: np.random.Generator) -> Iterator[Record]:
    """Classic streaming shuffle buffer (as in WebDataset / datasets)."""
    buffer: list[Record] = []
    for record in records:
        if len(buffer) < buffer_size:
            buffer.append(record)
            continue
        index = int(rng.integers(buffer_size))
        buffer[index], record = record, buffer[index]
        yield record
    rng.shuffle(buffer)
    yield from buffer


def stream_records(shard: Shard, shard_index: int, seed: int, shuffle_buffer: int, start_epoch: int = 0) -> Iterator[Record]:
    """The endless record stream of one shard: epoch after epoch, shuffled per epoch when `shuffle_buffer > 1`."""
    epoch = start_epoch
    while True:
        records = read_shard(shard)
        if shuffle_buffer > 1:
            records = _shuffled(records, shuffle_buffer, np.random.default_rng([seed, shard_index, epoch]))
        count = 0
        for record in records:
            record.epoch = epoch
            count += 1
            yield record
        if count == 0:
            logger.error("Shard %s yielded no record; it is left out from now on.", shard.location)
            return
        epoch += 1


class FaceStream(IterableDataset):
    """Map-free streaming dataset: yields `transform(record)` dicts, or `{SKIP: reason}` markers, one per position.

    Args:
        shards: the shards, in a fixed order (every process must pass the same list).
        transform: decodes and augments a `Record` into a dict of tensors; may raise to skip a sample.
        rank, world_size: this process's place among the training processes.
        seed: seeds the shuffle buffers (and is available to the transform through the record key).
        shuffle_buffer: per-shard shuffle buffer size (0 or 1 = shard order).
        start_position: number of positions this process has already consumed (resume).
        start_epoch: epoch number of the first pass over each shard (`set_epoch` changes it before iterating).
    """

    def __init__(
        self,
        shards: list[Shard],
        transform: Callable[[Record], dict[str, Any]],
        rank: int = 0,
        world_size: int = 1,
        seed: int = 0,
        shuffle_buffer: int = 0,
        start_position: int = 0,
        start_epoch: int = 0,
    ):
        super().__init__()
        if not shards:
            raise ValueError("No shards to stream from.")
        if len(shards) % world_size != 0:
            raise ValueError(
                f"The number of shards ({len(shards)}) must be a multiple of the number of processes ({world_size})."
            )
        self.shards, self.transform = list(shards), transform
        self.rank, self.world_size, self.seed = rank, world_size, seed
        self.shuffle_buffer, self.start_position, self.start_epoch = shuffle_buffer, start_position, start_epoch

    def set_epoch(self, epoch: int) -> None:
        """Start every shard's pass at `epoch` (a new shuffle and new augmentations). The stream itself never ends:
        each shard moves on to its next epoch by itself, so this is only needed to restart at a given epoch."""
        self.start_epoch = epoch

    def check_workers(self, num_workers: int) -> None:
        workers = max(1, num_workers)
        if len(self.shards) % (self.world_size * workers) != 0:
            raise ValueError(
                f"The number of shards ({len(self.shards)}) must be a multiple of processes x DataLoader workers "
                f"({self.world_size} x {workers}) so that every shard is read by exactly one worker."
            )

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, num_workers = (info.id, info.num_workers) if info is not None else (0, 1)
        self.check_workers(num_workers)
        for record in self.local_records(worker, num_workers):
            yield self._apply_transform(record)

    def local_records(self, worker: int = 0, num_workers: int = 1) -> Iterator[Record]:
        """Records of this process's positions `start_position + worker + k * num_workers`, k = 0, 1, ..."""
        local_streams = len(self.shards) // self.world_size  # this process's streams, visited round-robin
        first = self.start_position + worker
        streams: dict[int, Iterator[Record]] = {}
        empty: set[int] = set()
        position = first
        while len(empty) < local_streams // num_workers:  # the streams of this worker are not all empty
            local = position % local_streams
            position += num_workers
            if local not in streams and local not in empty:
                streams[local] = self._open_stream(local, skip=max(0, -(-(first - local) // local_streams)))
            record = None if local in empty else next(streams[local], None)
            if record is None:  # keeps positions aligned: an empty shard still takes its turns, as skips
                empty.add(local)
                record = Record(f"{self.shards[self.rank + self.world_size * local].location}#empty", {SKIP: "empty_shard"})
            yield record

    def _open_stream(self, local: int, skip: int) -> Iterator[Record]:
        shard_index = self.rank + self.world_size * local
        records = stream_records(self.shards[shard_index], shard_index, self.seed, self.shuffle_buffer, self.start_epoch)
        for _ in range(skip):  # fast-forward without decoding
            if next(records, None) is None:
                break
        return records

    def _apply_transform(self, record: Record) -> dict[str, Any]:
        if SKIP in record.fields:
            return {SKIP: record.fields[SKIP]}
        try:
            return self.transform(record)
        except Exception as error:  # noqa: BLE001 - a bad sample must never stop a run
            logger.debug("Skipping %s: %s", record.key, error)
            return {SKIP: f"undecodable:{type(error).__name__}"}


# ------------------------------------------------------------------------------------------------------- batching


class Batcher:
    """Turns the per-position stream of a DataLoader into full batches, counting positions and skipped samples.

    `position` is what a checkpoint stores: the number of stream positions consumed by this process.
    """

    def __init__(self, loader, batch_size: int, start_position: int = 0):
        self.loader, self.batch_size = loader, batch_size
        self.position = start_position
        self.skipped: Counter[str] = Counter()
        self._iterator = None

    def next_batch(self) -> dict[str, torch.Tensor]:
        if self._iterator is None:
            self._iterator = iter(self.loader)
        samples = []
        while len(samples) < self.batch_size:
            sample = next(self._iterator)
            self.position += 1
            if SKIP in sample:
                self.skipped[sample[SKIP]] += 1
                continue
            samples.append(sample)
        return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}

    def log_skipped(self) -> None:
        total = sum(self.skipped.values())
        if total:
            logger.warning("Skipped %d samples: %s", total, dict(self.skipped))
        else:
            logger.info("Skipped 0 samples.")


def decode_json(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray)):
        return json.loads(value.decode("utf-8"))
    return value


def image_bytes(record: Record) -> bytes:
    for name in ("jpg", "jpeg", "png", "webp", "image", "img", "bmp", "tif", "tiff"):
        value = record.fields.get(name)
        if value is not None:
            return value
    raise ValueError(f"Record {record.key} has no image field (fields: {sorted(record.fields)}).")


def decode_image(record: Record):
    """The record's image as a PIL RGB image (grayscale, RGBA, CMYK, palette and 16-bit inputs converted)."""
    import PIL.Image

    from ..image_utils import standardize_images

    if "faces" in record.fields:  # synthetic
        return record.fields["faces"].sample(record.fields["index"])["image"]
    image = PIL.Image.open(io.BytesIO(image_bytes(record)))
    image.load()  # decode now, so truncated files fail here
    if image.mode == "RGB":
        return image
    standardized = standardize_images(image)
    if isinstance(standardized, PIL.Image.Image):
        return standardized.convert("RGB")
    return PIL.Image.fromarray(standardized)
