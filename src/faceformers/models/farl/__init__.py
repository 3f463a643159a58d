from .configuration_farl import FaRLConfig
from .dall_e import DallEEncoder
from .image_processing_farl import FaRLImageProcessor
from .image_processing_pil_farl import FaRLImageProcessorPil
from .modeling_farl import (
    BlockMaskGenerator,
    FaRLForPreTraining,
    FaRLForPreTrainingOutput,
    FaRLModel,
    FaRLOutput,
    FaRLPreTrainedModel,
)
from .processing_farl import FaRLProcessor
from .tokenization_farl import FaRLTokenizer, build_farl_tokenizer


__all__ = [
    "BlockMaskGenerator",
    "DallEEncoder",
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
    "build_farl_tokenizer",
]
