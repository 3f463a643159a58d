"""Evaluate a face-embedding model on LFW-style verification pairs: k-fold accuracy (mean ± std) and TAR at FAR.

    python examples/evaluate_verification.py --model_name_or_path runs/part-fvit \
        --pairs_file /data/lfw/pairs.txt --image_root /data/lfw-aligned --flip_test

`--pairs_file` uses the LFW `pairs.txt` format: an optional header line (`<folds> <pairs per class per fold>`, as
LFW's `10 300`, or a single count, as `pairsDevTrain.txt`), then one pair per line, `name idx1 idx2` for two images of
the same person or `name1 idx1 name2 idx2` for two people. Image `idx` of `name` is
`<image_root>/<name>/<name>_<idx:04d>.jpg`. The model is loaded with `AutoModel` / `AutoImageProcessor`; the
embedding is the output's `embeddings` field when it has one, else `pooler_output`. With `--flip_test` the embedding
of an image is the sum of the embeddings of the processed image and of its horizontal flip (Part fViT, ORIGINALS.md
§7.6). Every batch goes through the same processor, so the partial last batch is normalised like the others (the
original code skips the normalisation there).

Accuracy: squared L2 distance of the L2-normalised embeddings, contiguous folds (the LFW folds when `pairs.txt` lists
them in order), threshold chosen on the other folds (`faceformers.metrics.verification_accuracy`). TAR at FAR: cosine
similarity of the same embeddings, nearest ROC point (`faceformers.metrics.tar_at_far`); with few pairs the small FARs
are out of reach and the reported point is the ROC's first one (see the `far_at_far_*` values in the JSON output).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image

import faceformers  # noqa: F401 - registers the faceformers models with the Auto classes
from faceformers.metrics import DEFAULT_FAR_TARGETS, l2_normalize, tar_at_far, verification_accuracy
from faceformers.training import parse_arguments


logger = logging.getLogger("evaluate_verification")


@dataclass
class VerificationArguments:
    model_name_or_path: str = field(metadata={"help": "Folder or Hub id of an AutoModel and its image processor."})
    pairs_file: str = field(metadata={"help": "LFW pairs.txt-style file (see the script's docstring)."})
    image_root: str = field(metadata={"help": "Folder holding <name>/<name>_<idx:04d>.jpg."})
    flip_test: bool = field(default=False, metadata={"help": "Sum the embeddings of each image and its mirror image."})
    batch_size: int = field(default=64, metadata={"help": "Images per forward pass."})
    num_folds: int | None = field(
        default=None, metadata={"help": "Number of folds (default: the pairs file's header, else 10)."}
    )
    output_json: str | None = field(default=None, metadata={"help": "Also write the results to this JSON file."})
    cpu: bool = field(default=False, metadata={"help": "Run on CPU even if an accelerator is present."})

    def __post_init__(self):
        if self.batch_size < 1:
            raise ValueError(f"--batch_size must be >= 1, got {self.batch_size}.")
        if self.num_folds is not None and self.num_folds < 2:
            raise ValueError(f"--num_folds must be >= 2, got {self.num_folds}.")


@dataclass
class Pairs:
    """Parsed pairs file: each pair is `((name1, idx1), (name2, idx2))`; `num_folds` comes from a two-number header."""

    pairs: list[tuple[tuple[str, int], tuple[str, int]]]
    issame: list[bool]
    num_folds: int | None = None


def _is_int(token: str) -> bool:
    try:
        int(token)
    except ValueError:
        return False
    return True


def read_pairs(path: str | Path) -> Pairs:
    """Reads an LFW `pairs.txt`-style file (see the module docstring); blank lines are skipped."""
    lines = [(number, line.split()) for number, line in enumerate(Path(path).read_text().splitlines(), 1)]
    lines = [(number, tokens) for number, tokens in lines if tokens]
    header: list[int] = []
    if lines and len(lines[0][1]) <= 2 and all(_is_int(token) for token in lines[0][1]):
        header = [int(token) for token in lines.pop(0)[1]]
    pairs, issame = [], []
    for number, tokens in lines:
        if len(tokens) == 3 and _is_int(tokens[1]) and _is_int(tokens[2]):
            pairs.append(((tokens[0], int(tokens[1])), (tokens[0], int(tokens[2]))))
            issame.append(True)
        elif len(tokens) == 4 and _is_int(tokens[1]) and _is_int(tokens[3]):
            pairs.append(((tokens[0], int(tokens[1])), (tokens[2], int(tokens[3]))))
            issame.append(False)
        else:
            raise ValueError(
                f"{path}:{number}: expected 'name idx1 idx2' or 'name1 idx1 name2 idx2', got {' '.join(tokens)!r}."
            )
    if not pairs:
        raise ValueError(f"{path} lists no pairs.")
    expected = header[0] * 2 * header[1] if len(header) == 2 else 2 * header[0] if header else len(pairs)
    if expected != len(pairs):
        logger.warning("%s: the header %s announces %d pairs, the file lists %d.", path, header, expected, len(pairs))
    return Pairs(pairs, issame, num_folds=header[0] if len(header) == 2 else None)


def image_path(image_root: str | Path, name: str, index: int) -> Path:
    """LFW layout: `<image_root>/<name>/<name>_<index:04d>.jpg`."""
    return Path(image_root) / name / f"{name}_{index:04d}.jpg"


def _embedding_of(outputs) -> torch.Tensor:
    for name in ("embeddings", "pooler_output"):
        value = getattr(outputs, name, None)
        if value is not None:
            return value
    raise ValueError(
        f"The model output ({type(outputs).__name__}) has neither an `embeddings` nor a `pooler_output` field."
    )


@torch.no_grad()
def embed_images(
    model: torch.nn.Module, processor, paths: list[Path], batch_size: int, flip_test: bool = False
) -> np.ndarray:
    """`(len(paths), dim)` float32 embeddings; with `flip_test`, embedding(image) + embedding(mirrored image)."""
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(paths), batch_size):
        images = []
        for path in paths[start : start + batch_size]:
            with Image.open(path) as image:
                images.append(image.convert("RGB"))
        pixel_values = processor(images=images, return_tensors="pt")["pixel_values"].to(device)
        embeddings = _embedding_of(model(pixel_values=pixel_values)).float()
        if flip_test:
            embeddings = embeddings + _embedding_of(model(pixel_values=pixel_values.flip(-1))).float()
        chunks.append(embeddings.cpu())
    return torch.cat(chunks).numpy()


def format_results(results: dict, far_targets: tuple[float, ...]) -> str:
    """A two-line summary: accuracy ± std over the folds, then TAR at each FAR (percent)."""
    lines = [
        f"accuracy {100 * results['accuracy']:.2f} ± {100 * results['accuracy_std']:.2f} "
        f"({results['num_pairs']} pairs, {results['num_folds']} folds), AUC {100 * results['auc']:.2f}",
        "TAR@FAR " + "  ".join(f"{far:g}: {100 * results[f'tar_at_far_{far:g}']:.2f}" for far in far_targets),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    from transformers import AutoImageProcessor, AutoModel

    (args,) = parse_arguments((VerificationArguments,), argv)
    logging.basicConfig(
        format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S", level=logging.INFO
    )

    pairs = read_pairs(args.pairs_file)
    unique = sorted({image for pair in pairs.pairs for image in pair})
    paths = [image_path(args.image_root, name, index) for name, index in unique]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise FileNotFoundError(
            f"{len(missing)} of the {len(paths)} images named in {args.pairs_file} are missing under "
            f"{args.image_root} (expected <name>/<name>_<idx:04d>.jpg): {shown}"
        )

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    model = AutoModel.from_pretrained(args.model_name_or_path).to(device).eval()
    processor = AutoImageProcessor.from_pretrained(args.model_name_or_path)
    logger.info("Embedding %d images for %d pairs (flip test: %s)", len(paths), len(pairs.pairs), args.flip_test)
    embeddings = embed_images(model, processor, paths, args.batch_size, flip_test=args.flip_test)
    row = {image: i for i, image in enumerate(unique)}
    first = embeddings[[row[pair[0]] for pair in pairs.pairs]]
    second = embeddings[[row[pair[1]] for pair in pairs.pairs]]
    issame = np.array(pairs.issame)

    num_folds = args.num_folds or pairs.num_folds or 10
    accuracy = verification_accuracy(first, second, issame, num_folds=num_folds)
    similarity = np.sum(l2_normalize(first) * l2_normalize(second), axis=1)
    tar = tar_at_far(similarity, issame, far_targets=DEFAULT_FAR_TARGETS)
    results = {
        "accuracy": accuracy["accuracy"],
        "accuracy_std": accuracy["accuracy_std"],
        "fold_accuracies": accuracy["fold_accuracies"].tolist(),
        "best_thresholds": accuracy["best_thresholds"].tolist(),
        "num_pairs": accuracy["num_pairs"],
        "num_folds": num_folds,
        "num_images": len(paths),
        "flip_test": args.flip_test,
        **{key: value for key, value in tar.items() if not isinstance(value, np.ndarray)},
    }
    print(f"{args.model_name_or_path} on {args.pairs_file}:")
    print(format_results(results, DEFAULT_FAR_TARGETS))
    if args.output_json:
        Path(args.output_json).write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
