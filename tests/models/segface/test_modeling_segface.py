from pathlib import Path

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from transformers import AutoConfig, AutoModelForSemanticSegmentation

from faceformers.data.labels import CELEBAMASK_HQ_LABELS, HELEN_LABELS, LAPA_LABELS
from faceformers.models.segface import SegFaceBackbone, SegFaceConfig, SegFaceForSemanticSegmentation
from faceformers.models.segface.configuration_segface import TORCHVISION_BACKBONE_CHANNELS
from faceformers.models.segface.modeling_segface import TORCHVISION_STAGE_INDICES, segface_loss

from ...common.golden import assert_matches_golden
from ...common.model_tester import ModelTesterMixin


GOLDEN_PATH = Path(__file__).parents[2] / "fixtures" / "segface_golden.json"
IMAGE = 64
TINY_CONVNEXT = {
    "library": "timm",
    "name": "convnext_atto",
    "kwargs": {"dims": [8, 16, 24, 32], "depths": [1, 1, 1, 1]},
}
TINY_SWIN = {
    "library": "timm",
    "name": "swin_tiny_patch4_window7_224",
    "kwargs": {"embed_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1], "img_size": IMAGE},
}
TINY_DECODER = dict(
    decoder_hidden_size=32,
    num_pos_feats=16,
    decoder_num_attention_heads=2,
    decoder_intermediate_size=64,
    decoder_upscaling_sizes=[8, 4],
)

AutoConfig.register(SegFaceConfig.model_type, SegFaceConfig, exist_ok=True)
AutoModelForSemanticSegmentation.register(SegFaceConfig, SegFaceForSemanticSegmentation, exist_ok=True)


def tiny_config(backbone: dict | None = None, dataset: str = "lapa", **kwargs) -> SegFaceConfig:
    return SegFaceConfig.for_dataset(
        dataset, backbone=backbone or TINY_CONVNEXT, image_size=IMAGE, **{**TINY_DECODER, **kwargs}
    )


def random_labels(
    batch_size: int, num_labels: int, generator: torch.Generator, ignore_fraction: float = 0.1
) -> torch.Tensor:
    labels = torch.randint(0, num_labels, (batch_size, IMAGE, IMAGE), generator=generator)
    ignored = torch.rand(batch_size, IMAGE, IMAGE, generator=generator) < ignore_fraction
    return labels.masked_fill(ignored, 255)


class SegFaceModelTester:
    all_model_classes = (SegFaceForSemanticSegmentation,)
    auto_classes = {SegFaceForSemanticSegmentation: AutoModelForSemanticSegmentation}
    per_sample_outputs = {SegFaceForSemanticSegmentation: ("logits",)}
    invalid_configs = [
        ({"image_size": 100}, r"`image_size` must be a positive multiple of 32 .*got 100"),
        (
            {"decoder_num_attention_heads": 3},
            r"decoder_hidden_size \(32\) is not a multiple of the decoder_num_attention_heads \(3\)",
        ),
        ({"decoder_num_attention_heads": 32}, r"attention_downsample_rate \(2\) must be an integer multiple"),
        ({"num_pos_feats": 8}, r"2 \* num_pos_feats \(16\) channels, which must equal decoder_hidden_size \(32\)"),
        ({"decoder_upscaling_sizes": [8, 4, 2]}, r"two positive channel counts .*got \[8, 4, 2\]"),
        ({"decoder_num_hidden_layers": 0}, r"`decoder_num_hidden_layers` \(0\)"),
        ({"dice_loss_weight": -1.0}, r"dice_loss_weight=-1.0"),
        (
            {"semantic_loss_ignore_index": 3},
            r"`semantic_loss_ignore_index` \(3\) is a valid class id \(num_labels=11\)",
        ),
        (
            {"backbone_config": {"library": "torchvision", "name": "vit_b_16"}},
            r"Unsupported torchvision backbone 'vit_b_16'",
        ),
        ({"backbone_config": {"library": "keras", "name": "x"}}, r"one of \('torchvision', 'timm'\), got 'keras'"),
        (
            {"backbone_config": {"library": "torchvision", "name": "swin_b", "out_indices": [1]}},
            r"Unknown keys \['out_indices'\]",
        ),
        (
            {"backbone_config": {"library": "timm", "name": "resnet18", "out_indices": [1, 1]}},
            r"distinct integers, got \[1, 1\]",
        ),
        (
            {"backbone_config": {"library": "timm", "name": "resnet18", "kwargs": {"pretrained": True}}},
            r"must not set \['pretrained'\]",
        ),
        ({"backbone_config": {"library": "timm", "name": ""}}, r"non-empty string, got ''"),
        ({"backbone_config": "swin_b"}, r"`backbone_config` must be a dict, got str"),
    ]

    def get_config(self, **kwargs) -> SegFaceConfig:
        return tiny_config(**kwargs)

    def prepare_inputs(self, batch_size: int) -> dict:
        generator = torch.Generator().manual_seed(batch_size)
        return {
            "pixel_values": torch.randn(batch_size, 3, IMAGE, IMAGE, generator=generator),
            "labels": random_labels(batch_size, 11, generator),
        }

    def training_loss(self, outputs) -> torch.Tensor:
        return outputs.loss


class TestSegFaceModel(ModelTesterMixin):
    model_tester = SegFaceModelTester()

    def test_model_is_small(self):
        # SegFace's config has no `num_hidden_layers` (`backbone_config` describes the backbone): check the decoder
        config = self.model_tester.get_config()
        assert config.decoder_num_hidden_layers <= 2
        num_params = sum(p.numel() for p in self.build(SegFaceForSemanticSegmentation).parameters())
        assert num_params < 1_000_000, num_params


def test_outputs_shapes_and_hidden_states():
    model = SegFaceForSemanticSegmentation(tiny_config()).eval()
    outputs = model(torch.randn(2, 3, IMAGE, IMAGE), output_hidden_states=True)
    assert outputs.logits.shape == (2, 11, IMAGE, IMAGE)
    assert [tuple(h.shape) for h in outputs.hidden_states] == [
        (2, 8, 16, 16),
        (2, 16, 8, 8),
        (2, 24, 4, 4),
        (2, 32, 2, 2),
    ]
    assert outputs.fused_hidden_state.shape == (2, 32, 16, 16)
    assert outputs.loss is None and outputs.attentions is None
    assert model.backbone.channels == (8, 16, 24, 32) and model.backbone.reductions == (4, 8, 16, 32)
    plain = model(torch.randn(1, 3, IMAGE, IMAGE))
    assert plain.hidden_states is None and plain.fused_hidden_state is None
    features = model.get_multi_scale_features(torch.randn(1, 3, IMAGE, IMAGE))
    assert [f.shape[1] for f in features] == [8, 16, 24, 32]


def test_loss_is_half_cross_entropy_plus_half_dice():
    model = SegFaceForSemanticSegmentation(tiny_config()).eval()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, IMAGE, IMAGE, generator=generator)
    labels = random_labels(2, 11, generator, ignore_fraction=0.0)
    outputs = model(pixel_values, labels=labels)
    # the original DiceLoss, class by class, over the whole batch
    probabilities = outputs.logits.softmax(dim=1)
    dice = 0.0
    for k in range(11):
        target = (labels == k).float()
        p = probabilities[:, k]
        dice += 1 - (2 * (p * target).sum() + 1e-5) / ((p * p).sum() + (target * target).sum() + 1e-5)
    expected = 0.5 * F.cross_entropy(outputs.logits, labels) + 0.5 * dice / 11
    torch.testing.assert_close(outputs.loss, expected)


