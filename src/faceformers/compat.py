"""Shims over the parts of transformers that moved within the supported range (`transformers>=5.0,<6`)."""

from __future__ import annotations

from transformers import AutoImageProcessor


try:  # transformers >= 5.5: one class per backend
    from transformers.image_processing_backends import PilBackend, TorchvisionBackend
except ImportError:  # transformers 5.0 - 5.4: the torchvision class was called "fast"; no PIL twin is registered
    from transformers.image_processing_utils_fast import BaseImageProcessorFast as TorchvisionBackend

    PilBackend = None


def register_image_processor(config_class: type, torchvision_class: type, pil_class: type | None) -> None:
    """Register both backends of an image processor with `AutoImageProcessor`."""
    try:
        classes = {"torchvision": torchvision_class}
        if pil_class is not None:
            classes["pil"] = pil_class
        AutoImageProcessor.register(config_class, image_processor_classes=classes, exist_ok=True)
    except TypeError:  # transformers < 5.5
        AutoImageProcessor.register(config_class, fast_image_processor_class=torchvision_class, exist_ok=True)


__all__ = ["PilBackend", "TorchvisionBackend", "register_image_processor"]
