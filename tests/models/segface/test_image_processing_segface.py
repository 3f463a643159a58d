import json
import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
import torch.nn.functional as F
from torchvision import transforms

from faceformers.data import SyntheticFaces
from faceformers.face_alignment import face_template_5, make_tanh_warp_grid, tanh_warp_points
from faceformers.models.segface.image_processing_pil_segface import SegFaceImageProcessorPil
from faceformers.models.segface.image_processing_segface import SegFaceImageProcessor


REALDATA = Path(__file__).parents[3].parent / "shared" / "realdata"
CELEBAMASK_DEV = REALDATA / "celebamask_hq_ce7454_parsing" / "dev_200"  # 512 px images + masks, official id order
FACER_SAMPLES = REALDATA / "facer_samples"
BACKENDS = [cls for cls in (SegFaceImageProcessor, SegFaceImageProcessorPil) if cls is not None]
needs_pil_backend = pytest.mark.skipif(
    SegFaceImageProcessorPil is None, reason="transformers < 5.5 has no PIL backend"
)


def synthetic_face(index: int = 1, size: int = 256) -> dict:
    """Image (PIL), 19-class mask, 11-class LaPa mask and 5 landmarks that agree with each other."""
    return SyntheticFaces(seed=0, image_size=size).sample(index)


def one_hot_logits(labels: torch.Tensor, num_labels: int) -> SimpleNamespace:
    """Model-like output whose argmax is `labels`; ignored (255) pixels get all-zero logits."""
    valid = labels != 255
    logits = F.one_hot(torch.where(valid, labels, 0), num_labels).permute(0, 3, 1, 2).float() * valid[:, None]
    return SimpleNamespace(logits=logits)


def segface_celebamask_transform(image: PIL.Image.Image) -> torch.Tensor:
    """SegFace's CelebAMask-HQ test transform (`datasets/celebamask_hq.py`) at R = 512."""
    image = transforms.functional.resize(image, size=(512, 512), interpolation=transforms.InterpolationMode.BICUBIC)
    normalize = transforms.Normalize(mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225])
    return normalize(transforms.functional.to_tensor(image))


def real_photos() -> list[PIL.Image.Image]:
    paths = sorted(FACER_SAMPLES.glob("*.jpg"))[:4] + sorted((CELEBAMASK_DEV / "images").glob("*.jpg"))[:2]
    if not paths:
        pytest.skip(f"real photos not found under {REALDATA}")
    return [PIL.Image.open(path).convert("RGB") for path in paths]


# ------------------------------------------------------------------------------------------------ defaults, contract


def test_defaults_and_pipeline_contract():
    for processor_class in BACKENDS:
        processor = processor_class()
        assert (processor.size.height, processor.size.width) == (512, 512)
        assert processor.resample == PIL.Image.Resampling.BICUBIC
        assert tuple(processor.image_mean) == (0.485, 0.456, 0.406)
        assert tuple(processor.image_std) == (0.229, 0.224, 0.225)
        assert processor.do_convert_rgb and not processor.do_align and processor.num_labels is None
        assert (processor.warp_factor, processor.face_scale, processor.align_pixel_centers) == (0.8, 1.0, False)
        # pipeline("image-segmentation") tries panoptic, then instance, then semantic post-processing
        assert not hasattr(processor, "post_process_panoptic_segmentation")
        assert not hasattr(processor, "post_process_instance_segmentation")

        # what the pipeline does: images= keyword, one PIL image, then target_size=[(H, W)]
        image = synthetic_face()["image"].resize((200, 150))
        inputs = processor(images=[image], return_tensors="pt")
        assert list(inputs.keys()) == ["pixel_values"]  # nothing that model(**inputs) would not accept
        logits = torch.randn(1, 19, 128, 128)
        segmentation = processor.post_process_semantic_segmentation(
            SimpleNamespace(logits=logits), target_sizes=[(150, 200)]
        )[0]
        assert segmentation.shape == (150, 200) and segmentation.dtype == torch.int64
        assert segmentation.numpy().max() < 19


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_matches_segfaces_celebamask_transform(processor_class):
    image = synthetic_face(3, 300)["image"].resize((341, 384))
    pixel_values = processor_class()(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 512, 512) and pixel_values.dtype == torch.float32
    difference = (pixel_values[0] - segface_celebamask_transform(image)).abs()
    if processor_class is SegFaceImageProcessorPil:
        assert difference.max() < 1e-5  # PIL bicubic, exactly what SegFace's loader ran
    else:
        assert difference.mean() < 2e-3 and difference.max() < 0.2  # torchvision's float bicubic; see test below


