"""MCF end to end on CPU with no data: pre-train a small MCF on procedurally drawn faces, save it, reload it through
the Auto classes and extract face embeddings.

    python examples/demo_mcf.py                # ~1 minute on 2 CPU cores
    python examples/demo_mcf.py --steps 2      # smoke run

The perceptual teacher is randomly initialised here (a real run loads MoCo-v3 ViT-B/16 weights through the converter);
the demo says so instead of hiding it.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from transformers import AutoImageProcessor, AutoModel

from faceformers import MCFConfig, MCFForPreTraining, MCFImageProcessor, MCFModel


logger = logging.getLogger("demo_mcf")


def draw_face(rng: np.random.Generator, size: int = 64) -> Image.Image:
    """A cartoon face: skin-coloured ellipse, two eyes, brows, nose and a mouth at jittered positions."""
    background = tuple(int(c) for c in rng.integers(0, 256, 3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    skin = tuple(int(c) for c in np.clip(np.array([200, 160, 130]) * rng.uniform(0.5, 1.2), 0, 255))
    cx, cy = size / 2 + rng.normal(0, size * 0.03, 2)
    rx, ry = size * rng.uniform(0.28, 0.36), size * rng.uniform(0.36, 0.44)
    draw.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=skin)
    eye_y, eye_dx, eye_r = cy - ry * 0.2, rx * rng.uniform(0.35, 0.5), size * 0.04
    for side in (-1, 1):
        ex = cx + side * eye_dx
        draw.ellipse([ex - eye_r * 1.6, eye_y - eye_r, ex + eye_r * 1.6, eye_y + eye_r], fill="white")
        draw.ellipse([ex - eye_r * 0.7, eye_y - eye_r * 0.7, ex + eye_r * 0.7, eye_y + eye_r * 0.7], fill=(40, 30, 20))
        draw.line([ex - eye_r * 2, eye_y - eye_r * 2.5, ex + eye_r * 2, eye_y - eye_r * 2.2], fill=(60, 40, 30), width=2)
    draw.polygon([(cx, cy - ry * 0.05), (cx - rx * 0.12, cy + ry * 0.2), (cx + rx * 0.12, cy + ry * 0.2)], fill=tuple(int(c * 0.85) for c in skin))
    mouth_y, mouth_w = cy + ry * 0.5, rx * rng.uniform(0.3, 0.6)
    draw.chord([cx - mouth_w, mouth_y - size * 0.05, cx + mouth_w, mouth_y + size * 0.05], 0, 180, fill=(150, 40, 50))
    return image


def small_config() -> MCFConfig:
    """A 4-block ViT at 64 px: the MCF recipe at a size that trains in a minute on a laptop CPU."""
    return MCFConfig(
        hidden_size=128, num_hidden_layers=4, num_attention_heads=4, intermediate_size=256, image_size=64, patch_size=8,
        decoder_hidden_size=64, decoder_num_hidden_layers=2, decoder_num_attention_heads=4, decoder_intermediate_size=128,
        projector_hidden_size=256, projection_dim=64,
    )


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--output_dir", default="outputs/demo_mcf")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)

    config = small_config()
    processor = MCFImageProcessor(size={"height": config.image_size, "width": config.image_size})
    model = MCFForPreTraining(config)
    logger.warning("Demo: the perceptual teacher is randomly initialised (a real run converts MoCo-v3 ViT-B/16 weights).")
    model.load_perceptual_teacher(MCFModel(config.get_perceptual_teacher_config()).state_dict())
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.learning_rate, betas=(0.9, 0.95), weight_decay=0.05)

    model.train()
    history = []
    for step in range(1, args.steps + 1):
        images = [draw_face(rng, config.image_size) for _ in range(args.batch_size)]
        outputs = model(**processor(images, return_tensors="pt"))
        outputs.loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        model.update_momentum_encoder()
        history.append(outputs.loss.item())
        if step == 1 or step % 10 == 0 or step == args.steps:
            logger.info(
                "step %d  loss %.4f  perceptual %.5f  contrastive %.4f",
                step, outputs.loss.item(), outputs.perceptual_loss.item(), outputs.contrastive_loss.item(),
            )

    output_dir = Path(args.output_dir)
    model.mcf.save_pretrained(output_dir)  # the encoder users fine-tune
    processor.save_pretrained(output_dir)
    encoder = AutoModel.from_pretrained(output_dir).eval()
    reloaded_processor = AutoImageProcessor.from_pretrained(output_dir)
    faces = [draw_face(np.random.default_rng(1000 + i), config.image_size) for i in range(4)]
    with torch.no_grad():
        embeddings = encoder(**reloaded_processor(faces, return_tensors="pt")).pooler_output
    logger.info("Saved %s to %s; face embeddings %s", type(encoder).__name__, output_dir, tuple(embeddings.shape))
    return {"first_loss": history[0], "last_loss": history[-1]}


if __name__ == "__main__":
    main()
