from .configuration_segface import SegFaceConfig
from .image_processing_pil_segface import SegFaceImageProcessorPil
from .image_processing_segface import SegFaceImageProcessor
from .modeling_segface import (
    SegFaceBackbone,
    SegFaceForSemanticSegmentation,
    SegFacePreTrainedModel,
    SegFaceSemanticSegmenterOutput,
)


__all__ = [
    "SegFaceBackbone",
    "SegFaceConfig",
    "SegFaceForSemanticSegmentation",
    "SegFaceImageProcessor",
    "SegFaceImageProcessorPil",
    "SegFacePreTrainedModel",
    "SegFaceSemanticSegmenterOutput",
]
