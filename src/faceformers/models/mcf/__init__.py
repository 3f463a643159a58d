from .configuration_mcf import MCFConfig
from .image_processing_mcf import MCFImageProcessor
from .image_processing_pil_mcf import MCFImageProcessorPil
from .modeling_mcf import (
    MCFForPreTraining,
    MCFForPreTrainingOutput,
    MCFModel,
    MCFModelOutput,
    MCFPreTrainedModel,
)


__all__ = [
    "MCFConfig",
    "MCFForPreTraining",
    "MCFForPreTrainingOutput",
    "MCFImageProcessor",
    "MCFImageProcessorPil",
    "MCFModel",
    "MCFModelOutput",
    "MCFPreTrainedModel",
]