def test_ignore_index_is_left_out_of_both_terms():
    config = tiny_config()
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 11, IMAGE, IMAGE, generator=generator)
    labels = random_labels(2, 11, generator, ignore_fraction=0.3)
    ignored = labels == 255
    assert ignored.any()
    loss = segface_loss(logits, labels, config)
    # predictions at ignored pixels do not matter
    changed = logits.clone()
    changed[ignored.unsqueeze(1).expand_as(changed)] = 100.0
    torch.testing.assert_close(segface_loss(changed, labels, config), loss)
    # hand computation on the labelled pixels only
    valid_logits = logits.permute(0, 2, 3, 1)[~ignored]  # (N, K)
    valid_labels = labels[~ignored]
    probabilities = valid_logits.softmax(-1)
    targets = F.one_hot(valid_labels, 11).float()
    dice = 1 - (2 * (probabilities * targets).sum(0) + 1e-5) / (probabilities.pow(2).sum(0) + targets.sum(0) + 1e-5)
    expected = 0.5 * F.cross_entropy(valid_logits, valid_labels) + 0.5 * dice.mean()
    torch.testing.assert_close(loss, expected)


def test_loss_weights_come_from_the_config():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(1, 11, IMAGE, IMAGE, generator=generator)
    labels = random_labels(1, 11, generator)
    ce_only = segface_loss(logits, labels, tiny_config(ce_loss_weight=1.0, dice_loss_weight=0.0))
    dice_only = segface_loss(logits, labels, tiny_config(ce_loss_weight=0.0, dice_loss_weight=1.0))
    torch.testing.assert_close(segface_loss(logits, labels, tiny_config()), 0.5 * ce_only + 0.5 * dice_only)
    torch.testing.assert_close(ce_only, F.cross_entropy(logits, labels, ignore_index=255))


