"""Image processor for SegFace (PIL backend), the numerical twin of `SegFaceImageProcessor` for reference pipelines."""

from __future__ import annotations

import numpy as np
import torch

from ...compat import PilBackend
from .image_processing_segface import SegFaceImageProcessorDefaults


if PilBackend is not None:

    class SegFaceImageProcessorPil(SegFaceImageProcessorDefaults, PilBackend):
        r"""
        PIL/numpy version of [`SegFaceImageProcessor`]: same defaults and API, resizing done by PIL exactly as the
        released SegFace data loaders did (`PIL.Image.resize`, bicubic), so `pixel_values` equal SegFace's exactly.

        Everything else is shared with the torchvision backend: label maps pick the same pixels in both (PIL's
        nearest rule), and alignment and post-processing run the same torch code (equal to float32 rounding, about
        1e-6). Only the bicubic image resize differs: PIL runs two 8-bit passes (rounding and clipping in between),
        torchvision one float pass. On photos the normalised `pixel_values` differ by a mean of about 1e-4 to 1e-3
        and at most about 0.1 (a few 8-bit levels at sharp edges); on random noise, whose overshoot PIL clips
        between the passes, by up to 0.4 (mean < 0.01).
        """

        def _from_torch(self, tensor: torch.Tensor) -> np.ndarray:
            return tensor.detach().cpu().numpy()

else:  # transformers < 5.5 has no PIL backend class
    SegFaceImageProcessorPil = None


__all__ = ["SegFaceImageProcessorPil"]
