"""SegFace under `transformers.Trainer`: trains, reports a plain (not rescaled) loss, saves and reloads."""

import math

import torch
from torch.utils.data import Dataset
from transformers import AutoModelForSemanticSegmentation, Trainer, TrainingArguments

import faceformers  # noqa: F401
from faceformers import SegFaceConfig, SegFaceForSemanticSegmentation, SegFaceImageProcessor
from faceformers.data.synthetic import SyntheticFaces


class SyntheticParsing(Dataset):
    def __init__(self, size: int = 8):
        self.faces, self.processor = SyntheticFaces(seed=0, image_size=64), SegFaceImageProcessor(size={"height": 64, "width": 64})
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        sample = self.faces.sample(index)
        inputs = self.processor(sample["image"], segmentation_maps=sample["mask_lapa"], return_tensors="pt")
        return {"pixel_values": inputs["pixel_values"][0], "labels": inputs["labels"][0]}


def test_trainer_trains_saves_and_reloads(tmp_path):
    config = SegFaceConfig.for_dataset(
        "lapa", backbone={"library": "timm", "name": "resnet10t", "out_indices": [1, 2, 3, 4]}, image_size=64,
        decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2, decoder_intermediate_size=64,
        num_pos_feats=16,
    )
    torch.manual_seed(0)
    model = SegFaceForSemanticSegmentation(config)
    arguments = TrainingArguments(
        output_dir=str(tmp_path), max_steps=3, per_device_train_batch_size=2, gradient_accumulation_steps=2,
        learning_rate=1e-3, use_cpu=True, report_to=[], save_strategy="no", logging_steps=1, dataloader_num_workers=0,
    )
    trainer = Trainer(model=model, args=arguments, train_dataset=SyntheticParsing())
    result = trainer.train()
    # 0.5 CE + 0.5 Dice of an untrained 11-class model: about 0.5 * ln(11) + 0.5 * ~0.9, not scaled by accumulation
    assert math.isfinite(result.training_loss) and 0.5 < result.training_loss < 3.0
    trainer.save_model(str(tmp_path / "final"))
    reloaded = AutoModelForSemanticSegmentation.from_pretrained(tmp_path / "final").eval()
    pixel_values = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(reloaded(pixel_values).logits, model.eval()(pixel_values).logits)
