import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoModel, AutoModelForImageClassification

from faceformers.models.part_fvit import (
    PART_FVIT_EVALUATION_MEAN,
    PART_FVIT_EVALUATION_STD,
    PART_FVIT_TRAINING_MEAN,
    PART_FVIT_TRAINING_STD,
    PartFViTConfig,
    PartFViTForFaceRecognition,
    PartFViTModel,
    sample_landmark_patches,
)

from ...common.golden import assert_matches_golden
from ...common.model_tester import ModelTesterMixin


# Registration happens in faceformers.auto once the model is exported; done here so the tests run either way.
AutoConfig.register(PartFViTConfig.model_type, PartFViTConfig, exist_ok=True)
AutoModel.register(PartFViTConfig, PartFViTModel, exist_ok=True)
AutoModelForImageClassification.register(PartFViTConfig, PartFViTForFaceRecognition, exist_ok=True)

GOLDEN_PATH = Path(__file__).parents[2] / "fixtures" / "part_fvit_golden.json"
TINY_BLOCKS = [
    [3, 16, 8, False, "relu", 1],  # residual
    [3, 24, 16, True, "hardswish", 2],
    [5, 32, 16, True, "hardswish", 2],  # 32 px -> 4 x 4 features
    [3, 32, 16, True, "relu", 1],  # residual with SE
]
NUM_LABELS = 10


class PartFViTModelTester:
    all_model_classes = (PartFViTModel,)
    auto_classes = {PartFViTModel: AutoModel, PartFViTForFaceRecognition: AutoModelForImageClassification}
    per_sample_outputs = {
        PartFViTModel: ("embeddings", "last_hidden_state", "landmarks", "patches"),
        PartFViTForFaceRecognition: ("logits", "embeddings", "landmarks"),
    }
    invalid_configs = [
        ({"attention_scale": "sqrt"}, r"`attention_scale` must be one of \('model_width', 'head_dim'\), got 'sqrt'"),
        ({"loss_type": "sphereface"}, r"`loss_type` must be one of \('cosface', 'arcface'\), got 'sphereface'"),
        ({"patch_size": 64}, r"patch size \(64\) is larger than the image size \(32\)"),
        ({"num_patches": 0}, r"`num_patches` must be a positive int, got 0"),
        ({"image_size": (32, 32)}, r"`image_size` must be a positive int"),
        ({"hidden_dropout_prob": 1.0}, r"`hidden_dropout_prob` must be in \[0, 1\), got 1.0"),
        ({"margin_scale": 0}, r"`margin_scale` must be positive, got 0"),
        ({"landmark_loss_weight": 1.0}, r"needs a reference landmark CNN; set `use_reference_landmarks=True`"),
        ({"landmark_block_config": []}, r"at least one block"),
        (
            {"landmark_block_config": [[3, 8, 8, False, "gelu", 1]]},
            r"activation must be one of \('relu', 'hardswish'\)",
        ),
        ({"landmark_block_config": [[4, 8, 8, False, "relu", 1]]}, r"kernel_size must be a positive odd int, got 4"),
        ({"landmark_block_config": [[3, 8, 8, False, "relu", 3]]}, r"stride must be 1 or 2, got 3"),
        ({"landmark_block_config": [[3, 8, 8]]}, r"landmark_block_config\[0\] must be \[kernel_size"),
    ]

    def get_config(self, **kwargs) -> PartFViTConfig:
        defaults = dict(
            image_size=32,
            patch_size=4,
            num_patches=16,
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=2,
            head_dim=12,  # inner width 24 != hidden 32, as 704 != 768 in the released model
            intermediate_size=64,
            hidden_dropout_prob=0.0,
            embedding_dropout_prob=0.0,
            drop_path_rate=0.0,
            landmark_dropout_prob=0.0,
            landmark_stem_channels=8,
            landmark_block_config=TINY_BLOCKS,
            num_labels=NUM_LABELS,
        )
        return PartFViTConfig(**{**defaults, **kwargs})

    def prepare_inputs(self, batch_size: int) -> dict:
        generator = torch.Generator().manual_seed(batch_size)
        return {"pixel_values": torch.rand(batch_size, 3, 32, 32, generator=generator) - 0.5}

    def training_loss(self, outputs) -> torch.Tensor:
        return (
            outputs.loss if "loss" in outputs else outputs.embeddings.pow(2).mean() + outputs.last_hidden_state.mean()
        )


class _RecognitionInputs(PartFViTModelTester):
    all_model_classes = (PartFViTForFaceRecognition,)

    def prepare_inputs(self, batch_size: int) -> dict:
        inputs = super().prepare_inputs(batch_size)
        inputs["labels"] = torch.arange(batch_size) % NUM_LABELS
        return inputs


