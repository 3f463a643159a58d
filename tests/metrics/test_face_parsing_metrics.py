"""Face-parsing metrics: hand-computed values, dataset-level accumulation, Helen merging, `evaluate` wrappers."""

import ast
import math
import pickle
import socket
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

import faceformers.metrics as metrics
from faceformers.data.labels import HELEN_LABELS, LAPA_LABELS, id2label
from faceformers.metrics import (
    FaceParsingAccumulator,
    confusion_matrix,
    f1_from_confusion,
    helen_overall_f1,
    iou_from_confusion,
    merged_f1,
    scores_from_confusion,
)
from faceformers.metrics import face_parsing


# Two 2x3 images with 3 classes; 255 marks an unlabelled pixel.
#   image A: (reference, prediction) pairs (0,0) (0,1) (1,1) (1,1) (2,2) (2,0)
#   image B: (0,0) (1,0) (1,1) (2,2) (2,1), and one ignored pixel (255 -> 2)
REFERENCES = [np.array([[0, 0, 1], [1, 2, 2]]), np.array([[0, 1, 1], [2, 2, 255]])]
PREDICTIONS = [np.array([[0, 1, 1], [1, 2, 0]]), np.array([[0, 0, 1], [2, 1, 2]])]
# Summed confusion (rows = reference, columns = prediction), 11 counted pixels:
#   row 0: (0,0) x2, (0,1) x1          -> [2, 1, 0]
#   row 1: (1,1) x3, (1,0) x1          -> [1, 3, 0]
#   row 2: (2,2) x2, (2,0) x1, (2,1) x1 -> [1, 1, 2]
EXPECTED_CONFUSION = np.array([[2, 1, 0], [1, 3, 0], [1, 1, 2]])
# tp = [2, 3, 2], reference sums = [3, 4, 4], prediction sums = [4, 5, 2]
#   F1  = 2 tp / (ref + pred):   [4/7, 6/9 = 2/3, 4/6 = 2/3]
#   IoU = tp / (ref + pred - tp): [2/5, 3/6 = 1/2, 2/4 = 1/2]
#   mean_f1 (classes 1, 2) = (2/3 + 2/3) / 2 = 2/3
#   mean_iou (classes 0..2) = (2/5 + 1/2 + 1/2) / 3 = 7/15
#   pixel_accuracy = (2 + 3 + 2) / 11 = 7/11
#   mean_accuracy = (2/3 + 3/4 + 2/4) / 3 = 23/36
EXPECTED_F1 = [Fraction(4, 7), Fraction(2, 3), Fraction(2, 3)]
EXPECTED_IOU = [Fraction(2, 5), Fraction(1, 2), Fraction(1, 2)]
EXPECTED_MEANS = {
    "mean_f1": Fraction(2, 3),
    "mean_iou": Fraction(7, 15),
    "pixel_accuracy": Fraction(7, 11),
    "mean_accuracy": Fraction(23, 36),
}
NAMES = ["background", "skin", "hair"]


def assert_equals_fraction(value: float, expected: Fraction) -> None:
    """A single division is correctly rounded, so it equals the fraction exactly; means of a few such values may
    differ from the exact fraction by rounding in the sum: at most a couple of ulps."""
    assert abs(Fraction(value) - expected) <= 2 * Fraction(math.ulp(float(expected))), (value, expected)


def hand_example_accumulator() -> FaceParsingAccumulator:
    accumulator = FaceParsingAccumulator(num_labels=3)
    for predicted, reference in zip(PREDICTIONS, REFERENCES):
        accumulator.update(predicted, reference)
    return accumulator


# ---------------------------------------------------------------------------------------------------------------------
# Hand-computed values
# ---------------------------------------------------------------------------------------------------------------------


