"""Five-point face alignment and the tanh warp of FaRL / facer / SegFace, in plain torch.

The face-parsing models of FaRL (facer's `farl/lapa/448`) and SegFace (LaPa) do not look at the raw photo: a
similarity transform maps five facial landmarks onto a fixed template, and a *tanh warp* squeezes the whole image
into the network's square input so that the face keeps its resolution while the surroundings are compressed towards
the border. The logits are warped back onto the original image with the inverse map.

Conventions used throughout:

* points are `(x, y)` pixel coordinates, tensors are batched: points `(batch_size, num_points, 2)`, matrices
  `(batch_size, 3, 3)`; shapes are `(height, width)`;
* a *matrix* maps coordinates of the original image to the aligned (not yet warped) frame of `warped_shape`;
* grids are for `torch.nn.functional.grid_sample(..., align_corners=False)`: `(batch_size, height, width, 2)` with
  `(x, y)` in `[-1, 1]`;
* everything runs on the device and in the floating dtype of its inputs (half precision is computed in float32:
  coordinates of large images do not fit in 11 bits of mantissa).

**Pixel centres.** facer places the sample of pixel `i` at coordinate `i + 0.5` (since commit 2439d74, facer#13 /
PR #25), which makes `make_inverted_tanh_warp_grid` the exact inverse of `make_tanh_warp_grid` under
`align_corners=False`. The older code, and the copy in SegFace (`network/models/utils_models.py`), place it at `i`.
Select the convention with `pixel_centers=True` (facer) or `pixel_centers=False` (SegFace). With `False` the two
grids do not compose to the identity: a forward-then-inverse round trip moves content by `-0.5 * (1 + 1 / s)` pixels
along x and y in the central region, `s` being the scale of the matrix (aligned pixels per original pixel). SegFace's
released LaPa weights were trained through exactly that pair of grids (its loss is computed after the inverse warp),
so use `False` with them and `True` for anything new.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


# The five reference points of facer / FaRL (left eye, right eye, nose tip, left and right mouth corner, in image
# order, i.e. the image-left eye first), in a 512 x 512 frame: `_standard_face_pts()` in facer/transform.py.
FACE_TEMPLATE_5_PIXELS_512 = (
    (196.0, 226.0),
    (316.0, 226.0),
    (256.0, 286.0),
    (220.0, 360.4),
    (292.0, 360.4),
)

# The ArcFace / insightface five-point template of a 112 x 112 face-recognition crop (same point order), used by Part
# fViT and LAFS (their IJB script writes it for a 96 x 112 crop and adds 8 to x).
ARCFACE_TEMPLATE_5_PIXELS_112 = (
    (38.2946, 51.6963),
    (73.5318, 51.5014),
    (56.0252, 71.7366),
    (41.5493, 92.3655),
    (70.7299, 92.2041),
)

_ARCTANH_EPS = 1e-3  # facer's `_safe_arctanh` clamps to [-1 + eps, 1 - eps] before arctanh


def face_template_5(
    target_shape: Sequence[int],
    target_face_scale: float = 1.0,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """The five template points in pixels of a `target_shape = (height, width)` frame, shape `(5, 2)`.

    The 512-pixel template is first normalised to `[-1, 1]` (`p / 256 - 1`), scaled about the centre by
    `target_face_scale` (smaller = more context around the face) and mapped to pixels with
    `(p + 1) * (size - 1) / 2`, exactly as facer's `get_face_align_matrix` does.
    """
    height, width = _shape(target_shape, "target_shape")
    # same operations in the same order and dtype as facer, so float32 results are bit-identical
    normalized = torch.tensor(FACE_TEMPLATE_5_PIXELS_512, dtype=dtype, device=device) / 256.0 - 1.0
    extent = torch.tensor([width - 1, height - 1], dtype=dtype, device=device)
    return (normalized * target_face_scale + 1) * extent / 2.0


def get_similarity_transform_matrix(from_points: torch.Tensor, to_points: torch.Tensor) -> torch.Tensor:
    """Least-squares similarity (rotation, uniform scale and translation, no reflection) from one point set to another.

    Args:
        from_points: `(batch_size, num_points, 2)` source points.
        to_points: `(batch_size, num_points, 2)` or `(num_points, 2)` destination points.

    Returns:
        `(batch_size, 3, 3)` matrices `M` with `M @ [x, y, 1] ~ [x', y', 1]`; the closed form of facer's
        `get_similarity_transform_matrix` (equal to skimage's `SimilarityTransform.estimate` up to rounding).
    """
    if from_points.ndim != 3 or from_points.shape[-1] != 2:
        raise ValueError(f"Expected from_points of shape (batch_size, num_points, 2); got {tuple(from_points.shape)}.")
    to_points = to_points.to(from_points).expand_as(from_points)

    # centre both point sets: the translation follows from the centroids once the linear part is known
    from_mean, to_mean = from_points.mean(dim=1), to_points.mean(dim=1)  # (B, 2)
    src = from_points - from_mean[:, None]  # (B, N, 2)
    dst = to_points - to_mean[:, None]

    # the linear part [[a, b], [-b, a]] minimises sum |A src - dst|^2 in closed form
    energy = src.square().sum(dim=(1, 2))  # (B,)
    a = (src * dst).sum(dim=(1, 2)) / energy
    b = (dst[..., 0] * src[..., 1] - dst[..., 1] * src[..., 0]).sum(dim=1) / energy

    tx = to_mean[:, 0] - a * from_mean[:, 0] - b * from_mean[:, 1]
    ty = to_mean[:, 1] + b * from_mean[:, 0] - a * from_mean[:, 1]
    zeros, ones = torch.zeros_like(a), torch.ones_like(a)
    rows = [a, b, tx, -b, a, ty, zeros, zeros, ones]
    return torch.stack(rows, dim=-1).reshape(-1, 3, 3)


def get_face_align_matrix(
    landmarks: torch.Tensor,
    target_shape: Sequence[int],
    target_face_scale: float = 1.0,
    target_points: torch.Tensor | None = None,
) -> torch.Tensor:
    """Similarity that maps five facial landmarks onto the facer/FaRL template in a `target_shape` frame.

    Args:
        landmarks: `(batch_size, 5, 2)` pixel coordinates `(x, y)` in the original image: image-left eye,
            image-right eye, nose tip, image-left and image-right mouth corner.
        target_shape: `(height, width)` of the aligned frame (the network input, e.g. `(512, 512)`).
        target_face_scale: size of the face in the frame; 1.0 for parsing (FaRL LaPa, SegFace), 0.8 for FaRL's
            landmark models.
        target_points: optional `(5, 2)` or `(batch_size, 5, 2)` destination points replacing the template.

    Returns:
        `(batch_size, 3, 3)` matrices mapping original pixel coordinates to the aligned frame.
    """
    if landmarks.ndim != 3 or landmarks.shape[-2:] != (5, 2):
        raise ValueError(f"Expected landmarks of shape (batch_size, 5, 2); got {tuple(landmarks.shape)}.")
    if target_points is None:
        target_points = face_template_5(
            target_shape, target_face_scale, dtype=landmarks.dtype, device=landmarks.device
        )
    return get_similarity_transform_matrix(landmarks, target_points)


def tanh_warp_points(
    points: torch.Tensor, matrix: torch.Tensor, warp_factor: float, warped_shape: Sequence[int]
) -> torch.Tensor:
    """Map original-image points into the warped frame: apply `matrix`, then the tanh warp.

    Args:
        points: `(batch_size, num_points, 2)` coordinates in the original image.
        matrix: `(batch_size, 3, 3)` original -> aligned matrices.
        warp_factor: 0 is a plain similarity crop; `f` in (0, 1] keeps the central `1 - f` of the normalised frame
            linear and compresses `|c| > 1 - f` with `tanh` so that the whole plane lands inside the frame.
        warped_shape: `(height, width)` of the warped frame.

    Returns:
        `(batch_size, num_points, 2)` coordinates in the warped frame.
    """
    aligned = _apply_matrix(points, matrix)
    if warp_factor == 0:
        return aligned
    extent = _extent(warped_shape, aligned)
    normalized = aligned / extent * 2 - 1
    # identity for |c| <= 1 - f; c' = sign(c) * (tanh((|c| - 1 + f) / f) * f + 1 - f) beyond
    outer = normalized.abs() > 1 - warp_factor
    squeezed = torch.tanh((normalized.abs() - 1 + warp_factor) / warp_factor) * warp_factor + 1 - warp_factor
    normalized = torch.where(outer, normalized.sign() * squeezed, normalized)
    return (normalized + 1) / 2 * extent


def inverted_tanh_warp_points(
    points: torch.Tensor, matrix: torch.Tensor, warp_factor: float, warped_shape: Sequence[int]
) -> torch.Tensor:
    """Inverse of `tanh_warp_points`: map warped-frame points back to the original image.

    The arctanh argument is clamped to `1 - 1e-3` as in facer, so points within about 0.05% of the warped frame's
    border map to a finite (far away) location instead of infinity.

    Args:
        points: `(batch_size, num_points, 2)` coordinates in the warped frame.
        matrix: `(batch_size, 3, 3)` original -> aligned matrices.
        warp_factor: as in `tanh_warp_points`.
        warped_shape: `(height, width)` of the warped frame.

    Returns:
        `(batch_size, num_points, 2)` coordinates in the original image.
    """
    if warp_factor != 0:
        extent = _extent(warped_shape, points)
        normalized = points / extent * 2 - 1
        outer = normalized.abs() > 1 - warp_factor
        squeezed = (normalized.abs() - 1 + warp_factor) / warp_factor
        stretched = squeezed.clamp(-1 + _ARCTANH_EPS, 1 - _ARCTANH_EPS).arctanh() * warp_factor + 1 - warp_factor
        normalized = torch.where(outer, normalized.sign() * stretched, normalized)
        points = (normalized + 1) / 2 * extent
    return _apply_matrix(points, torch.linalg.inv(matrix))


def make_tanh_warp_grid(
    matrix: torch.Tensor,
    warp_factor: float,
    warped_shape: Sequence[int],
    orig_shape: Sequence[int],
    pixel_centers: bool = True,
) -> torch.Tensor:
    """Sampling grid that warps the original image into the aligned, tanh-warped frame.

    `F.grid_sample(image, grid, mode="bilinear", align_corners=False)` with `image` of shape
    `(batch_size, C, *orig_shape)` returns the warped `(batch_size, C, *warped_shape)` image.

    Args:
        matrix: `(batch_size, 3, 3)` original -> aligned matrices (see `get_face_align_matrix`).
        warp_factor: tanh warp factor in `[0, 1]` (0.8 for FaRL/SegFace LaPa parsing).
        warped_shape: `(height, width)` of the output.
        orig_shape: `(height, width)` of the original image.
        pixel_centers: `True` samples pixel `i` at `i + 0.5` (facer), `False` at `i` (SegFace; see module docs).

    Returns:
        `(batch_size, warped_height, warped_width, 2)` grid in `[-1, 1]` units of the original image.
    """
    matrix = _check_matrix(matrix, warp_factor)
    positions = _pixel_positions(warped_shape, pixel_centers, matrix)  # (h * w, 2) in the warped frame
    positions = positions.expand(matrix.shape[0], -1, -1)
    original = inverted_tanh_warp_points(positions, matrix, warp_factor, warped_shape)
    grid = original / _extent(orig_shape, original) * 2 - 1
    height, width = _shape(warped_shape, "warped_shape")
    return grid.reshape(matrix.shape[0], height, width, 2)


def make_inverted_tanh_warp_grid(
    matrix: torch.Tensor,
    warp_factor: float,
    warped_shape: Sequence[int],
    orig_shape: Sequence[int],
    pixel_centers: bool = True,
) -> torch.Tensor:
    """Sampling grid that brings warped-frame maps (logits, heatmaps) back onto the original image.

    `F.grid_sample(logits, grid, mode="bilinear", align_corners=False)` with `logits` of shape
    `(batch_size, C, h, w)` (any resolution covering the warped frame) returns `(batch_size, C, *orig_shape)`.

    Args:
        matrix: `(batch_size, 3, 3)` original -> aligned matrices used for the forward warp.
        warp_factor: the forward warp's factor.
        warped_shape: `(height, width)` of the warped frame the matrix was built for.
        orig_shape: `(height, width)` of the original image.
        pixel_centers: the forward warp's convention (see `make_tanh_warp_grid`).

    Returns:
        `(batch_size, orig_height, orig_width, 2)` grid in `[-1, 1]` units of the warped frame.
    """
    matrix = _check_matrix(matrix, warp_factor)
    positions = _pixel_positions(orig_shape, pixel_centers, matrix)  # (H * W, 2) in the original image
    positions = positions.expand(matrix.shape[0], -1, -1)
    warped = tanh_warp_points(positions, matrix, warp_factor, warped_shape)
    grid = warped / _extent(warped_shape, warped) * 2 - 1
    height, width = _shape(orig_shape, "orig_shape")
    return grid.reshape(matrix.shape[0], height, width, 2)


def _shape(shape: Sequence[int], name: str) -> tuple[int, int]:
    if len(shape) < 2:
        raise ValueError(f"Expected {name} as (height, width); got {tuple(shape)}.")
    height, width = int(shape[0]), int(shape[1])
    if height < 1 or width < 1:
        raise ValueError(f"Expected a positive {name}; got ({height}, {width}).")
    return height, width


def _extent(shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """`[width, height]` as a tensor on `like`'s device and dtype."""
    height, width = _shape(shape, "shape")
    return torch.tensor([width, height], dtype=like.dtype, device=like.device)


def _apply_matrix(points: torch.Tensor, matrix: torch.Tensor) -> torch.Tensor:
    """Projective transform of `(B, N, 2)` points by `(B, 3, 3)` matrices, without building homogeneous copies."""
    linear = points @ matrix[:, :2, :2].transpose(1, 2) + matrix[:, None, :2, 2]  # (B, N, 2)
    scale = points @ matrix[:, 2:, :2].transpose(1, 2) + matrix[:, None, 2:, 2]  # (B, N, 1)
    return linear / scale


def _check_matrix(matrix: torch.Tensor, warp_factor: float) -> torch.Tensor:
    if matrix.ndim != 3 or matrix.shape[-2:] != (3, 3):
        raise ValueError(f"Expected matrix of shape (batch_size, 3, 3); got {tuple(matrix.shape)}.")
    if not 0 <= warp_factor <= 1:
        raise ValueError(f"Expected warp_factor in [0, 1]; got {warp_factor}.")
    if not matrix.is_floating_point() or matrix.dtype in (torch.float16, torch.bfloat16):
        matrix = matrix.float()
    return matrix


def _pixel_positions(shape: Sequence[int], pixel_centers: bool, like: torch.Tensor) -> torch.Tensor:
    """`(1, height * width, 2)` sample positions `(x, y)`, row-major, at `i + 0.5` or `i`."""
    height, width = _shape(shape, "shape")
    offset = 0.5 if pixel_centers else 0.0
    ys = torch.arange(height, dtype=like.dtype, device=like.device) + offset
    xs = torch.arange(width, dtype=like.dtype, device=like.device) + offset
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx, yy], dim=-1).reshape(1, height * width, 2)


