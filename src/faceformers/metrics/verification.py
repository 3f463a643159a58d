"""Face-verification metrics: the LFW-style 10-fold accuracy and TAR at fixed FAR (ORIGINALS.md §7.6).

**Pair accuracy** (`verification_accuracy`), the protocol of the insightface `.bin` evaluation used by Part fViT
(`util/verification.py`, `perform_val`) for LFW, CFP-FP and AgeDB-30:

* each embedding is L2-normalised (a zero vector stays zero, as in `sklearn.preprocessing.normalize`) and a pair's
  distance is the squared L2 distance `||e1 - e2||^2`, in `[0, 4]`;
* a pair is predicted "same identity" when its distance is **strictly below** the threshold;
* the pairs are split into `num_folds` contiguous folds in their original order, like
  `sklearn.model_selection.KFold(n_splits, shuffle=False)`: the first `num_pairs % num_folds` folds get one pair more.
  The LFW `pairs.txt` lists its 10 folds of 600 pairs one after the other, so these are exactly the official folds;
* for each fold, the threshold (from `np.arange(0, 4, 0.01)` by default) with the best accuracy on the other folds is
  applied to the held-out fold. **Ties**: among thresholds with the same training accuracy the *first* one in
  `thresholds` order is kept (`np.argmax`, as in insightface), i.e. the smallest for an ascending grid;
* the result is the mean and the (population, `ddof=0`) standard deviation of the held-out accuracies.

Distances are computed in float64; the original code works in the embeddings' dtype (float32), so a distance within
float32 rounding of a grid threshold can fall on the other side of it there.

**TAR at FAR** (`tar_at_far`), the insightface IJB-B / IJB-C protocol: an ROC curve from similarity scores (higher =
more likely the same identity), built like `sklearn.metrics.roc_curve` (one point per distinct score, plus the origin;
tied scores move the curve in one step), then for each target FAR the TPR of the ROC point whose FPR is nearest to the
target. When several points are equally near, the last one in ROC order is used (the largest FPR, then the largest
TPR): insightface flips the curve and keeps the first minimum of `|fpr - target|`, which is that point. The area under
the curve is the trapezoidal AUC of the same points.

`VerificationAccuracy` and `TarAtFar` wrap the same computations as `evaluate.Metric` subclasses. Like the
face-parsing wrappers they are built on first access, so importing this module does not import `evaluate`; instantiate
them directly (no Hub access is needed).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Union

import numpy as np
import torch


logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[Any]]

DEFAULT_FAR_TARGETS: tuple[float, ...] = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)

_EVALUATE_METRIC_NAMES = ("VerificationAccuracy", "TarAtFar")


# ---------------------------------------------------------------------------------------------------------------------
# Input checks
# ---------------------------------------------------------------------------------------------------------------------


def _to_numpy(values: ArrayLike, name: str) -> np.ndarray:
    """numpy / torch / nested lists -> a numpy array (numeric), or a `ValueError` naming `name`."""
    if isinstance(values, torch.Tensor):
        values = values.detach().cpu()
        if values.dtype in (torch.bfloat16, torch.float16):
            values = values.float()
        values = values.numpy()
    try:
        array = np.asarray(values)
    except ValueError as error:  # ragged nested lists
        raise ValueError(f"`{name}` must be a rectangular numeric array; got ragged data ({error}).") from None
    if array.dtype == object or not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
        raise ValueError(f"`{name}` must be a rectangular numeric array, got dtype {array.dtype}.")
    return array


def _check_finite(array: np.ndarray, name: str) -> None:
    bad = ~np.isfinite(array)
    if bad.any():
        raise ValueError(f"`{name}` holds {int(bad.sum())} NaN or infinite values; every value must be finite.")


def _as_embeddings(values: ArrayLike, name: str) -> np.ndarray:
    """A finite float64 `(num_pairs, dim)` array; a 1-D array is read as `num_pairs` one-dimensional embeddings."""
    array = _to_numpy(values, name).astype(np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"`{name}` must have shape (num_pairs, embedding_dim), got {array.shape}.")
    _check_finite(array, name)
    return array


def _as_binary_labels(values: ArrayLike, name: str) -> np.ndarray:
    """A 1-D boolean array from bools or 0/1 numbers, or a `ValueError`."""
    array = _to_numpy(values, name)
    if array.ndim != 1:
        raise ValueError(f"`{name}` must be 1-D (one label per pair), got shape {array.shape}.")
    if array.dtype != np.bool_:
        offending = np.unique(array[(array != 0) & (array != 1)])
        if offending.size:
            shown = ", ".join(str(v) for v in offending[:10]) + (", ..." if offending.size > 10 else "")
            raise ValueError(
                f"`{name}` must be binary (True/False or 1/0, 1 = same identity); got the values {shown}."
            )
    return array.astype(bool)


def _check_both_classes(labels: np.ndarray, name: str) -> None:
    positives = int(labels.sum())
    if positives == 0 or positives == labels.size:
        present = "same-identity (1)" if positives else "different-identity (0)"
        raise ValueError(
            f"`{name}` holds only {present} pairs ({labels.size} of them); both genuine and impostor pairs are needed."
        )


def l2_normalize(embeddings: np.ndarray) -> np.ndarray:
    """Rows divided by their L2 norm; zero rows stay zero (as `sklearn.preprocessing.normalize`)."""
    norms = np.linalg.norm(embeddings, axis=1, keepdims=True)
    zero = norms[:, 0] == 0
    if zero.any():
        logger.warning("%d embeddings are zero vectors; they are left unnormalised.", int(zero.sum()))
    return embeddings / np.where(norms == 0, 1.0, norms)


def kfold_indices(num_samples: int, num_folds: int) -> list[np.ndarray]:
    """Index arrays of `num_folds` contiguous folds, as `sklearn.model_selection.KFold(num_folds, shuffle=False)`.

    The first `num_samples % num_folds` folds hold `num_samples // num_folds + 1` samples, the others one fewer.
    """
    if isinstance(num_folds, bool) or not isinstance(num_folds, (int, np.integer)) or num_folds < 2:
        raise ValueError(f"`num_folds` must be an integer >= 2, got {num_folds!r}.")
    if num_samples < num_folds:
        raise ValueError(f"Cannot split {num_samples} pairs into {num_folds} folds: need at least one pair per fold.")
    sizes = np.full(num_folds, num_samples // num_folds)
    sizes[: num_samples % num_folds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(start, stop) for start, stop in zip(bounds[:-1], bounds[1:])]


# ---------------------------------------------------------------------------------------------------------------------
# LFW-style k-fold pair accuracy
# ---------------------------------------------------------------------------------------------------------------------


def _counts_below(distances: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For every threshold `t`: the number of same-identity pairs and of different-identity pairs with distance < t."""
    genuine = np.sort(distances[same])
    impostor = np.sort(distances[~same])
    return np.searchsorted(genuine, thresholds, side="left"), np.searchsorted(impostor, thresholds, side="left")


