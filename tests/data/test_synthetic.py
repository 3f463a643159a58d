"""Tests of the synthetic face generator and of the label tables it paints with."""

from __future__ import annotations

import numpy as np
import PIL.Image
import pytest

from faceformers.data.labels import (
    CELEBA_ATTRIBUTES,
    CELEBAMASK_HQ_LABELS,
    CELEBAMASK_TO_HELEN,
    CELEBAMASK_TO_LAPA,
    HELEN_LABELS,
    LAPA_LABELS,
    id2label,
)
from faceformers.data.synthetic import SyntheticFaces, landmarks_5_from_68, synthetic_face_dataset


CLASS = {name: class_id for class_id, name in enumerate(CELEBAMASK_HQ_LABELS)}
ATTRIBUTE = {name: position for position, name in enumerate(CELEBA_ATTRIBUTES)}
# attributes that depend on the photo rather than on the person
PER_SAMPLE_ATTRIBUTES = ("Smiling", "Mouth_Slightly_Open", "Blurry")
FACE_PARTS = ("skin", "nose", "left_eye", "right_eye", "left_eyebrow", "right_eyebrow", "upper_lip", "lower_lip")


@pytest.fixture(scope="module")
def faces() -> SyntheticFaces:
    return SyntheticFaces(seed=0, image_size=128, num_identities=100)


@pytest.fixture(scope="module")
def samples(faces: SyntheticFaces) -> list[dict]:
    return [faces.sample(index) for index in range(60)]


def _distance_to_class(mask: np.ndarray, point: np.ndarray, class_id: int) -> float:
    """Distance in pixels from `point` (x, y) to the nearest pixel of `class_id` (inf when absent)."""
    rows, cols = np.nonzero(mask == class_id)
    if len(rows) == 0:
        return float("inf")
    return float(np.sqrt((cols - point[0]) ** 2 + (rows - point[1]) ** 2).min())


# ------------------------------------------------------------------------------------------------------------ labels


def test_label_tables():
    assert len(CELEBAMASK_HQ_LABELS) == 19 and len(set(CELEBAMASK_HQ_LABELS)) == 19
    assert len(LAPA_LABELS) == len(HELEN_LABELS) == 11
    assert len(CELEBA_ATTRIBUTES) == 40 and len(set(CELEBA_ATTRIBUTES)) == 40
    # order A (FaRL / facer / SegFace), spot-checked where it differs from the official order B
    assert CELEBAMASK_HQ_LABELS[1] == "neck" and CELEBAMASK_HQ_LABELS[8] == "left_eye"
    assert CELEBAMASK_HQ_LABELS[12] == "lower_lip" and CELEBAMASK_HQ_LABELS[18] == "necklace"
    assert (CELEBA_ATTRIBUTES[0], CELEBA_ATTRIBUTES[20], CELEBA_ATTRIBUTES[-1]) == (
        "5_o_Clock_Shadow",
        "Male",
        "Young",
    )
    assert id2label(LAPA_LABELS) == {0: "background", 1: "skin", 2: "left_eyebrow", 3: "right_eyebrow", 4: "left_eye",
                                     5: "right_eye", 6: "nose", 7: "upper_lip", 8: "inner_mouth", 9: "lower_lip",
                                     10: "hair"}  # fmt: skip


@pytest.mark.parametrize("table, target", [(CELEBAMASK_TO_LAPA, LAPA_LABELS), (CELEBAMASK_TO_HELEN, HELEN_LABELS)])
def test_lookup_tables(table: np.ndarray, target: tuple[str, ...]):
    assert table.dtype == np.uint8 and table.shape == (19,)
    assert set(table.tolist()) == set(range(11))  # every 11-class id is reachable
    for source_id, name in enumerate(CELEBAMASK_HQ_LABELS):
        if name in target:  # shared classes keep their name, left stays left
            assert target[table[source_id]] == name
    folded = {name: target[table[CLASS[name]]] for name in ("neck", "cloth", "left_ear", "hat", "eyeglasses")}
    assert folded == {"neck": "background", "cloth": "background", "left_ear": "skin", "hat": "background",
                      "eyeglasses": "skin"}  # fmt: skip


# -------------------------------------------------------------------------------------------------------- a sample