@pytest.mark.parametrize("processor_class", BACKENDS)
@pytest.mark.parametrize(
    "image",
    [
        PIL.Image.new("L", (40, 30), 128),
        PIL.Image.new("RGBA", (40, 30), (10, 20, 30, 255)),
        PIL.Image.new("CMYK", (40, 30), (0, 0, 0, 0)),
        PIL.Image.fromarray(np.full((30, 40), 128 * 257, dtype=np.uint16)),
        np.full((30, 40), 128, dtype=np.uint8),
        np.full((30, 40, 1), 128, dtype=np.uint8),
        np.full((30, 40, 4), 128, dtype=np.uint8),
        np.full((3, 30, 40), 128, dtype=np.uint8),
        np.full((30, 40, 3), 128 * 257, dtype=np.uint16),
        torch.full((3, 30, 40), 128, dtype=torch.uint8),
        torch.full((30, 40), 128, dtype=torch.uint8),
        torch.full((2, 3, 30, 40), 128, dtype=torch.uint8),
        [
            PIL.Image.new("RGB", (40, 30)),
            np.zeros((50, 20, 3), dtype=np.uint8),
            torch.zeros(3, 9, 9, dtype=torch.uint8),
        ],
    ],
    ids=[
        "L",
        "RGBA",
        "CMYK",
        "I16",
        "np-gray",
        "np-1ch",
        "np-rgba",
        "np-chw",
        "np-16bit",
        "torch-chw",
        "torch-gray",
        "torch-batch",
        "mixed-list",
    ],
)
def test_accepts_common_inputs(processor_class, image):
    pixel_values = processor_class()(image, return_tensors="pt")["pixel_values"]
    batch = len(image) if isinstance(image, list) or getattr(image, "ndim", 0) == 4 else 1
    assert pixel_values.shape == (batch, 3, 512, 512) and pixel_values.dtype == torch.float32
    assert torch.isfinite(pixel_values).all()


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_tiny_images_are_upsampled(processor_class):
    """Decision: any image of at least 1 x 1 pixel works; a 1 x 1 image becomes a constant 512 x 512 input."""
    expected = (torch.tensor([100, 150, 200]) / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor(
        [0.229, 0.224, 0.225]
    )
    processor = processor_class()
    one_pixel = [
        PIL.Image.new("RGB", (1, 1), (100, 150, 200)),
        np.array([[[100, 150, 200]]], dtype=np.uint8),  # (1, 1, 3): channels-last, not a 1-channel 1 x 3 image
        torch.tensor([100, 150, 200], dtype=torch.uint8).reshape(3, 1, 1),
    ]
    for image in one_pixel:
        pixel_values = processor(image, return_tensors="pt")["pixel_values"]
        assert pixel_values.shape == (1, 3, 512, 512)
        torch.testing.assert_close(pixel_values[0, :, 0, 0], expected, atol=1e-4, rtol=0)
        assert (pixel_values - pixel_values[..., :1, :1]).abs().max() < 1e-4
    # (3, 40, 3) numpy is 3 rows of 40 RGB pixels, not a 3-channel 40 x 3 image
    strip = np.zeros((3, 40, 3), dtype=np.uint8)
    strip[:, :20] = 255
    pixel_values = processor(strip, return_tensors="pt")["pixel_values"]
    assert pixel_values[0, 0, 256, 10] > 2 and pixel_values[0, 0, 256, 500] < -2

    labels = processor(one_pixel[0], segmentation_maps=np.array([[7]]), return_tensors="pt")["labels"]
    assert labels.shape == (1, 512, 512) and (labels == 7).all()
    aligned = processor(
        one_pixel[0],
        landmarks=np.tile([[0.3, 0.4]], (5, 1)) + np.arange(5)[:, None] * 0.1,
        do_align=True,
        return_tensors="pt",
    )
    assert torch.isfinite(aligned["pixel_values"]).all() and aligned["original_sizes"].tolist() == [[1, 1]]


@pytest.mark.parametrize("processor_class", BACKENDS)
@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "got NoneType"),
        ([], "got an empty list"),
        (np.zeros((30, 40, 2), dtype=np.uint8), r"1, 3 or 4 channels; got an array of shape \(30, 40, 2\)"),
        (np.zeros((0, 40, 3), dtype=np.uint8), "non-empty image"),
        ("not/an/image.png", "got str"),
    ],
)
def test_rejects_bad_images(processor_class, bad, message):
    with pytest.raises(ValueError, match=message):
        processor_class()(bad, return_tensors="pt")