def _rates(distances: np.ndarray, same: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, ...]:
    """Accuracy, TPR and FPR at every threshold (prediction `distance < threshold`); a rate without pairs is 0."""
    true_accepts, false_accepts = _counts_below(distances, same, thresholds)
    num_same = int(same.sum())
    num_different = same.size - num_same
    accuracy = (true_accepts + (num_different - false_accepts)) / same.size
    tpr = true_accepts / num_same if num_same else np.zeros(thresholds.size)
    fpr = false_accepts / num_different if num_different else np.zeros(thresholds.size)
    return accuracy, tpr, fpr


def verification_accuracy(
    embeddings1: ArrayLike,
    embeddings2: ArrayLike,
    issame: ArrayLike,
    num_folds: int = 10,
    thresholds: ArrayLike | None = None,
) -> dict[str, Any]:
    """LFW-style verification accuracy with `num_folds`-fold threshold selection (see the module docstring).

    Args:
        embeddings1: `(num_pairs, dim)` embeddings of the first image of each pair (numpy, torch or lists).
        embeddings2: `(num_pairs, dim)` embeddings of the second image of each pair.
        issame: `(num_pairs,)` labels, True / 1 when the two images show the same person.
        num_folds: number of contiguous folds (10 for LFW, CFP-FP, AgeDB-30).
        thresholds: candidate thresholds on the squared L2 distance; default `np.arange(0, 4, 0.01)`.

    Returns:
        A dict with `accuracy` (mean held-out accuracy, float), `accuracy_std` (population std, float),
        `fold_accuracies` and `best_thresholds` (`(num_folds,)` arrays; the threshold chosen on the other folds),
        `thresholds` (`(T,)`), `tpr` and `fpr` (`(T,)`: the held-out TPR / FPR at each threshold, averaged over the
        folds, as insightface's ROC), `distances` (`(num_pairs,)` squared L2 distances) and `num_pairs` (int).

    Raises:
        ValueError: on mismatched shapes, NaN / infinite embeddings, non-binary labels, labels of one class only,
            fewer pairs than folds, or invalid thresholds.
    """
    first = _as_embeddings(embeddings1, "embeddings1")
    second = _as_embeddings(embeddings2, "embeddings2")
    same = _as_binary_labels(issame, "issame")
    if first.shape != second.shape:
        raise ValueError(
            f"`embeddings1` and `embeddings2` must have the same shape, got {first.shape} and {second.shape}."
        )
    if len(same) != len(first):
        raise ValueError(f"Got {len(first)} embedding pairs but {len(same)} `issame` labels.")
    _check_both_classes(same, "issame")
    if thresholds is None:
        grid = np.arange(0, 4, 0.01)
    else:
        grid = _to_numpy(thresholds, "thresholds").astype(np.float64).reshape(-1)
        if grid.size == 0:
            raise ValueError("`thresholds` must not be empty.")
        _check_finite(grid, "thresholds")
    folds = kfold_indices(len(same), num_folds)

    distances = np.sum(np.square(l2_normalize(first) - l2_normalize(second)), axis=1)
    fold_accuracies = np.zeros(num_folds)
    best_thresholds = np.zeros(num_folds)
    tprs = np.zeros((num_folds, grid.size))
    fprs = np.zeros((num_folds, grid.size))
    for fold, test in enumerate(folds):
        train = np.ones(len(same), dtype=bool)
        train[test] = False
        train_accuracy, _, _ = _rates(distances[train], same[train], grid)
        best = int(np.argmax(train_accuracy))  # the first maximum: the smallest threshold of an ascending grid
        test_accuracy, tprs[fold], fprs[fold] = _rates(distances[test], same[test], grid)
        fold_accuracies[fold] = test_accuracy[best]
        best_thresholds[fold] = grid[best]
    return {
        "accuracy": float(fold_accuracies.mean()),
        "accuracy_std": float(fold_accuracies.std()),
        "fold_accuracies": fold_accuracies,
        "best_thresholds": best_thresholds,
        "thresholds": grid,
        "tpr": tprs.mean(axis=0),
        "fpr": fprs.mean(axis=0),
        "distances": distances,
        "num_pairs": len(same),
    }


