"""Verification metrics on real aligned LFW faces, checked against a plain-loop reference written here.

Data: `insightface_samples/arcface_paddle_small_lfw` (20 LFW faces aligned to the 112 x 112 ArcFace template, decoded
from insightface's `small_lfw.bin`; `pairs.csv` lists its 10 pairs, all of the same person). LFW pairs reuse images:
03 = 05, 08 = 10 and 13 = 15 are byte-identical files. Images are grouped by content hash, so a duplicate is one image,
and people are the connected components of "same pair" and "same content" (7 people, 17 distinct images). The
different-person pairs are pairs of distinct images from different components: all 123 of them (list "all", 10 + 123
pairs), or 10 drawn with a fixed seed (list "balanced", 10 + 10, LFW-like). No image is ever paired with a copy of
itself, and no duplicate file enters a different-person pair (the first file name stands for its content). The names
are not in the `.bin`, so two components could in principle be the same person; that would only make some impostor
labels wrong, not the comparison below, which checks the implementation, not the feature.

No trained model is available, so the embedding is a fixed, deterministic feature: a seeded Gaussian random projection
(to 64 dimensions) of the pixels scaled to [-0.5, 0.5].

The reference recomputes everything with Python loops: L2 normalisation, squared L2 distances, 10 contiguous folds
(KFold without shuffling), the threshold grid `np.arange(0, 4, 0.01)` with the first best threshold on the training
folds, and the ROC from the scores sorted in decreasing order (one point per distinct score, plus the origin), TAR at
the point with the nearest FPR (the last one on ties). Every decision and count-based number (fold accuracies, chosen
thresholds, ROC points, TAR / FAR) must agree exactly; means over folds and the AUC (a sum) to 1e-15, as they only
differ in the order of the floating-point additions.
"""

import hashlib
import math
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from faceformers.metrics import tar_at_far, verification_accuracy


DATA = Path(__file__).parents[2].parent / "shared" / "realdata" / "insightface_samples" / "arcface_paddle_small_lfw"
pytestmark = pytest.mark.skipif(
    not (DATA / "pairs.csv").is_file(), reason=f"real LFW sample pairs not available ({DATA} with pairs.csv is missing)"
)

EMBEDDING_DIM = 64
NUM_FOLDS = 10
FAR_TARGETS = (1e-6, 1e-3, 0.01, 0.05, 0.1, 0.2, 0.5, 1.0)


# ---------------------------------------------------------------------------------------------------------------------
# Data: pairs and a fixed feature
# ---------------------------------------------------------------------------------------------------------------------


def read_same_pairs():
    lines = (DATA / "pairs.csv").read_text().split()
    assert lines[0] == "img_a,img_b,same"
    rows = [line.split(",") for line in lines[1:]]
    assert all(same == "1" for _, _, same in rows)
    return [(a, b) for a, b, _ in rows]


def build_pairs():
    """Same-person pairs (pairs.csv), all different-person pairs of distinct images, the content groups, the people."""
    same_pairs = read_same_pairs()
    files = sorted({name for pair in same_pairs for name in pair})
    digests = {name: hashlib.sha256((DATA / name).read_bytes()).hexdigest() for name in files}
    by_content = {}
    for name in files:
        by_content.setdefault(digests[name], []).append(name)
    representative = {name: by_content[digests[name]][0] for name in files}

    # people: union-find over the same pairs, on distinct contents
    parent = {names[0]: names[0] for names in by_content.values()}

    def find(name):
        while parent[name] != name:
            parent[name] = parent[parent[name]]
            name = parent[name]
        return name

    for a, b in same_pairs:
        parent[find(representative[a])] = find(representative[b])
    distinct = sorted(parent)
    different_pairs = [
        (a, b) for i, a in enumerate(distinct) for b in distinct[i + 1 :] if find(a) != find(b)
    ]  # fmt: skip
    people = {find(name) for name in distinct}
    return same_pairs, different_pairs, by_content, distinct, people


def pair_list(kind):
    """`"all"`: the 10 same + 123 different pairs; `"balanced"`: the 10 same + 10 different ones drawn with seed 0
    (LFW-like, where the threshold matters). Pairs in a seeded random order, so every fold mixes both kinds."""
    same_pairs, different_pairs, *_ = build_pairs()
    if kind == "balanced":
        chosen = np.random.default_rng(0).choice(len(different_pairs), len(same_pairs), replace=False)
        different_pairs = [different_pairs[i] for i in sorted(chosen)]
    pairs = [(a, b, True) for a, b in same_pairs] + [(a, b, False) for a, b in different_pairs]
    return [pairs[i] for i in np.random.default_rng(0).permutation(len(pairs))]