# ---------------------------------------------------------------------------------------------------- labels


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_labels_are_nearest_resized_like_segfaces_loader(processor_class):
    rng = np.random.default_rng(0)
    processor = processor_class(num_labels=19)
    for height, width, size in [(300, 260, 512), (97, 131, 512), (512, 512, 448), (1200, 800, 224), (40, 30, 97)]:
        mask = rng.integers(0, 19, (height, width)).astype(np.uint8)
        mask[:3] = 255  # ignore index survives
        image = np.zeros((height, width, 3), dtype=np.uint8)
        labels = processor(image, segmentation_maps=mask, size=size, return_tensors="pt")["labels"]
        assert labels.shape == (1, size, size) and labels.dtype == torch.int64
        # SegFace: F.resize(PIL label, (R, R), NEAREST), i.e. PIL's nearest
        expected = np.array(PIL.Image.fromarray(mask).resize((size, size), PIL.Image.NEAREST))
        np.testing.assert_array_equal(labels[0].numpy(), expected)
        assert set(np.unique(labels.numpy())) <= set(np.unique(mask)) and (labels == 255).any()


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_segmentation_map_formats(processor_class):
    mask = (np.arange(30 * 40).reshape(30, 40) % 11).astype(np.uint8)
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    palette = PIL.Image.fromarray(mask, mode="L").convert("P")
    formats = [
        mask,
        PIL.Image.fromarray(mask),
        palette,
        torch.from_numpy(mask),
        mask[None],
        mask[..., None],
        mask.astype(np.int32),
        mask.astype(np.float32),
        PIL.Image.fromarray(mask.astype(np.int32)),
    ]
    processor = processor_class(num_labels=11)
    expected = processor(image, segmentation_maps=mask, return_tensors="pt")["labels"]
    for segmentation_map in formats:
        torch.testing.assert_close(
            processor(image, segmentation_maps=segmentation_map, return_tensors="pt")["labels"], expected
        )
    batch = processor([image, image], segmentation_maps=np.stack([mask, mask]), return_tensors="pt")["labels"]
    assert batch.shape == (2, 512, 512)
    listed = processor([image, image[:10]], segmentation_maps=[mask, mask[:10]], do_resize=False)["labels"]
    assert [tuple(label.shape) for label in listed] == [(30, 40), (10, 40)]