# ---------------------------------------------------------------------------------------------------------------------
# ROC and TAR at fixed FAR
# ---------------------------------------------------------------------------------------------------------------------


def roc_curve(
    scores: ArrayLike, labels: ArrayLike, drop_intermediate: bool = False
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points `(fpr, tpr, thresholds)` of similarity scores, as `sklearn.metrics.roc_curve` computes them.

    Point `i` accepts the pairs with `score >= thresholds[i]`; there is one point per distinct score (tied scores are
    accepted together), from the highest score down, preceded by the origin `(0, 0)` with threshold `+inf`.
    `drop_intermediate=True` removes the points that lie on a straight line between their neighbours (scikit-learn's
    default, used by insightface's IJB script); it does not change the AUC.
    """
    values = _to_numpy(scores, "scores").astype(np.float64)
    same = _as_binary_labels(labels, "labels")
    if values.ndim != 1:
        raise ValueError(f"`scores` must be 1-D (one similarity per pair), got shape {values.shape}.")
    if len(values) != len(same):
        raise ValueError(f"Got {len(values)} scores but {len(same)} labels.")
    _check_finite(values, "scores")
    _check_both_classes(same, "labels")

    order = np.argsort(-values, kind="stable")
    values, same = values[order], same[order]
    last_of_each_score = np.r_[np.flatnonzero(np.diff(values)), values.size - 1]
    true_accepts = np.cumsum(same)[last_of_each_score]
    false_accepts = last_of_each_score + 1 - true_accepts
    thresholds = values[last_of_each_score]
    if drop_intermediate and thresholds.size > 2:
        bend = np.r_[True, np.diff(false_accepts, 2) != 0, True] | np.r_[True, np.diff(true_accepts, 2) != 0, True]
        true_accepts, false_accepts, thresholds = true_accepts[bend], false_accepts[bend], thresholds[bend]
    true_accepts = np.r_[0, true_accepts]
    false_accepts = np.r_[0, false_accepts]
    thresholds = np.r_[np.inf, thresholds]
    return false_accepts / false_accepts[-1], true_accepts / true_accepts[-1], thresholds


def _check_far_targets(far_targets: Sequence[float]) -> np.ndarray:
    targets = np.asarray(far_targets, dtype=np.float64).reshape(-1)
    if targets.size == 0:
        raise ValueError("`far_targets` must not be empty.")
    outside = targets[~((targets > 0) & (targets <= 1))]  # also catches NaN
    if outside.size:
        raise ValueError(f"Every FAR target must lie in (0, 1]; got {', '.join(str(v) for v in outside)}.")
    return targets


def _far_key(far: float) -> str:
    return f"{far:g}"


def tar_at_far(
    scores: ArrayLike,
    labels: ArrayLike,
    far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
    drop_intermediate: bool = False,
) -> dict[str, Any]:
    """TAR (true accept rate) at target FARs, insightface IJB protocol: the ROC point with the nearest FPR.

    Args:
        scores: `(num_pairs,)` similarity scores, higher = more likely the same identity (e.g. cosine similarity).
        labels: `(num_pairs,)` True / 1 for genuine (same identity) pairs, False / 0 for impostor pairs.
        far_targets: target false accept rates, each in `(0, 1]`.
        drop_intermediate: build the ROC with scikit-learn's default `drop_intermediate=True` (insightface's call)
            instead of keeping every point. The two can differ only where collinear points are dropped on a
            diagonal run of the curve.

    Returns:
        A dict with `auc` (float), `tar_at_far_<far>` (float, the TPR of the chosen point) and
        `far_at_far_<far>` (float, that point's actual FPR; far from the target when the impostor pairs are too few
        for it) for each target, `<far>` formatted with `:g` (`1e-06`, `0.1`), plus the curve itself: `fpr`, `tpr`,
        `thresholds` arrays (see `roc_curve`) and `num_genuine` / `num_impostor` (ints).

    Raises:
        ValueError: on mismatched lengths, non-binary labels, labels of one class only, NaN / infinite scores, or a
            FAR target outside `(0, 1]`.
    """
    targets = _check_far_targets(far_targets)
    fpr, tpr, thresholds = roc_curve(scores, labels, drop_intermediate=drop_intermediate)
    results: dict[str, Any] = {"auc": float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))}
    for target in targets:
        distance = np.abs(fpr - target)
        nearest = int(np.flatnonzero(distance == distance.min())[-1])  # ties: the last point in ROC order
        results[f"tar_at_far_{_far_key(target)}"] = float(tpr[nearest])
        results[f"far_at_far_{_far_key(target)}"] = float(fpr[nearest])
    same = _as_binary_labels(labels, "labels")
    results.update(fpr=fpr, tpr=tpr, thresholds=thresholds)
    results.update(num_genuine=int(same.sum()), num_impostor=int((~same).sum()))
    return results


# ---------------------------------------------------------------------------------------------------------------------
# `evaluate.Metric` wrappers (built lazily: `evaluate` is an optional dependency)
# ---------------------------------------------------------------------------------------------------------------------

_VERIFICATION_DESCRIPTION = """\
LFW-style face-verification accuracy (insightface / Part fViT protocol): L2-normalised embeddings, squared L2
distance, contiguous k-fold split (KFold without shuffling), the threshold with the best accuracy on the other folds
applied to each held-out fold; mean and std of the held-out accuracies.
"""

_VERIFICATION_INPUTS = """
Args:
    embeddings1 (`list` of float vectors): embedding of the first image of each pair.
    embeddings2 (`list` of float vectors): embedding of the second image of each pair.
    issame (`list` of `int`/`bool`): 1 when the two images show the same person, else 0.
    num_folds (`int`, defaults to 10): number of folds.
    thresholds (`list` of `float`, optional): candidate distance thresholds (default `np.arange(0, 4, 0.01)`).
Returns:
    See `faceformers.metrics.verification_accuracy`.
"""

_TAR_DESCRIPTION = """\
True accept rate at fixed false accept rates (insightface IJB-B / IJB-C protocol): ROC curve from similarity scores,
TAR of the ROC point whose FPR is nearest to each target FAR, and the area under the curve.
"""

_TAR_INPUTS = """
Args:
    scores (`list` of `float`): similarity of each pair, higher = more likely the same identity.
    labels (`list` of `int`/`bool`): 1 for genuine (same identity) pairs, 0 for impostor pairs.
    far_targets (`list` of `float`, defaults to 1e-6 ... 1e-1): target false accept rates in (0, 1].
    drop_intermediate (`bool`, defaults to False): drop collinear ROC points as scikit-learn does by default.
Returns:
    See `faceformers.metrics.tar_at_far`.
"""

_CITATION = """\
@inproceedings{sun2022partfvit, title={Part-based Face Recognition with Vision Transformers},
  author={Sun, Zhonglin and Tzimiropoulos, Georgios}, booktitle={BMVC}, year={2022}}
@inproceedings{deng2019arcface, title={ArcFace: Additive Angular Margin Loss for Deep Face Recognition},
  author={Deng, Jiankang and Guo, Jia and Xue, Niannan and Zafeiriou, Stefanos}, booktitle={CVPR}, year={2019}}
"""


def _build_evaluate_metrics() -> dict[str, type]:
    """Defines the `evaluate.Metric` subclasses; called on first access so that `evaluate` is imported only then."""
    try:
        import datasets
        import evaluate
    except ImportError as error:
        raise ImportError(
            "VerificationAccuracy and TarAtFar need `evaluate` and `datasets`: "
            "pip install 'faceformers[training]'. The plain functions of faceformers.metrics work without them."
        ) from error

    # `datasets.List` replaced `Sequence` for lists in datasets 4; keep working with datasets 3.
    list_feature = getattr(datasets, "List", datasets.Sequence)
    vector = list_feature(datasets.Value("float64"))

    class VerificationAccuracy(evaluate.Metric):
        """LFW-style k-fold verification accuracy of embedding pairs (`verification_accuracy`).

        Example (offline, no Hub access):

        ```python
        >>> from faceformers.metrics import VerificationAccuracy
        >>> metric = VerificationAccuracy(keep_in_memory=True)
        >>> result = metric.compute(
        ...     embeddings1=[[1.0, 0.0]] * 4,
        ...     embeddings2=[[1.0, 0.0], [0.0, 1.0]] * 2,
        ...     issame=[1, 0, 1, 0],
        ...     num_folds=2,
        ... )
        >>> result["accuracy"]
        1.0

        ```
        """

        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=_VERIFICATION_DESCRIPTION,
                citation=_CITATION,
                inputs_description=_VERIFICATION_INPUTS,
                features=datasets.Features(
                    {"embeddings1": vector, "embeddings2": vector, "issame": datasets.Value("int8")}
                ),
            )

        def _compute(
            self,
            embeddings1: Sequence[Sequence[float]],
            embeddings2: Sequence[Sequence[float]],
            issame: Sequence[int],
            num_folds: int = 10,
            thresholds: ArrayLike | None = None,
        ) -> dict[str, Any]:
            return verification_accuracy(embeddings1, embeddings2, issame, num_folds=num_folds, thresholds=thresholds)

    class TarAtFar(evaluate.Metric):
        """TAR at target FARs and ROC AUC of similarity scores (`tar_at_far`).

        Example (offline, no Hub access):

        ```python
        >>> from faceformers.metrics import TarAtFar
        >>> metric = TarAtFar(keep_in_memory=True)
        >>> result = metric.compute(scores=[0.9, 0.8, 0.3, 0.1], labels=[1, 0, 1, 0], far_targets=[0.5])
        >>> result["tar_at_far_0.5"], result["auc"]
        (1.0, 0.75)

        ```
        """

        def _info(self) -> evaluate.MetricInfo:
            return evaluate.MetricInfo(
                description=_TAR_DESCRIPTION,
                citation=_CITATION,
                inputs_description=_TAR_INPUTS,
                features=datasets.Features({"scores": datasets.Value("float64"), "labels": datasets.Value("int8")}),
            )

        def _compute(
            self,
            scores: Sequence[float],
            labels: Sequence[int],
            far_targets: Sequence[float] = DEFAULT_FAR_TARGETS,
            drop_intermediate: bool = False,
        ) -> dict[str, Any]:
            return tar_at_far(scores, labels, far_targets=far_targets, drop_intermediate=drop_intermediate)

    metric_classes = {"VerificationAccuracy": VerificationAccuracy, "TarAtFar": TarAtFar}
    for public_name, cls in metric_classes.items():
        cls.__qualname__ = public_name  # so that pickle finds them as module attributes
    return metric_classes


def __getattr__(name: str) -> Any:
    """Builds `VerificationAccuracy` / `TarAtFar` on first access (PEP 562), importing `evaluate` only then."""
    if name in _EVALUATE_METRIC_NAMES:
        metric_classes = _build_evaluate_metrics()
        globals().update(metric_classes)
        return metric_classes[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