def test_sample_types_and_shapes(samples: list[dict]):
    sample = samples[0]
    assert isinstance(sample["image"], PIL.Image.Image)
    assert sample["image"].mode == "RGB" and sample["image"].size == (128, 128)
    for name in ("mask", "mask_lapa", "mask_helen"):
        assert sample[name].dtype == np.uint8 and sample[name].shape == (128, 128)
    assert sample["landmarks_5"].dtype == np.float32 and sample["landmarks_5"].shape == (5, 2)
    assert sample["landmarks_68"].dtype == np.float32 and sample["landmarks_68"].shape == (68, 2)
    assert sample["attributes"].dtype == np.int8 and sample["attributes"].shape == (40,)
    assert set(np.unique(sample["attributes"]).tolist()) <= {-1, 1}
    assert isinstance(sample["caption"], str) and sample["caption"].startswith("a photo of a")
    assert sample["identity"] == 0 and sample["key"] == "0000-000000000"
    assert SyntheticFaces(seed=3, image_size=64).sample(17)["key"] == "0003-000000017"


def test_sample_is_a_pure_function_of_seed_and_index(faces: SyntheticFaces):
    fresh = SyntheticFaces(seed=0, image_size=128, num_identities=100)  # empty identity cache
    np.random.seed(123)  # the global RNG must not matter ...
    state = np.random.get_state()
    first, again = faces.sample(7), fresh.sample(7)
    assert np.random.get_state()[1].tolist() == state[1].tolist()  # ... nor be consumed
    assert first["image"].tobytes() == again["image"].tobytes()
    assert first["mask"].tobytes() == again["mask"].tobytes()
    np.testing.assert_array_equal(first["landmarks_68"], again["landmarks_68"])
    assert first["caption"] == again["caption"]
    other_index, other_seed = faces.sample(8), SyntheticFaces(seed=1).sample(7)
    assert first["image"].tobytes() != other_index["image"].tobytes()
    assert first["image"].tobytes() != other_seed["image"].tobytes()
    assert first["mask"].tobytes() != other_seed["mask"].tobytes()


def test_identity_is_stable_across_poses(faces: SyntheticFaces):
    identity_level = np.array([name not in PER_SAMPLE_ATTRIBUTES for name in CELEBA_ATTRIBUTES])
    for index in (3, 11, 42):
        a, b = faces.sample(index), faces.sample(index + faces.num_identities)
        assert a["identity"] == b["identity"] == index
        np.testing.assert_array_equal(a["attributes"][identity_level], b["attributes"][identity_level])
        assert np.abs(a["landmarks_68"] - b["landmarks_68"]).max() > 1.0  # another pose
    attributes = np.stack([faces.sample(index)["attributes"] for index in range(20)])
    assert len({row.tobytes() for row in attributes}) > 15  # identities do differ


def test_label_views(samples: list[dict]):
    for sample in samples:
        assert sample["mask"].max() < 19
        np.testing.assert_array_equal(sample["mask_lapa"], CELEBAMASK_TO_LAPA[sample["mask"]])
        np.testing.assert_array_equal(sample["mask_helen"], CELEBAMASK_TO_HELEN[sample["mask"]])
        assert sample["mask_lapa"].max() < 11 and sample["mask_helen"].max() < 11


def test_mask_has_the_face_parts(samples: list[dict]):
    for sample in samples:
        present = set(np.unique(sample["mask"]).tolist())
        missing = [name for name in (*FACE_PARTS, "background", "hair", "neck", "cloth") if CLASS[name] not in present]
        assert not missing, f"{sample['key']} lacks {missing}"


def test_landmarks_agree_with_the_mask(samples: list[dict]):
    for sample in samples:
        mask, five = sample["mask"], sample["landmarks_5"]
        # image-left eye = the subject's right eye, as in the ArcFace template
        assert _distance_to_class(mask, five[0], CLASS["right_eye"]) <= 1.5, sample["key"]
        assert _distance_to_class(mask, five[1], CLASS["left_eye"]) <= 1.5, sample["key"]
        assert _distance_to_class(mask, five[2], CLASS["nose"]) <= 1.0, sample["key"]
        for corner in five[3:]:  # where the lips and the inner mouth meet
            mouth = min(
                _distance_to_class(mask, corner, CLASS[name]) for name in ("upper_lip", "lower_lip", "inner_mouth")
            )
            assert mouth <= 1.5, sample["key"]
        np.testing.assert_allclose(five, landmarks_5_from_68(sample["landmarks_68"]), atol=1e-5)
        assert five[0, 0] < five[1, 0] and five[3, 0] < five[4, 0]  # image-left first


