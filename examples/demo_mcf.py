"""Use a trained MCF encoder: reload it through the Auto classes, embed synthetic faces with
`pipeline("image-feature-extraction")`, and check that two photos of the same synthetic person are closer than photos
of different people. `make demo` runs it after `accelerate launch examples/pretrain_mcf.py` on the synthetic default.

    python examples/demo_mcf.py --model_dir outputs/demo
"""

from __future__ import annotations

import argparse
import logging

import torch
import torch.nn.functional as F
from transformers import AutoImageProcessor, AutoModel, pipeline

import faceformers  # noqa: F401  (registers MCF with the Auto classes)
from faceformers.data.synthetic import SyntheticFaces


logger = logging.getLogger("demo_mcf")


def main(argv: list[str] | None = None) -> dict[str, float]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model_dir", required=True, help="Output folder of examples/pretrain_mcf.py.")
    parser.add_argument("--num_identities", type=int, default=8)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    model = AutoModel.from_pretrained(args.model_dir).eval()
    processor = AutoImageProcessor.from_pretrained(args.model_dir)
    extractor = pipeline("image-feature-extraction", model=model, image_processor=processor, pool=True, return_tensors=True)
    size = processor.size["height"]
    faces = SyntheticFaces(seed=123, image_size=size, num_identities=args.num_identities)  # people never seen in training
    # two photos (different pose, expression, lighting) of each person
    samples = [faces.sample(i) for i in range(2 * args.num_identities)]
    with torch.no_grad():
        embeddings = F.normalize(torch.cat([extractor(s["image"]) for s in samples]), dim=-1)  # (2N, hidden)
    similarity = embeddings @ embeddings.T
    same = torch.stack([similarity[i, i + args.num_identities] for i in range(args.num_identities)]).mean().item()
    mask = ~torch.eye(len(samples), dtype=torch.bool)
    for i in range(args.num_identities):
        mask[i, i + args.num_identities] = mask[i + args.num_identities, i] = False
    different = similarity[mask].mean().item()

    logger.info("Loaded %s (%s) and %s from %s", type(model).__name__, model.config.model_type, type(processor).__name__, args.model_dir)
    logger.info("Embedded %d synthetic faces with pipeline('image-feature-extraction'): %s", len(samples), tuple(embeddings.shape))
    logger.info("Mean cosine similarity: same person %.3f, different people %.3f", same, different)
    return {"same_identity": same, "different_identity": different}


if __name__ == "__main__":
    main()