def test_forward_does_not_mutate_inputs():
    model = SegFaceForSemanticSegmentation(tiny_config()).train()
    generator = torch.Generator().manual_seed(0)
    pixel_values = torch.randn(2, 3, IMAGE, IMAGE, generator=generator)
    labels = random_labels(2, 11, generator)
    pixel_copy, label_copy = pixel_values.clone(), labels.clone()
    model(pixel_values, labels=labels).loss.backward()
    assert torch.equal(pixel_values, pixel_copy) and torch.equal(labels, label_copy)


def test_pixel_values_are_checked():
    model = SegFaceForSemanticSegmentation(tiny_config())
    with pytest.raises(
        ValueError, match=r"Expected pixel_values of shape \(batch_size, 3, height, width\), got \(1, 1, 64, 64\)"
    ):
        model(torch.randn(1, 1, IMAGE, IMAGE))


def test_sdpa_and_eager_attention_agree():
    torch.manual_seed(0)
    sdpa = SegFaceForSemanticSegmentation(tiny_config()).eval()
    eager = SegFaceForSemanticSegmentation.from_pretrained(
        None, config=sdpa.config, state_dict=sdpa.state_dict(), attn_implementation="eager"
    ).eval()
    assert eager.config._attn_implementation == "eager"
    pixel_values = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(eager(pixel_values).logits, sdpa(pixel_values).logits, rtol=1e-5, atol=1e-6)


def test_logits_come_back_at_the_input_resolution_for_other_strides():
    backbone = {**TINY_CONVNEXT, "out_indices": [1, 2, 3]}  # first map at stride 8
    model = SegFaceForSemanticSegmentation(tiny_config(backbone)).eval()
    assert model.backbone.reductions == (8, 16, 32)
    assert model(torch.randn(1, 3, IMAGE, IMAGE)).logits.shape == (1, 11, IMAGE, IMAGE)


def test_post_init_keeps_the_backbone_initialisation():
    torch.manual_seed(0)
    reference = timm.create_model("convnext_atto", features_only=True, pretrained=False, **TINY_CONVNEXT["kwargs"])
    torch.manual_seed(0)
    model = SegFaceForSemanticSegmentation(tiny_config())
    for name, tensor in reference.state_dict().items():
        assert torch.equal(model.backbone.timm_model.state_dict()[name], tensor), name


def test_head_initialisation_follows_pytorch_defaults():
    model = SegFaceForSemanticSegmentation(
        tiny_config(decoder_hidden_size=256, num_pos_feats=128, decoder_num_attention_heads=8)
    )
    queries = model.decoder.class_queries.weight.detach()  # nn.Embedding default: N(0, 1)
    assert 0.8 < float(queries.std()) < 1.2
    assert 0.6 < float(model.positional_embedding.gaussian_matrix.std()) < 1.4
    fc1 = model.decoder.transformer.layers[0].mlp.fc1.weight.detach()  # nn.Linear default: U(+-1/sqrt(fan_in))
    assert 0.9 / 256**0.5 < float(fc1.abs().max()) <= 1 / 256**0.5
    torch.testing.assert_close(model.decoder.upscale_layer_norm.weight, torch.ones(8))