def test_landmarks_68_follow_the_ibug_layout(samples: list[dict]):
    for sample in samples:
        points = sample["landmarks_68"]
        # undo the roll: express the points along the axis from one eye to the other
        eye_axis = points[42:48].mean(0) - points[36:42].mean(0)
        angle = np.arctan2(eye_axis[1], eye_axis[0])
        rotation = np.array([[np.cos(angle), np.sin(angle)], [-np.sin(angle), np.cos(angle)]])
        x, y = (points @ rotation.T).T
        assert x[0] < x[8] < x[16] and y[8] > y[57] > y[51] > y[33] > y[30] > y[27]  # jaw, chin, mouth, nose
        assert x[17] < x[21] < x[22] < x[26] and y[19] < y[37]  # brows above the eyes
        assert x[36] < x[39] < x[42] < x[45] and y[37] < y[41]  # eye corners, upper above lower lid
        assert x[48] < x[51] < x[54] and x[60] < x[64] and y[51] <= y[62] <= y[66] <= y[57]


def test_attributes_match_the_drawing(samples: list[dict]):
    drawn = {"Eyeglasses": "eyeglasses", "Wearing_Hat": "hat", "Wearing_Earrings": "earring",
             "Wearing_Necklace": "necklace", "Mouth_Slightly_Open": "inner_mouth"}  # fmt: skip
    seen = dict.fromkeys(drawn, 0)
    for sample in samples:
        attributes, present = sample["attributes"], set(np.unique(sample["mask"]).tolist())
        for attribute, part in drawn.items():
            assert (attributes[ATTRIBUTE[attribute]] == 1) == (CLASS[part] in present), (sample["key"], attribute)
            seen[attribute] += int(attributes[ATTRIBUTE[attribute]] == 1)
        hair_colors = [attributes[ATTRIBUTE[name]] for name in ("Black_Hair", "Blond_Hair", "Brown_Hair", "Gray_Hair")]
        assert sum(value == 1 for value in hair_colors) <= 1
        if attributes[ATTRIBUTE["Bald"]] == 1:
            assert max(hair_colors) == -1 and attributes[ATTRIBUTE["Bangs"]] == -1
    assert all(seen.values()), f"some attributes never occur in 60 samples: {seen}"


def test_caption_follows_the_attributes(faces: SyntheticFaces):
    for index in range(150):
        sample = faces.sample(index)
        attributes, caption = sample["attributes"], sample["caption"]
        assert ("eyeglasses" in caption) == (attributes[ATTRIBUTE["Eyeglasses"]] == 1), caption
        assert ("smiling" in caption) == (attributes[ATTRIBUTE["Smiling"]] == 1), caption
        assert (" man" in caption) == (attributes[ATTRIBUTE["Male"]] == 1), caption
        if attributes[ATTRIBUTE["Blond_Hair"]] == 1:
            assert "blond" in caption


def test_invalid_arguments():
    with pytest.raises(ValueError, match="image_size"):
        SyntheticFaces(image_size=8)
    with pytest.raises(ValueError, match="num_identities"):
        SyntheticFaces(num_identities=0)
    with pytest.raises(ValueError, match="index"):
        SyntheticFaces().sample(-1)
    with pytest.raises(ValueError, match="num_samples"):
        synthetic_face_dataset(num_samples=0)


# ----------------------------------------------------------------------------------------------- datasets streaming


