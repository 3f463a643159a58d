"""`FaceParsingTransform`: shapes, SegFace numerics, nearest labels, deterministic augmentation, label validation and
the file conventions (WebDataset image + mask members, parquet columns) through `FaceStream`."""

import io
import tarfile
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from faceformers.data.parsing import FaceParsingTransform, evaluation_batches, mask_field_name
from faceformers.data.streaming import SKIP, FaceStream, Record, resolve_train_files, synthetic_shards
from faceformers.data.synthetic import SyntheticFaces

from ..data_utils import add_member, encoded_image


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def png(array: np.ndarray, mode: str = "L") -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).convert(mode).save(buffer, format="PNG")
    return buffer.getvalue()


def blocks(size: int = 40, block: int = 8, num_labels: int = 11, seed: int = 0) -> np.ndarray:
    """A label map of `block x block` squares of random class ids."""
    coarse = np.random.default_rng(seed).integers(0, num_labels, (size // block, size // block), dtype=np.uint8)
    return np.kron(coarse, np.ones((block, block), dtype=np.uint8))


def file_record(key: str = "a/0", label: np.ndarray | None = None, mask_name: str = "mask.png") -> Record:
    label = blocks() if label is None else label
    image = encoded_image(np.random.default_rng(1), size=label.shape[0], fmt="JPEG")
    return Record(key, {"jpg": image, mask_name: png(label)})


def synthetic_record(index: int = 3, key: str | None = None) -> Record:
    faces = SyntheticFaces(seed=0, image_size=64)
    return Record(key or f"synthetic/{index}", {"index": index, "faces": faces})


@pytest.mark.parametrize("label_field, num_labels", [("mask", 19), ("mask_lapa", 11), ("mask_helen", 11)])
def test_synthetic_shapes_and_label_fields(label_field, num_labels):
    transform = FaceParsingTransform(32, MEAN, STD, label_field=label_field, num_labels=num_labels)
    sample = transform(synthetic_record())
    assert sample["pixel_values"].shape == (3, 32, 32) and sample["pixel_values"].dtype == torch.float32
    assert sample["labels"].shape == (32, 32) and sample["labels"].dtype == torch.int64
    expected = SyntheticFaces(seed=0, image_size=64).sample(3)[label_field]
    assert set(sample["labels"].unique().tolist()) <= set(np.unique(expected).tolist())
    assert int(sample["labels"].max()) < num_labels


def test_matches_the_segface_pil_processor():
    from faceformers.models.segface import SegFaceImageProcessorPil

    if SegFaceImageProcessorPil is None:
        pytest.skip("transformers without the PIL backend")
    record = file_record(label=blocks(size=48, block=6))
    processor = SegFaceImageProcessorPil(size={"height": 32, "width": 32})
    transform = FaceParsingTransform.from_image_processor(processor, num_labels=11)
    sample = transform(record)
    image = Image.open(io.BytesIO(record.fields["jpg"])).convert("RGB")
    label = np.array(Image.open(io.BytesIO(record.fields["mask.png"])))
    expected = processor(image, segmentation_maps=label, return_tensors="pt")
    torch.testing.assert_close(sample["pixel_values"], expected["pixel_values"][0], atol=1e-5, rtol=0)
    assert torch.equal(sample["labels"], expected["labels"][0])


def test_nearest_resize_keeps_exact_label_ids():
    label = blocks(size=40, block=8)
    sample = FaceParsingTransform(5, MEAN, STD, num_labels=11)(file_record(label=label))
    assert torch.equal(sample["labels"], torch.from_numpy(label[4::8, 4::8].astype(np.int64)))
    up = FaceParsingTransform(80, MEAN, STD, num_labels=11)(file_record(label=label))
    assert torch.equal(up["labels"], torch.from_numpy(np.kron(label, np.ones((2, 2), dtype=np.uint8)).astype(np.int64)))


def test_augmentation_is_a_deterministic_function_of_seed_and_record():
    transform = FaceParsingTransform(32, MEAN, STD, label_field="mask_lapa", augment=True, seed=5, num_labels=11)
    first, again = transform(synthetic_record(key="k1")), transform(synthetic_record(key="k1"))
    assert torch.equal(first["pixel_values"], again["pixel_values"]) and torch.equal(first["labels"], again["labels"])
    other = transform(synthetic_record(key="k2"))
    assert not torch.equal(first["pixel_values"], other["pixel_values"])
    plain = FaceParsingTransform(32, MEAN, STD, label_field="mask_lapa", num_labels=11)(synthetic_record(key="k1"))
    assert not torch.equal(first["labels"], plain["labels"])
    assert int(first["labels"].max()) < 11 and int(first["labels"].min()) >= 0


def test_out_of_range_label_ids_raise_and_255_is_allowed():
    label = blocks(num_labels=19)
    label[:4, :4] = 255
    FaceParsingTransform(16, MEAN, STD, num_labels=19)(file_record(label=label))  # ignore index: fine
    label[-4:, -4:] = 30
    with pytest.raises(ValueError, match=r"ids \[30\] outside \[0, 19\)"):
        FaceParsingTransform(16, MEAN, STD, num_labels=19)(file_record(label=label))


def test_missing_mask_or_size_mismatch_raise():
    with pytest.raises(ValueError, match="no label map"):
        FaceParsingTransform(16, MEAN, STD)(Record("k", {"jpg": encoded_image(np.random.default_rng(0))}))
    record = Record("k", {"jpg": encoded_image(np.random.default_rng(0), size=40), "mask.png": png(blocks(size=32))})
    with pytest.raises(ValueError, match="differ"):
        FaceParsingTransform(16, MEAN, STD)(record)


def test_mask_field_convention():
    assert mask_field_name(Record("k", {"jpg": b"x", "png": b"y"})) == "png"
    assert mask_field_name(Record("k", {"png": b"x", "mask.png": b"y"})) == "mask.png"
    assert mask_field_name(Record("k", {"image": b"x", "label": b"y"})) == "label"
    assert mask_field_name(Record("k", {"image": b"x", "mask_lapa": b"y", "mask": b"z"}), "mask_lapa") == "mask_lapa"
    with pytest.raises(ValueError):
        mask_field_name(Record("k", {"png": b"x"}))


def write_parsing_tar(path, num: int = 8, bad: tuple = (), seed: int = 0, mask_name: str = "mask.png") -> None:
    rng = np.random.default_rng(seed)
    with tarfile.open(path, "w") as archive:
        for index in range(num):
            label = blocks(seed=index)
            if index in bad:
                label[0, 0] = 40
            add_member(archive, f"{index:05d}.jpg", encoded_image(rng, size=40))
            add_member(archive, f"{index:05d}.{mask_name}", png(label))


@pytest.mark.parametrize("mask_name", ["mask.png", "png"])
def test_webdataset_with_image_and_mask_members_through_facestream(tmp_path, mask_name):
    write_parsing_tar(tmp_path / "train-0.tar", bad=(2,), mask_name=mask_name)
    write_parsing_tar(tmp_path / "train-1.tar", seed=1, mask_name=mask_name)
    shards = resolve_train_files([str(tmp_path / "*.tar")])
    transform = FaceParsingTransform(16, MEAN, STD, num_labels=11)
    stream = iter(FaceStream(shards, transform))
    samples = [next(stream) for _ in range(16)]
    skipped = [s for s in samples if SKIP in s]
    assert len(skipped) == 1 and skipped[0][SKIP] == "undecodable:ValueError"
    good = [s for s in samples if SKIP not in s]
    assert all(s["pixel_values"].shape == (3, 16, 16) and s["labels"].shape == (16, 16) for s in good)

    counter = Counter()
    batches = list(evaluation_batches(shards, transform, batch_size=4, skipped=counter))
    assert [len(b["labels"]) for b in batches] == [4, 4, 4, 3] and counter == {"undecodable:ValueError": 1}


def test_parquet_image_and_label_columns(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    rows = [{"image": {"bytes": encoded_image(rng, size=40), "path": None}, "label": {"bytes": png(blocks(seed=i)), "path": None}} for i in range(4)]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "test.parquet")
    shards = resolve_train_files([str(tmp_path / "test.parquet")])
    batches = list(evaluation_batches(shards, FaceParsingTransform(16, MEAN, STD, num_labels=11), batch_size=8))
    assert len(batches) == 1 and batches[0]["labels"].shape == (4, 16, 16)


def test_evaluation_batches_split_synthetic_shards_across_processes():
    shards = synthetic_shards(12, 4, seed=3, image_size=64)
    transform = FaceParsingTransform(32, MEAN, STD, num_labels=19)
    everything = sum(len(b["labels"]) for b in evaluation_batches(shards, transform, 5))
    parts = [sum(len(b["labels"]) for b in evaluation_batches(shards, transform, 5, rank, 2)) for rank in range(2)]
    assert everything == 12 and parts == [6, 6]
