"""Registers every faceformers config, model and image processor with the transformers Auto classes."""

from __future__ import annotations

from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForImageClassification,
    AutoModelForPreTraining,
    AutoModelForSemanticSegmentation,
    AutoModelForZeroShotImageClassification,
    AutoProcessor,
    AutoTokenizer,
)

from .compat import register_image_processor
from .models.farl import (
    FaRLConfig,
    FaRLForPreTraining,
    FaRLImageProcessor,
    FaRLImageProcessorPil,
    FaRLModel,
    FaRLProcessor,
    FaRLTokenizer,
)
from .models.mcf import MCFConfig, MCFForPreTraining, MCFImageProcessor, MCFImageProcessorPil, MCFModel
from .models.part_fvit import PartFViTConfig, PartFViTForFaceRecognition, PartFViTImageProcessor, PartFViTModel
from .models.segface import SegFaceConfig, SegFaceForSemanticSegmentation, SegFaceImageProcessor, SegFaceImageProcessorPil


def register_auto_classes() -> None:
    """Idempotent: safe to call more than once."""
    AutoConfig.register(MCFConfig.model_type, MCFConfig, exist_ok=True)
    AutoModel.register(MCFConfig, MCFModel, exist_ok=True)
    AutoModelForPreTraining.register(MCFConfig, MCFForPreTraining, exist_ok=True)
    register_image_processor(MCFConfig, MCFImageProcessor, MCFImageProcessorPil)

    AutoConfig.register(FaRLConfig.model_type, FaRLConfig, exist_ok=True)
    AutoModel.register(FaRLConfig, FaRLModel, exist_ok=True)
    AutoModelForZeroShotImageClassification.register(FaRLConfig, FaRLModel, exist_ok=True)
    AutoModelForPreTraining.register(FaRLConfig, FaRLForPreTraining, exist_ok=True)
    register_image_processor(FaRLConfig, FaRLImageProcessor, FaRLImageProcessorPil)
    AutoTokenizer.register(FaRLConfig, tokenizer_class=FaRLTokenizer, exist_ok=True)
    AutoProcessor.register(FaRLConfig, FaRLProcessor, exist_ok=True)

    AutoConfig.register(PartFViTConfig.model_type, PartFViTConfig, exist_ok=True)
    AutoModel.register(PartFViTConfig, PartFViTModel, exist_ok=True)
    # identities are classes: there is no face-recognition Auto class
    AutoModelForImageClassification.register(PartFViTConfig, PartFViTForFaceRecognition, exist_ok=True)
    register_image_processor(PartFViTConfig, PartFViTImageProcessor, None)

    AutoConfig.register(SegFaceConfig.model_type, SegFaceConfig, exist_ok=True)
    AutoModelForSemanticSegmentation.register(SegFaceConfig, SegFaceForSemanticSegmentation, exist_ok=True)
    register_image_processor(SegFaceConfig, SegFaceImageProcessor, SegFaceImageProcessorPil)
