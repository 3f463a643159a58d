"""Streaming face data: deterministic, resumable shards (WebDataset, parquet, folders, Hub) and synthetic faces."""

from .labels import CELEBA_ATTRIBUTES, CELEBAMASK_HQ_LABELS, HELEN_LABELS, LAPA_LABELS, id2label
from .streaming import Batcher, FaceStream, Record, Shard, resolve_dataset_name, resolve_train_files, synthetic_shards
from .synthetic import SyntheticFaces, synthetic_face_dataset
from .transforms import FaRLPretrainingTransform, MCFPretrainingTransform, record_caption


__all__ = [
    "Batcher",
    "CELEBAMASK_HQ_LABELS",
    "CELEBA_ATTRIBUTES",
    "FaRLPretrainingTransform",
    "FaceStream",
    "HELEN_LABELS",
    "LAPA_LABELS",
    "MCFPretrainingTransform",
    "Record",
    "Shard",
    "SyntheticFaces",
    "id2label",
    "record_caption",
    "resolve_dataset_name",
    "resolve_train_files",
    "synthetic_face_dataset",
    "synthetic_shards",
]