__all__ = [
    "FACE_TEMPLATE_5_PIXELS_512",
    "face_template_5",
    "get_face_align_matrix",
    "get_similarity_transform_matrix",
    "inverted_tanh_warp_points",
    "make_inverted_tanh_warp_grid",
    "make_tanh_warp_grid",
    "tanh_warp_points",
]


def landmarks_to_tensor(landmarks, num_images: int) -> torch.Tensor:
    """`(num_images, 5, 2)` float32 copy of five-point landmarks (array-like, one `(5, 2)` per image), validated."""
    if landmarks is None:
        raise ValueError(
            "do_align=True needs landmarks: five (x, y) points per image (eyes, nose tip, mouth corners) in pixels "
            "of the original image, e.g. from a face detector such as YuNet or RetinaFace."
        )
    if isinstance(landmarks, (list, tuple)) and any(
        isinstance(item, (np.ndarray, torch.Tensor)) for item in landmarks
    ):
        landmarks = np.stack([np.asarray(torch.as_tensor(item).detach().cpu()) for item in landmarks])
    elif isinstance(landmarks, torch.Tensor):
        landmarks = landmarks.detach().cpu().numpy()
    try:
        array = np.array(landmarks, dtype=np.float32)  # a copy: the caller's landmarks are never touched
    except (TypeError, ValueError) as error:
        raise ValueError(f"Could not read landmarks as an array of (x, y) points: {error}") from error
    if array.shape == (5, 2):
        array = array[None]
    if array.shape != (num_images, 5, 2):
        raise ValueError(
            f"Expected landmarks of shape (5, 2) per image, i.e. ({num_images}, 5, 2) for {num_images} image(s); "
            f"got {array.shape}."
        )
    if not np.isfinite(array).all():
        raise ValueError("Landmarks contain NaN or infinite values.")
    return torch.from_numpy(array)