def test_positional_encoding_is_a_persistent_buffer(tmp_path):
    model = SegFaceForSemanticSegmentation(tiny_config())
    assert "positional_embedding.gaussian_matrix" in model.state_dict()
    model.save_pretrained(tmp_path)
    reloaded = SegFaceForSemanticSegmentation.from_pretrained(tmp_path)
    assert torch.equal(reloaded.positional_embedding.gaussian_matrix, model.positional_embedding.gaussian_matrix)
    # the encoding of a 2 x 3 grid: pixel centres mapped to [-1, 1], x first, then sin and cos
    matrix = model.positional_embedding.gaussian_matrix
    encoding = model.positional_embedding(2, 3)
    x, y = (2 * (2 + 0.5) / 3 - 1), (2 * (1 + 0.5) / 2 - 1)  # row 1, column 2
    angles = 2 * torch.pi * (x * matrix[0] + y * matrix[1])
    torch.testing.assert_close(encoding[:, 1, 2], torch.cat([angles.sin(), angles.cos()]))


def test_from_pretrained_restores_timm_non_persistent_buffers(tmp_path):
    torch.manual_seed(0)
    model = SegFaceForSemanticSegmentation(tiny_config(TINY_SWIN)).eval()
    non_persistent = {name: buffer.clone() for name, buffer in model.named_buffers() if name not in model.state_dict()}
    assert any("relative_position_index" in name for name in non_persistent)
    model.save_pretrained(tmp_path)
    reloaded = SegFaceForSemanticSegmentation.from_pretrained(tmp_path).eval()
    for name, buffer in non_persistent.items():
        assert torch.equal(reloaded.get_buffer(name), buffer), name
    pixel_values = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, model(pixel_values).logits, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_from_pretrained_round_trip_with_torchvision_swin(tmp_path):
    model = SegFaceForSemanticSegmentation(tiny_config({"library": "torchvision", "name": "swin_b"})).eval()
    model.save_pretrained(tmp_path)
    reloaded = SegFaceForSemanticSegmentation.from_pretrained(tmp_path).eval()
    index = "backbone.features.1.0.attn.relative_position_index"
    assert torch.equal(reloaded.state_dict()[index], model.state_dict()[index])
    pixel_values = torch.randn(1, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(reloaded(pixel_values).logits, model(pixel_values).logits, rtol=1e-5, atol=1e-6)


def hooked_reference_features(
    classifier: torch.nn.Module, name: str, pixel_values: torch.Tensor
) -> list[torch.Tensor]:
    """The original collection mechanism (forward hooks on the stage modules), as an independent reference."""
    stages = (
        [classifier.layer1, classifier.layer2, classifier.layer3, classifier.layer4]
        if name == "resnet101"
        else [classifier.features[i] for i in TORCHVISION_STAGE_INDICES[name]]
    )
    captured = []
    handles = [stage.register_forward_hook(lambda m, i, o: captured.append(o)) for stage in stages]
    classifier(pixel_values)
    for handle in handles:
        handle.remove()
    return [c.permute(0, 3, 1, 2) if name.startswith("swin") else c for c in captured]


HEAVY_BACKBONES = ("swin_b", "swin_v2_b", "convnext_base", "convnext_small", "convnext_tiny")


@pytest.mark.parametrize(
    "name",
    [pytest.param(n, marks=pytest.mark.slow) if n in HEAVY_BACKBONES else n for n in TORCHVISION_BACKBONE_CHANNELS],
)
@torch.no_grad()
def test_torchvision_backbones_return_four_documented_maps(name):
    torch.manual_seed(0)
    classifier = getattr(torchvision.models, name)(weights=None).eval()
    backbone = SegFaceBackbone({"library": "torchvision", "name": name}).eval()
    stages = torch.nn.Sequential(*list(classifier.children())[:8]) if name == "resnet101" else classifier.features
    backbone.features.load_state_dict(stages.state_dict())
    pixel_values = torch.randn(1, 3, IMAGE, IMAGE)
    features = backbone(pixel_values)
    assert [f.shape[1] for f in features] == list(TORCHVISION_BACKBONE_CHANNELS[name])
    assert [tuple(f.shape[-2:]) for f in features] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    for ours, reference in zip(features, hooked_reference_features(classifier, name, pixel_values)):
        torch.testing.assert_close(ours, reference)


def test_resnet101_segmentation_runs():
    """The original code cannot run its resnet backbone (its hook never stores the features); ours does."""
    config = SegFaceConfig.for_dataset("celebamask_hq", backbone="resnet101", image_size=IMAGE, **TINY_DECODER)
    model = SegFaceForSemanticSegmentation(config).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, IMAGE, IMAGE)).logits.shape == (1, 19, IMAGE, IMAGE)