class TestPartFViTModel(ModelTesterMixin):
    model_tester = PartFViTModelTester()


class TestPartFViTForFaceRecognition(ModelTesterMixin):
    model_tester = _RecognitionInputs()


@pytest.fixture
def tester():
    return PartFViTModelTester()


def _bilinear_zero_padded(image: torch.Tensor, row: float, col: float) -> torch.Tensor:
    """Textbook bilinear interpolation of a (C, H, W) image at real pixel-centre coordinates, zeros outside."""
    channels, height, width = image.shape
    r0, c0 = math.floor(row), math.floor(col)
    value = torch.zeros(channels)
    for r, wr in ((r0, 1 - (row - r0)), (r0 + 1, row - r0)):
        for c, wc in ((c0, 1 - (col - c0)), (c0 + 1, col - c0)):
            if 0 <= r < height and 0 <= c < width:
                value += wr * wc * image[:, r, c]
    return value


def test_patch_sampling_layout_matches_a_direct_bilinear_computation():
    torch.manual_seed(0)
    image = torch.randn(1, 3, 16, 16, dtype=torch.float64)
    landmarks = torch.tensor([[[5.3, 9.75], [0.0, 15.0], [12.5, 2.2]]], dtype=torch.float64)  # (x, y) pixels
    tokens = sample_landmark_patches(image, landmarks, patch_size=4)
    assert tokens.shape == (1, 3, 4 * 4 * 3)
    for k, (x, y) in enumerate(landmarks[0].tolist()):
        patch = tokens[0, k].view(4, 4, 3)  # (a = x offset, b = y offset, channel)
        for a in range(4):
            for b in range(4):
                expected = _bilinear_zero_padded(image[0], row=y + b - 2 - 0.5, col=x + a - 2 - 0.5)
                torch.testing.assert_close(patch[a, b], expected.to(patch.dtype), msg=f"landmark {k}, a={a}, b={b}")


def test_outputs_shapes_and_landmark_range(tester):
    model = PartFViTModel(tester.get_config()).eval()
    outputs = model(torch.rand(2, 3, 32, 32) - 0.5, output_hidden_states=True, output_attentions=True)
    assert outputs.embeddings.shape == (2, 32) and outputs.last_hidden_state.shape == (2, 17, 32)
    assert outputs.landmarks.shape == (2, 16, 2) and outputs.patches.shape == (2, 16, 4 * 4 * 3)
    assert outputs.pooler_output is outputs.embeddings
    torch.testing.assert_close(outputs.embeddings, outputs.last_hidden_state[:, 0])
    # min-max scaling: every sample has a coordinate at 0 and one at image_size - 1
    flat = outputs.landmarks.flatten(1)
    torch.testing.assert_close(flat.min(1).values, torch.zeros(2))
    torch.testing.assert_close(flat.max(1).values, torch.full((2,), 31.0))
    assert len(outputs.hidden_states) == 3 and len(outputs.attentions) == 2
    assert outputs.attentions[0].shape == (2, 2, 17, 17)
    torch.testing.assert_close(model.layernorm(outputs.hidden_states[-1]), outputs.last_hidden_state)
    features = model.landmark_net.forward_features(torch.zeros(1, 3, 32, 32))
    assert features.shape == (1, 16, 4, 4)


def test_released_defaults_and_parameter_counts():
    config = PartFViTConfig()
    assert (config.hidden_size, config.num_hidden_layers, config.num_attention_heads, config.head_dim) == (
        768,
        12,
        11,
        64,
    )
    assert (config.attention_inner_size, config.patch_dim, config.landmark_feature_size) == (704, 192, 160)
    assert config.attention_scaling == 768**-0.5 and config.get_margin() == 0.4
    assert PartFViTConfig(loss_type="ArcFace").get_margin() == 0.5
    assert PartFViTConfig(attention_scale="head_dim").attention_scaling == 64**-0.5
    with torch.device("meta"):
        model = PartFViTModel(config)
    count = lambda module: sum(p.numel() for p in module.parameters())  # noqa: E731
    assert count(model) == 66_955_616  # ORIGINALS 7.3
    assert count(model.landmark_net) - count(model.landmark_net.head) == 2_809_816
    assert count(model.landmark_net.head) == 63_112
    assert PART_FVIT_TRAINING_MEAN == PART_FVIT_TRAINING_STD == (0.5,) * 3
    assert PART_FVIT_EVALUATION_MEAN == (0.5,) * 3 and PART_FVIT_EVALUATION_STD == (1.0,) * 3


