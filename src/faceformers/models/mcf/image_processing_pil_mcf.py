"""Image processor for MCF (PIL backend), the numerical twin of `MCFImageProcessor` for reference pipelines."""

from __future__ import annotations

from ...compat import PilBackend
from ...image_utils import standardize_images
from .image_processing_mcf import MCFImageProcessor


if PilBackend is not None:

    class MCFImageProcessorPil(PilBackend):
        r"""PIL/numpy version of [`MCFImageProcessor`]: same defaults, resizing done by PIL."""

        model_input_names = MCFImageProcessor.model_input_names
        resample = MCFImageProcessor.resample
        size = MCFImageProcessor.size
        image_mean = MCFImageProcessor.image_mean
        image_std = MCFImageProcessor.image_std
        do_resize = True
        do_rescale = True
        do_normalize = True
        do_convert_rgb = True

        def preprocess(self, images, *args, **kwargs):
            return super().preprocess(standardize_images(images), *args, **kwargs)

else:  # transformers < 5.5 has no PIL backend class
    MCFImageProcessorPil = None


__all__ = ["MCFImageProcessorPil"]