def check_align_matrices(matrices: torch.Tensor, landmarks: torch.Tensor) -> None:
    """Refuse alignment matrices that are not finite or collapse the face (coincident landmarks)."""
    scales = matrices[:, :2, :2].det().abs()
    bad = (~torch.isfinite(matrices).all(dim=(1, 2))) | (scales < 1e-12)
    if bad.any():
        index = int(bad.nonzero()[0])
        raise ValueError(
            f"The landmarks of image {index} are degenerate (all points coincide): {landmarks[index].tolist()}."
        )


def arcface_align_matrix(landmarks: torch.Tensor, image_size: int = 112) -> torch.Tensor:
    """Similarity mapping five landmarks `(batch_size, 5, 2)` onto the ArcFace template of an `image_size` square crop
    (the 112-pixel template scaled by `image_size / 112`); `(batch_size, 3, 3)` matrices."""
    if landmarks.ndim != 3 or landmarks.shape[-2:] != (5, 2):
        raise ValueError(f"Expected landmarks of shape (batch_size, 5, 2); got {tuple(landmarks.shape)}.")
    template = torch.tensor(ARCFACE_TEMPLATE_5_PIXELS_112, dtype=landmarks.dtype, device=landmarks.device)
    return get_similarity_transform_matrix(landmarks, template * (image_size / 112.0))


