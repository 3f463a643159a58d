"""Face-parsing metrics: a dataset-level confusion matrix and the F1 / IoU scores the face-parsing papers report.

Every score here is computed from **one confusion matrix summed over the whole evaluation set**, never as a mean of
per-image scores. This is the protocol of the original systems (ORIGINALS.md §4.10 FaRL, §6.5 SegFace, §9.7 DML-CSR):
each image adds its pixel histogram to a running total, and F1 / IoU are read off the total at the end.

Definitions, for a `(K, K)` confusion matrix `C` (rows = reference class, columns = predicted class):

* `tp[c] = C[c, c]`, `reference[c] = C[c, :].sum()`, `predicted[c] = C[:, c].sum()`.
* `F1[c] = 2 tp[c] / (reference[c] + predicted[c])` (the Dice coefficient of class `c` over the dataset), as in
  SegFace `inference.py::validation` and DML-CSR `utils/miou.py::compute_mean_ioU`.
* `IoU[c] = tp[c] / (reference[c] + predicted[c] - tp[c])`.
* A score whose denominator is zero (the class appears neither in the references nor in the predictions) is NaN
  and is left out of every mean. The original code divides by `max(1, union)` for IoU (an absent class counts as 0)
  and by zero for F1 (NaN propagates into the mean); both agree with ours whenever every class occurs, which is the
  case on the full CelebAMask-HQ, LaPa and Helen test sets. Leaving absent classes out is also what the Hub
  `mean_iou` metric (`evaluate-metric/mean_iou`, `np.nanmean`) does.
* `mean_f1` = mean of `F1` over every class except the background (SegFace: classes `1..K-1`; FaRL: "F1-mean over the
  foreground classes"; DML-CSR: every name but `bg`). Merged groups (eyes, brows, mouth, overall) are not part of it.
* `mean_iou` = mean of `IoU` over **all** `K` classes, background included (DML-CSR and SegFace `Mean IU`,
  SegFormer/Hub `mean_iou`).
* `pixel_accuracy = trace(C) / C.sum()`; `mean_accuracy` = mean over classes with reference pixels of
  `tp[c] / reference[c]` (DML-CSR and SegFace report both).

Helen's merged scores (`helen_overall_f1`) are F1 scores of *groups* of classes: the rows and the columns of the
group are summed, so confusions inside a group count as correct (SegFace `inference.py` `_merge`, DML-CSR §9.7).

`FaceParsingF1` and `FaceParsingMeanIoU` wrap the same computation as `evaluate.Metric` subclasses. They are built
on first access, so importing this module does not import `evaluate` (an optional dependency, in the `training` and
`dev` extras). Instantiate them directly; `evaluate.load` of a Hub metric needs the network, these classes do not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Union

import numpy as np
import torch

from ..data.labels import HELEN_LABELS


ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]
LabelNames = Union[Mapping[int, str], Sequence[str]]

# Helen's merged regions, by canonical class name (faceformers.data.labels). "overall" is the union of the inner
# facial parts, eyes + brows + nose + mouth, scored as one binary region; skin, hair and background are not part of
# it. Source: SegFace `inference.py::validation` (Kartik-3004/SegFace@9416628e), where
# `overall = _merge(eyes, brows, nose, mouth)`, and DML-CSR `utils/miou.py` (ORIGINALS.md §9.7).
HELEN_MERGED_GROUPS: dict[str, tuple[str, ...]] = {
    "eyes": ("left_eye", "right_eye"),
    "brows": ("left_eyebrow", "right_eyebrow"),
    "nose": ("nose",),
    "mouth": ("upper_lip", "inner_mouth", "lower_lip"),
    "skin": ("skin",),
    "overall": (
        "left_eye",
        "right_eye",
        "left_eyebrow",
        "right_eyebrow",
        "nose",
        "upper_lip",
        "inner_mouth",
        "lower_lip",
    ),
}

_EVALUATE_METRIC_NAMES = ("FaceParsingF1", "FaceParsingMeanIoU")


# ---------------------------------------------------------------------------------------------------------------------
# Confusion matrix
# ---------------------------------------------------------------------------------------------------------------------


def _as_label_array(values: ArrayLike, name: str) -> np.ndarray:
    """Converts a label map (numpy, torch or nested lists) of any shape to an `int64` numpy array."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu().numpy()
    try:
        array = np.asarray(values)
    except ValueError as error:  # numpy refuses ragged nested lists
        raise ValueError(f"`{name}` must be a rectangular array of class ids; got ragged data ({error}).") from None
    if array.dtype == object:
        raise ValueError(f"`{name}` must be a rectangular array of class ids; got ragged or non-numeric data.")
    if not (np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_):
        raise ValueError(
            f"`{name}` must hold integer class ids, got dtype {array.dtype}. "
            "Take the argmax over the class dimension of the logits first."
        )
    return array.astype(np.int64, copy=False)


