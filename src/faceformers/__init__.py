"""faceformers: facial representation models (MCF, FaRL, SegFace, DML-CSR, Part fViT) for Hugging Face transformers.

Importing the package registers every model with the transformers Auto classes, so that
`AutoModel.from_pretrained("org/mcf-vitb16")` resolves to faceformers classes.
"""

from .auto import register_auto_classes
from .models.farl import (
    BlockMaskGenerator,
    FaRLConfig,
    FaRLForPreTraining,
    FaRLForPreTrainingOutput,
    FaRLImageProcessor,
    FaRLImageProcessorPil,
    FaRLModel,
    FaRLOutput,
    FaRLPreTrainedModel,
    FaRLProcessor,
    FaRLTokenizer,
    build_farl_tokenizer,
)
from .models.mcf import (
    MCFConfig,
    MCFForPreTraining,
    MCFForPreTrainingOutput,
    MCFImageProcessor,
    MCFImageProcessorPil,
    MCFModel,
    MCFModelOutput,
    MCFPreTrainedModel,
)
from .models.part_fvit import (
    PartFViTConfig,
    PartFViTFaceRecognitionOutput,
    PartFViTForFaceRecognition,
    PartFViTImageProcessor,
    PartFViTModel,
    PartFViTModelOutput,
    PartFViTPreTrainedModel,
)
from .models.segface import (
    SegFaceBackbone,
    SegFaceConfig,
    SegFaceForSemanticSegmentation,
    SegFaceImageProcessor,
    SegFaceImageProcessorPil,
    SegFacePreTrainedModel,
    SegFaceSemanticSegmenterOutput,
)


__version__ = "0.1.0.dev0"

register_auto_classes()

__all__ = [
    "BlockMaskGenerator",
    "FaRLConfig",
    "FaRLForPreTraining",
    "FaRLForPreTrainingOutput",
    "FaRLImageProcessor",
    "FaRLImageProcessorPil",
    "FaRLModel",
    "FaRLOutput",
    "FaRLPreTrainedModel",
    "FaRLProcessor",
    "FaRLTokenizer",
    "MCFConfig",
    "MCFForPreTraining",
    "MCFForPreTrainingOutput",
    "MCFImageProcessor",
    "MCFImageProcessorPil",
    "MCFModel",
    "MCFModelOutput",
    "MCFPreTrainedModel",
    "PartFViTConfig",
    "PartFViTFaceRecognitionOutput",
    "PartFViTForFaceRecognition",
    "PartFViTImageProcessor",
    "PartFViTModel",
    "PartFViTModelOutput",
    "PartFViTPreTrainedModel",
    "SegFaceBackbone",
    "SegFaceConfig",
    "SegFaceForSemanticSegmentation",
    "SegFaceImageProcessor",
    "SegFaceImageProcessorPil",
    "SegFacePreTrainedModel",
    "SegFaceSemanticSegmenterOutput",
    "build_farl_tokenizer",
    "register_auto_classes",
]