def test_sdpa_and_eager_attention_agree(tester):
    torch.manual_seed(0)
    sdpa = PartFViTModel(tester.get_config()).eval()
    eager = PartFViTModel.from_pretrained(
        None, config=sdpa.config, state_dict=sdpa.state_dict(), attn_implementation="eager"
    )
    pixel_values = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(eager(pixel_values).embeddings, sdpa(pixel_values).embeddings)


def test_head_dim_scaling_with_folded_queries_equals_model_width_scaling(tester):
    torch.manual_seed(0)
    original = PartFViTModel(tester.get_config()).eval()
    standard = PartFViTModel(tester.get_config(attention_scale="head_dim")).eval()
    state_dict = original.state_dict()
    for name in state_dict:
        if ".q_proj." in name:
            state_dict[name] = state_dict[name] * math.sqrt(12 / 32)
    standard.load_state_dict(state_dict)
    pixel_values = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(standard(pixel_values).last_hidden_state, original(pixel_values).last_hidden_state)


def test_given_landmarks_replace_the_landmark_cnn(tester):
    model = PartFViTModel(tester.get_config()).eval()
    pixel_values = torch.rand(2, 3, 32, 32)
    outputs = model(pixel_values)
    again = model(pixel_values, landmarks=outputs.landmarks)
    torch.testing.assert_close(again.embeddings, outputs.embeddings)
    subset = model(pixel_values, landmarks=outputs.landmarks[:, :5])  # fewer tokens, positions by slot
    assert subset.last_hidden_state.shape == (2, 6, 32)