def fixed_features(files):
    """Seeded random projection of the pixels in [-0.5, 0.5] (RGB, 112 x 112): (len(files), EMBEDDING_DIM)."""
    from PIL import Image

    pixels = []
    for name in files:
        with Image.open(DATA / name) as image:
            array = np.asarray(image.convert("RGB"), dtype=np.float64)
        assert array.shape == (112, 112, 3)
        pixels.append(array.reshape(-1) / 255 - 0.5)
    projection = np.random.default_rng(1234).standard_normal((112 * 112 * 3, EMBEDDING_DIM)) / math.sqrt(112 * 112 * 3)
    return np.stack(pixels) @ projection


@pytest.fixture(scope="module")
def features():
    same_pairs, different_pairs, *_ = build_pairs()
    files = sorted({name for a, b in same_pairs + different_pairs for name in (a, b)})
    return dict(zip(files, fixed_features(files), strict=True))


def embedded(kind, features):
    pairs = pair_list(kind)
    embeddings1 = np.stack([features[a] for a, _, _ in pairs])
    embeddings2 = np.stack([features[b] for _, b, _ in pairs])
    return embeddings1, embeddings2, np.array([same for _, _, same in pairs])


# ---------------------------------------------------------------------------------------------------------------------
# Reference computations (plain loops)
# ---------------------------------------------------------------------------------------------------------------------


def reference_distances(embeddings1, embeddings2):
    distances = []
    for first, second in zip(embeddings1.tolist(), embeddings2.tolist(), strict=True):
        norm1 = math.sqrt(sum(v * v for v in first))
        norm2 = math.sqrt(sum(v * v for v in second))
        distances.append(sum((a / norm1 - b / norm2) ** 2 for a, b in zip(first, second, strict=True)))
    return distances


def reference_accuracy(distances, issame, thresholds, num_folds):
    n = len(distances)
    folds, start = [], 0
    for k in range(num_folds):
        size = n // num_folds + (1 if k < n % num_folds else 0)
        folds.append(list(range(start, start + size)))
        start += size
    assert start == n

    def accuracy(indices, threshold):
        return sum((distances[i] < threshold) == issame[i] for i in indices) / len(indices)

    def rates(indices, threshold):
        same = [i for i in indices if issame[i]]
        different = [i for i in indices if not issame[i]]
        tp = sum(distances[i] < threshold for i in same)
        fp = sum(distances[i] < threshold for i in different)
        return (tp / len(same) if same else 0.0), (fp / len(different) if different else 0.0)

    fold_accuracies, best_thresholds, tpr_rows, fpr_rows = [], [], [], []
    for test in folds:
        train = [i for i in range(n) if i not in test]
        best_index, best_accuracy = 0, -1.0
        for index, threshold in enumerate(thresholds):
            value = accuracy(train, threshold)
            if value > best_accuracy:  # strictly better: the first best threshold is kept
                best_index, best_accuracy = index, value
        best_thresholds.append(thresholds[best_index])
        fold_accuracies.append(accuracy(test, thresholds[best_index]))
        fold_rates = [rates(test, threshold) for threshold in thresholds]
        tpr_rows.append([tpr for tpr, _ in fold_rates])
        fpr_rows.append([fpr for _, fpr in fold_rates])
    mean = sum(fold_accuracies) / num_folds
    std = math.sqrt(sum((a - mean) ** 2 for a in fold_accuracies) / num_folds)
    tpr = [sum(row[t] for row in tpr_rows) / num_folds for t in range(len(thresholds))]
    fpr = [sum(row[t] for row in fpr_rows) / num_folds for t in range(len(thresholds))]
    return {"fold_accuracies": fold_accuracies, "best_thresholds": best_thresholds, "accuracy": mean,
            "accuracy_std": std, "tpr": tpr, "fpr": fpr}  # fmt: skip


def reference_roc(scores, labels):
    """Sort by decreasing score; one ROC point after each run of equal scores, plus the origin."""
    ranked = sorted(zip(scores, labels, strict=True), key=lambda item: -item[0])
    num_genuine = sum(labels)
    num_impostor = len(labels) - num_genuine
    points, tp, fp = [(0, 0)], 0, 0
    for index, (score, label) in enumerate(ranked):
        tp, fp = tp + label, fp + (not label)
        if index + 1 == len(ranked) or ranked[index + 1][0] != score:
            points.append((fp, tp))
    return [fp / num_impostor for fp, _ in points], [tp / num_genuine for _, tp in points]