def test_confusion_matrix_hand_example():
    confusion = confusion_matrix(PREDICTIONS[0], REFERENCES[0], num_labels=3)
    np.testing.assert_array_equal(confusion, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert confusion.dtype == np.int64 and confusion.shape == (3, 3)
    np.testing.assert_array_equal(hand_example_accumulator().confusion, EXPECTED_CONFUSION)


def test_per_class_scores_equal_hand_fractions_exactly():
    f1, iou = f1_from_confusion(EXPECTED_CONFUSION), iou_from_confusion(EXPECTED_CONFUSION)
    # One correctly rounded division each: exactly the nearest float to the fraction.
    assert f1.tolist() == [float(value) for value in EXPECTED_F1]
    assert iou.tolist() == [float(value) for value in EXPECTED_IOU]


def test_accumulator_compute_hand_example():
    results = hand_example_accumulator().compute(id2label=NAMES)
    for key, expected in EXPECTED_MEANS.items():
        assert_equals_fraction(results[key], expected)
    assert results["mean_f1"] == float(Fraction(2, 3))  # the mean of two equal floats is exact
    assert results["pixel_accuracy"] == float(Fraction(7, 11))  # a single division
    for name, f1, iou in zip(NAMES, EXPECTED_F1, EXPECTED_IOU):
        assert results[f"f1_{name}"] == float(f1)
        assert results[f"iou_{name}"] == float(iou)
    assert set(results) == set(EXPECTED_MEANS) | {f"{kind}_{name}" for kind in ("f1", "iou") for name in NAMES}


def test_names_default_to_class_ids_and_accept_mappings():
    accumulator = hand_example_accumulator()
    assert accumulator.compute()["f1_0"] == float(Fraction(4, 7))
    assert accumulator.compute(id2label=dict(enumerate(NAMES))) == accumulator.compute(id2label=NAMES)
    # JSON-style string keys, as in a config read without transformers.
    string_keys = {str(i): name for i, name in enumerate(NAMES)}
    assert accumulator.compute(id2label=string_keys) == accumulator.compute(id2label=NAMES)


def test_background_index_choice():
    accumulator = hand_example_accumulator()
    # background_index=None averages every class: (4/7 + 2/3 + 2/3) / 3 = 40/63.
    assert_equals_fraction(accumulator.compute(background_index=None)["mean_f1"], Fraction(40, 63))
    # background_index=2: (4/7 + 2/3) / 2 = 13/21.
    assert_equals_fraction(accumulator.compute(background_index=2)["mean_f1"], Fraction(13, 21))


def test_absent_class_is_nan_and_left_out_of_means():
    # Class 2 never appears: NaN F1 / IoU, and the means use classes 0 and 1 only.
    confusion = confusion_matrix(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), num_labels=3)
    results = scores_from_confusion(confusion)
    assert math.isnan(results["f1_2"]) and math.isnan(results["iou_2"])
    # tp = [2, 1], ref = [3, 1], pred = [2, 2]: IoU = [2/3, 1/2] -> mean 7/12; F1 of class 1 = 2/3.
    assert_equals_fraction(results["mean_iou"], Fraction(7, 12))
    assert results["mean_f1"] == float(Fraction(2, 3))
    # Nothing counted at all: every score is NaN, without warnings.
    empty = FaceParsingAccumulator(num_labels=2).compute()
    assert all(math.isnan(value) for value in empty.values())


# ---------------------------------------------------------------------------------------------------------------------
# ignore_index
# ---------------------------------------------------------------------------------------------------------------------


def test_ignored_pixels_are_not_counted_and_their_predictions_not_checked():
    references = np.array([[255, 0], [1, 255]])
    predictions = np.array([[1, 0], [1, 255]])  # 255 predicted under an ignored pixel is fine
    np.testing.assert_array_equal(confusion_matrix(predictions, references, 2), [[1, 0], [0, 1]])


def test_custom_and_disabled_ignore_index():
    references = np.array([-1, 0, 1, 1])
    predictions = np.array([0, 0, 1, 0])
    np.testing.assert_array_equal(confusion_matrix(predictions, references, 2, ignore_index=-1), [[1, 0], [1, 1]])
    with pytest.raises(ValueError, match=r"references.*-1"):
        confusion_matrix(predictions, references, 2, ignore_index=None)
    # With ignore_index=None every pixel counts, including a reference 255 that would otherwise be skipped.
    with pytest.raises(ValueError, match=r"references.*255"):
        confusion_matrix(np.array([0]), np.array([255]), 2, ignore_index=None)


# ---------------------------------------------------------------------------------------------------------------------
# Accumulation
# ---------------------------------------------------------------------------------------------------------------------


