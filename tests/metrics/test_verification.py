"""Face-verification metrics: hand-computed k-fold accuracy, ROC / TAR@FAR with ties, scikit-learn agreement, errors,
`evaluate` wrappers."""

import ast
import math
import pickle
import socket
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import faceformers.metrics as metrics
from faceformers.metrics import kfold_indices, l2_normalize, roc_curve, tar_at_far, verification_accuracy
from faceformers.metrics import verification


def pairs_with_distances(distances, seed=0):
    """Embedding pairs (3-D, random positive scales) whose normalised squared L2 distances are `distances`.

    e1 = s1 * (1, 0, 0) and e2 = s2 * (cos t, sin t, 0) with cos t = 1 - d / 2, so ||e1/|e1| - e2/|e2| ||^2 = d.
    """
    distances = np.asarray(distances, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cos = 1 - distances / 2
    first = np.zeros((len(distances), 3))
    first[:, 0] = 1
    second = np.stack([cos, np.sqrt(1 - cos**2), np.zeros_like(cos)], axis=1)
    return first * rng.uniform(0.5, 3, (len(distances), 1)), second * rng.uniform(0.5, 3, (len(distances), 1))


# ---------------------------------------------------------------------------------------------------------------------
# Hand-computed 20-pair, 2-fold example
# ---------------------------------------------------------------------------------------------------------------------
# Fold 0 = pairs 0..9, fold 1 = pairs 10..19 (contiguous). Within a fold, same and different pairs alternate.
#   fold 0: same distances [0.2, 0.4, 1.1, 1.2, 1.4], different [0.6, 1.6, 1.7, 1.8, 2.5]
#   fold 1: same distances [0.3, 0.8, 0.9, 1.1, 1.4], different [0.45, 1.2, 1.3, 1.9, 3.0]
# Thresholds [0.5, 1.0, 1.5, 2.0]; a pair is accepted when distance < threshold.
#
# Accuracy (TA + TR) / 10 of each fold at each threshold:
#   fold 0: t=0.5: TA 2, FA 0 -> (2 + 5) / 10 = 0.7; t=1.0: TA 2, FA 1 -> 0.6; t=1.5: TA 5, FA 1 -> 0.9;
#           t=2.0: TA 5, FA 4 -> 0.6
#   fold 1: t=0.5: TA 1, FA 1 -> 0.5; t=1.0: TA 3, FA 1 -> 0.7; t=1.5: TA 5, FA 3 -> 0.7;
#           t=2.0: TA 5, FA 4 -> 0.6
# Held-out fold 0: trained on fold 1, where t=1.0 and t=1.5 tie at 0.7 -> the first (smallest), 1.0;
#   fold 0 at 1.0 -> 0.6. (The other choice, 1.5, would give 0.9.)
# Held-out fold 1: trained on fold 0, best t=1.5 (0.9) -> fold 1 at 1.5 -> 0.7.
# accuracy = (0.6 + 0.7) / 2 = 0.65, std = 0.05.
# Held-out TPR per threshold: fold 0 [2/5, 2/5, 1, 1], fold 1 [1/5, 3/5, 1, 1] -> mean [0.3, 0.5, 1, 1];
#   FPR: fold 0 [0, 1/5, 1/5, 4/5], fold 1 [1/5, 1/5, 3/5, 4/5] -> mean [0.1, 0.2, 0.4, 0.8].
FOLD0_SAME, FOLD0_DIFFERENT = [0.2, 0.4, 1.1, 1.2, 1.4], [0.6, 1.6, 1.7, 1.8, 2.5]
FOLD1_SAME, FOLD1_DIFFERENT = [0.3, 0.8, 0.9, 1.1, 1.4], [0.45, 1.2, 1.3, 1.9, 3.0]
HAND_THRESHOLDS = [0.5, 1.0, 1.5, 2.0]


def hand_example():
    distances, issame = [], []
    for same, different in ((FOLD0_SAME, FOLD0_DIFFERENT), (FOLD1_SAME, FOLD1_DIFFERENT)):
        for s, d in zip(same, different):
            distances += [s, d]
            issame += [True, False]
    embeddings1, embeddings2 = pairs_with_distances(distances)
    return embeddings1, embeddings2, np.array(issame), np.array(distances)


def test_verification_accuracy_hand_example():
    embeddings1, embeddings2, issame, distances = hand_example()
    result = verification_accuracy(embeddings1, embeddings2, issame, num_folds=2, thresholds=HAND_THRESHOLDS)
    np.testing.assert_allclose(result["distances"], distances, atol=1e-12)
    np.testing.assert_array_equal(result["best_thresholds"], [1.0, 1.5])
    np.testing.assert_array_equal(result["fold_accuracies"], [0.6, 0.7])
    assert result["accuracy"] == pytest.approx(0.65, abs=1e-15)
    assert result["accuracy_std"] == pytest.approx(0.05, abs=1e-15)
    np.testing.assert_allclose(result["tpr"], [0.3, 0.5, 1.0, 1.0], atol=1e-15)
    np.testing.assert_allclose(result["fpr"], [0.1, 0.2, 0.4, 0.8], atol=1e-15)
    np.testing.assert_array_equal(result["thresholds"], HAND_THRESHOLDS)
    assert result["num_pairs"] == 20
    assert isinstance(result["accuracy"], float) and isinstance(result["accuracy_std"], float)


def test_threshold_tie_keeps_the_first_threshold_in_order():
    embeddings1, embeddings2, issame, _ = hand_example()
    # Listed in descending order, the first of the tied pair (1.0, 1.5) is 1.5: fold 0 is then scored at 1.5 -> 0.9.
    result = verification_accuracy(embeddings1, embeddings2, issame, num_folds=2, thresholds=HAND_THRESHOLDS[::-1])
    np.testing.assert_array_equal(result["best_thresholds"], [1.5, 1.5])
    np.testing.assert_array_equal(result["fold_accuracies"], [0.9, 0.7])
    assert result["accuracy"] == pytest.approx(0.8)


def test_torch_inputs_and_strict_comparison():
    embeddings1, embeddings2, issame, _ = hand_example()
    first, second, same = torch.from_numpy(embeddings1), torch.from_numpy(embeddings2), torch.from_numpy(issame).int()
    from_torch = verification_accuracy(first, second, same, 2, HAND_THRESHOLDS)
    np.testing.assert_array_equal(from_torch["fold_accuracies"], [0.6, 0.7])
    # Identical embeddings (distance 0) are *not* accepted at threshold 0: the prediction is distance < threshold.
    same = np.array([True, False, True, False])
    ones = np.ones((4, 2))
    result = verification_accuracy(ones, ones, same, num_folds=2, thresholds=[0.0])
    np.testing.assert_array_equal(result["fold_accuracies"], [0.5, 0.5])
    np.testing.assert_array_equal(result["tpr"], [0.0])


def test_default_threshold_grid():
    # Distances in the middle of grid cells: same pairs at 0.905, different pairs at 1.205 and 2.005.
    distances = np.tile([0.905, 1.205, 0.905, 2.005], 5)
    issame = np.tile([True, False, True, False], 5)
    result = verification_accuracy(*pairs_with_distances(distances), issame)
    np.testing.assert_array_equal(result["thresholds"], np.arange(0, 4, 0.01))
    # Every threshold in (0.905, 1.205] separates perfectly; the first of them on the grid is 0.91.
    np.testing.assert_allclose(result["best_thresholds"], np.full(10, 0.91))
    assert result["accuracy"] == 1.0 and result["accuracy_std"] == 0.0
    np.testing.assert_array_equal(result["fold_accuracies"], np.ones(10))


def test_kfold_indices_are_contiguous_like_sklearn():
    folds = kfold_indices(7, 3)
    assert [fold.tolist() for fold in folds] == [[0, 1, 2], [3, 4], [5, 6]]
    assert [len(fold) for fold in kfold_indices(6000, 10)] == [600] * 10


def test_l2_normalize_leaves_zero_rows(caplog):
    normalized = l2_normalize(np.array([[3.0, 4.0], [0.0, 0.0]]))
    np.testing.assert_allclose(normalized, [[0.6, 0.8], [0.0, 0.0]])
    assert "1 embeddings are zero vectors" in caplog.text


# ---------------------------------------------------------------------------------------------------------------------
# ROC and TAR at FAR
# ---------------------------------------------------------------------------------------------------------------------


def test_roc_curve_groups_tied_scores_and_auc():
    # Sorted: 0.9 (P) | 0.7 (P, N, N) | 0.2 (P, N): 3 genuine and 3 impostor pairs.
    scores = [0.7, 0.2, 0.9, 0.7, 0.2, 0.7]
    labels = [0, 1, 1, 1, 0, 0]
    fpr, tpr, thresholds = roc_curve(scores, labels)
    np.testing.assert_allclose(fpr, [0, 0, 2 / 3, 1])
    np.testing.assert_allclose(tpr, [0, 1 / 3, 2 / 3, 1])
    np.testing.assert_array_equal(thresholds, [np.inf, 0.9, 0.7, 0.2])
    result = tar_at_far(scores, labels, far_targets=[1e-6, 0.5, 1.0])
    # AUC = P(genuine > impostor) + P(tie) / 2 = (3 + 2 + 0.5) / 9 = 11/18
    assert result["auc"] == pytest.approx(11 / 18, abs=1e-15)
    # 1e-6: FPR 0 at the origin and at 0.9 -> the last of them, TPR 1/3. 0.5: nearest FPR 2/3 -> TPR 2/3.
    assert result["tar_at_far_1e-06"] == pytest.approx(1 / 3) and result["far_at_far_1e-06"] == 0.0
    assert result["tar_at_far_0.5"] == pytest.approx(2 / 3) and result["far_at_far_0.5"] == pytest.approx(2 / 3)
    assert result["tar_at_far_1"] == 1.0
    assert result["num_genuine"] == 3 and result["num_impostor"] == 3


def test_tar_at_far_equidistant_points_take_the_last():
    # Sorted: 0.9 P, 0.8 N, 0.6 P, 0.5 N N, 0.3 P, 0.1 N. ROC (fpr, tpr):
    #   (0, 0) (0, 1/3) (1/4, 1/3) (1/4, 2/3) (3/4, 2/3) (3/4, 1) (1, 1)
    scores = [0.9, 0.8, 0.6, 0.5, 0.5, 0.3, 0.1]
    labels = [1, 0, 1, 0, 0, 1, 0]
    result = tar_at_far(scores, labels, far_targets=[0.25, 0.5])
    # 0.25: two points at FPR 1/4 -> the later one (TPR 2/3). 0.5: FPR 1/4 and 3/4 both 1/4 away -> the last point
    # at FPR 3/4 (TPR 1), as insightface's flipped-array `min` would pick.
    assert result["tar_at_far_0.25"] == pytest.approx(2 / 3) and result["far_at_far_0.25"] == 0.25
    assert result["tar_at_far_0.5"] == 1.0 and result["far_at_far_0.5"] == 0.75
    assert result["auc"] == pytest.approx(1 / 4 * 1 / 3 + 2 / 4 * 2 / 3 + 1 / 4 * 1)


def test_drop_intermediate_diagonal_run():
    # Each score is shared by one genuine and one impostor pair: the ROC is a diagonal through 1/3 and 2/3.
    scores = [0.9, 0.9, 0.5, 0.5, 0.1, 0.1]
    labels = [1, 0, 1, 0, 1, 0]
    fpr, tpr, _ = roc_curve(scores, labels)
    np.testing.assert_allclose(fpr, [0, 1 / 3, 2 / 3, 1])
    fpr_dropped, tpr_dropped, thresholds_dropped = roc_curve(scores, labels, drop_intermediate=True)
    np.testing.assert_allclose(fpr_dropped, [0, 1 / 3, 1])
    np.testing.assert_array_equal(thresholds_dropped, [np.inf, 0.9, 0.1])
    kept = tar_at_far(scores, labels, far_targets=[0.6])
    dropped = tar_at_far(scores, labels, far_targets=[0.6], drop_intermediate=True)
    assert kept["tar_at_far_0.6"] == pytest.approx(2 / 3) and dropped["tar_at_far_0.6"] == pytest.approx(1 / 3)
    assert kept["auc"] == pytest.approx(0.5) and dropped["auc"] == pytest.approx(0.5)


def test_perfect_separation():
    result = tar_at_far(torch.tensor([0.9, 0.8, 0.1, 0.0]), torch.tensor([True, True, False, False]))
    assert result["auc"] == 1.0
    assert all(result[f"tar_at_far_{far:g}"] == 1.0 for far in metrics.DEFAULT_FAR_TARGETS)


# ---------------------------------------------------------------------------------------------------------------------
# Agreement with scikit-learn (optional)
# ---------------------------------------------------------------------------------------------------------------------


def reference_kfold_accuracy(embeddings1, embeddings2, issame, num_folds, thresholds):
    """A straightforward loop version of the insightface protocol on top of scikit-learn."""
    from sklearn.model_selection import KFold
    from sklearn.preprocessing import normalize

    distances = np.sum(np.square(normalize(embeddings1) - normalize(embeddings2)), axis=1)

    def accuracy(threshold, subset):
        predicted = distances[subset] < threshold
        return np.mean(predicted == issame[subset])

    fold_accuracies, best_thresholds = [], []
    for train, test in KFold(n_splits=num_folds, shuffle=False).split(np.arange(len(issame))):
        train_accuracies = [accuracy(threshold, train) for threshold in thresholds]
        best = thresholds[int(np.argmax(train_accuracies))]
        best_thresholds.append(best)
        fold_accuracies.append(accuracy(best, test))
    return np.array(fold_accuracies), np.array(best_thresholds)


def test_verification_accuracy_matches_sklearn_kfold():
    pytest.importorskip("sklearn")
    rng = np.random.default_rng(0)
    num_pairs = 123  # not a multiple of 10: uneven folds
    issame = rng.random(num_pairs) < 0.5
    embeddings1 = rng.normal(size=(num_pairs, 16))
    noise = rng.normal(size=(num_pairs, 16))
    embeddings2 = np.where(issame[:, None], embeddings1 + 0.9 * noise, noise)
    thresholds = np.arange(0, 4, 0.01)
    result = verification_accuracy(embeddings1, embeddings2, issame)
    fold_accuracies, best_thresholds = reference_kfold_accuracy(embeddings1, embeddings2, issame, 10, thresholds)
    np.testing.assert_array_equal(result["best_thresholds"], best_thresholds)
    np.testing.assert_array_equal(result["fold_accuracies"], fold_accuracies)
    assert result["accuracy"] == pytest.approx(fold_accuracies.mean()) and 0.6 < result["accuracy"] < 1


@pytest.mark.parametrize("drop_intermediate", [False, True])
def test_roc_matches_sklearn(drop_intermediate):
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    labels = rng.random(400) < 0.3
    scores = np.round(rng.normal(size=400) + labels, 1)  # rounded: many tied scores
    fpr, tpr, thresholds = roc_curve(scores, labels, drop_intermediate=drop_intermediate)
    expected_fpr, expected_tpr, expected_thresholds = sklearn_metrics.roc_curve(
        labels, scores, drop_intermediate=drop_intermediate
    )
    np.testing.assert_array_equal(fpr, expected_fpr)
    np.testing.assert_array_equal(tpr, expected_tpr)
    np.testing.assert_array_equal(thresholds[1:], expected_thresholds[1:])  # the first is inf (sklearn >= 1.3)
    far_targets = (1e-3, 1e-2, 0.05, 0.1, 0.3)
    result = tar_at_far(scores, labels, far_targets=far_targets, drop_intermediate=drop_intermediate)
    assert result["auc"] == pytest.approx(sklearn_metrics.roc_auc_score(labels, scores), abs=1e-12)
    # insightface IJB lookup: flip the curve, take the first minimum of |fpr - target|.
    flipped_fpr, flipped_tpr = np.flipud(expected_fpr), np.flipud(expected_tpr)
    for far in far_targets:
        _, index = min(zip(abs(flipped_fpr - far), range(len(flipped_fpr))))
        assert result[f"tar_at_far_{far:g}"] == flipped_tpr[index]


# ---------------------------------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------------------------------

GOOD_1, GOOD_2 = np.eye(4), np.eye(4)[::-1]
GOOD_SAME = np.array([1, 0, 1, 0])


@pytest.mark.parametrize(
    "embeddings1, embeddings2, issame, kwargs, message",
    [
        (GOOD_1, GOOD_2[:, :3], GOOD_SAME, {}, r"same shape, got \(4, 4\) and \(4, 3\)"),
        (GOOD_1, GOOD_2, GOOD_SAME[:3], {"num_folds": 2}, "4 embedding pairs but 3 `issame` labels"),
        (GOOD_1, GOOD_2, [1, 2, 1, 0], {"num_folds": 2}, r"`issame` must be binary .* values 2"),
        (np.where(GOOD_1 == 1, np.nan, 0), GOOD_2, GOOD_SAME, {"num_folds": 2}, "`embeddings1` holds 4 NaN or inf"),
        (GOOD_1, np.full((4, 4), np.inf), GOOD_SAME, {"num_folds": 2}, "`embeddings2` holds 16 NaN or inf"),
        (GOOD_1, GOOD_2, GOOD_SAME, {"num_folds": 10}, "Cannot split 4 pairs into 10 folds"),
        (GOOD_1, GOOD_2, GOOD_SAME, {"num_folds": 1}, "integer >= 2"),
        (GOOD_1, GOOD_2, [1, 1, 1, 1], {"num_folds": 2}, r"only same-identity \(1\) pairs"),
        (GOOD_1, GOOD_2, GOOD_SAME, {"num_folds": 2, "thresholds": []}, "`thresholds` must not be empty"),
        (GOOD_1, GOOD_2, GOOD_SAME, {"num_folds": 2, "thresholds": [np.nan]}, "`thresholds` holds 1 NaN"),
        (np.ones((2, 2, 2)), np.ones((2, 2, 2)), [0, 1], {"num_folds": 2}, r"shape \(num_pairs, embedding_dim\)"),
        ([[1.0], [1.0, 2.0]], GOOD_2, GOOD_SAME, {}, "rectangular numeric array"),
    ],
)
def test_verification_accuracy_errors(embeddings1, embeddings2, issame, kwargs, message):
    with pytest.raises(ValueError, match=message):
        verification_accuracy(embeddings1, embeddings2, issame, **kwargs)


@pytest.mark.parametrize(
    "scores, labels, far_targets, message",
    [
        ([0.1, 0.2, 0.3], [0, 1], (0.1,), "3 scores but 2 labels"),
        ([0.1, 0.2], [0, 3], (0.1,), r"`labels` must be binary .* values 3"),
        ([0.1, 0.2], [-1, 1], (0.1,), r"values -1"),
        ([0.1, np.nan], [0, 1], (0.1,), "`scores` holds 1 NaN or infinite"),
        ([0.1, 0.2], [0, 0], (0.1,), r"only different-identity \(0\) pairs"),
        ([0.1, 0.2], [0, 1], (0.0,), r"FAR target must lie in \(0, 1\]; got 0.0"),
        ([0.1, 0.2], [0, 1], (1e-3, 1.5), r"got 1.5"),
        ([0.1, 0.2], [0, 1], (), "must not be empty"),
        ([[0.1, 0.2]], [0, 1], (0.1,), "`labels` must be 1-D|`scores` must be 1-D"),
    ],
)
def test_tar_at_far_errors(scores, labels, far_targets, message):
    with pytest.raises(ValueError, match=message):
        tar_at_far(scores, labels, far_targets=far_targets)


# ---------------------------------------------------------------------------------------------------------------------
# evaluate.Metric wrappers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: the metrics must work offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("the verification metrics tried to use the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_verification_metric_compute_and_add_batch(no_network, tmp_path):
    pytest.importorskip("evaluate")
    embeddings1, embeddings2, issame, _ = hand_example()
    metric = metrics.VerificationAccuracy(keep_in_memory=True)
    result = metric.compute(
        embeddings1=embeddings1, embeddings2=embeddings2, issame=issame, num_folds=2, thresholds=HAND_THRESHOLDS
    )
    np.testing.assert_array_equal(result["fold_accuracies"], [0.6, 0.7])
    assert result["accuracy"] == pytest.approx(0.65)

    metric = metrics.VerificationAccuracy(cache_dir=str(tmp_path))  # the on-disk cache path, too
    for start in range(0, 20, 8):  # torch batches of 8, 8 and 4 pairs
        batch = slice(start, start + 8)
        metric.add_batch(
            embeddings1=torch.from_numpy(embeddings1[batch]).float(),
            embeddings2=torch.from_numpy(embeddings2[batch]).float(),
            issame=torch.from_numpy(issame[batch]),
        )
    result = metric.compute(num_folds=2, thresholds=HAND_THRESHOLDS)
    np.testing.assert_array_equal(result["best_thresholds"], [1.0, 1.5])
    assert result["accuracy"] == pytest.approx(0.65)


def test_tar_metric_compute_and_errors(no_network):
    pytest.importorskip("evaluate")
    scores, labels = [0.9, 0.8, 0.6, 0.5, 0.5, 0.3, 0.1], [1, 0, 1, 0, 0, 1, 0]
    expected = tar_at_far(scores, labels, far_targets=[0.25, 0.5])
    metric = metrics.TarAtFar(keep_in_memory=True)
    result = metric.compute(scores=scores, labels=[bool(x) for x in labels], far_targets=[0.25, 0.5])
    assert result["tar_at_far_0.5"] == expected["tar_at_far_0.5"] == 1.0
    assert result["auc"] == expected["auc"]
    np.testing.assert_array_equal(result["fpr"], expected["fpr"])
    with pytest.raises(ValueError, match="must be binary"):
        metrics.TarAtFar(keep_in_memory=True).compute(scores=[0.1, 0.2], labels=[0, 2])
    with pytest.raises(ValueError, match=r"lie in \(0, 1\]"):
        metrics.TarAtFar(keep_in_memory=True).compute(scores=[0.1, 0.2], labels=[0, 1], far_targets=[2.0])


def test_metric_classes_pickle_and_export(no_network):
    pytest.importorskip("evaluate")
    assert pickle.loads(pickle.dumps(metrics.TarAtFar)) is metrics.TarAtFar
    assert pickle.loads(pickle.dumps(metrics.VerificationAccuracy)) is metrics.VerificationAccuracy
    assert {"VerificationAccuracy", "TarAtFar", "verification_accuracy", "tar_at_far"} <= set(metrics.__all__)


def test_evaluate_is_imported_lazily(monkeypatch):
    for node in ast.parse(Path(verification.__file__).read_text()).body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            imported = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
            assert not {"evaluate", "datasets", "sklearn"} & {name.split(".")[0] for name in imported}, imported
    monkeypatch.setitem(sys.modules, "evaluate", None)
    with pytest.raises(ImportError, match=r"faceformers\[training\]"):
        verification._build_evaluate_metrics()
    with pytest.raises(AttributeError):
        verification.NoSuchMetric  # noqa: B018
    assert math.isclose(tar_at_far([0.2, 0.1], [1, 0])["auc"], 1.0)
