"""Image processor for FaRL (PIL backend), the numerical twin of `FaRLImageProcessor` for reference pipelines."""

from __future__ import annotations

from ...compat import PilBackend
from .image_processing_farl import FaRLImageProcessorDefaults


if PilBackend is not None:

    class FaRLImageProcessorPil(FaRLImageProcessorDefaults, PilBackend):
        r"""PIL/numpy version of [`FaRLImageProcessor`]: same defaults, resizing done by PIL."""

else:  # transformers < 5.5 has no PIL backend class
    FaRLImageProcessorPil = None


__all__ = ["FaRLImageProcessorPil"]