def test_iterable_dataset_yields_each_key_once():
    from datasets.distributed import split_dataset_by_node

    dataset = synthetic_face_dataset(num_samples=10, image_size=32, num_shards=4)
    examples = list(dataset)
    keys = [example["key"] for example in examples]
    assert sorted(keys) == [f"0000-{index:09d}" for index in range(10)]
    example = examples[0]
    assert isinstance(example["image"], PIL.Image.Image) and example["image"].mode == "RGB"
    assert isinstance(example["mask"], PIL.Image.Image) and example["mask"].mode == "L"
    expected = SyntheticFaces(image_size=32).sample(int(example["key"].split("-")[1]))
    np.testing.assert_array_equal(np.asarray(example["mask"]), expected["mask"])
    np.testing.assert_array_equal(np.asarray(example["mask_lapa"]), expected["mask_lapa"])
    np.testing.assert_array_equal(np.asarray(example["landmarks_68"]), expected["landmarks_68"])
    assert list(example["attributes"]) == expected["attributes"].tolist()
    assert example["caption"] == expected["caption"] and example["identity"] == expected["identity"]

    ranks = [[e["key"] for e in split_dataset_by_node(dataset, rank=rank, world_size=2)] for rank in range(2)]
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == sorted(keys)
    assert len(ranks[0]) == len(ranks[1]) == 5


# ------------------------------------------------------------------------------------------------------ learnability


def _pixels(faces: SyntheticFaces, indices: range) -> tuple[np.ndarray, np.ndarray]:
    """RGB values `(N, 3)` and class-id masks `(num_images, H, W)` of the given samples."""
    samples = [faces.sample(index) for index in indices]
    colors = np.concatenate([np.asarray(s["image"], dtype=np.int64).reshape(-1, 3) for s in samples])
    return colors, np.stack([s["mask"] for s in samples])


def _color_bins(colors: np.ndarray) -> np.ndarray:
    """Index `(N,)` of each RGB colour `(N, 3)` in an 8x8x8 colour histogram."""
    return (colors // 32) @ np.array([64, 8, 1])


def test_major_classes_are_separable_by_colour():
    """A per-class colour-histogram (naive Bayes) pixel classifier, fit on 20 images and scored on 20 others.

    A nearest-class-mean classifier is too weak a probe here: clothes and hair come in many colours, so their means are
    all grey. The classifier must also lose most of its accuracy when the masks are flipped upside down, i.e. the
    accuracy comes from masks that agree with the pixels.
    """
    faces = SyntheticFaces(seed=0, image_size=64)
    classes = np.array([CLASS[name] for name in ("background", "skin", "cloth", "hair")])
    train_colors, train_masks = _pixels(faces, range(20))
    test_colors, test_masks = _pixels(faces, range(20, 40))
    train_bins, test_bins = _color_bins(train_colors), _color_bins(test_colors)
    histograms = np.stack([np.bincount(train_bins[train_masks.ravel() == c], minlength=512) for c in classes])
    likelihood = (histograms + 0.5) / (histograms + 0.5).sum(1, keepdims=True)  # (4, 512)

    def balanced_accuracy(masks: np.ndarray) -> float:
        labels = masks.ravel()
        selected = np.isin(labels, classes)
        predicted = classes[likelihood[:, test_bins[selected]].argmax(0)]
        return float(np.mean([(predicted[labels[selected] == c] == c).mean() for c in classes]))

    aligned, flipped = balanced_accuracy(test_masks), balanced_accuracy(test_masks[:, ::-1])
    assert aligned > 0.6, aligned  # chance is 0.25
    assert aligned > flipped + 0.2, (aligned, flipped)


def test_identities_are_separable():
    """Leave-one-out nearest centroid on standardised 16x16 grayscale images: 10 identities x 6 photos."""
    faces = SyntheticFaces(seed=0, image_size=64, num_identities=10)
    grays = [faces.sample(index)["image"].convert("L") for index in range(60)]
    images = [gray.resize((16, 16), PIL.Image.Resampling.BILINEAR) for gray in grays]
    features = np.stack([np.asarray(image, dtype=np.float32).ravel() for image in images])  # (60, 256)
    features = (features - features.mean(1, keepdims=True)) / features.std(1, keepdims=True)
    identities = np.arange(60) % 10
    correct = 0
    for query in range(60):
        others = np.arange(60) != query
        centroids = np.stack([features[others & (identities == k)].mean(0) for k in range(10)])  # (10, 256)
        correct += int(((centroids - features[query]) ** 2).sum(1).argmin() == identities[query])
    assert correct / 60 > 0.5, correct / 60  # chance is 0.1