def _check_range(values: np.ndarray, num_labels: int, name: str) -> None:
    """Raises a `ValueError` naming the values of `values` that are not class ids in `[0, num_labels)`."""
    invalid = (values < 0) | (values >= num_labels)
    if invalid.any():
        offending = np.unique(values[invalid])
        shown = ", ".join(str(v) for v in offending[:10]) + (", ..." if offending.size > 10 else "")
        raise ValueError(
            f"`{name}` holds values outside [0, {num_labels}) at counted pixels: {shown} "
            f"({int(invalid.sum())} pixels). Check `num_labels` and `ignore_index`."
        )


def confusion_matrix(
    predictions: ArrayLike,
    references: ArrayLike,
    num_labels: int,
    ignore_index: int | None = 255,
) -> np.ndarray:
    """Pixel confusion matrix of predicted against reference label maps.

    Args:
        predictions: predicted class ids, any shape (`(H, W)`, `(N, H, W)`, ...), numpy, torch or nested lists.
        references: reference class ids, the same shape as `predictions`.
        num_labels: the number of classes `K`.
        ignore_index: reference value of pixels that are not counted (and whose prediction is not checked).
            `None` counts every pixel.

    Returns:
        `np.ndarray` of shape `(K, K)` and dtype `int64`; entry `[r, p]` counts the pixels of reference class `r`
        predicted as class `p` (rows = reference, columns = prediction).

    Raises:
        ValueError: on a shape mismatch, a non-integer input, or a counted class id outside `[0, K)`.
    """
    if isinstance(num_labels, bool) or not isinstance(num_labels, (int, np.integer)) or num_labels < 1:
        raise ValueError(f"`num_labels` must be a positive integer, got {num_labels!r}.")
    predicted = _as_label_array(predictions, "predictions")
    reference = _as_label_array(references, "references")
    if predicted.shape != reference.shape:
        raise ValueError(
            f"`predictions` and `references` must have the same shape, got {predicted.shape} and {reference.shape}."
        )
    predicted, reference = predicted.reshape(-1), reference.reshape(-1)
    if ignore_index is not None:
        counted = reference != ignore_index
        predicted, reference = predicted[counted], reference[counted]
    _check_range(reference, num_labels, "references")
    _check_range(predicted, num_labels, "predictions")
    counts = np.bincount(reference * num_labels + predicted, minlength=num_labels * num_labels)
    return counts.reshape(num_labels, num_labels).astype(np.int64, copy=False)


def _check_confusion(confusion: np.ndarray) -> np.ndarray:
    """Returns `confusion` as a square 2-D numpy array, or raises a `ValueError`."""
    confusion = np.asarray(confusion)
    if confusion.ndim != 2 or confusion.shape[0] != confusion.shape[1]:
        raise ValueError(f"A confusion matrix must be square `(K, K)`, got shape {confusion.shape}.")
    return confusion