def reference_tar_at_far(scores, labels, targets):
    fpr, tpr = reference_roc(scores, labels)
    result = {}
    for target in targets:
        best = None
        for index, value in enumerate(fpr):
            if best is None or abs(value - target) <= abs(fpr[best] - target):  # ties: the last point
                best = index
        result[target] = (tpr[best], fpr[best])
    # AUC = P(genuine score > impostor score) + P(tie) / 2 (Mann-Whitney), exactly
    genuine = [s for s, label in zip(scores, labels, strict=True) if label]
    impostor = [s for s, label in zip(scores, labels, strict=True) if not label]
    wins = sum(Fraction(1) if g > i else Fraction(1, 2) if g == i else Fraction(0) for g in genuine for i in impostor)
    return result, (fpr, tpr), float(wins / (len(genuine) * len(impostor)))


# ---------------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------------


def test_pair_lists_from_the_real_files():
    same_pairs, different_pairs, by_content, distinct, people = build_pairs()
    duplicates = sorted(names for names in by_content.values() if len(names) > 1)
    assert duplicates == [["03.jpg", "05.jpg"], ["08.jpg", "10.jpg"], ["13.jpg", "15.jpg"]]
    assert len(distinct) == 17 and len(people) == 7
    # 136 pairs of distinct images, minus the 13 within a person (1 + 3 + 1 + 3 + 3 + 1 + 1)
    assert len(different_pairs) == 123 and len(set(different_pairs)) == 123
    duplicate_files = {name for names in by_content.values() for name in names[1:]}
    assert not duplicate_files & {name for pair in different_pairs for name in pair}
    assert all(a != b for a, b in different_pairs)
    for kind, num_different in (("all", 123), ("balanced", 10)):
        pairs = pair_list(kind)
        assert pair_list(kind) == pairs  # deterministic
        assert sorted((a, b) for a, b, same in pairs if same) == same_pairs
        different = [(a, b) for a, b, same in pairs if not same]
        assert len(different) == num_different and set(different) <= set(different_pairs)


@pytest.mark.parametrize("kind", ["balanced", "all"])
def test_verification_accuracy_matches_the_loop_reference(kind, features):
    embeddings1, embeddings2, issame = embedded(kind, features)
    thresholds = np.arange(0, 4, 0.01)
    result = verification_accuracy(embeddings1, embeddings2, issame, num_folds=NUM_FOLDS)

    distances = reference_distances(embeddings1, embeddings2)
    np.testing.assert_allclose(result["distances"], distances, rtol=0, atol=1e-12)
    # no distance within rounding of a grid threshold, so the two distance computations make the same decisions
    assert np.abs(np.subtract.outer(np.array(distances), thresholds)).min() > 1e-9
    reference = reference_accuracy(distances, issame.tolist(), thresholds.tolist(), NUM_FOLDS)

    assert result["num_pairs"] == len(issame) == {"balanced": 20, "all": 133}[kind]
    np.testing.assert_array_equal(result["thresholds"], thresholds)
    np.testing.assert_array_equal(result["fold_accuracies"], reference["fold_accuracies"])
    np.testing.assert_array_equal(result["best_thresholds"], reference["best_thresholds"])
    assert result["accuracy"] == pytest.approx(reference["accuracy"], rel=0, abs=1e-15)
    assert result["accuracy_std"] == pytest.approx(reference["accuracy_std"], rel=0, abs=1e-15)
    np.testing.assert_allclose(result["tpr"], reference["tpr"], rtol=0, atol=1e-15)
    np.testing.assert_allclose(result["fpr"], reference["fpr"], rtol=0, atol=1e-15)
    if kind == "balanced":  # a non-trivial case: the folds pick different thresholds and reach different accuracies
        assert len(set(reference["best_thresholds"])) > 1 and len(set(reference["fold_accuracies"])) > 1
        assert 0 < min(reference["best_thresholds"])


@pytest.mark.parametrize("kind", ["balanced", "all"])
def test_tar_at_far_matches_the_sorting_reference(kind, features):
    embeddings1, embeddings2, issame = embedded(kind, features)
    normalised1 = embeddings1 / np.linalg.norm(embeddings1, axis=1, keepdims=True)
    normalised2 = embeddings2 / np.linalg.norm(embeddings2, axis=1, keepdims=True)
    scores = np.sum(normalised1 * normalised2, axis=1)  # cosine similarity
    result = tar_at_far(scores, issame, far_targets=FAR_TARGETS)

    reference, (fpr, tpr), auc = reference_tar_at_far(scores.tolist(), issame.tolist(), FAR_TARGETS)
    np.testing.assert_array_equal(result["fpr"], fpr)
    np.testing.assert_array_equal(result["tpr"], tpr)
    for target, (tar, far) in reference.items():
        assert result[f"tar_at_far_{target:g}"] == tar, target
        assert result[f"far_at_far_{target:g}"] == far, target
    assert result["auc"] == pytest.approx(auc, rel=0, abs=1e-15)
    assert (result["num_genuine"], result["num_impostor"]) == (10, {"balanced": 10, "all": 123}[kind])