@pytest.mark.parametrize("processor_class", BACKENDS)
@pytest.mark.parametrize(
    "mask, num_labels, message",
    [
        (np.zeros((31, 40), np.uint8), None, r"size \(31, 40\) \(height, width\) but its image has size \(30, 40\)"),
        (np.full((30, 40), 19, np.uint8), 19, r"values \[19\] but num_labels=19"),
        (np.array([[0, 3, 25, 255] * 10] * 30, np.uint8), 11, r"values \[25\] but num_labels=11"),
        (np.full((30, 40), 300, np.int32), None, r"outside \[0, 255\]: \[300\]"),
        (np.full((30, 40), -1, np.int32), None, r"outside \[0, 255\]: \[-1\]"),
        (np.full((30, 40), 1.5, np.float32), None, "non-integer values"),
        (np.zeros((30, 40, 3), np.uint8), None, r"shape \(30, 40, 3\); expected a single-channel"),
        (PIL.Image.new("RGB", (40, 30)), None, "mode 'RGB'; expected a single-channel"),
        ([np.zeros((30, 40), np.uint8)] * 2, None, "Got 2 segmentation maps for 1 images"),
        ([None], None, "Segmentation map 0 is None"),
        ("mask.png", None, "is a str; expected"),
    ],
    ids=[
        "size",
        "num_labels",
        "num_labels-mixed",
        "over-255",
        "negative",
        "float",
        "rgb-array",
        "rgb-pil",
        "count",
        "none",
        "str",
    ],
)
def test_rejects_bad_segmentation_maps(processor_class, mask, num_labels, message):
    image = np.zeros((30, 40, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match=message):
        processor_class(num_labels=num_labels)(image, segmentation_maps=mask, return_tensors="pt")


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_ignore_index_is_allowed_with_num_labels(processor_class):
    mask = np.array([[0, 10, 255]] * 4, dtype=np.uint8)
    labels = processor_class(num_labels=11)(
        np.zeros((4, 3, 3), np.uint8), segmentation_maps=mask, return_tensors="pt"
    )["labels"]
    assert set(labels.unique().tolist()) == {0, 10, 255}


# ----------------------------------------------------------------------------------------------- post-processing


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_post_process_returns_original_sizes(processor_class):
    processor = processor_class()
    logits = torch.randn(2, 11, 128, 128)
    maps = processor.post_process_semantic_segmentation(
        SimpleNamespace(logits=logits), target_sizes=[(300, 260), (50, 70)]
    )
    assert [tuple(m.shape) for m in maps] == [(300, 260), (50, 70)] and all(m.dtype == torch.int64 for m in maps)
    expected = F.interpolate(logits[1:], size=(50, 70), mode="bilinear", align_corners=False)[0].argmax(0)
    torch.testing.assert_close(maps[1], expected)
    as_tensor = processor.post_process_semantic_segmentation(
        {"logits": logits}, target_sizes=torch.tensor([[300, 260], [50, 70]])
    )
    torch.testing.assert_close(as_tensor[0], maps[0])
    unresized = processor.post_process_semantic_segmentation(SimpleNamespace(logits=logits))
    assert [tuple(m.shape) for m in unresized] == [(128, 128)] * 2
    with pytest.raises(ValueError, match="Got 1 target sizes for a batch of 2"):
        processor.post_process_semantic_segmentation(SimpleNamespace(logits=logits), target_sizes=[(10, 10)])
    with pytest.raises(ValueError, match="needs target_sizes"):
        processor.post_process_semantic_segmentation(
            SimpleNamespace(logits=logits), face_align_matrix=torch.eye(3).repeat(2, 1, 1)
        )


# ---------------------------------------------------------------------------------------------------- alignment


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_alignment_outputs(processor_class):
    face = synthetic_face(1, 256)
    processor = processor_class(num_labels=19)
    inputs = processor(
        face["image"],
        segmentation_maps=face["mask"],
        landmarks=face["landmarks_5"],
        do_align=True,
        return_tensors="pt",
    )
    assert set(inputs.keys()) == {"pixel_values", "labels", "face_align_matrix", "original_sizes"}
    assert inputs["pixel_values"].shape == (1, 3, 512, 512) and inputs["pixel_values"].dtype == torch.float32
    assert inputs["labels"].shape == (1, 512, 512) and inputs["labels"].dtype == torch.int64
    assert inputs["face_align_matrix"].shape == (1, 3, 3) and inputs["original_sizes"].tolist() == [[256, 256]]
    # the matrix sends the landmarks (close) to facer's template, the similarity being a least-squares fit
    landmarks = torch.as_tensor(face["landmarks_5"])
    mapped = landmarks @ inputs["face_align_matrix"][0, :2, :2].T + inputs["face_align_matrix"][0, :2, 2]
    assert (mapped - face_template_5((512, 512))).norm(dim=-1).max() < 20
    # the warped face fills the frame: the central pixel is skin / nose, not background
    assert inputs["labels"][0, 256, 256] in (2, 10)
    # SegFace warps normalised pixels, so outside the photo reads 0 (the mean colour); labels there are ignored
    outside = inputs["labels"][0] == 255
    zero = inputs["pixel_values"][0].abs().amax(dim=0) < 1e-6  # bilinear still sees the photo's rim half a pixel out
    assert outside.float().mean() > 0.1 and zero[outside].float().mean() > 0.95 and not zero[~outside].any()


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_aligned_pixels_follow_segfaces_data_flow(processor_class):
    """SegFace LaPa: normalise, then grid_sample with its own grid (no +0.5), zero padding."""
    face = synthetic_face(2, 512)
    landmarks = torch.as_tensor(face["landmarks_5"])[None]
    processor = processor_class(do_align=True)
    inputs = processor(face["image"], landmarks=landmarks, return_tensors="pt")
    normalized = transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))(
        transforms.functional.to_tensor(face["image"])
    )[None]
    grid = make_tanh_warp_grid(inputs["face_align_matrix"], 0.8, (512, 512), (512, 512), pixel_centers=False)
    expected = F.grid_sample(normalized, grid, mode="bilinear", align_corners=False)
    torch.testing.assert_close(inputs["pixel_values"], expected, atol=1e-5, rtol=0)


