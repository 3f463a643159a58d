"""FaRL processor: the FaRL image processor and the CLIP BPE tokenizer behind one call."""

from __future__ import annotations

from transformers import ProcessorMixin


class FaRLProcessor(ProcessorMixin):
    r"""
    Wraps a [`FaRLImageProcessor`] and the FaRL (CLIP BPE) tokenizer: `processor(text=..., images=...)` returns
    `input_ids`, `attention_mask` and `pixel_values` for [`FaRLModel`]. Saved and loaded with `save_pretrained` /
    `AutoProcessor.from_pretrained` like any transformers processor.

    Example:

    ```python
    >>> from faceformers import FaRLImageProcessor, FaRLProcessor
    >>> from faceformers.models.farl import build_farl_tokenizer

    >>> processor = FaRLProcessor(FaRLImageProcessor(), build_farl_tokenizer())
    >>> inputs = processor(text=["a smiling face"], images=face_crop, return_tensors="pt", padding=True)
    ```
    """

    def __init__(self, image_processor=None, tokenizer=None, **kwargs):
        super().__init__(image_processor, tokenizer)


__all__ = ["FaRLProcessor"]