def test_accumulation_equals_one_concatenated_computation():
    rng = np.random.default_rng(0)
    shapes = [(5, 7), (3, 4), (8, 2), (1, 9)]
    references = [rng.integers(0, 4, size=shape) for shape in shapes]
    predictions = [rng.integers(0, 4, size=shape) for shape in shapes]
    for reference in references:
        reference[rng.random(reference.shape) < 0.2] = 255
    accumulator = FaceParsingAccumulator(num_labels=4)
    for predicted, reference in zip(predictions, references):
        accumulator.update(predicted, reference)
    concatenated = confusion_matrix(
        np.concatenate([p.ravel() for p in predictions]), np.concatenate([r.ravel() for r in references]), 4
    )
    np.testing.assert_array_equal(accumulator.confusion, concatenated)
    assert accumulator.compute() == scores_from_confusion(concatenated)


def test_batches_torch_and_lists_give_the_same_matrix():
    rng = np.random.default_rng(1)
    references, predictions = rng.integers(0, 3, size=(4, 6, 5)), rng.integers(0, 3, size=(4, 6, 5))
    expected = sum(confusion_matrix(p, r, 3) for p, r in zip(predictions, references))
    variants = [
        (predictions, references),  # (N, H, W) at once
        (torch.from_numpy(predictions), torch.from_numpy(references)),
        (predictions.tolist(), references.tolist()),
        (predictions.astype(np.uint8), references.astype(np.uint8)),
    ]
    for predicted, reference in variants:
        np.testing.assert_array_equal(confusion_matrix(predicted, reference, 3), expected)


def test_dataset_level_f1_is_not_the_mean_of_per_image_f1():
    # Image 1: the single class-1 pixel is missed -> per-image F1 of class 1 = 0 / (1 + 0) = 0.
    # Image 2: four class-1 pixels, all found -> per-image F1 = 8 / 8 = 1. Mean of per-image F1 = 1/2.
    # Summed confusion [[3, 0], [1, 4]]: F1 = 2*4 / (5 + 4) = 8/9, the protocol of FaRL/SegFace/DML-CSR.
    images = [
        (np.array([[0, 0, 0, 0]]), np.array([[1, 0, 0, 0]])),
        (np.array([[1, 1, 1, 1]]), np.array([[1, 1, 1, 1]])),
    ]
    per_image = [scores_from_confusion(confusion_matrix(p, r, 2))["f1_1"] for p, r in images]
    assert per_image == [0.0, 1.0]
    accumulator = FaceParsingAccumulator(num_labels=2)
    for predicted, reference in images:
        accumulator.update(predicted, reference)
    assert accumulator.compute()["f1_1"] == float(Fraction(8, 9)) != np.mean(per_image)


def test_reset():
    accumulator = hand_example_accumulator()
    accumulator.reset()
    assert accumulator.confusion.sum() == 0
    accumulator.update(PREDICTIONS[0], REFERENCES[0])
    assert accumulator.confusion.sum() == 6


# ---------------------------------------------------------------------------------------------------------------------
# Helen merged scores
# ---------------------------------------------------------------------------------------------------------------------

# Helen order: 0 bg, 1 skin, 2 lb, 3 rb, 4 le, 5 re, 6 nose, 7 ulip, 8 imouth, 9 llip, 10 hair.
# (reference, prediction, pixel count)
HELEN_PIXELS = [
    (4, 4, 3), (4, 5, 1), (5, 5, 2), (5, 1, 1),  # eyes: one left/right swap, one right eye lost to skin
    (2, 2, 2), (3, 2, 1), (3, 3, 1), (2, 4, 1),  # brows: one right/left swap, one brow pixel predicted as eye
    (6, 6, 4), (6, 1, 1), (1, 6, 1),  # nose
    (7, 8, 1), (7, 7, 2), (8, 8, 1), (8, 0, 1), (9, 9, 2), (9, 7, 1),  # mouth
    (10, 4, 1), (1, 1, 5), (0, 0, 3), (10, 10, 2),  # a hair pixel predicted as eye; skin, background, hair
]
# eyes {4,5}: intersection 3+1+2 = 6; rows 4+3 = 7; columns (3+1+1) + (1+2) = 8 -> 12/15 = 4/5
# brows {2,3}: intersection 2+1+1 = 4; rows 3+2 = 5; columns 3+1 = 4 -> 8/9
# nose {6}: tp 4; row 5; column 4+1 = 5 -> 8/10 = 4/5
# mouth {7,8,9}: intersection 1+2+1+2+1 = 7; rows 3+2+3 = 8; columns 3+2+2 = 7 -> 14/15
# skin {1}: tp 5; row 1+5 = 6; column 1+1+5 = 7 -> 10/13
# overall {2..9}: intersection 6+4+4+7 + 1 (brow->eye, correct once merged) = 22;
#   rows 5+7+5+8 = 25; columns 4+8+5+7 = 24 (the hair->eye pixel is a false positive) -> 44/49
EXPECTED_HELEN = {
    "eyes": Fraction(4, 5),
    "brows": Fraction(8, 9),
    "nose": Fraction(4, 5),
    "mouth": Fraction(14, 15),
    "skin": Fraction(10, 13),
    "overall": Fraction(44, 49),
}