def _round_trip_agreement(processor, image, mask, landmarks, num_labels):
    inputs = processor(image, segmentation_maps=mask, landmarks=landmarks, do_align=True, return_tensors="pt")
    restored = processor.post_process_semantic_segmentation(
        one_hot_logits(inputs["labels"], num_labels),
        target_sizes=inputs["original_sizes"],
        face_align_matrix=inputs["face_align_matrix"],
    )[0].numpy()
    assert restored.shape == mask.shape and restored.dtype == np.int64
    # away from the outer border of the warped frame, where the tanh squeezes many pixels into one
    height, width = mask.shape
    yy, xx = np.mgrid[0:height, 0:width]
    offset = 0.5 if processor.align_pixel_centers else 0.0
    points = torch.tensor(np.stack([xx.ravel(), yy.ravel()], axis=1)[None] + offset, dtype=torch.float32)
    warped = tanh_warp_points(points, inputs["face_align_matrix"], processor.warp_factor, (512, 512))[0].numpy()
    inner = (np.abs(warped / 512 * 2 - 1).max(axis=1) < 0.9).reshape(height, width)
    assert inner.mean() > 0.3
    return (restored == mask)[inner].mean()


@pytest.mark.parametrize("processor_class", BACKENDS)
@pytest.mark.parametrize("pixel_centers, threshold", [(True, 0.99), (False, 0.95)])
def test_alignment_round_trip_recovers_the_mask(processor_class, pixel_centers, threshold):
    """Preprocess with landmarks, post-process the one-hot of the warped labels: the original mask comes back."""
    processor = processor_class(align_pixel_centers=pixel_centers, num_labels=11)
    for index in (1, 5):
        face = synthetic_face(index, 256)
        # a non-square photo with the face off-centre, so that the warp reaches past the border on one side
        image = np.asarray(face["image"])[:, 30:]
        mask = face["mask_lapa"][:, 30:]
        landmarks = face["landmarks_5"] - np.array([30, 0], dtype=np.float32)
        assert _round_trip_agreement(processor, image, mask, landmarks, 11) > threshold


