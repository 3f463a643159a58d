from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoModelForPreTraining

from faceformers import MCFConfig, MCFForPreTraining, MCFModel
from faceformers.models.mcf.modeling_mcf import get_2d_sincos_position_embeddings

from ...common.golden import assert_matches_golden
from ...common.model_tester import ModelTesterMixin


GOLDEN_PATH = Path(__file__).parents[2] / "fixtures" / "mcf_golden.json"


class MCFModelTester:
    all_model_classes = (MCFModel, MCFForPreTraining)
    auto_classes = {MCFModel: AutoModel, MCFForPreTraining: AutoModelForPreTraining}
    per_sample_outputs = {
        MCFModel: ("last_hidden_state", "pooler_output"),
        MCFForPreTraining: ("logits", "mask", "ids_restore", "query_embeds", "key_embeds"),
    }
    invalid_configs = [
        ({"hidden_size": 30}, r"hidden_size \(30\) is not a multiple of the num_attention_heads \(4\)"),
        ({"decoder_hidden_size": 17}, r"decoder_hidden_size \(17\) is not a multiple"),
        ({"decoder_hidden_size": 18}, r"decoder_hidden_size \(18\) must be divisible by 4"),
        ({"image_size": 30}, r"image size \(30\) is not a multiple of the patch size \(8\)"),
        ({"mask_ratio": 1.0}, r"`mask_ratio` must be in \[0, 1\), got 1.0"),
        ({"mask_ratio": 0.99}, r"keeps no patch out of 16"),
        ({"momentum": 1.5}, r"`momentum` must be in \[0, 1\], got 1.5"),
        ({"contrastive_temperature": 0}, r"must be positive, got 0"),
        ({"perceptual_normalization": "pixels"}, r"one of \('tokens', 'channels'\), got 'pixels'"),
        ({"perceptual_layers": [0, 2]}, r"in \[0, 2\) of the perceptual teacher, got \[0, 2\]"),
        ({"perceptual_teacher_config": {"depth": 3}}, r"Unknown keys \['depth'\]"),
        ({"image_size": (32, 32)}, r"`image_size` must be an int"),
    ]

    def get_config(self, **kwargs) -> MCFConfig:
        defaults = dict(
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
            image_size=32,
            patch_size=8,
            decoder_hidden_size=16,
            decoder_num_hidden_layers=1,
            decoder_num_attention_heads=2,
            decoder_intermediate_size=32,
            projector_hidden_size=64,
            projection_dim=16,
            perceptual_layers=[0, 1],
        )
        return MCFConfig(**{**defaults, **kwargs})

    def prepare_inputs(self, batch_size: int) -> dict:
        generator = torch.Generator().manual_seed(batch_size)
        return {"pixel_values": torch.randn(batch_size, 3, 32, 32, generator=generator)}

    def prepare_model(self, model):
        if isinstance(model, MCFForPreTraining):
            teacher = MCFModel(model.config.get_perceptual_teacher_config())
            model.load_perceptual_teacher(teacher.state_dict())
        return model

    def training_loss(self, outputs) -> torch.Tensor:
        return outputs.loss if "loss" in outputs else outputs.last_hidden_state.pow(2).mean()


class _PreTrainingInputs(MCFModelTester):
    """MCFForPreTraining needs both masks pinned to be deterministic."""

    def prepare_inputs(self, batch_size: int) -> dict:
        inputs = super().prepare_inputs(batch_size)
        generator = torch.Generator().manual_seed(100 + batch_size)
        noise = torch.rand(batch_size, 16, generator=generator)
        inputs["noise"], inputs["momentum_noise"] = noise, torch.rand(batch_size, 16, generator=generator)
        return inputs


class TestMCFModel(ModelTesterMixin):
    model_tester = MCFModelTester()
    model_tester.all_model_classes = (MCFModel,)


class TestMCFForPreTraining(ModelTesterMixin):
    model_tester = _PreTrainingInputs()
    model_tester.all_model_classes = (MCFForPreTraining,)


@pytest.fixture
def tester():
    return MCFModelTester()


