import math

import pytest
import torch
import torch.nn.functional as F

from faceformers.face_alignment import (
    FACE_TEMPLATE_5_PIXELS_512,
    face_template_5,
    get_face_align_matrix,
    get_similarity_transform_matrix,
    inverted_tanh_warp_points,
    make_inverted_tanh_warp_grid,
    make_tanh_warp_grid,
    tanh_warp_points,
)


WARPED = (512, 512)
ORIGINAL = (400, 360)
# a slightly rotated face, left of centre, in a 400 x 360 (height x width) photo
LANDMARKS = torch.tensor([[[150.3, 170.8], [221.6, 160.2], [190.1, 210.5], [160.4, 250.9], [228.7, 243.3]]])


def similarity(angle: float, scale: float, tx: float, ty: float, dtype=torch.float64) -> torch.Tensor:
    cos, sin = math.cos(angle) * scale, math.sin(angle) * scale
    return torch.tensor([[cos, -sin, tx], [sin, cos, ty], [0.0, 0.0, 1.0]], dtype=dtype)


def apply(matrix: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    return points @ matrix[:2, :2].T + matrix[:2, 2]


def coordinate_image(shape, dtype) -> torch.Tensor:
    """`(1, 2, H, W)` image whose channels hold each pixel's own x and y index."""
    yy, xx = torch.meshgrid(torch.arange(shape[0], dtype=dtype), torch.arange(shape[1], dtype=dtype), indexing="ij")
    return torch.stack([xx, yy])[None]


def test_template_has_facers_constants():
    assert FACE_TEMPLATE_5_PIXELS_512 == (
        (196.0, 226.0),
        (316.0, 226.0),
        (256.0, 286.0),
        (220.0, 360.4),
        (292.0, 360.4),
    )
    template = face_template_5((512, 512), dtype=torch.float64)
    # facer: (p / 256 - 1) in [-1, 1], then (q * scale + 1) * (size - 1) / 2
    expected = torch.tensor(FACE_TEMPLATE_5_PIXELS_512, dtype=torch.float64) * 511 / 512
    torch.testing.assert_close(template, expected)
    smaller = face_template_5((448, 300), target_face_scale=0.8, dtype=torch.float64)
    centre = torch.tensor([299 / 2, 447 / 2], dtype=torch.float64)
    normalized = torch.tensor(FACE_TEMPLATE_5_PIXELS_512, dtype=torch.float64) / 256 - 1
    torch.testing.assert_close(smaller, centre + normalized * 0.8 * centre)


@pytest.mark.parametrize("face_scale", [1.0, 0.8])
def test_matrix_maps_the_landmarks_onto_the_template(face_scale):
    template = face_template_5(WARPED, face_scale, dtype=torch.float64)
    truths = [similarity(0.3, 0.5, 20, -7), similarity(-1.2, 2.5, -100, 300), similarity(3.0, 0.1, 5, 5)]
    # landmarks = T^-1(template): the fitted matrix must be T and send them exactly onto the template
    landmarks = torch.stack([apply(torch.linalg.inv(truth), template) for truth in truths])
    matrices = get_face_align_matrix(landmarks, WARPED, face_scale)
    assert matrices.shape == (3, 3, 3) and matrices.dtype == torch.float64
    for matrix, truth, points in zip(matrices, truths, landmarks):
        torch.testing.assert_close(matrix, truth)
        assert (apply(matrix, points) - template).abs().max() < 1e-9


def test_similarity_is_the_least_squares_fit():
    generator = torch.Generator().manual_seed(0)
    source = torch.rand(2, 7, 2, generator=generator, dtype=torch.float64) * 300
    target = torch.rand(2, 7, 2, generator=generator, dtype=torch.float64) * 500
    matrices = get_similarity_transform_matrix(source, target)
    for matrix, src, dst in zip(matrices, source, target):
        # x' = a x + b y + tx, y' = -b x + a y + ty as an ordinary linear least-squares problem
        ones, zeros = torch.ones(7, 1, dtype=torch.float64), torch.zeros(7, 1, dtype=torch.float64)
        rows_x = torch.cat([src[:, :1], src[:, 1:], ones, zeros], dim=1)
        rows_y = torch.cat([src[:, 1:], -src[:, :1], zeros, ones], dim=1)
        design = torch.cat([rows_x, rows_y])
        a, b, tx, ty = torch.linalg.lstsq(design, torch.cat([dst[:, 0], dst[:, 1]])).solution
        expected = torch.tensor([[a, b, tx], [-b, a, ty], [0, 0, 1]], dtype=torch.float64)
        torch.testing.assert_close(matrix, expected)


def test_matches_facer_and_segface_reference_values():
    """Values printed by facer@ddd35c7 `facer/transform.py` and SegFace's `network/models/utils_models.py`."""
    matrix = get_face_align_matrix(LANDMARKS, WARPED, 1.0)
    expected = torch.tensor([[[1.5073566, -0.1761717, 5.2628403], [0.1761717, 1.5073566, -54.5550842], [0, 0, 1.0]]])
    torch.testing.assert_close(matrix, expected, atol=2e-5, rtol=0)

    cases = [
        (
            make_tanh_warp_grid,
            True,
            {
                (0, 0): (-2.9533439, -2.2124219),
                (256, 256): (0.0456721, -0.0782013),
                (100, 400): (0.5252995, -0.6817629),
                (511, 3): (-1.5988622, 2.5411439),
            },
        ),
        (
            make_tanh_warp_grid,
            False,
            {
                (0, 0): (-3.3248150, -2.4767754),
                (256, 256): (0.0436417, -0.0796463),
                (100, 400): (0.5227214, -0.6837349),
                (511, 3): (-1.6869299, 2.3145525),
            },
        ),
        (
            make_inverted_tanh_warp_grid,
            True,
            {
                (0, 0): (-0.7993333, -0.8813514),
                (200, 180): (-0.0546161, 0.0916755),
                (399, 359): (0.7435260, 0.9216588),
                (37, 300): (0.6861069, -0.6993727),
            },
        ),
        (
            make_inverted_tanh_warp_grid,
            False,
            {
                (0, 0): (-0.8004711, -0.8822513),
                (200, 180): (-0.0572160, 0.0883873),
                (399, 359): (0.7421231, 0.9210439),
                (37, 300): (0.6844637, -0.7013745),
            },
        ),
    ]
    for make_grid, pixel_centers, values in cases:
        grid = make_grid(matrix, 0.8, WARPED, ORIGINAL, pixel_centers=pixel_centers)
        for (y, x), value in values.items():
            torch.testing.assert_close(grid[0, y, x], torch.tensor(value), atol=2e-5, rtol=0)


def test_grid_shapes_and_range():
    matrix = get_face_align_matrix(LANDMARKS, WARPED)
    forward = make_tanh_warp_grid(matrix, 0.8, WARPED, ORIGINAL)
    inverse = make_inverted_tanh_warp_grid(matrix, 0.8, WARPED, ORIGINAL)
    assert forward.shape == (1, *WARPED, 2) and inverse.shape == (1, *ORIGINAL, 2)
    # with a tanh warp the whole photo lands inside the warped frame
    assert inverse.abs().max() < 1


@pytest.mark.parametrize("warp_factor", [0.0, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_points_round_trip(warp_factor, dtype):
    matrix = get_face_align_matrix(LANDMARKS.to(dtype), WARPED)
    points = torch.stack(
        torch.meshgrid(
            torch.linspace(-50, 410, 47, dtype=dtype), torch.linspace(-50, 450, 51, dtype=dtype), indexing="xy"
        ),
        dim=-1,
    ).reshape(1, -1, 2)
    warped = tanh_warp_points(points, matrix, warp_factor, WARPED)
    back = inverted_tanh_warp_points(warped, matrix, warp_factor, WARPED)
    # away from the frame's border, where facer clamps arctanh; |c| < 0.99 in normalised warped coordinates
    inside = ((warped / torch.tensor([512, 512], dtype=dtype) * 2 - 1).abs() < 0.99).all(dim=-1)
    if warp_factor == 0:  # a plain similarity: no clamp, every point comes back
        inside[:] = True
    assert inside.float().mean() > 0.4
    tolerance = 5e-3 if dtype == torch.float32 else 1e-8
    assert (back - points)[inside].abs().max() < tolerance


def test_warp_is_linear_in_the_centre_and_compresses_the_outside():
    matrix = get_face_align_matrix(LANDMARKS, WARPED)
    points = torch.tensor([[[190.0, 210.0], [180.0, 200.0], [-5000.0, 8000.0], [1e6, -1e6]]])
    linear = tanh_warp_points(points, matrix, 0.0, WARPED)
    warped = tanh_warp_points(points, matrix, 0.8, WARPED)
    torch.testing.assert_close(warped[0, :2], linear[0, :2])  # the face stays put
    assert ((warped[0, 2:] >= 0) & (warped[0, 2:] <= 512)).all()  # far points are squeezed inside


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_inverse_grid_undoes_the_forward_grid_with_pixel_centres(dtype):
    matrix = get_face_align_matrix(LANDMARKS.to(dtype), WARPED)
    image = coordinate_image(ORIGINAL, dtype)
    forward = make_tanh_warp_grid(matrix, 0.8, WARPED, ORIGINAL, pixel_centers=True)
    inverse = make_inverted_tanh_warp_grid(matrix, 0.8, WARPED, ORIGINAL, pixel_centers=True)
    assert forward.dtype == inverse.dtype == dtype
    warped = F.grid_sample(image, forward, mode="bilinear", align_corners=False)
    restored = F.grid_sample(warped, inverse, mode="bilinear", align_corners=False)
    # bilinear interpolation reproduces a linear ramp exactly, so this measures the geometry, in pixels
    error = (restored - image).abs().amax(dim=1)[0]
    assert error[100:300, 80:280].max() < 0.05  # the face region
    assert (error < 0.05).float().mean() > 0.95  # all but the photo's outermost pixels


def test_segface_convention_shifts_by_half_a_pixel_per_step():
    """Without `+ 0.5` (SegFace), forward + inverse move content by -(0.5 + 0.5 / scale) pixels."""
    matrix = get_face_align_matrix(LANDMARKS.double(), WARPED)
    scale = matrix[0, :2, :2].det().sqrt()
    image = coordinate_image(ORIGINAL, torch.float64)
    forward = make_tanh_warp_grid(matrix, 0.8, WARPED, ORIGINAL, pixel_centers=False)
    inverse = make_inverted_tanh_warp_grid(matrix, 0.8, WARPED, ORIGINAL, pixel_centers=False)
    restored = F.grid_sample(F.grid_sample(image, forward, align_corners=False), inverse, align_corners=False)
    shift = (restored - image)[0, :, 195:225, 175:205]  # around the nose, where the warp is linear
    expected = -0.5 * (1 + 1 / scale)
    assert (shift - expected).abs().max() < 0.05


def test_identity_matrix_without_warp_samples_the_pixels_themselves():
    image = torch.rand(1, 3, 20, 30, dtype=torch.float64)
    identity = torch.eye(3, dtype=torch.float64)[None]
    grid = make_tanh_warp_grid(identity, 0.0, (20, 30), (20, 30), pixel_centers=True)
    torch.testing.assert_close(grid, F.affine_grid(identity[:, :2], [1, 3, 20, 30], align_corners=False))
    torch.testing.assert_close(F.grid_sample(image, grid, align_corners=False), image)
    inverse = make_inverted_tanh_warp_grid(identity, 0.0, (20, 30), (20, 30), pixel_centers=True)
    torch.testing.assert_close(inverse, grid)
    # SegFace's convention samples half a pixel up and left: the average of four neighbours inside the image
    shifted = F.grid_sample(image, make_tanh_warp_grid(identity, 0.0, (20, 30), (20, 30), False), align_corners=False)
    neighbours = (image[..., :-1, :-1] + image[..., 1:, :-1] + image[..., :-1, 1:] + image[..., 1:, 1:]) / 4
    torch.testing.assert_close(shifted[..., 1:, 1:], neighbours)


def test_identity_matrix_with_warp_is_identity_in_the_centre():
    identity = torch.eye(3, dtype=torch.float64)[None]
    grid = make_tanh_warp_grid(identity, 0.5, (64, 64), (64, 64))
    plain = F.affine_grid(identity[:, :2], [1, 1, 64, 64], align_corners=False)
    torch.testing.assert_close(grid[:, 20:44, 20:44], plain[:, 20:44, 20:44])
    assert grid.abs().max() > plain.abs().max()  # the border reaches further out into the original


@pytest.mark.parametrize("pixel_centers", [True, False])
def test_batch_equals_single(pixel_centers):
    landmarks = torch.cat([LANDMARKS, LANDMARKS.flip(-1) * 1.3, LANDMARKS + 40])
    matrices = get_face_align_matrix(landmarks, WARPED)
    forward = make_tanh_warp_grid(matrices, 0.8, WARPED, ORIGINAL, pixel_centers)
    inverse = make_inverted_tanh_warp_grid(matrices, 0.8, WARPED, ORIGINAL, pixel_centers)
    for index in range(3):
        single = get_face_align_matrix(landmarks[index : index + 1], WARPED)
        torch.testing.assert_close(single, matrices[index : index + 1])
        torch.testing.assert_close(
            make_tanh_warp_grid(single, 0.8, WARPED, ORIGINAL, pixel_centers), forward[index : index + 1]
        )
        torch.testing.assert_close(
            make_inverted_tanh_warp_grid(single, 0.8, WARPED, ORIGINAL, pixel_centers), inverse[index : index + 1]
        )


def test_float32_agrees_with_float64():
    grid32 = make_inverted_tanh_warp_grid(get_face_align_matrix(LANDMARKS, WARPED), 0.8, WARPED, ORIGINAL)
    grid64 = make_inverted_tanh_warp_grid(get_face_align_matrix(LANDMARKS.double(), WARPED), 0.8, WARPED, ORIGINAL)
    assert grid32.dtype == torch.float32 and grid64.dtype == torch.float64
    assert (grid32.double() - grid64).abs().max() < 1e-5


def test_half_precision_matrices_are_computed_in_float32():
    matrix = get_face_align_matrix(LANDMARKS, WARPED)
    grid = make_tanh_warp_grid(matrix.half(), 0.8, WARPED, ORIGINAL)
    assert grid.dtype == torch.float32 and torch.isfinite(grid).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    matrix = get_face_align_matrix(LANDMARKS, WARPED)
    cpu = make_inverted_tanh_warp_grid(matrix, 0.8, WARPED, ORIGINAL)
    cuda = make_inverted_tanh_warp_grid(matrix.cuda(), 0.8, WARPED, ORIGINAL)
    assert cuda.device.type == "cuda"
    torch.testing.assert_close(cuda.cpu(), cpu, atol=1e-5, rtol=0)


def test_rejects_bad_arguments():
    matrix = get_face_align_matrix(LANDMARKS, WARPED)
    with pytest.raises(ValueError, match=r"\(batch_size, 5, 2\); got \(5, 2\)"):
        get_face_align_matrix(LANDMARKS[0], WARPED)
    with pytest.raises(ValueError, match=r"\(batch_size, 3, 3\); got \(3, 3\)"):
        make_tanh_warp_grid(matrix[0], 0.8, WARPED, ORIGINAL)
    with pytest.raises(ValueError, match=r"warp_factor in \[0, 1\]; got 1.5"):
        make_inverted_tanh_warp_grid(matrix, 1.5, WARPED, ORIGINAL)
    with pytest.raises(ValueError, match=r"positive shape; got \(0, 5\)"):
        make_tanh_warp_grid(matrix, 0.8, (0, 5), ORIGINAL)
