from .configuration_part_fvit import (
    PART_FVIT_EVALUATION_MEAN,
    PART_FVIT_EVALUATION_STD,
    PART_FVIT_LANDMARK_BLOCKS,
    PART_FVIT_TRAINING_MEAN,
    PART_FVIT_TRAINING_STD,
    PartFViTConfig,
)
from .image_processing_part_fvit import PartFViTImageProcessor
from .modeling_part_fvit import (
    PartFViTArcFaceHead,
    PartFViTCosFaceHead,
    PartFViTFaceRecognitionOutput,
    PartFViTForFaceRecognition,
    PartFViTLandmarkNet,
    PartFViTModel,
    PartFViTModelOutput,
    PartFViTPreTrainedModel,
    sample_landmark_patches,
)


__all__ = [
    "PART_FVIT_EVALUATION_MEAN",
    "PART_FVIT_EVALUATION_STD",
    "PART_FVIT_LANDMARK_BLOCKS",
    "PART_FVIT_TRAINING_MEAN",
    "PART_FVIT_TRAINING_STD",
    "PartFViTArcFaceHead",
    "PartFViTConfig",
    "PartFViTCosFaceHead",
    "PartFViTFaceRecognitionOutput",
    "PartFViTForFaceRecognition",
    "PartFViTImageProcessor",
    "PartFViTLandmarkNet",
    "PartFViTModel",
    "PartFViTModelOutput",
    "PartFViTPreTrainedModel",
    "sample_landmark_patches",
]