def test_sincos_position_embeddings_layout():
    embeddings = get_2d_sincos_position_embeddings(8, grid_size=3)  # (1 + 9, 8)
    assert embeddings.shape == (10, 8)
    assert torch.equal(embeddings[0], torch.zeros(8))
    # first half encodes the column, second half the row; sin(0) = 0 and cos(0) = 1 at the origin
    torch.testing.assert_close(embeddings[1], torch.tensor([0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0]))
    column_1, row_1 = embeddings[1 + 1], embeddings[1 + 3]
    torch.testing.assert_close(column_1[:4], torch.tensor([0.8414710, 0.0099998, 0.5403023, 0.99995]), atol=1e-6, rtol=0)
    torch.testing.assert_close(row_1[4:], column_1[:4])


def test_outputs_shapes_hidden_states_and_attentions(tester):
    model = MCFModel(tester.get_config()).eval()
    outputs = model(torch.randn(2, 3, 32, 32), output_hidden_states=True, output_attentions=True)
    assert outputs.last_hidden_state.shape == (2, 17, 32)
    torch.testing.assert_close(outputs.pooler_output, outputs.last_hidden_state[:, 0])
    assert len(outputs.hidden_states) == 3 and all(h.shape == (2, 17, 32) for h in outputs.hidden_states)
    assert len(outputs.attentions) == 2 and all(a.shape == (2, 4, 17, 17) for a in outputs.attentions)
    torch.testing.assert_close(outputs.attentions[0].sum(-1), torch.ones(2, 4, 17))
    assert outputs.mask is None and outputs.ids_restore is None


def test_sdpa_and_eager_attention_agree(tester):
    torch.manual_seed(0)
    sdpa = MCFModel(tester.get_config()).eval()
    eager = MCFModel.from_pretrained(None, config=sdpa.config, state_dict=sdpa.state_dict(), attn_implementation="eager")
    pixel_values = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(eager(pixel_values).last_hidden_state, sdpa(pixel_values).last_hidden_state)


def test_noise_masking_keeps_the_lowest_noise_patches(tester):
    model = MCFModel(tester.get_config()).eval()
    noise = torch.rand(2, 16)
    outputs = model(torch.randn(2, 3, 32, 32), noise=noise)
    assert outputs.last_hidden_state.shape == (2, 1 + 4, 32)  # int(16 * 0.25) = 4 patches kept
    kept = noise.argsort(dim=1)[:, :4]
    expected_mask = torch.ones(2, 16).scatter_(1, kept, 0.0)
    torch.testing.assert_close(outputs.mask, expected_mask)
    torch.testing.assert_close(outputs.ids_restore, noise.argsort(1).argsort(1))


def test_bool_masked_pos_equals_the_matching_noise(tester):
    model = MCFModel(tester.get_config()).eval()
    pixel_values = torch.randn(2, 3, 32, 32)
    bool_masked_pos = torch.ones(2, 16, dtype=torch.bool)
    bool_masked_pos[0, [1, 5, 9, 13]] = False
    bool_masked_pos[1, [0, 2, 4, 6]] = False
    by_mask = model(pixel_values, bool_masked_pos=bool_masked_pos)
    noise = bool_masked_pos.float() + torch.arange(16) / 100  # same kept set, same (patch) order
    by_noise = model(pixel_values, noise=noise)
    torch.testing.assert_close(by_mask.last_hidden_state, by_noise.last_hidden_state)
    torch.testing.assert_close(by_mask.mask, bool_masked_pos.float())