def helen_maps() -> tuple[np.ndarray, np.ndarray]:
    references = np.concatenate([np.full(count, r) for r, _, count in HELEN_PIXELS])
    predictions = np.concatenate([np.full(count, p) for _, p, count in HELEN_PIXELS])
    return predictions.reshape(1, -1), references.reshape(1, -1)


def test_helen_merged_scores_hand_example():
    predictions, references = helen_maps()
    accumulator = FaceParsingAccumulator(num_labels=len(HELEN_LABELS))
    accumulator.update(predictions, references)
    scores = helen_overall_f1(accumulator)
    assert list(scores) == list(EXPECTED_HELEN)
    assert scores == {name: float(value) for name, value in EXPECTED_HELEN.items()}
    assert helen_overall_f1(accumulator.confusion) == scores


def test_merged_f1_of_one_class_is_its_f1():
    predictions, references = helen_maps()
    confusion = confusion_matrix(predictions, references, len(HELEN_LABELS))
    f1 = f1_from_confusion(confusion)
    assert [merged_f1(confusion, [i]) for i in range(len(HELEN_LABELS))] == f1.tolist()


def test_helen_groups_are_found_by_name():
    # CelebAMask-HQ order A has the same parts at other indices: remapping the Helen example gives the same scores.
    from faceformers.data.labels import CELEBAMASK_HQ_LABELS

    to_celeb = np.array([CELEBAMASK_HQ_LABELS.index(name) for name in HELEN_LABELS])
    predictions, references = helen_maps()
    confusion = confusion_matrix(to_celeb[predictions], to_celeb[references], len(CELEBAMASK_HQ_LABELS))
    scores = helen_overall_f1(confusion, labels=CELEBAMASK_HQ_LABELS)
    assert scores == {name: float(value) for name, value in EXPECTED_HELEN.items()}
    assert helen_overall_f1(confusion_matrix(predictions, references, 11), labels=LAPA_LABELS) == scores


