from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from torchvision import transforms
from transformers import AutoImageProcessor

from faceformers import MCFConfig, MCFImageProcessor, MCFImageProcessorPil


REALDATA = Path(__file__).parents[3].parent / "shared" / "realdata"
FACE = REALDATA / "facer_samples" / "girl.jpg"
BACKENDS = [cls for cls in (MCFImageProcessor, MCFImageProcessorPil) if cls is not None]  # no PIL twin before 5.5


def reference_transform(image: PIL.Image.Image) -> torch.Tensor:
    """The released pre-training transform (without the random flip)."""
    transform = transforms.Compose(
        [
            transforms.Resize((224, 224)),
            transforms.ToTensor(),
            transforms.Normalize(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225)),
        ]
    )
    return transform(image)


def face_image() -> PIL.Image.Image:
    if FACE.exists():
        return PIL.Image.open(FACE).convert("RGB")
    rng = np.random.default_rng(0)
    return PIL.Image.fromarray(rng.integers(0, 256, (300, 260, 3), dtype=np.uint8))


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_matches_the_released_transform(processor_class):
    image = face_image()
    pixel_values = processor_class()(image, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (1, 3, 224, 224) and pixel_values.dtype == torch.float32
    expected = reference_transform(image)
    # PIL resizes exactly like torchvision's PIL path; the torchvision backend antialiases on tensors
    tolerance = 1e-5 if processor_class is MCFImageProcessorPil else 0.1
    assert (pixel_values[0] - expected).abs().max() < tolerance
    assert (pixel_values[0] - expected).abs().mean() < 0.01


@pytest.mark.parametrize("processor_class", BACKENDS)
@pytest.mark.parametrize(
    "image",
    [
        PIL.Image.new("L", (40, 30), 128),
        PIL.Image.new("RGBA", (40, 30), (10, 20, 30, 0)),
        PIL.Image.new("CMYK", (40, 30)),
        np.full((30, 40), 128, dtype=np.uint8),
        np.full((30, 40, 1), 128, dtype=np.uint8),
        np.full((30, 40, 4), 128, dtype=np.uint8),
        np.full((3, 30, 40), 128, dtype=np.uint8),
        torch.full((3, 30, 40), 128, dtype=torch.uint8),
        torch.full((30, 40), 128, dtype=torch.uint8),
        torch.full((2, 3, 30, 40), 128, dtype=torch.uint8),
        [PIL.Image.new("RGB", (40, 30)), np.zeros((50, 20, 3), dtype=np.uint8)],
    ],
    ids=["L", "RGBA", "CMYK", "np-gray", "np-1ch", "np-rgba", "np-chw", "torch-chw", "torch-gray", "torch-batch", "list"],
)
def test_accepts_common_inputs(processor_class, image):
    pixel_values = processor_class()(image, return_tensors="pt")["pixel_values"]
    batch = len(image) if isinstance(image, list) or getattr(image, "ndim", 0) == 4 else 1
    assert pixel_values.shape == (batch, 3, 224, 224)
    assert torch.isfinite(pixel_values).all()


@pytest.mark.parametrize("processor_class", BACKENDS)
def test_sixteen_bit_images_are_scaled_not_clipped(processor_class):
    eight_bit = np.full((32, 32, 3), 100, dtype=np.uint8)
    sixteen_bit = (eight_bit.astype(np.uint16) * 257)
    processor = processor_class()
    expected = processor(eight_bit, return_tensors="pt")["pixel_values"]
    torch.testing.assert_close(processor(sixteen_bit, return_tensors="pt")["pixel_values"], expected)
    gray16 = PIL.Image.fromarray(np.full((32, 32), 100 * 257, dtype=np.uint16))
    gray8 = PIL.Image.fromarray(np.full((32, 32), 100, dtype=np.uint8))
    torch.testing.assert_close(processor(gray16, return_tensors="pt")["pixel_values"], processor(gray8, return_tensors="pt")["pixel_values"])


@pytest.mark.parametrize("processor_class", BACKENDS)
@pytest.mark.parametrize(
    "bad, message",
    [
        (None, "got NoneType"),
        (3.5, "got float"),
        ([], "got an empty list"),
        (np.zeros((2, 30, 40, 3, 1)), r"got an array of shape \(2, 30, 40, 3, 1\)"),
        (np.zeros((30, 40, 2), dtype=np.uint8), r"1, 3 or 4 channels; got an array of shape \(30, 40, 2\)"),
        (np.zeros((0, 40, 3), dtype=np.uint8), "non-empty image"),
        (np.array([["a"]]), "integer or floating-point pixels; got dtype <U1"),
    ],
)
def test_rejects_what_it_cannot_handle(processor_class, bad, message):
    with pytest.raises(ValueError, match=message):
        processor_class()(bad, return_tensors="pt")


@pytest.mark.skipif(MCFImageProcessorPil is None, reason="transformers < 5.5 has no PIL backend class")
def test_both_backends_agree_and_round_trip_through_auto(tmp_path):
    image = face_image()
    processor = MCFImageProcessor()
    processor.save_pretrained(tmp_path)
    MCFConfig().save_pretrained(tmp_path)
    torchvision_backend = AutoImageProcessor.from_pretrained(tmp_path)
    pil_backend = AutoImageProcessor.from_pretrained(tmp_path, backend="pil")
    assert type(torchvision_backend) is MCFImageProcessor and type(pil_backend) is MCFImageProcessorPil
    a = torchvision_backend(image, return_tensors="pt")["pixel_values"]
    b = pil_backend(image, return_tensors="pt")["pixel_values"]
    assert (a - b).abs().mean() < 0.01