def test_masking_input_errors(tester):
    model = MCFModel(tester.get_config())
    pixel_values = torch.randn(2, 3, 32, 32)
    uneven = torch.zeros(2, 16, dtype=torch.bool)
    uneven[0, :3] = True
    with pytest.raises(ValueError, match=r"same number of patches in every sample, got \[3, 0\]"):
        model(pixel_values, bool_masked_pos=uneven)
    with pytest.raises(ValueError, match=r"Expected noise of shape \(2, 16\)"):
        model(pixel_values, noise=torch.rand(2, 15))
    with pytest.raises(ValueError, match=r"bool_masked_pos of shape \(2, 16\)"):
        model(pixel_values, bool_masked_pos=torch.zeros(2, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="either `noise` or `bool_masked_pos`"):
        model(pixel_values, noise=torch.rand(2, 16), bool_masked_pos=uneven)
    with pytest.raises(ValueError, match=r"Expected pixel_values of shape \(batch_size, 3, height, width\), got \(2, 1, 32, 32\)"):
        model(torch.randn(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"Input image size \(64\*64\) doesn't match the model \(32\*32\)"):
        model(torch.randn(1, 3, 64, 64))


def test_interpolate_pos_encoding_runs_at_twice_the_resolution(tester):
    model = MCFModel(tester.get_config()).eval()
    pixel_values = torch.randn(1, 3, 32, 32)
    same = model(pixel_values, interpolate_pos_encoding=True).last_hidden_state
    torch.testing.assert_close(same, model(pixel_values).last_hidden_state)
    large = model(torch.randn(1, 3, 64, 64), interpolate_pos_encoding=True)
    assert large.last_hidden_state.shape == (1, 1 + 64, 32)
    # the resized grid interpolates the original one: its corners stay close to the original corners
    positions = model.embeddings.interpolate_pos_encoding(64, 64)[0, 1:].reshape(8, 8, 32)
    original = model.embeddings.position_embeddings[0, 1:].reshape(4, 4, 32)
    assert (positions[0, 0] - original[0, 0]).abs().max() < 0.3


def test_pretraining_requires_an_explicit_perceptual_teacher(tester):
    model = MCFForPreTraining(tester.get_config())
    with pytest.raises(ValueError, match="no perceptual-teacher weights"):
        model(torch.randn(2, 3, 32, 32))
    with pytest.raises(RuntimeError):  # every key is required
        model.load_perceptual_teacher({})
    assert not bool(model.has_perceptual_teacher_weights)


def test_a_base_checkpoint_loads_into_pretraining_with_copied_momentum_encoder(tester, tmp_path):
    encoder = MCFModel(tester.get_config())
    encoder.save_pretrained(tmp_path)
    model = MCFForPreTraining.from_pretrained(tmp_path)
    for (name, online), momentum in zip(model.mcf.state_dict().items(), model.momentum_encoder.state_dict().values()):
        assert torch.equal(online, encoder.state_dict()[name]), name
        assert torch.equal(momentum, online), name
    assert not bool(model.has_perceptual_teacher_weights)  # still refuses to train with a random teacher


def test_momentum_update_is_an_ema_of_online_encoder_and_projector(tester):
    model = tester.prepare_model(MCFForPreTraining(tester.get_config()))
    with torch.no_grad():
        for p in list(model.mcf.parameters()) + list(model.projector.parameters()):
            p.add_(torch.randn_like(p))
    before = {n: p.clone() for n, p in model.momentum_encoder.named_parameters()}
    model.update_momentum_encoder(0.9)
    for name, param in model.momentum_encoder.named_parameters():
        expected = 0.9 * before[name] + 0.1 * model.mcf.get_parameter(name)
        torch.testing.assert_close(param, expected)
    online_bn = model.projector.norm1.running_mean.clone().add_(1)
    model.projector.norm1.running_mean.copy_(online_bn)
    model.update_momentum_encoder()
    assert not torch.equal(model.momentum_projector.norm1.running_mean, online_bn)  # statistics are not averaged
    with pytest.raises(ValueError, match="got 2"):
        model.update_momentum_encoder(2)


def test_forward_has_no_side_effects_and_frozen_parts_stay_frozen(tester):
    model = tester.prepare_model(MCFForPreTraining(tester.get_config())).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model(torch.randn(2, 3, 32, 32))
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    frozen = [model.momentum_encoder, model.momentum_projector, model.perceptual_teacher]
    assert not any(p.requires_grad for module in frozen for p in module.parameters())
    assert not model.mcf.embeddings.position_embeddings.requires_grad


def test_pretraining_loss_terms(tester):
    model = tester.prepare_model(MCFForPreTraining(tester.get_config())).eval()
    pixel_values = torch.randn(3, 3, 32, 32)
    outputs = model(pixel_values)
    weight = model.config.perceptual_loss_weight
    torch.testing.assert_close(outputs.loss, weight * outputs.perceptual_loss + outputs.contrastive_loss)
    # contrastive: cross-entropy of normalised query/key similarities, times 2T
    query = torch.nn.functional.normalize(outputs.query_embeds, dim=1)
    key = torch.nn.functional.normalize(outputs.key_embeds, dim=1)
    expected = torch.nn.functional.cross_entropy(query @ key.T / 0.2, torch.arange(3)) * 0.4
    torch.testing.assert_close(outputs.contrastive_loss, expected)
    # perceptual: a perfect reconstruction gives zero loss
    perfect = model.perceptual_loss(pixel_values, pixel_values)
    assert float(perfect) == 0.0
    assert outputs.logits.shape == (3, 16, 8 * 8 * 3)
    torch.testing.assert_close(model.unpatchify(model.patchify(pixel_values)), pixel_values)


def test_perceptual_normalization_axis(tester):
    model = tester.prepare_model(MCFForPreTraining(tester.get_config())).eval()
    images = torch.randn(2, 3, 32, 32)
    tokens = model.perceptual_features(images)[0]
    torch.testing.assert_close(tokens.norm(dim=1), torch.ones(2, 32))
    model.config.perceptual_normalization = "channels"
    channels = model.perceptual_features(images)[0]
    torch.testing.assert_close(channels.norm(dim=-1), torch.ones(2, 17))


def test_perceptual_teacher_with_its_own_architecture(tester):
    config = tester.get_config(perceptual_teacher_config={"hidden_size": 24, "num_attention_heads": 2, "image_size": 16})
    model = MCFForPreTraining(config)
    assert model.perceptual_teacher.config.hidden_size == 24
    tester.prepare_model(model)
    outputs = model(torch.randn(2, 3, 32, 32))  # images are resized (nearest) to the teacher's 16 px
    assert torch.isfinite(outputs.loss)


def _golden_outputs() -> dict[str, list[float]]:
    tester = _PreTrainingInputs()
    model = tester.prepare_model(MCFForPreTraining(tester.get_config())).eval()
    # weights from our own generator, so the goldens do not depend on how transformers orders initialisation
    generator = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for name, tensor in sorted(model.state_dict().items()):
            if tensor.is_floating_point():
                values = torch.randn(tensor.shape, generator=generator) * 0.2
                tensor.copy_(values.abs() + 0.5 if name.endswith("running_var") else values)
        model.update_momentum_encoder(0.5)
        outputs = model(**tester.prepare_inputs(batch_size=2))
        encoder = model.mcf(tester.prepare_inputs(batch_size=2)["pixel_values"])
    return {
        "loss": [outputs.loss.item()],
        "perceptual_loss": [outputs.perceptual_loss.item()],
        "contrastive_loss": [outputs.contrastive_loss.item()],
        "logits[0, :3, :3]": outputs.logits[0, :3, :3].flatten().tolist(),
        "query_embeds[:, :3]": outputs.query_embeds[:, :3].flatten().tolist(),
        "key_embeds[:, :3]": outputs.key_embeds[:, :3].flatten().tolist(),
        "pooler_output[:, :3]": encoder.pooler_output[:, :3].flatten().tolist(),
    }


def test_golden_outputs_of_a_seeded_tiny_model():
    assert_matches_golden(GOLDEN_PATH, _golden_outputs())


def test_released_defaults():
    config = MCFConfig()
    assert config.get_perceptual_layers() == [2, 5, 8, 11]
    assert (config.hidden_size, config.num_hidden_layers, config.decoder_num_hidden_layers) == (768, 12, 8)
    assert (config.mask_ratio, config.momentum, config.contrastive_temperature) == (0.75, 0.99, 0.2)
    assert config.get_perceptual_teacher_config().encoder_kwargs() == config.encoder_kwargs()