def make_affine_warp_grid(matrix: torch.Tensor, warped_shape: Sequence[int], original_shape: Sequence[int]) -> torch.Tensor:
    """`grid_sample` grid (`align_corners=False`) of the affine warp `matrix` (original -> warped pixels), with
    OpenCV's `warpAffine` convention: output pixel `(x, y)` samples the original at `matrix^-1 @ (x, y, 1)`, pixel
    centres at integer coordinates. `(batch_size, height, width, 2)`."""
    height, width = _shape(warped_shape, "warped_shape")
    source_height, source_width = _shape(original_shape, "original_shape")
    compute = torch.float64 if matrix.dtype == torch.float64 else torch.float32
    inverse = torch.linalg.inv(matrix.to(compute))  # (B, 3, 3)
    ys, xs = torch.meshgrid(
        torch.arange(height, dtype=compute, device=matrix.device),
        torch.arange(width, dtype=compute, device=matrix.device),
        indexing="ij",
    )
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).reshape(1, -1, 3)  # (1, h*w, 3)
    source = (points @ inverse.transpose(1, 2))[..., :2]  # (B, h*w, 2) original pixel coordinates
    scale = torch.tensor([source_width, source_height], dtype=compute, device=matrix.device)
    grid = (source + 0.5) / scale * 2 - 1  # integer pixel centres -> align_corners=False coordinates
    return grid.reshape(-1, height, width, 2).to(matrix.dtype)
