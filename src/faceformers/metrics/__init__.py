"""Evaluation metrics. Face parsing: dataset-level confusion matrix, per-class F1 / IoU, Helen's merged scores.

`FaceParsingF1` and `FaceParsingMeanIoU` (`evaluate.Metric` subclasses) are resolved on first access, so importing
this package does not import `evaluate`; every other name works without it.
"""

from importlib.util import find_spec
from typing import Any

from . import face_parsing
from .face_parsing import (
    HELEN_MERGED_GROUPS,
    FaceParsingAccumulator,
    confusion_matrix,
    f1_from_confusion,
    helen_overall_f1,
    iou_from_confusion,
    merged_f1,
    scores_from_confusion,
)


_LAZY_NAMES = ("FaceParsingF1", "FaceParsingMeanIoU")

__all__ = [
    "HELEN_MERGED_GROUPS",
    "FaceParsingAccumulator",
    "confusion_matrix",
    "f1_from_confusion",
    "helen_overall_f1",
    "iou_from_confusion",
    "merged_f1",
    "scores_from_confusion",
]
# Advertise the `evaluate` wrappers only where they can be built, so that `from faceformers.metrics import *` works
# without the optional dependency.
if find_spec("evaluate") is not None and find_spec("datasets") is not None:
    __all__ += list(_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    """Forwards `FaceParsingF1` / `FaceParsingMeanIoU` to `face_parsing`, which builds them on first access."""
    if name in _LAZY_NAMES:
        return getattr(face_parsing, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
