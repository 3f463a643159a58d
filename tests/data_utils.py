"""Tiny on-disk datasets for tests: WebDataset tars, parquet files and image folders of generated images."""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def encoded_image(rng: np.random.Generator, size: int = 40, fmt: str = "JPEG", mode: str = "RGB") -> bytes:
    """A smooth random image (blurred noise) encoded as `fmt`."""
    coarse = rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)
    image = Image.fromarray(coarse).resize((size, size), Image.BILINEAR).convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def write_webdataset(root: Path, num_shards: int = 4, per_shard: int = 8, seed: int = 0, corrupt: dict | None = None) -> list[Path]:
    """`num_shards` tars of `per_shard` samples (`<key>.jpg` + `<key>.json`). `corrupt` maps a shard index to a list of
    sample indices whose image bytes are garbage."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for shard in range(num_shards):
        path = root / f"train-{shard:06d}.tar"
        with tarfile.open(path, "w") as archive:
            for index in range(per_shard):
                key = f"{shard:03d}{index:05d}"
                image = encoded_image(rng)
                if index in (corrupt or {}).get(shard, []):
                    image = image[: len(image) // 3]  # truncated JPEG
                add_member(archive, f"{key}.jpg", image)
                add_member(archive, f"{key}.json", json.dumps({"id": key}).encode())
        paths.append(path)
    return paths


def truncate_file(path: Path, keep_fraction: float = 0.55) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep_fraction)])