@pytest.mark.parametrize("pixel_centers, threshold", [(True, 0.99), (False, 0.95)])
def test_alignment_round_trip_on_real_celebamask_faces(pixel_centers, threshold):
    paths = sorted((CELEBAMASK_DEV / "images").glob("*.jpg"))[:3]
    if not paths:
        pytest.skip(f"CelebAMask-HQ samples not found under {CELEBAMASK_DEV}")
    processor = SegFaceImageProcessor(align_pixel_centers=pixel_centers, num_labels=19)
    for path in paths:
        image = PIL.Image.open(path).convert("RGB")
        mask = np.array(PIL.Image.open(CELEBAMASK_DEV / "masks" / f"{path.stem}.png"))
        # five points read off the official-order mask: 4/5 eyes, 2 nose, 10-12 mouth and lips
        centre = [np.argwhere(mask == c)[:, ::-1].mean(axis=0) for c in (4, 5, 2)]
        mouth = np.argwhere(np.isin(mask, (10, 11, 12)))[:, ::-1]
        corners = [mouth[mouth[:, 0].argmin()], mouth[mouth[:, 0].argmax()]]
        landmarks = np.stack(sorted(centre[:2], key=lambda p: p[0]) + [centre[2]] + corners).astype(np.float32)
        assert _round_trip_agreement(processor, image, mask, landmarks, 19) > threshold


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_batched_alignment_equals_single(processor_class):
    faces = [synthetic_face(1, 256), synthetic_face(2, 200)]
    processor = processor_class(do_align=True, num_labels=11)
    batch = processor(
        [f["image"] for f in faces],
        segmentation_maps=[f["mask_lapa"] for f in faces],
        landmarks=np.stack([f["landmarks_5"] for f in faces]),
        return_tensors="pt",
    )
    assert batch["original_sizes"].tolist() == [[256, 256], [200, 200]]
    for index, face in enumerate(faces):
        single = processor(
            face["image"], segmentation_maps=face["mask_lapa"], landmarks=face["landmarks_5"], return_tensors="pt"
        )
        for key in single:
            torch.testing.assert_close(batch[key][index : index + 1], single[key])
    logits = one_hot_logits(batch["labels"], 11)
    restored = processor.post_process_semantic_segmentation(
        logits, batch["original_sizes"], batch["face_align_matrix"]
    )
    assert [tuple(m.shape) for m in restored] == [(256, 256), (200, 200)]
    # lists (return_tensors=None) work as well
    listed = processor([f["image"] for f in faces], landmarks=[f["landmarks_5"] for f in faces])
    again = processor.post_process_semantic_segmentation(logits, listed["original_sizes"], listed["face_align_matrix"])
    for a, b in zip(restored, again):
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("processor_class", BACKENDS)
@pytest.mark.parametrize(
    "landmarks, message",
    [
        (None, "do_align=True needs landmarks"),
        (
            np.zeros((4, 2)),
            r"shape \(5, 2\) per image, i.e. \(1, 5, 2\) for 1 image\(s\); got \(1, 4, 2\)|got \(4, 2\)",
        ),
        (np.zeros((2, 5, 2)), r"got \(2, 5, 2\)"),
        (np.full((5, 2), np.nan), "NaN or infinite"),
        (np.full((5, 2), 7.0), "degenerate"),
        ("eyes", "Could not read landmarks"),
    ],
)
def test_rejects_bad_landmarks(processor_class, landmarks, message):
    with pytest.raises(ValueError, match=message):
        processor_class(do_align=True)(np.zeros((30, 40, 3), np.uint8), landmarks=landmarks)


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_landmarks_without_do_align_are_ignored(processor_class, caplog):
    image = np.zeros((30, 40, 3), np.uint8)
    processor = processor_class()
    plain = processor(image, return_tensors="pt")
    with caplog.at_level(logging.WARNING):
        with_landmarks = processor(image, landmarks=np.random.rand(5, 2) * 30, return_tensors="pt")
    assert list(with_landmarks.keys()) == ["pixel_values"]
    torch.testing.assert_close(with_landmarks["pixel_values"], plain["pixel_values"])


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_rejects_bad_alignment_settings(processor_class):
    face = synthetic_face(1, 64)
    with pytest.raises(ValueError, match=r"warp_factor in \[0, 1\]; got 2.0"):
        processor_class(do_align=True)(face["image"], landmarks=face["landmarks_5"], warp_factor=2.0)
    with pytest.raises(ValueError, match="Alignment needs size"):
        processor_class(do_align=True)(face["image"], landmarks=face["landmarks_5"], size={"shortest_edge": 100})
    with pytest.raises(Exception, match="warp_factor"):  # type-checked through valid_kwargs
        processor_class()(face["image"], warp_factor="strong")


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_inputs_are_not_mutated(processor_class):
    face = synthetic_face(1, 128)
    images = [
        np.asarray(face["image"]).astype(np.float32),
        torch.from_numpy(np.asarray(face["image"]).copy()).permute(2, 0, 1),
    ]
    masks = [face["mask_lapa"].copy(), torch.from_numpy(face["mask_lapa"].copy())]
    landmarks = [face["landmarks_5"].copy(), torch.from_numpy(face["landmarks_5"].copy())]
    copies = [x.copy() if isinstance(x, np.ndarray) else x.clone() for x in images + masks + landmarks]
    processor = processor_class(num_labels=11)
    processor(images, segmentation_maps=masks, return_tensors="pt")
    processor(images, segmentation_maps=masks, landmarks=landmarks, do_align=True, return_tensors="pt")
    for original, copy in zip(images + masks + landmarks, copies):
        np.testing.assert_array_equal(np.asarray(original), np.asarray(copy))


