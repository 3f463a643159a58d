import numpy as np
import pytest
import torch
from PIL import Image

from faceformers.face_alignment import ARCFACE_TEMPLATE_5_PIXELS_112
from faceformers.models.part_fvit.image_processing_part_fvit import PartFViTImageProcessor


TEMPLATE = np.array(ARCFACE_TEMPLATE_5_PIXELS_112, dtype=np.float32)


def gradient_image(height: int, width: int) -> np.ndarray:
    """uint8 RGB image whose channels encode the column, the row and a constant."""
    rows, columns = np.mgrid[0:height, 0:width]
    return np.stack([columns % 256, rows % 256, np.full_like(rows, 128)], axis=-1).astype(np.uint8)


def test_pre_aligned_crops_in_both_normalisations():
    image = gradient_image(112, 112)
    training = PartFViTImageProcessor()(image, return_tensors="pt")["pixel_values"]
    evaluation = PartFViTImageProcessor(image_std=[1.0, 1.0, 1.0])(image, return_tensors="pt")["pixel_values"]
    expected = torch.from_numpy(image).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(training[0], expected * 2 - 1, atol=1e-6, rtol=0)
    torch.testing.assert_close(evaluation[0], expected - 0.5, atol=1e-6, rtol=0)


def test_alignment_onto_the_arcface_template_follows_the_warp_affine_convention():
    """Landmarks = template shifted by (+20, +10) pixels: the crop is the photo shifted back, pixel for pixel."""
    photo = gradient_image(150, 160)
    processor = PartFViTImageProcessor(image_std=[1.0, 1.0, 1.0])
    aligned = processor(photo, landmarks=TEMPLATE + [20.0, 10.0], do_align=True, return_tensors="pt")["pixel_values"][0]
    expected = torch.from_numpy(photo[10:122, 20:132]).permute(2, 0, 1).float() / 255 - 0.5
    torch.testing.assert_close(aligned, expected, atol=1e-4, rtol=0)
    # A face twice as large, centred on the same point: the crop samples every other pixel (integer centres).
    large = (TEMPLATE - 56) * 2 + 56 + [20.0, 10.0]
    aligned = processor(gradient_image(300, 300), landmarks=large, do_align=True, return_tensors="pt")["pixel_values"][0]
    assert float(aligned[0, 56, 57] - aligned[0, 56, 56]) == pytest.approx(2 / 255, abs=1e-5)  # columns step by 2 pixels
    # Outside the photo the crop is black (before normalisation), as with cv2.warpAffine's border value 0.
    shifted = processor(photo, landmarks=TEMPLATE - [30.0, 0.0], do_align=True, return_tensors="pt")["pixel_values"][0]
    assert torch.all(shifted[:, :, :29] == -0.5)


def test_flip_test_doubles_the_batch_and_sums_back():
    images = [gradient_image(112, 112), Image.new("RGB", (112, 112), (10, 20, 30))]
    pixel_values = PartFViTImageProcessor(do_flip_test=True)(images, return_tensors="pt")["pixel_values"]
    assert pixel_values.shape == (4, 3, 112, 112)
    torch.testing.assert_close(pixel_values[2], pixel_values[0].flip(-1))
    embeddings = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, -1.0]])
    summed = PartFViTImageProcessor.post_process_flip_test(embeddings, normalize=False)
    torch.testing.assert_close(summed, torch.tensor([[2.0, 0.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match=r"Expected \(2 \* num_images, dim\) embeddings"):
        PartFViTImageProcessor.post_process_flip_test(torch.zeros(3, 2))


def test_bad_landmarks_are_refused():
    processor = PartFViTImageProcessor()
    with pytest.raises(ValueError, match="do_align=True needs landmarks"):
        processor(gradient_image(120, 120), do_align=True)
    with pytest.raises(ValueError, match=r"\(1, 5, 2\) for 1 image"):
        processor(gradient_image(120, 120), landmarks=np.zeros((4, 2)), do_align=True)
    with pytest.raises(ValueError, match="degenerate"):
        processor(gradient_image(120, 120), landmarks=np.ones((5, 2)), do_align=True)


def test_save_and_reload_keeps_the_normalisation(tmp_path):
    PartFViTImageProcessor(image_std=[1.0, 1.0, 1.0]).save_pretrained(tmp_path)
    assert list(PartFViTImageProcessor.from_pretrained(tmp_path).image_std) == [1.0, 1.0, 1.0]
