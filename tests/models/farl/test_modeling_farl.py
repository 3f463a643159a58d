from pathlib import Path

import pytest
import torch
from transformers import (
    AutoModel,
    AutoModelForPreTraining,
    AutoModelForZeroShotImageClassification,
    CLIPConfig,
    CLIPModel,
)

from faceformers import FaRLConfig, FaRLForPreTraining, FaRLModel
from faceformers.models.farl.modeling_farl import BlockMaskGenerator

from ...common.golden import assert_matches_golden
from ...common.model_tester import ModelTesterMixin


GOLDEN_PATH = Path(__file__).parents[2] / "fixtures" / "farl_golden.json"
BOS, EOS, VOCAB = 98, 99, 100


def tiny_config(**kwargs) -> FaRLConfig:
    defaults = dict(
        text_config=dict(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
            max_position_embeddings=12, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
        mim_num_masking_patches=6,
        mim_min_patches_per_block=2,
        image_tokenizer_config=dict(hidden_size=8, blocks_per_group=1, vocab_size=32),
    )  # fmt: skip
    return FaRLConfig(**{**defaults, **kwargs})


def text_inputs(batch_size: int, length: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Deterministic captions of different lengths, padded with 0 after the end-of-text token."""
    input_ids = torch.zeros(batch_size, length, dtype=torch.long)
    attention_mask = torch.zeros(batch_size, length, dtype=torch.long)
    for row in range(batch_size):
        words = [(7 * row + 3 * i) % 90 + 1 for i in range(2 + row % (length - 3))]
        tokens = [BOS, *words, EOS]
        input_ids[row, : len(tokens)] = torch.tensor(tokens)
        attention_mask[row, : len(tokens)] = 1
    return input_ids, attention_mask


def pixel_inputs(batch_size: int, size: int = 32) -> torch.Tensor:
    return torch.randn(batch_size, 3, size, size, generator=torch.Generator().manual_seed(batch_size))


def block_masks(batch_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(7)
    masker = BlockMaskGenerator(grid_size=4, num_masking_patches=6, min_patches_per_block=2)
    return torch.stack([masker(generator) for _ in range(batch_size)])


INVALID_CONFIGS = [
    ({"vision_config": {"image_size": 30, "patch_size": 8}}, r"image_size \(30\) must be a multiple of patch_size"),
    ({"mim_loss_weight": -1.0}, r"mim_loss_weight must be >= 0"),
    ({"text_config": [1, 2]}, r"Expected a dict or CLIPTextConfig, got list"),
]


class FaRLModelTester:
    all_model_classes = (FaRLModel,)
    auto_classes = {FaRLModel: AutoModel}
    per_sample_outputs = {FaRLModel: ("image_embeds", "text_embeds")}
    invalid_configs = INVALID_CONFIGS

    def get_config(self) -> FaRLConfig:
        return tiny_config()

    def prepare_inputs(self, batch_size: int) -> dict:
        input_ids, attention_mask = text_inputs(batch_size)
        return dict(
            input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_inputs(batch_size), return_loss=True
        )

    def training_loss(self, outputs):
        return outputs.loss


class FaRLForPreTrainingTester(FaRLModelTester):
    all_model_classes = (FaRLForPreTraining,)
    auto_classes = {FaRLForPreTraining: AutoModelForPreTraining}
    per_sample_outputs = {FaRLForPreTraining: ("image_embeds", "text_embeds", "bool_masked_pos")}

    def prepare_inputs(self, batch_size: int) -> dict:
        input_ids, attention_mask = text_inputs(batch_size)
        return dict(
            input_ids=input_ids,
            attention_mask=attention_mask,
            pixel_values=pixel_inputs(batch_size),
            bool_masked_pos=block_masks(batch_size),
        )


class TestFaRLModel(ModelTesterMixin):
    model_tester = FaRLModelTester()


class TestFaRLForPreTraining(ModelTesterMixin):
    model_tester = FaRLForPreTrainingTester()


def _clip_twin(model: FaRLModel) -> CLIPModel:
    """transformers' CLIPModel with the same dimensions and FaRL's weights (the key names are CLIP's)."""
    config = model.config
    clip = CLIPModel(
        CLIPConfig(
            text_config=config.text_config.to_dict(),
            vision_config=config.vision_config.to_dict(),
            projection_dim=config.projection_dim,
        )
    ).eval()
    clip.load_state_dict(model.state_dict(), strict=True)
    return clip


@torch.no_grad()
def test_farl_model_equals_transformers_clip_model():
    torch.manual_seed(0)
    model = FaRLModel(tiny_config()).eval()
    model.logit_scale.fill_(3.0)
    clip = _clip_twin(model)
    input_ids, attention_mask = text_inputs(3)
    pixel_values = pixel_inputs(2)
    ours = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    theirs = clip(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    for key in ("logits_per_image", "logits_per_text", "image_embeds", "text_embeds"):
        torch.testing.assert_close(ours[key], theirs[key], rtol=1e-5, atol=1e-5, msg=key)

    large = pixel_inputs(2, size=48)  # 6x6 patches, interpolated position embeddings
    ours = model(pixel_values=large, interpolate_pos_encoding=True, output_hidden_states=True).vision_model_output
    theirs = clip.vision_model(pixel_values=large, interpolate_pos_encoding=True, output_hidden_states=True)
    assert len(ours.hidden_states) == len(theirs.hidden_states) == 3
    for index, (a, b) in enumerate(zip(ours.hidden_states, theirs.hidden_states)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5, msg=f"hidden state {index}")


@torch.no_grad()
def test_single_modality_calls_and_embedding_features():
    torch.manual_seed(0)
    model = FaRLModel(tiny_config()).eval()
    input_ids, attention_mask = text_inputs(2)
    pixel_values = pixel_inputs(2)
    both = model(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values)
    images = model(pixel_values=pixel_values)
    texts = model(input_ids=input_ids, attention_mask=attention_mask)
    assert images.logits_per_image is None and images.text_embeds is None
    assert images[0] is images.image_embeds  # what pipeline("image-feature-extraction") returns
    torch.testing.assert_close(images.image_embeds, both.image_embeds)
    torch.testing.assert_close(texts.text_embeds, both.text_embeds)
    features = model.get_image_features(pixel_values).pooler_output
    torch.testing.assert_close(features / features.norm(dim=-1, keepdim=True), both.image_embeds)
    # Padding after the end-of-text token changes nothing (causal attention, pooling at the first EOT).
    padded = torch.cat([input_ids, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    padded_mask = torch.cat([attention_mask, torch.zeros(2, 4, dtype=torch.long)], dim=1)
    torch.testing.assert_close(model(input_ids=padded, attention_mask=padded_mask).text_embeds, both.text_embeds)


def test_bad_inputs_raise_clear_errors():
    model = FaRLModel(tiny_config()).eval()
    input_ids, _ = text_inputs(2)
    with pytest.raises(ValueError, match="needs pixel_values, input_ids or both"):
        model()
    with pytest.raises(ValueError, match=r"end-of-text token \(id 99\)"):
        model(input_ids=torch.ones(2, 5, dtype=torch.long))
    with pytest.raises(ValueError, match=r"at most 12"):
        model(input_ids=torch.full((1, 13), EOS))
    with pytest.raises(ValueError, match=r"Image size 48x48 does not match the model's 32x32"):
        model(pixel_values=pixel_inputs(1, size=48))
    with pytest.raises(ValueError, match=r"must be \(batch_size, 3, height, width\), got \(1, 1, 32, 32\)"):
        model(pixel_values=torch.zeros(1, 1, 32, 32))
    with pytest.raises(ValueError, match="needs both pixel_values and input_ids"):
        model(pixel_values=pixel_inputs(1), return_loss=True)
    with pytest.raises(ValueError, match=r"mim_num_masking_patches must be in \[1, 16\]"):
        FaRLForPreTraining(tiny_config(mim_num_masking_patches=17))
    pretraining = FaRLForPreTraining(tiny_config())
    with pytest.raises(ValueError, match="Got 2 images and 1 texts"):
        pretraining(pixel_values=pixel_inputs(2), input_ids=input_ids[:1])
    with pytest.raises(ValueError, match=r"bool_masked_pos must have shape \(2, 16\)"):
        pretraining(pixel_values=pixel_inputs(2), input_ids=input_ids, bool_masked_pos=torch.zeros(2, 9, dtype=torch.bool))


def test_block_masks_respect_the_budget_and_the_seed():
    masker = BlockMaskGenerator(grid_size=14, num_masking_patches=75, min_patches_per_block=16)
    masks = torch.stack([masker(torch.Generator().manual_seed(seed)) for seed in range(50)])
    assert masks.shape == (50, 196)
    counts = masks.sum(dim=1)
    assert counts.max() <= 75 and counts.float().mean() > 60  # close to the budget, never above it
    again = torch.stack([masker(torch.Generator().manual_seed(seed)) for seed in range(50)])
    assert torch.equal(masks, again)
    assert len({tuple(mask.tolist()) for mask in masks}) == 50


@torch.no_grad()
def test_mim_targets_are_the_visual_tokens_of_the_masked_patches():
    torch.manual_seed(0)
    model = FaRLForPreTraining(tiny_config()).eval()
    input_ids, attention_mask = text_inputs(2)
    pixel_values, masks = pixel_inputs(2), block_masks(2)
    outputs = model(pixel_values=pixel_values, input_ids=input_ids, attention_mask=attention_mask, bool_masked_pos=masks)
    tokens = model.image_tokenizer.get_codebook_indices(model.tokenizer_inputs(pixel_values))  # (2, 16)
    assert torch.equal(outputs.mim_labels, tokens[masks])
    assert outputs.mim_logits.shape == (int(masks.sum()), 32)
    expected = outputs.contrastive_loss + model.config.mim_loss_weight * outputs.mim_loss
    torch.testing.assert_close(outputs.loss, expected)
    # The contrastive half sees the clean image: its embedding equals FaRLModel's.
    torch.testing.assert_close(outputs.image_embeds, model.farl(pixel_values=pixel_values).image_embeds)


def test_without_mim_the_model_is_a_clip_trainer():
    model = FaRLForPreTraining(tiny_config(mim_loss_weight=0.0))
    assert model.mim_head is None and model.image_tokenizer is None
    input_ids, attention_mask = text_inputs(2)
    outputs = model(pixel_values=pixel_inputs(2), input_ids=input_ids, attention_mask=attention_mask)
    assert outputs.mim_loss is None and torch.equal(outputs.loss, outputs.contrastive_loss)


def test_zero_shot_auto_class_and_frozen_tokenizer_after_loading(tmp_path):
    FaRLModel(tiny_config()).save_pretrained(tmp_path / "base")
    assert type(AutoModelForZeroShotImageClassification.from_pretrained(tmp_path / "base")) is FaRLModel
    FaRLForPreTraining(tiny_config()).save_pretrained(tmp_path / "pretraining")
    reloaded = FaRLForPreTraining.from_pretrained(tmp_path / "pretraining").train()
    assert not any(p.requires_grad for p in reloaded.image_tokenizer.parameters())
    assert not reloaded.image_tokenizer.training


def _golden_outputs() -> dict[str, list[float]]:
    model = FaRLForPreTraining(tiny_config()).eval()
    generator = torch.Generator().manual_seed(1234)  # our own draw: independent of transformers' init order
    with torch.no_grad():
        for _, tensor in sorted(model.state_dict().items()):
            if tensor.is_floating_point():
                tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.2)
        model.farl.logit_scale.fill_(2.0)
        input_ids, attention_mask = text_inputs(2)
        inputs = dict(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_inputs(2))
        outputs = model(**inputs, bool_masked_pos=block_masks(2))
        base = model.farl(**inputs)
    return {
        "loss": [outputs.loss.item()],
        "contrastive_loss": [outputs.contrastive_loss.item()],
        "mim_loss": [outputs.mim_loss.item()],
        "mim_logits[:3, :3]": outputs.mim_logits[:3, :3].flatten().tolist(),
        "logits_per_image": base.logits_per_image.flatten().tolist(),
        "image_embeds[:, :3]": base.image_embeds[:, :3].flatten().tolist(),
        "text_embeds[:, :3]": base.text_embeds[:, :3].flatten().tolist(),
    }


def test_golden_outputs_of_a_seeded_tiny_model():
    assert_matches_golden(GOLDEN_PATH, _golden_outputs())