def test_helen_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="11 classes"):
        helen_overall_f1(np.zeros((3, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="lacks the classes"):
        helen_overall_f1(np.zeros((2, 2), dtype=np.int64), labels=["background", "skin"])


# ---------------------------------------------------------------------------------------------------------------------
# Invalid inputs
# ---------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "predictions, references, num_labels, message",
    [
        (np.zeros((2, 3), int), np.zeros((3, 2), int), 3, r"same shape.*\(2, 3\).*\(3, 2\)"),
        (np.zeros((2, 2), int), np.array([[0, 3], [7, 1]]), 3, r"references.*outside \[0, 3\).*3, 7"),
        (np.array([[0, -1], [5, 1]]), np.zeros((2, 2), int), 3, r"predictions.*outside \[0, 3\).*-1, 5"),
        (np.array([0, 255]), np.array([0, 1]), 3, r"predictions.*255"),  # 255 predicted at a counted pixel
        (np.zeros((2, 2)), np.zeros((2, 2), int), 3, r"predictions.*integer.*float64.*argmax"),
        (np.zeros(2, int), np.zeros(2, int), 0, r"num_labels.*positive"),
        ([[0, 1], [0]], [[0, 1], [0]], 2, r"ragged"),
    ],
)
def test_invalid_inputs_raise_clear_errors(predictions, references, num_labels, message):
    with pytest.raises(ValueError, match=message):
        confusion_matrix(predictions, references, num_labels)


def test_invalid_confusion_and_names():
    with pytest.raises(ValueError, match="square"):
        f1_from_confusion(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="2 names, expected num_labels=3"):
        hand_example_accumulator().compute(id2label=["a", "b"])
    with pytest.raises(ValueError, match=r"no name for class ids \[2\]"):
        hand_example_accumulator().compute(id2label={0: "a", 1: "b"})


# ---------------------------------------------------------------------------------------------------------------------
# evaluate.Metric wrappers
# ---------------------------------------------------------------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection fails the test: the metrics must work offline."""

    def refuse(*args, **kwargs):
        raise AssertionError("the face-parsing metrics tried to use the network")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def f1_keys(results):
    return {key: value for key, value in results.items() if key == "mean_f1" or key.startswith("f1_")}


def iou_keys(results):
    return {key: value for key, value in results.items() if key not in f1_keys(results)}


def test_evaluate_metrics_compute_offline(no_network):
    pytest.importorskip("evaluate")
    expected = hand_example_accumulator().compute(id2label=NAMES)
    f1 = metrics.FaceParsingF1(keep_in_memory=True)
    mean_iou = metrics.FaceParsingMeanIoU(keep_in_memory=True)
    kwargs = dict(predictions=PREDICTIONS, references=REFERENCES, num_labels=3, id2label=NAMES)
    assert f1.compute(**kwargs) == f1_keys(expected)
    assert mean_iou.compute(**kwargs) == iou_keys(expected)


def test_evaluate_metrics_add_batch_offline(no_network, tmp_path):
    pytest.importorskip("evaluate")
    expected = hand_example_accumulator().compute()
    f1 = metrics.FaceParsingF1(cache_dir=str(tmp_path))  # the on-disk cache path, too
    mean_iou = metrics.FaceParsingMeanIoU(keep_in_memory=True)
    for predicted, reference in zip(PREDICTIONS, REFERENCES):
        # torch batches `(1, H, W)` as a training loop would produce them
        f1.add_batch(predictions=torch.from_numpy(predicted)[None], references=torch.from_numpy(reference)[None])
        mean_iou.add_batch(predictions=predicted[None], references=reference[None])
    assert f1.compute(num_labels=3) == f1_keys(expected)
    assert mean_iou.compute(num_labels=3) == iou_keys(expected)


def test_evaluate_metric_rejects_invalid_maps(no_network):
    pytest.importorskip("evaluate")
    metric = metrics.FaceParsingF1(keep_in_memory=True)
    with pytest.raises(ValueError, match="same shape"):
        metric.compute(predictions=[np.zeros((2, 2), int)], references=[np.zeros((2, 3), int)], num_labels=2)
    with pytest.raises(ValueError, match=r"predictions.*outside \[0, 2\).*-3"):
        metric.compute(predictions=[np.full((2, 2), -3)], references=[np.zeros((2, 2), int)], num_labels=2)


def test_evaluate_metric_helen_names_and_pickle(no_network):
    pytest.importorskip("evaluate")
    predictions, references = helen_maps()
    results = metrics.FaceParsingF1(keep_in_memory=True).compute(
        predictions=predictions[None], references=references[None], num_labels=11, id2label=id2label(HELEN_LABELS)
    )
    assert results["f1_skin"] == float(Fraction(10, 13))
    assert pickle.loads(pickle.dumps(metrics.FaceParsingMeanIoU)) is metrics.FaceParsingMeanIoU


def test_evaluate_is_imported_lazily(monkeypatch):
    # No import of `evaluate` or `datasets` at module level in the metrics package.
    package = Path(face_parsing.__file__).parent
    for path in (package / "__init__.py", package / "face_parsing.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                imported = [alias.name for alias in node.names] + [getattr(node, "module", None) or ""]
                assert not {"evaluate", "datasets"} & {name.split(".")[0] for name in imported}, (path, imported)
    # Without `evaluate`, building the wrappers fails with an actionable message (plain functions are unaffected).
    monkeypatch.setitem(sys.modules, "evaluate", None)
    with pytest.raises(ImportError, match=r"faceformers\[training\]"):
        face_parsing._build_evaluate_metrics()
    assert confusion_matrix(np.array([1]), np.array([1]), 2)[1, 1] == 1
    with pytest.raises(AttributeError):
        metrics.NoSuchMetric  # noqa: B018
