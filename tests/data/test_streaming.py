import io
import tarfile
from collections import Counter

import numpy as np
import PIL.Image
import pytest
import torch
from torch.utils.data import DataLoader

from faceformers.data.streaming import SKIP, Batcher, FaceStream, Record, decode_image, resolve_train_files
from faceformers.data.transforms import MCFPretrainingTransform

from ..data_utils import truncate_file, write_webdataset


def keys_of(records):
    return [record.key for record in records]


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


@pytest.fixture
def shards(tmp_path):
    return resolve_train_files([str(tmp_path / "wds" / "*.tar")]) if write_webdataset(tmp_path / "wds", num_shards=4, per_shard=6) else None


def key_transform(record: Record) -> dict:
    return {"key": record.key, "epoch": record.epoch}


def test_global_order_is_independent_of_processes_and_workers(shards):
    single = keys_of(take(FaceStream(shards, key_transform).local_records(), 48))
    # 2 processes x 2 workers: process r, worker w yields positions w, w + 2, ...; the loader interleaves workers
    for world_size, num_workers in ((2, 1), (2, 2), (4, 1), (1, 4)):
        per_rank = []
        for rank in range(world_size):
            stream = FaceStream(shards, key_transform, rank=rank, world_size=world_size)
            workers = [stream.local_records(w, num_workers) for w in range(num_workers)]
            per_rank.append([next(workers[i % num_workers]).key for i in range(48 // world_size)])
        interleaved = [per_rank[i % world_size][i // world_size] for i in range(48)]
        assert interleaved == single, (world_size, num_workers)


def test_each_sample_once_per_epoch_across_processes_and_workers(shards):
    seen = Counter()
    for rank in range(2):
        stream = FaceStream(shards, key_transform, rank=rank, world_size=2, shuffle_buffer=4, seed=3)
        loader = DataLoader(stream, batch_size=None, num_workers=2)
        iterator = iter(loader)
        seen.update(next(iterator)["key"] for _ in range(12))  # 24 samples = one epoch over both ranks
    assert len(seen) == 24 and set(seen.values()) == {1}


def test_shuffle_changes_order_per_epoch_not_content(shards):
    stream = FaceStream(shards[:1], key_transform, shuffle_buffer=4, seed=0)
    records = take(stream.local_records(), 12)
    first, second = keys_of(records[:6]), keys_of(records[6:])
    assert sorted(first) == sorted(second) and first != second
    assert [r.epoch for r in records] == [0] * 6 + [1] * 6


def test_resume_position_reproduces_the_stream(shards):
    full = keys_of(take(FaceStream(shards, key_transform, shuffle_buffer=3, seed=1).local_records(), 40))
    resumed = keys_of(take(FaceStream(shards, key_transform, shuffle_buffer=3, seed=1, start_position=17).local_records(), 23))
    assert resumed == full[17:]
    for worker in range(2):  # with workers, the first position after resume goes to worker 0
        stream = FaceStream(shards, key_transform, shuffle_buffer=3, seed=1, start_position=17)
        assert keys_of(take(stream.local_records(worker, 2), 5)) == full[17 + worker :: 2][:5]


def test_shard_and_worker_counts_must_divide(shards):
    with pytest.raises(ValueError, match=r"number of shards \(4\) must be a multiple of the number of processes \(3\)"):
        FaceStream(shards, key_transform, world_size=3)
    with pytest.raises(ValueError, match=r"multiple of processes x DataLoader workers \(2 x 4\)"):
        FaceStream(shards, key_transform, world_size=2).check_workers(4)


def test_corrupt_images_and_truncated_tars_become_counted_skips(tmp_path):
    write_webdataset(tmp_path / "bad", num_shards=2, per_shard=6, corrupt={0: [1, 4]})
    truncate_file(tmp_path / "bad" / "train-000001.tar", 0.55)  # mid-member, as a cut download
    shards = resolve_train_files([str(tmp_path / "bad" / "*.tar")])
    transform = MCFPretrainingTransform(32, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    batcher = Batcher(DataLoader(FaceStream(shards, transform), batch_size=None), batch_size=4)
    for _ in range(5):
        batch = batcher.next_batch()
        assert batch["pixel_values"].shape == (4, 3, 32, 32) and torch.isfinite(batch["pixel_values"]).all()
    assert batcher.skipped["undecodable:OSError"] >= 2 and batcher.skipped["broken_shard"] >= 1


def test_unknown_formats_and_missing_files_fail_clearly(tmp_path):
    (tmp_path / "data.csv").write_text("a,b")
    with pytest.raises(ValueError, match="Unknown data format for .*data.csv"):
        resolve_train_files([str(tmp_path / "*.csv")])
    with pytest.raises(ValueError, match="matches no file or folder"):
        resolve_train_files([str(tmp_path / "missing-*.tar")])


@pytest.mark.parametrize("mode", ["L", "RGBA", "CMYK", "P", "I;16"])
def test_any_image_mode_decodes_to_rgb(mode):
    array = (np.arange(24 * 24) % 200).reshape(24, 24)
    image = PIL.Image.fromarray(array.astype(np.uint16 if mode == "I;16" else np.uint8))
    image = image if mode == "I;16" else image.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format="TIFF" if mode in ("CMYK", "I;16") else "PNG")
    decoded = decode_image(Record("k", {"png": buffer.getvalue()}))
    assert decoded.mode == "RGB" and decoded.size == (24, 24)


def test_transform_is_a_function_of_the_sample(shards):
    transform = MCFPretrainingTransform(32, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), seed=0)
    record = next(FaceStream(shards, key_transform).local_records())
    a, b = transform(record), transform(record)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert a["noise"].shape == (16,) and not torch.equal(a["noise"], a["momentum_noise"])
    record.epoch = 1
    assert not torch.equal(transform(record)["noise"], a["noise"])


def test_set_epoch_starts_a_new_shuffle(shards):
    stream = FaceStream(shards[:1], key_transform, shuffle_buffer=4, seed=0)
    epoch_1 = take(stream.local_records(), 12)[6:]
    stream.set_epoch(1)
    assert keys_of(take(stream.local_records(), 6)) == keys_of(epoch_1) and {r.epoch for r in epoch_1} == {1}


def test_parquet_imagefolder_and_dataset_folder_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    from faceformers.data.streaming import resolve_dataset_name

    from ..data_utils import encoded_image

    rng = np.random.default_rng(0)
    images = [encoded_image(rng) for _ in range(6)]
    (tmp_path / "hub_dataset" / "data").mkdir(parents=True)
    for part in range(2):
        table = pa.table({"image": [{"bytes": b, "path": None} for b in images[part * 3 : part * 3 + 3]], "label": [0, 1, 2]})
        pq.write_table(table, tmp_path / "hub_dataset" / "data" / f"train-{part:05d}-of-00002.parquet")
    (tmp_path / "folder" / "a").mkdir(parents=True)
    for index, data in enumerate(images[:4]):
        (tmp_path / "folder" / "a" / f"{index}.jpg").write_bytes(data)

    transform = MCFPretrainingTransform(32, 8, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    for shards, expected in (
        (resolve_dataset_name(str(tmp_path / "hub_dataset")), 6),
        (resolve_train_files([str(tmp_path / "hub_dataset" / "data" / "*.parquet")]), 6),
        (resolve_train_files([str(tmp_path / "folder")]), 4),
    ):
        stream = FaceStream(shards, transform)
        samples = take(iter(stream), expected)
        assert all(s["pixel_values"].shape == (3, 32, 32) for s in samples), shards[0].kind
        assert len({tuple(s["noise"][:3].tolist()) for s in samples}) == expected
