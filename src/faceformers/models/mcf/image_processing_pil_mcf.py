"""Image processor for MCF (PIL backend), the numerical twin of `MCFImageProcessor` for reference pipelines."""

from __future__ import annotations

from ...compat import PilBackend
from .image_processing_mcf import MCFImageProcessorDefaults


if PilBackend is not None:

    class MCFImageProcessorPil(MCFImageProcessorDefaults, PilBackend):
        r"""PIL/numpy version of [`MCFImageProcessor`]: same defaults, resizing done by PIL."""

else:  # transformers < 5.5 has no PIL backend class
    MCFImageProcessorPil = None


__all__ = ["MCFImageProcessorPil"]
