"""Evaluation metrics. Face parsing: dataset-level confusion matrix, per-class F1 / IoU, Helen's merged scores.
Face verification: LFW-style k-fold pair accuracy, ROC and TAR at fixed FAR.

`FaceParsingF1`, `FaceParsingMeanIoU`, `VerificationAccuracy` and `TarAtFar` (`evaluate.Metric` subclasses) are
resolved on first access, so importing this package does not import `evaluate`; every other name works without it.
"""

from importlib.util import find_spec
from typing import Any

from . import face_parsing, verification
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
from .verification import (
    DEFAULT_FAR_TARGETS,
    kfold_indices,
    l2_normalize,
    roc_curve,
    tar_at_far,
    verification_accuracy,
)


_LAZY_NAMES = ("FaceParsingF1", "FaceParsingMeanIoU")
_VERIFICATION_LAZY_NAMES = ("VerificationAccuracy", "TarAtFar")

__all__ = [
    "DEFAULT_FAR_TARGETS",
    "HELEN_MERGED_GROUPS",
    "FaceParsingAccumulator",
    "confusion_matrix",
    "f1_from_confusion",
    "helen_overall_f1",
    "iou_from_confusion",
    "kfold_indices",
    "l2_normalize",
    "merged_f1",
    "roc_curve",
    "scores_from_confusion",
    "tar_at_far",
    "verification_accuracy",
]
# Advertise the `evaluate` wrappers only where they can be built, so that `from faceformers.metrics import *` works
# without the optional dependency.
if find_spec("evaluate") is not None and find_spec("datasets") is not None:
    __all__ += list(_LAZY_NAMES) + list(_VERIFICATION_LAZY_NAMES)


def __getattr__(name: str) -> Any:
    """Forwards the `evaluate.Metric` wrappers to `face_parsing` / `verification`, which build them on first access."""
    if name in _LAZY_NAMES:
        return getattr(face_parsing, name)
    if name in _VERIFICATION_LAZY_NAMES:
        return getattr(verification, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
