"""Tiny checkpoints of each model family, and the outputs a user gets from them through the transformers entry points
(Auto classes, image processor, pipeline). Imported both by the tests and by client subprocesses that load from the
loopback Hub; it imports faceformers only when asked to, so that remote-code loading can run without it."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import PIL.Image
import torch
import transformers


FAMILIES = {
    # family: (Auto class of the model, pipeline task)
    "mcf": ("AutoModel", "image-feature-extraction"),
    "farl": ("AutoModelForZeroShotImageClassification", "zero-shot-image-classification"),
    "segface": ("AutoModelForSemanticSegmentation", "image-segmentation"),
    "part_fvit": ("AutoModel", "image-feature-extraction"),
}
CANDIDATE_LABELS = ["a smiling face", "a face with glasses", "a bald head"]


def sample_image() -> PIL.Image.Image:
    """A deterministic, non-square RGB image."""
    y, x = np.mgrid[0:44, 0:40]
    pixels = np.stack([(x * 6) % 256, (y * 5) % 256, ((x + y) * 3) % 256], axis=-1).astype(np.uint8)
    return PIL.Image.fromarray(pixels)


def save_tiny_folder(family: str, folder: Path) -> None:
    """A seeded tiny model of `family` with its processor (and tokenizer), written by `save_pretrained`."""
    import faceformers

    torch.manual_seed(0)
    if family == "mcf":
        config = faceformers.MCFConfig(
            hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32, patch_size=8
        )
        model, processor = faceformers.MCFModel(config), faceformers.MCFImageProcessor(size={"height": 32, "width": 32})
    elif family == "farl":
        tokenizer = faceformers.build_farl_tokenizer(model_max_length=16)
        config = faceformers.FaRLConfig(
            text_config=dict(
                vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                num_attention_heads=2, max_position_embeddings=16,
                bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
            ),
            vision_config=dict(
                hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32, patch_size=8
            ),
            projection_dim=16,
        )  # fmt: skip
        model = faceformers.FaRLModel(config)
        image_processor = faceformers.FaRLImageProcessor(size={"height": 32, "width": 32})
        processor = faceformers.FaRLProcessor(image_processor, tokenizer)
    elif family == "segface":
        config = faceformers.SegFaceConfig.for_dataset(
            "lapa",
            backbone={"library": "timm", "name": "convnext_atto", "kwargs": {"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]}},
            image_size=64, decoder_hidden_size=32, num_pos_feats=16, decoder_num_attention_heads=2,
            decoder_intermediate_size=64, decoder_upscaling_sizes=[8, 4],
        )  # fmt: skip
        model, processor = faceformers.SegFaceForSemanticSegmentation(config), faceformers.SegFaceImageProcessor(size={"height": 64, "width": 64})
    elif family == "part_fvit":
        config = faceformers.PartFViTConfig(
            image_size=32, patch_size=4, num_patches=16, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            head_dim=12, intermediate_size=64, landmark_stem_channels=8,
            landmark_block_config=[[3, 16, 8, False, "relu", 1], [3, 24, 16, True, "hardswish", 2], [5, 32, 16, True, "hardswish", 2]],
        )  # fmt: skip
        model, processor = faceformers.PartFViTModel(config), faceformers.PartFViTImageProcessor(size={"height": 32, "width": 32})
    else:
        raise ValueError(f"unknown family {family!r}")
    model.eval().save_pretrained(folder)
    processor.save_pretrained(folder)


@torch.no_grad()
def family_outputs(source: str, family: str, **load_kwargs) -> dict[str, torch.Tensor]:
    """Model outputs on `sample_image()` through the Auto classes, and the pipeline's answer, as tensors."""
    if not load_kwargs.get("trust_remote_code"):
        import faceformers  # noqa: F401  (registers the Auto classes)

    auto_name, task = FAMILIES[family]
    model = getattr(transformers, auto_name).from_pretrained(source, **load_kwargs).eval()
    image_processor = transformers.AutoImageProcessor.from_pretrained(source, **load_kwargs)
    image = sample_image()
    inputs = dict(image_processor(image, return_tensors="pt"))
    pipe = transformers.pipeline(task, model=source, **load_kwargs)
    if family == "farl":
        tokenizer = transformers.AutoTokenizer.from_pretrained(source, **load_kwargs)
        inputs.update(tokenizer(CANDIDATE_LABELS, padding="max_length", return_tensors="pt"))
        answer = pipe(image, candidate_labels=CANDIDATE_LABELS)
        pipeline_output = torch.tensor([item["score"] for item in sorted(answer, key=lambda item: item["label"])])
    elif family == "segface":
        answer = pipe(image)
        pipeline_output = torch.stack([torch.from_numpy(np.array(item["mask"])) for item in answer])
    else:
        pipeline_output = pipe(image, return_tensors=True)
    output = model(**inputs)
    return {"output": output[0], "pipeline": pipeline_output, "model_class": type(model).__name__}


def folder_digest(folder: str | Path) -> dict[str, str]:
    """sha256 of every file under `folder`, by relative path."""
    folder = Path(folder)
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and ".cache" not in path.parts
    }