def test_bad_inputs_raise_value_errors_naming_expected_and_actual(tester):
    model = PartFViTModel(tester.get_config())
    with pytest.raises(
        ValueError, match=r"Expected pixel_values of shape \(batch_size, 3, 32, 32\), got \(2, 3, 64, 64\)"
    ):
        model(torch.rand(2, 3, 64, 64))
    with pytest.raises(
        ValueError, match=r"Expected pixel_values of shape \(batch_size, 3, 32, 32\), got \(2, 1, 32, 32\)"
    ):
        model(torch.rand(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"got \(3, 32, 32\)"):
        model(torch.rand(3, 32, 32))
    with pytest.raises(
        ValueError, match=r"Expected landmarks of shape \(2, n, 2\) with 1 <= n <= 16, got \(2, 17, 2\)"
    ):
        model(torch.rand(2, 3, 32, 32), landmarks=torch.rand(2, 17, 2))
    recognition = PartFViTForFaceRecognition(tester.get_config())
    with pytest.raises(ValueError, match=r"Labels must be in \[0, 10\), got values in \[0, 10\]"):
        recognition(torch.rand(2, 3, 32, 32), labels=torch.tensor([0, 10]))
    with pytest.raises(ValueError, match=r"Expected labels of shape \(2,\) .* or \(2, 10\) .*, got \(2, 3\)"):
        recognition(torch.rand(2, 3, 32, 32), labels=torch.rand(2, 3))


@pytest.mark.parametrize("loss_type", ["cosface", "arcface"])
def test_margin_logits_and_loss(tester, loss_type):
    model = PartFViTForFaceRecognition(tester.get_config(loss_type=loss_type)).eval()
    pixel_values, labels = torch.rand(3, 3, 32, 32), torch.tensor([1, 4, 9])
    outputs = model(pixel_values, labels=labels)
    cosine = F.linear(F.normalize(outputs.embeddings), F.normalize(model.margin_head.weight))
    one_hot = F.one_hot(labels, NUM_LABELS).bool()
    if loss_type == "cosface":
        expected = 64 * torch.where(one_hot, cosine - 0.4, cosine)
    else:
        angle = torch.acos(cosine.clamp(-1, 1))
        with_margin = torch.where(
            angle + 0.5 < math.pi, torch.cos(angle + 0.5), cosine - math.sin(math.pi - 0.5) * 0.5
        )
        expected = 64 * torch.where(one_hot, with_margin, cosine)
    torch.testing.assert_close(outputs.logits, expected, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outputs.loss, F.cross_entropy(expected, labels), rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(model(pixel_values).logits, 64 * cosine)  # no labels: plain scaled cosine
    assert model(pixel_values).loss is None
    # soft (mixup) targets put a fraction of the margin on each class
    soft = 0.7 * F.one_hot(labels, NUM_LABELS) + 0.3 * F.one_hot(labels.roll(1), NUM_LABELS)
    soft_outputs = model(pixel_values, labels=soft)
    if loss_type == "cosface":
        torch.testing.assert_close(soft_outputs.logits, 64 * (cosine - 0.4 * soft))
    torch.testing.assert_close(soft_outputs.loss, -(soft * soft_outputs.logits.log_softmax(-1)).sum(-1).mean())


def test_landmark_regularisation_against_a_frozen_reference(tester, tmp_path):
    config = tester.get_config(use_reference_landmarks=True, landmark_loss_weight=100.0)
    model = PartFViTForFaceRecognition(config)
    pixel_values, labels = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    with pytest.raises(ValueError, match="reference landmark CNN has no weights yet"):
        model(pixel_values, labels=labels)
    model.load_reference_landmark_net()  # copy of the model's own landmark CNN
    model.eval()
    outputs = model(pixel_values, labels=labels)
    assert outputs.landmark_loss.item() == 0.0 and torch.equal(outputs.reference_landmarks, outputs.landmarks)
    with torch.no_grad():
        model.part_fvit.landmark_net.head.bias.add_(torch.randn(32))
    outputs = model(pixel_values, labels=labels)
    expected = F.mse_loss(outputs.landmarks / 31, outputs.reference_landmarks / 31)
    torch.testing.assert_close(outputs.landmark_loss, expected)
    torch.testing.assert_close(outputs.loss, outputs.classification_loss + 100.0 * expected)
    weaker = model(pixel_values, labels=labels, landmark_loss_weight=0.11)
    torch.testing.assert_close(weaker.loss, outputs.classification_loss + 0.11 * expected)
    assert model(pixel_values, labels=labels, landmark_loss_weight=0.0).landmark_loss is None
    # the reference is frozen, stays in eval mode and survives save / load
    model.train()
    assert not model.reference_landmark_net.training
    assert not any(p.requires_grad for p in model.reference_landmark_net.parameters())
    model.save_pretrained(tmp_path)
    reloaded = PartFViTForFaceRecognition.from_pretrained(tmp_path)
    assert bool(reloaded.has_reference_landmark_weights)
    assert not any(p.requires_grad for p in reloaded.reference_landmark_net.parameters())
    # a base checkpoint loads into the head model (reference weights still required)
    model.part_fvit.save_pretrained(tmp_path / "base")
    from_base = PartFViTForFaceRecognition.from_pretrained(
        tmp_path / "base", use_reference_landmarks=True, landmark_loss_weight=1.0
    )
    assert not bool(from_base.has_reference_landmark_weights)
    for name, tensor in model.part_fvit.state_dict().items():
        assert torch.equal(from_base.part_fvit.state_dict()[name], tensor), name


def test_no_reference_means_no_landmark_loss(tester):
    model = PartFViTForFaceRecognition(tester.get_config())
    assert model.reference_landmark_net is None
    with pytest.raises(ValueError, match="build the model with `use_reference_landmarks=True`"):
        model(torch.rand(1, 3, 32, 32), landmark_loss_weight=1.0)
    with pytest.raises(ValueError, match="has no reference landmark CNN"):
        model.load_reference_landmark_net()


def test_training_mode_dropout_and_drop_path_are_active(tester):
    config = tester.get_config(hidden_dropout_prob=0.5, drop_path_rate=0.5, embedding_dropout_prob=0.5)
    model = PartFViTModel(config).train()
    pixel_values = torch.rand(2, 3, 32, 32)
    torch.manual_seed(0)
    first = model(pixel_values).embeddings
    second = model(pixel_values).embeddings
    assert not torch.allclose(first, second)
    model.eval()
    torch.testing.assert_close(model(pixel_values).embeddings, model(pixel_values).embeddings)


def _golden_outputs() -> dict[str, list[float]]:
    tester = _RecognitionInputs()
    model = PartFViTForFaceRecognition(tester.get_config()).eval()
    # weights from our own generator, so the goldens do not depend on how transformers orders initialisation
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.3
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
        outputs = model(**tester.prepare_inputs(batch_size=2), output_hidden_states=True)
    return {
        "loss": [outputs.loss.item()],
        "logits[:, :4]": outputs.logits[:, :4].flatten().tolist(),
        "embeddings[:, :4]": outputs.embeddings[:, :4].flatten().tolist(),
        "landmarks[:, :3]": outputs.landmarks[:, :3].flatten().tolist(),
        "hidden_states[-1][0, :2, :3]": outputs.hidden_states[-1][0, :2, :3].flatten().tolist(),
    }


def test_golden_outputs_of_a_seeded_tiny_model():
    assert_matches_golden(GOLDEN_PATH, _golden_outputs(), atol=1e-4)