"""Convert OpenAI's DALL-E dVAE encoder (`encoder.pkl`, the visual tokenizer of FaRL's masked image modelling) to a
safetensors file for `faceformers.models.farl.dall_e.DallEEncoder`.

Usage:

    python -m faceformers.models.farl.convert_dall_e_to_hf --checkpoint encoder.pkl \
        --output dall_e_encoder.safetensors

The input is read without the `dall_e` package and without running code from the pickle (see `dall_e.py`); a plain
original-key state dict is accepted too. Every original tensor must be used. The architecture is stored in the
safetensors metadata and is also inferred from the tensor shapes by `DallEEncoder.from_file`, which is used to reload
the written file and check it against the in-memory conversion before the script reports success.
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from pathlib import Path

import torch

from faceformers.models.farl.dall_e import DallEEncoder, load_dall_e_encoder_state_dict


logger = logging.getLogger(__name__)


def convert_checkpoint(checkpoint: str | Path, output: str | Path) -> DallEEncoder:
    """Convert `checkpoint` and write `output` (.safetensors); returns the converted (frozen) encoder."""
    output = Path(output)
    if output.suffix != ".safetensors":
        raise ValueError(f"--output must end in .safetensors, got {output}")
    model = DallEEncoder.from_state_dict(load_dall_e_encoder_state_dict(checkpoint))
    num_parameters = sum(parameter.numel() for parameter in model.parameters())
    logger.info("Converted %s: %s, %.1fM parameters", checkpoint, model.config, num_parameters / 1e6)
    output.parent.mkdir(parents=True, exist_ok=True)
    model.save_safetensors(output)

    reloaded = DallEEncoder.from_file(output)
    if reloaded.config != model.config:
        raise RuntimeError(f"reloaded config {reloaded.config} differs from {model.config}")
    for (key, value), reloaded_value in zip(model.state_dict().items(), reloaded.state_dict().values(), strict=True):
        if not torch.equal(value, reloaded_value):
            raise RuntimeError(f"{key} changed in the round trip through {output}")
    logger.info("Wrote %s", output)
    return model


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="OpenAI's encoder.pkl (or an original-key state dict).")
    parser.add_argument("--output", required=True, help="Path of the .safetensors file to write.")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    convert_checkpoint(args.checkpoint, args.output)


if __name__ == "__main__":
    main()