def test_dataset_presets_and_defaults():
    default = SegFaceConfig()
    assert default.backbone_config == {"library": "torchvision", "name": "swin_b"} and default.image_size == 512
    assert default.num_labels == 19 and default.id2label[8] == "left_eye" and default.label2id["necklace"] == 18
    assert (default.decoder_hidden_size, default.decoder_num_hidden_layers, default.decoder_intermediate_size) == (
        256,
        2,
        2048,
    )
    assert (default.ce_loss_weight, default.dice_loss_weight, default.semantic_loss_ignore_index) == (0.5, 0.5, 255)
    for dataset, labels in (("celebamask_hq", CELEBAMASK_HQ_LABELS), ("lapa", LAPA_LABELS), ("helen", HELEN_LABELS)):
        config = SegFaceConfig.for_dataset(dataset, backbone="mobilenet_v3_large", image_size=448)
        assert list(config.id2label.values()) == list(labels) and config.label2id == {
            n: i for i, n in enumerate(labels)
        }
        assert config.backbone_config["name"] == "mobilenet_v3_large" and config.image_size == 448
    with pytest.raises(ValueError, match=r"Unknown dataset 'celeba'"):
        SegFaceConfig.for_dataset("celeba")


def test_timm_backbone_config_round_trips_through_json(tmp_path):
    config = tiny_config({**TINY_CONVNEXT, "out_indices": (0, 1, 2, 3)})
    assert config.backbone_config["out_indices"] == [0, 1, 2, 3]
    config.save_pretrained(tmp_path)
    assert SegFaceConfig.from_pretrained(tmp_path).backbone_config == config.backbone_config


def _golden_outputs() -> dict[str, list[float]]:
    torch.manual_seed(0)
    model = SegFaceForSemanticSegmentation(tiny_config()).eval()
    # weights from our own generator, so the goldens do not depend on how timm or transformers draw initial values
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.2
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
        inputs = SegFaceModelTester().prepare_inputs(batch_size=2)
        outputs = model(**inputs, output_hidden_states=True)
    return {
        "loss": [outputs.loss.item()],
        "logits[:, :3, 0, :3]": outputs.logits[:, :3, 0, :3].flatten().tolist(),
        "logits[:, -1, 31, 30:33]": outputs.logits[:, -1, 31, 30:33].flatten().tolist(),
        "fused_hidden_state[0, :3, 5, 5]": outputs.fused_hidden_state[0, :3, 5, 5].tolist(),
        "logits.mean(dim=(2, 3))[0]": outputs.logits.mean(dim=(2, 3))[0].tolist(),
    }


def test_golden_outputs_of_a_seeded_tiny_model():
    assert_matches_golden(GOLDEN_PATH, _golden_outputs())


@pytest.mark.slow
def test_released_swin_b_parameter_count():
    """91,007,800 parameters in the original at 512 px, less Swin's unused final norm (2 x 1024)."""
    model = SegFaceForSemanticSegmentation(SegFaceConfig())
    assert sum(p.numel() for p in model.parameters()) == 91_007_800 - 2 * 1024
