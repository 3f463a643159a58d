import io
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from faceformers.data import streaming
from faceformers.data.face_parsing_datasets import (
    CELEBAMASK_HQ_PARTS_ORDER_A,
    CELEBAMASK_HQ_PARTS_ORDER_B,
    ORDER_A_TO_B,
    ORDER_B_TO_A,
    READER_KINDS,
    ce7454_shards,
    celebamask_hq_shards,
    celebamask_hq_split,
    decode_mask,
    helen_crop_box,
    helen_shards,
    image_mask_folder_shards,
    lapa_shards,
    paint_celebamask_parts,
    swap_left_right,
)
from faceformers.data.labels import CELEBAMASK_HQ_LABELS
from faceformers.data.streaming import FaceStream, decode_image, read_shard, resolve_train_files


CE7454_DEV = Path(__file__).parents[2].parent / "shared" / "realdata" / "celebamask_hq_ce7454_parsing" / "dev_200"


def save_image(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)


def rgb(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def all_records(shards):
    return [record for shard in shards for record in read_shard(shard)]


# ---------------------------------------------------------------------------------------------------------- labels


def test_order_tables_match_names_and_labels():
    names = {"skin": "skin", "l_eye": "left_eye", "r_eye": "right_eye", "l_lip": "lower_lip", "u_lip": "upper_lip"}
    for b, part in enumerate(CELEBAMASK_HQ_PARTS_ORDER_B, start=1):
        a = ORDER_B_TO_A[b]
        assert CELEBAMASK_HQ_PARTS_ORDER_A[a - 1] == part
        if part in names:
            assert CELEBAMASK_HQ_LABELS[a] == names[part]
    assert ORDER_B_TO_A[0] == 0 and (ORDER_A_TO_B[ORDER_B_TO_A] == np.arange(19)).all()
    # spot checks against the table of ORIGINALS.md §3.2 (order A idx -> order B idx)
    assert [int(ORDER_A_TO_B[a]) for a in (1, 2, 3, 8, 10, 12, 13, 15, 18)] == [17, 1, 18, 4, 2, 12, 11, 3, 16]


def test_swap_left_right_pairs():
    mask = np.array([[0, 4, 5, 6], [7, 8, 9, 10]], dtype=np.uint8)
    assert swap_left_right(mask).tolist() == [[0, 5, 4, 7], [6, 9, 8, 10]]
    # the swap is valid in both orders: remapping commutes with it
    order_b = np.arange(19, dtype=np.uint8)[None]
    assert (ORDER_B_TO_A[swap_left_right(order_b)] == swap_left_right(ORDER_B_TO_A[order_b])).all()


def test_paint_order_later_parts_overwrite():
    skin = np.zeros((4, 4), np.uint8)
    skin[:, :] = 255
    nose = np.zeros((4, 4), np.uint8)
    nose[1:3, 1:3] = 255
    glasses = np.zeros((4, 4), np.uint8)
    glasses[1, :] = 255
    label = paint_celebamask_parts({"nose": nose, "skin": skin, "eye_g": glasses}, size=4)  # dict order is irrelevant
    assert label[0, 0] == 2 and label[2, 2] == 10 and (label[1] == 15).all()
    assert set(np.unique(label)) == {2, 10, 15}


# -------------------------------------------------------------------------------------------------- CelebAMask-HQ


def make_celebamask_hq(root: Path, orig_indices: list[int], with_partition_file: bool) -> None:
    lines = ["idx orig_idx orig_file"]
    for hq_id, orig_idx in enumerate(orig_indices):
        lines.append(f"{hq_id} {orig_idx} {orig_idx + 1:06d}.jpg")
        save_image(root / "CelebA-HQ-img" / f"{hq_id}.jpg", rgb(hq_id, 32))
        folder = root / "CelebAMask-HQ-mask-anno" / str(hq_id // 2000)
        skin = np.zeros((16, 16), np.uint8)
        skin[2:14, 2:14] = 255
        hair = np.zeros((16, 16), np.uint8)
        hair[:4] = 255
        save_image(folder / f"{hq_id:05d}_skin.png", skin)
        save_image(folder / f"{hq_id:05d}_hair.png", hair)
        if hq_id == 0:  # an RGB part mask, as some CelebAMask-HQ files are
            eye = np.zeros((16, 16, 3), np.uint8)
            eye[6:8, 10:12] = 255
            save_image(folder / f"{hq_id:05d}_l_eye.png", eye)
    (root / "CelebA-HQ-to-CelebA-mapping.txt").write_text("\n".join(lines) + "\n")
    if with_partition_file:
        partition = [f"{i + 1:06d}.jpg {0 if i < 162770 else 1 if i < 182637 else 2}" for i in sorted(set(orig_indices))]
        (root / "list_eval_partition.txt").write_text("\n".join(partition) + "\n")


@pytest.mark.parametrize("with_partition_file", [False, True])
def test_celebamask_hq_split_boundaries(tmp_path, with_partition_file):
    # orig_idx is 0-based: 162769 = 162770.jpg (last train), 162770 = 162771.jpg (first val), 182637 = 182638.jpg (test)
    orig = [5, 162769, 162770, 182636, 182637, 202598, 100]
    make_celebamask_hq(tmp_path, orig, with_partition_file)
    split = celebamask_hq_split(tmp_path)
    assert split == {"train": [0, 1, 6], "val": [2, 3], "test": [4, 5]}


def test_celebamask_hq_records_and_sharding(tmp_path):
    make_celebamask_hq(tmp_path, [5, 162769, 162770, 182637, 100, 7, 8], with_partition_file=False)
    shards = celebamask_hq_shards(tmp_path, "train", num_shards=2)
    assert [shard.kind for shard in shards] == ["celebamask_hq"] * 2
    keys = [[record.key for record in read_shard(shard)] for shard in shards]
    # train ids 0, 1, 4, 5, 6, dealt to the shards in turn
    assert keys == [["celebamask_hq/0", "celebamask_hq/4", "celebamask_hq/6"], ["celebamask_hq/1", "celebamask_hq/5"]]
    assert len(all_records(celebamask_hq_shards(tmp_path, "all", num_shards=3))) == 7
    record = next(read_shard(celebamask_hq_shards(tmp_path, "train", mask_at_image_size=False)[0]))
    mask = decode_mask(record)
    assert mask.shape == (16, 16) and decode_image(record).size == (32, 32)
    assert mask[0, 0] == 14 and mask[8, 8] == 2 and mask[6, 10] == 8 and mask[15, 15] == 0  # hair over skin, eye
    enlarged = decode_mask(next(read_shard(shards[0])))  # default: repeated to the image size
    assert enlarged.shape == (32, 32) and (enlarged == np.repeat(np.repeat(mask, 2, 0), 2, 1)).all()


def test_enlarged_mask_gives_the_same_nearest_resize():
    from faceformers.data.parsing import pil_nearest_indices

    mask = np.random.default_rng(0).integers(0, 19, (512, 512)).astype(np.uint8)
    enlarged = np.repeat(np.repeat(mask, 2, 0), 2, 1)
    for size in (224, 256, 448, 500):
        direct = mask[pil_nearest_indices(512, size)][:, pil_nearest_indices(512, size)]
        via = enlarged[pil_nearest_indices(1024, size)][:, pil_nearest_indices(1024, size)]
        assert (direct == via).all()


# ----------------------------------------------------------------------------------------------------------- LaPa


def test_lapa_records_landmarks_5(tmp_path):
    for index in range(3):
        save_image(tmp_path / "train" / "images" / f"img{index}.jpg", rgb(index))
        save_image(tmp_path / "train" / "labels" / f"img{index}.png", np.full((16, 16), index + 1, np.uint8))
        points = np.stack([np.arange(106), np.arange(106) + 1000 * index], 1).astype(np.float32)
        text = "106\n" + "\n".join(f"{x:.2f} {y:.2f}" for x, y in points)
        (tmp_path / "train" / "landmarks").mkdir(parents=True, exist_ok=True)
        (tmp_path / "train" / "landmarks" / f"img{index}.txt").write_text(text)
    records = all_records(lapa_shards(tmp_path, "train", num_shards=3))
    assert sorted(record.key for record in records) == [f"lapa/train/img{i}" for i in range(3)]
    record = min(records, key=lambda r: r.key)
    assert decode_mask(record).tolist() == np.ones((16, 16)).tolist()
    assert record.fields["landmarks"].shape == (106, 2)
    five = record.fields["landmarks_5"]
    assert five.dtype == np.float32 and five.shape == (5, 2)
    np.testing.assert_allclose(five[:, 0], [(74 + 104) / 2, (83 + 105) / 2, 54, 84, 90])


# ---------------------------------------------------------------------------------------------------------- Helen


def test_helen_crop_matches_segface_rounding():
    points = np.array([[10.0, 20.0], [30.0, 25.0]], dtype=np.float32)  # box w = 21, h = 6; centre (20, 23)
    assert helen_crop_box(points, 100, 100) == (8, 11, 33, 36)  # side int(21 * 1.2) = 25, start centre - 12
    assert helen_crop_box(points, 30, 30) == (8, 11, 30, 30)  # clipped, no padding


def test_helen_records_with_and_without_crop(tmp_path):
    lines = []
    for index, name in enumerate(["a", "b"]):
        image = rgb(index, 32)
        save_image(tmp_path / "train" / f"{name}_image.jpg", image)
        label = np.zeros((32, 32), np.uint8)
        label[10:20, 10:20] = 1
        save_image(tmp_path / "train" / f"{name}_label.png", label)
        save_image(tmp_path / "train" / f"{name}_viz.jpg", image)
        points = np.stack([np.linspace(20, 40, 68), np.linspace(20, 40, 68)], 1)  # x 0.5 -> 10..20
        lines.append(" ".join(f"{v:.3f}" for v in points.ravel()) + f" {name}")
    (tmp_path / "landmarks.txt").write_text("\n".join(lines) + "\n")

    records = all_records(helen_shards(tmp_path, "train", num_shards=2))
    assert sorted(r.key for r in records) == ["helen/train/a", "helen/train/b"]
    record = min(records, key=lambda r: r.key)
    x1, y1, x2, y2 = record.fields["crop_box"].tolist()
    assert (x1, y1, x2, y2) == helen_crop_box(np.array([[10.0, 10.0], [20.0, 20.0]]), 32, 32) == (9, 9, 22, 22)
    assert decode_image(record).size == (x2 - x1, y2 - y1)
    mask = decode_mask(record)
    assert mask.shape == (y2 - y1, x2 - x1) and mask[0, 0] == 0 and mask[5, 5] == 1
    np.testing.assert_allclose(record.fields["landmarks"].min(0), [10 - x1, 10 - y1], atol=1e-4)
    assert record.fields["landmarks_5"].shape == (5, 2)
    # the lossless crop equals cropping the decoded original
    original = np.asarray(PIL.Image.open(tmp_path / "train" / "a_image.jpg").convert("RGB"))
    assert (np.asarray(decode_image(record)) == original[y1:y2, x1:x2]).all()

    uncropped = min(all_records(helen_shards(tmp_path, "train", crop=False)), key=lambda r: r.key)
    assert decode_image(uncropped).size == (32, 32) and decode_mask(uncropped).shape == (32, 32)
    assert uncropped.fields["landmarks"].min() == pytest.approx(10.0)


# -------------------------------------------------------------------------------- generic folders and parquet


def test_image_mask_folder_and_parquet(tmp_path):
    for index in range(4):
        save_image(tmp_path / "images" / f"{index}.jpg", rgb(index))
        if index != 3:  # an image without mask is left out
            save_image(tmp_path / "masks" / f"{index}.png", np.full((16, 16), index, np.uint8))
    records = all_records(image_mask_folder_shards(tmp_path, num_shards=2))
    assert sorted(r.key for r in records) == ["images/0.jpg", "images/1.jpg", "images/2.jpg"]
    assert {int(decode_mask(r)[0, 0]) for r in records} == {0, 1, 2}

    pa, pq = pytest.importorskip("pyarrow"), pytest.importorskip("pyarrow.parquet")
    table = pa.table(
        {
            "image": [{"bytes": (tmp_path / "images" / "1.jpg").read_bytes(), "path": "1.jpg"}],
            "mask": [{"bytes": (tmp_path / "masks" / "1.png").read_bytes(), "path": "1.png"}],
        }
    )
    pq.write_table(table, tmp_path / "train.parquet")
    (record,) = all_records(resolve_train_files([str(tmp_path / "*.parquet")]))
    assert decode_image(record).size == (16, 16) and (decode_mask(record) == 1).all()


# ------------------------------------------------------------------------------------------------------- CE7454


def make_ce7454(root: Path, num: int = 10) -> None:
    rows = ["image,mask,celebahq256_id_in_charitha_repo,mirrored"]
    for index in range(num):
        name = f"{index:032x}"
        save_image(root / "images" / f"{name}.jpg", rgb(index))
        mask = np.zeros((16, 16), np.uint8)
        mask[:, :8] = 5  # order B r_eye on image-left
        mask[:, 8:] = 4  # order B l_eye on image-right
        mask[0, 0] = 17  # order B neck
        if index == 2:  # mirrored image whose mask was mirrored without swapping labels
            mask = mask[:, ::-1].copy()
        save_image(root / "masks" / f"{name}.png", mask)
        rows.append(f"images/{name}.jpg,masks/{name}.png,{index}.jpg,{int(index == 2)}")
    (root / "index.csv").write_text("\n".join(rows) + "\n")


def test_ce7454_split_order_and_mirror_fix(tmp_path):
    make_ce7454(tmp_path)
    train = all_records(ce7454_shards(tmp_path, "train", num_eval=3, num_shards=2))
    evaluation = all_records(ce7454_shards(tmp_path, "eval", num_eval=3))
    assert len(train) == 7 and len(evaluation) == 3
    assert {r.key for r in train}.isdisjoint({r.key for r in evaluation})
    assert sorted(r.key for r in evaluation) == [f"ce7454/{i:032x}" for i in (7, 8, 9)]  # the last rows

    by_key = {r.key: r for r in all_records(ce7454_shards(tmp_path))}
    normal, mirrored = by_key[f"ce7454/{0:032x}"], by_key[f"ce7454/{2:032x}"]
    assert mirrored.fields["mirrored"] == 1 and normal.fields["mirrored"] == 0
    for record in (normal, mirrored):  # order A: left_eye = 8, right_eye = 9; subject's left eye is image-right
        mask = decode_mask(record)
        assert mask[5, 12] == 8 and mask[5, 3] == 9
    assert decode_mask(normal)[0, 0] == 1  # neck 17 (order B) -> 1 (order A)

    raw = {r.key: r for r in all_records(ce7454_shards(tmp_path, label_order="B", fix_mirrored=False))}
    assert decode_mask(raw[f"ce7454/{2:032x}"])[5, 12] == 5  # untouched: the reversed label stays


def test_new_kinds_dispatch_through_streaming(tmp_path):
    assert all(streaming.READERS[kind] is reader for kind, reader in READER_KINDS.items())
    make_ce7454(tmp_path, num=8)
    stream = FaceStream(ce7454_shards(tmp_path, num_shards=4), transform=lambda r: {"key": r.key})
    keys = [sample["key"] for sample, _ in zip(stream, range(8))]
    assert sorted(keys) == sorted(f"ce7454/{i:032x}" for i in range(8))


@pytest.mark.skipif(not CE7454_DEV.is_dir(), reason="CE7454 real data not available")
def test_real_ce7454_dev():
    records = all_records(ce7454_shards(CE7454_DEV, num_shards=4))
    assert len(records) == 200 and sum(r.fields["mirrored"] for r in records) == 12
    assert len(all_records(ce7454_shards(CE7454_DEV, "train"))) == 160
    assert len(all_records(ce7454_shards(CE7454_DEV, "eval"))) == 40
    seen = set()
    left_eye_image_right = []
    for record in records[::5] + [r for r in records if r.fields["mirrored"]]:
        mask = decode_mask(record)
        assert mask.shape == (512, 512) and mask.max() < 19
        assert decode_image(record).size == (512, 512)
        seen |= set(np.unique(mask).tolist())
        columns = np.nonzero(mask == 8)[1]  # order A left_eye
        if len(columns):
            left_eye_image_right.append(columns.mean() > 256)
    assert {0, 1, 2, 10, 14}.issubset(seen)
    assert np.mean(left_eye_image_right) > 0.95  # mirrored rows fixed: the subject's left eye is image-right