# ------------------------------------------------------------------------------------------- save/load, backends


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_save_load_round_trip(processor_class, tmp_path):
    processor = processor_class(
        do_align=True, warp_factor=0.5, face_scale=0.9, align_pixel_centers=True, num_labels=11
    )
    processor.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    assert saved["image_processor_type"] == "SegFaceImageProcessor"  # both backends save the base name
    assert {k: saved[k] for k in ("do_align", "warp_factor", "face_scale", "align_pixel_centers", "num_labels")} == {
        "do_align": True,
        "warp_factor": 0.5,
        "face_scale": 0.9,
        "align_pixel_centers": True,
        "num_labels": 11,
    }
    assert saved["resample"] == PIL.Image.Resampling.BICUBIC and saved["size"] == {"height": 512, "width": 512}
    face = synthetic_face(1, 128)
    for loader in BACKENDS:
        loaded = loader.from_pretrained(tmp_path)
        assert (
            loaded.do_align,
            loaded.warp_factor,
            loaded.face_scale,
            loaded.align_pixel_centers,
            loaded.num_labels,
        ) == (True, 0.5, 0.9, True, 11)
        a = processor(face["image"], landmarks=face["landmarks_5"], return_tensors="pt")
        b = loaded(face["image"], landmarks=face["landmarks_5"], return_tensors="pt")
        torch.testing.assert_close(a["pixel_values"], b["pixel_values"], atol=1e-5, rtol=0)
    # defaults stay out of the file when unset
    processor_class().save_pretrained(tmp_path / "plain")
    assert "num_labels" not in json.loads((tmp_path / "plain" / "preprocessor_config.json").read_text())


@needs_pil_backend
def test_backends_agree():
    """Tolerance: labels and everything aligned are equal (float32 rounding); the bicubic resize differs slightly.

    PIL resizes in two 8-bit passes with clipping in between, torchvision in one float pass. On photos the mean
    absolute difference of normalised pixels is below 2e-3 and the maximum below 0.2 (a few 8-bit levels at sharp
    edges); on random noise, whose overshoot PIL clips between passes, the maximum reaches about 0.4 (mean < 0.01).
    """
    torchvision_backend, pil_backend = SegFaceImageProcessor(num_labels=11), SegFaceImageProcessorPil(num_labels=11)
    for image in real_photos():
        a = torchvision_backend(image, return_tensors="pt")["pixel_values"]
        b = pil_backend(image, return_tensors="pt")["pixel_values"]
        assert (a - b).abs().mean() < 2e-3 and (a - b).abs().max() < 0.2
    noise = np.random.default_rng(0).integers(0, 256, (600, 400, 3), dtype=np.uint8)
    a = torchvision_backend(noise, return_tensors="pt")["pixel_values"]
    b = pil_backend(noise, return_tensors="pt")["pixel_values"]
    assert (a - b).abs().mean() < 0.01 and (a - b).abs().max() < 0.5

    face = synthetic_face(4, 300)
    for kwargs in ({}, {"do_align": True, "landmarks": face["landmarks_5"]}):
        a = torchvision_backend(face["image"], segmentation_maps=face["mask_lapa"], return_tensors="pt", **kwargs)
        b = pil_backend(face["image"], segmentation_maps=face["mask_lapa"], return_tensors="pt", **kwargs)
        assert a.keys() == b.keys()
        torch.testing.assert_close(a["labels"], b["labels"], atol=0, rtol=0)
        if kwargs:
            torch.testing.assert_close(a["pixel_values"], b["pixel_values"], atol=1e-5, rtol=0)
            torch.testing.assert_close(a["face_align_matrix"], b["face_align_matrix"], atol=0, rtol=0)
            logits = SimpleNamespace(logits=torch.randn(1, 11, 128, 128))
            maps_a = torchvision_backend.post_process_semantic_segmentation(
                logits, a["original_sizes"], a["face_align_matrix"]
            )
            maps_b = pil_backend.post_process_semantic_segmentation(
                logits, b["original_sizes"], b["face_align_matrix"]
            )
            torch.testing.assert_close(maps_a[0], maps_b[0], atol=0, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_processing_matches_cpu():
    face = synthetic_face(1, 256)
    processor = SegFaceImageProcessor(do_align=True, num_labels=19)
    cpu = processor(face["image"], segmentation_maps=face["mask"], landmarks=face["landmarks_5"], return_tensors="pt")
    cuda = processor(
        face["image"],
        segmentation_maps=face["mask"],
        landmarks=face["landmarks_5"],
        return_tensors="pt",
        device="cuda",
    )
    assert cuda["pixel_values"].device.type == "cuda"
    torch.testing.assert_close(cuda["pixel_values"].cpu(), cpu["pixel_values"], atol=1e-4, rtol=0)
    assert (cuda["labels"].cpu() != cpu["labels"]).float().mean() < 1e-3
    logits = one_hot_logits(cpu["labels"], 19)
    on_cuda = processor.post_process_semantic_segmentation(
        SimpleNamespace(logits=logits.logits.cuda()), cpu["original_sizes"], cpu["face_align_matrix"]
    )[0]
    assert on_cuda.device.type == "cuda"