def _safe_divide(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """Element-wise `numerator / denominator` as float64, NaN where the denominator is zero (no warning)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    out = np.full(np.broadcast(numerator, denominator).shape, np.nan)
    np.divide(numerator, denominator, out=out, where=denominator != 0)
    return out


def _nanmean(values: np.ndarray) -> float:
    """Mean of the non-NaN entries; NaN (without a warning) when there are none."""
    values = np.asarray(values, dtype=np.float64)
    kept = values[~np.isnan(values)]
    return float(kept.mean()) if kept.size else float("nan")


def f1_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class F1 (Dice) `2 tp / (reference + predicted)` of a `(K, K)` confusion matrix.

    Returns:
        `np.ndarray` of shape `(K,)`, float64; NaN for a class absent from both references and predictions.
    """
    confusion = _check_confusion(confusion)
    tp = np.diag(confusion)
    return _safe_divide(2 * tp, confusion.sum(axis=1) + confusion.sum(axis=0))


def iou_from_confusion(confusion: np.ndarray) -> np.ndarray:
    """Per-class IoU `tp / (reference + predicted - tp)` of a `(K, K)` confusion matrix.

    Returns:
        `np.ndarray` of shape `(K,)`, float64; NaN for a class with an empty union.
    """
    confusion = _check_confusion(confusion)
    tp = np.diag(confusion)
    return _safe_divide(tp, confusion.sum(axis=1) + confusion.sum(axis=0) - tp)


def merged_f1(confusion: np.ndarray, class_ids: Sequence[int]) -> float:
    """F1 of a group of classes scored as one region: their rows and their columns are summed.

    Confusions between two members of the group count as correct (SegFace `inference.py` `_merge`, DML-CSR
    `utils/miou.py`). For a single class this equals `f1_from_confusion(confusion)[class_id]`.
    """
    confusion = _check_confusion(confusion)
    ids = list(class_ids)
    intersection = confusion[np.ix_(ids, ids)].sum()
    return float(_safe_divide(2 * intersection, confusion[ids, :].sum() + confusion[:, ids].sum()))


# ---------------------------------------------------------------------------------------------------------------------
# Dataset-level accumulation
# ---------------------------------------------------------------------------------------------------------------------


def _label_names(id2label: LabelNames | None, num_labels: int) -> list[str]:
    """The `K` class names used as result keys: `id2label` values, or the class ids as strings."""
    if id2label is None:
        return [str(i) for i in range(num_labels)]
    if isinstance(id2label, Mapping):
        names = {int(key): str(value) for key, value in id2label.items()}
        missing = [i for i in range(num_labels) if i not in names]
        if missing:
            raise ValueError(f"`id2label` has no name for class ids {missing} (num_labels={num_labels}).")
        return [names[i] for i in range(num_labels)]
    if len(id2label) != num_labels:
        raise ValueError(f"`id2label` lists {len(id2label)} names, expected num_labels={num_labels}.")
    return [str(name) for name in id2label]


def scores_from_confusion(
    confusion: np.ndarray,
    id2label: LabelNames | None = None,
    background_index: int | None = 0,
) -> dict[str, float]:
    """All face-parsing scores of a `(K, K)` confusion matrix, as a flat `{name: float}` dict.

    Keys: `mean_f1` (excluding `background_index`; `None` averages all classes), `mean_iou` (all classes),
    `pixel_accuracy`, `mean_accuracy`, then `f1_<name>` and `iou_<name>` per class, where `<name>` comes from
    `id2label` (a `{class_id: name}` mapping or a sequence of `K` names) or is the class id. NaN marks a class
    absent from references and predictions; it is left out of the means. Definitions: see the module docstring.
    """
    confusion = _check_confusion(confusion)
    num_labels = confusion.shape[0]
    names = _label_names(id2label, num_labels)
    f1, iou = f1_from_confusion(confusion), iou_from_confusion(confusion)
    foreground = [i for i in range(num_labels) if i != background_index]
    results = {
        "mean_f1": _nanmean(f1[foreground]),
        "mean_iou": _nanmean(iou),
        "pixel_accuracy": float(_safe_divide(np.trace(confusion), confusion.sum())),
        "mean_accuracy": _nanmean(_safe_divide(np.diag(confusion), confusion.sum(axis=1))),
    }
    results.update({f"f1_{name}": float(value) for name, value in zip(names, f1)})
    results.update({f"iou_{name}": float(value) for name, value in zip(names, iou)})
    return results


class FaceParsingAccumulator:
    """Sums the confusion matrices of successive batches; scores are computed once, on the total.

    This is the dataset-level protocol of FaRL, SegFace and DML-CSR: F1 is *not* the mean of per-image F1 scores.
    The running total is the public attribute `confusion` (`(K, K)`, `int64`); to combine processes, sum it across
    ranks (e.g. `accelerator.reduce(torch.from_numpy(acc.confusion), "sum")`) before `compute`.

    Args:
        num_labels: the number of classes `K`.
        ignore_index: reference value of pixels that are not counted; `None` counts every pixel.

    Example:

    ```python
    >>> import numpy as np
    >>> from faceformers.metrics import FaceParsingAccumulator
    >>> acc = FaceParsingAccumulator(num_labels=2)
    >>> acc.update(np.array([[0, 1], [1, 1]]), np.array([[0, 1], [0, 255]]))
    >>> acc.compute()["f1_1"]
    0.6666666666666666

    ```
    """

    def __init__(self, num_labels: int, ignore_index: int | None = 255):
        self.num_labels = num_labels
        self.ignore_index = ignore_index
        self.confusion = np.zeros((num_labels, num_labels), dtype=np.int64)

    def update(self, predictions: ArrayLike, references: ArrayLike) -> None:
        """Adds the pixels of one image `(H, W)` or one batch `(N, H, W)` to the running confusion matrix."""
        self.confusion += confusion_matrix(predictions, references, self.num_labels, self.ignore_index)

    def reset(self) -> None:
        """Clears the running confusion matrix."""
        self.confusion[...] = 0

    def compute(self, id2label: LabelNames | None = None, background_index: int | None = 0) -> dict[str, float]:
        """Scores of everything seen so far; see `scores_from_confusion` for the keys."""
        return scores_from_confusion(self.confusion, id2label=id2label, background_index=background_index)


def helen_overall_f1(
    confusion_or_accumulator: np.ndarray | FaceParsingAccumulator,
    labels: Sequence[str] = HELEN_LABELS,
) -> dict[str, float]:
    """Helen's merged F1 scores: `eyes`, `brows`, `nose`, `mouth`, `skin` and `overall`.

    Each score is `merged_f1` of a group from `HELEN_MERGED_GROUPS`: eyes = left + right eye, brows = left + right
    eyebrow, mouth = upper lip + inner mouth + lower lip, and **overall = eyes + brows + nose + mouth as one binary
    region** (background, skin and hair excluded; confusions among the inner parts count as correct). This is the
    "overall" of SegFace `inference.py::validation` and of DML-CSR `utils/miou.py` (ORIGINALS.md §6.5, §9.7).

    Args:
        confusion_or_accumulator: a `(K, K)` confusion matrix summed over the test set, or an accumulator.
        labels: the class names in index order, using the canonical names of `faceformers.data.labels`. The default
            is Helen's 11-class order; LaPa and CelebAMask-HQ (order A) work too, since groups are found by name.
    """
    if isinstance(confusion_or_accumulator, FaceParsingAccumulator):
        confusion = confusion_or_accumulator.confusion
    else:
        confusion = _check_confusion(confusion_or_accumulator)
    if len(labels) != confusion.shape[0]:
        raise ValueError(f"`labels` lists {len(labels)} classes but the confusion matrix is {confusion.shape}.")
    index = {name: i for i, name in enumerate(labels)}
    missing = sorted({name for group in HELEN_MERGED_GROUPS.values() for name in group} - index.keys())
    if missing:
        raise ValueError(f"`labels` lacks the classes {missing} needed for Helen's merged scores.")
    return {
        group: merged_f1(confusion, [index[name] for name in members])
        for group, members in HELEN_MERGED_GROUPS.items()
    }


# ---------------------------------------------------------------------------------------------------------------------
# `evaluate.Metric` wrappers (built lazily: `evaluate` is an optional dependency)
# ---------------------------------------------------------------------------------------------------------------------

_DESCRIPTION = """\
Face-parsing scores from one pixel confusion matrix summed over all the images given (FaRL / SegFace / DML-CSR
protocol): per-class F1 (Dice), mean F1 over the non-background classes, per-class IoU, mean IoU over all classes,
pixel accuracy. Classes absent from both references and predictions are NaN and left out of the means.
"""

_INPUTS_DESCRIPTION = """
Args:
    predictions (`list` of 2-D integer maps): predicted class ids, one `(H, W)` map per image.
    references (`list` of 2-D integer maps): reference class ids, the same shapes as `predictions`.
    num_labels (`int`): the number of classes `K`.
    ignore_index (`int`, defaults to 255): reference value of pixels that are not counted.
    id2label (`dict[int, str]` or `list[str]`, optional): class names used in the per-class keys.
Returns:
    A flat dict of floats (see `faceformers.metrics.scores_from_confusion`).
"""

_CITATION = """\
@inproceedings{zheng2022farl, title={General Facial Representation Learning in a Visual-Linguistic Manner},
  author={Zheng, Yinglin and others}, booktitle={CVPR}, year={2022}}
@inproceedings{narayan2025segface, title={SegFace: Face Segmentation of Long-Tail Classes},
  author={Narayan, Kartik and others}, booktitle={AAAI}, year={2025}}
@inproceedings{zheng2022dmlcsr, title={Decoupled Multi-task Learning with Cyclical Self-Regulation for Face Parsing},
  author={Zheng, Qingping and others}, booktitle={CVPR}, year={2022}}
"""


def _summed_confusion(
    predictions: Sequence[ArrayLike], references: Sequence[ArrayLike], num_labels: int, ignore_index: int | None
) -> np.ndarray:
    """Confusion matrix `(K, K)` summed over a list of per-image maps (the maps may differ in size)."""
    if len(predictions) != len(references):
        raise ValueError(f"Got {len(predictions)} predictions but {len(references)} references.")
    accumulator = FaceParsingAccumulator(num_labels, ignore_index)
    for predicted, reference in zip(predictions, references):
        accumulator.update(predicted, reference)
    return accumulator.confusion


def _build_evaluate_metrics() -> dict[str, type]:
    """Defines the `evaluate.Metric` subclasses; called on first access so that `evaluate` is imported only then."""
    try:
        import datasets
        import evaluate
    except ImportError as error:
        raise ImportError(
            "FaceParsingF1 and FaceParsingMeanIoU need `evaluate` and `datasets`: "
            "pip install 'faceformers[training]'. The plain functions of faceformers.metrics work without them."
        ) from error

    # `datasets.List` replaced `Sequence` for lists in datasets 4; keep working with datasets 3.
    list_feature = getattr(datasets, "List", datasets.Sequence)
    label_map = list_feature(list_feature(datasets.Value("int32")))

    class _FaceParsingMetric(evaluate.Metric):
        """Shared `_info`: each example is one 2-D integer map per side (given back to `_compute` as nested lists)."""

        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=_DESCRIPTION,
                citation=_CITATION,
                inputs_description=_INPUTS_DESCRIPTION,
                features=datasets.Features({"predictions": label_map, "references": label_map}),
            )

    class FaceParsingF1(_FaceParsingMetric):
        """Dataset-level F1: `mean_f1` (non-background classes) and `f1_<name>` per class.

        Example (offline, no Hub access):

        ```python
        >>> from faceformers.metrics import FaceParsingF1
        >>> metric = FaceParsingF1(keep_in_memory=True)
        >>> metric.compute(predictions=[[[0, 1], [1, 1]]], references=[[[0, 1], [0, 1]]], num_labels=2)["f1_1"]
        0.8

        ```
        """

        def _compute(
            self,
            predictions: Sequence[ArrayLike],
            references: Sequence[ArrayLike],
            num_labels: int,
            ignore_index: int | None = 255,
            id2label: LabelNames | None = None,
            background_index: int | None = 0,
        ) -> dict[str, float]:
            confusion = _summed_confusion(predictions, references, num_labels, ignore_index)
            scores = scores_from_confusion(confusion, id2label=id2label, background_index=background_index)
            return {key: value for key, value in scores.items() if key == "mean_f1" or key.startswith("f1_")}

    class FaceParsingMeanIoU(_FaceParsingMetric):
        """Dataset-level IoU: `mean_iou` (all classes), `pixel_accuracy`, `mean_accuracy` and `iou_<name>`."""

        def _compute(
            self,
            predictions: Sequence[ArrayLike],
            references: Sequence[ArrayLike],
            num_labels: int,
            ignore_index: int | None = 255,
            id2label: LabelNames | None = None,
        ) -> dict[str, float]:
            confusion = _summed_confusion(predictions, references, num_labels, ignore_index)
            scores = scores_from_confusion(confusion, id2label=id2label)
            return {key: value for key, value in scores.items() if key != "mean_f1" and not key.startswith("f1_")}

    metric_classes = {"FaceParsingF1": FaceParsingF1, "FaceParsingMeanIoU": FaceParsingMeanIoU}
    for public_name, cls in metric_classes.items():
        cls.__qualname__ = public_name  # so that pickle finds them as module attributes
    return metric_classes


def __getattr__(name: str) -> Any:
    """Builds `FaceParsingF1` / `FaceParsingMeanIoU` on first access (PEP 562), importing `evaluate` only then."""
    if name in _EVALUATE_METRIC_NAMES:
        metric_classes = _build_evaluate_metrics()
        globals().update(metric_classes)
        return metric_classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
