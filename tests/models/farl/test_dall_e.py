"""DALL-E dVAE encoder (FaRL's masked-image-modelling tokenizer): module behaviour, and conversion of a pickled
original `dall_e.encoder.Encoder` built from stand-in classes under a fake `dall_e` package that is removed from
`sys.modules` before loading."""

from __future__ import annotations

import math
import pickle
import sys
import types
import warnings
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from safetensors import safe_open
from torch import nn

from faceformers.models.farl.convert_dall_e_to_hf import main as convert_main
from faceformers.models.farl.dall_e import (
    DallEEncoder,
    convert_dall_e_state_dict,
    load_dall_e_encoder_state_dict,
    read_original_dall_e_encoder,
)


TINY = {"num_groups": 4, "hidden_size": 8, "blocks_per_group": 1, "num_channels": 3, "vocab_size": 32}


# ----- an independent, straightforward re-computation on original key names -----


def reference_logits(original: dict[str, torch.Tensor], images: torch.Tensor, num_groups: int, blocks: int):
    def conv(x: torch.Tensor, prefix: str) -> torch.Tensor:
        weight = original[f"{prefix}.w"]
        return F.conv2d(x, weight, original[f"{prefix}.b"], padding=weight.shape[-1] // 2)

    x = conv(0.8 * images + 0.1, "blocks.input")
    gain = 1.0 / (num_groups * blocks) ** 2
    for group in range(1, num_groups + 1):
        for block in range(1, blocks + 1):
            prefix = f"blocks.group_{group}.block_{block}"
            shortcut = conv(x, f"{prefix}.id_path") if f"{prefix}.id_path.w" in original else x
            residual = x
            for index in range(1, 5):
                residual = conv(residual.relu(), f"{prefix}.res_path.conv_{index}")
            x = shortcut + gain * residual
        if group < num_groups:
            x = F.max_pool2d(x, 2)
    return conv(x.relu(), "blocks.output.conv")


# ----- stand-ins for the original classes (same attribute and submodule names as dall_e 0.1) -----


class FakeConv2d(nn.Module):
    def __init__(self, n_in: int, n_out: int, kw: int) -> None:
        super().__init__()
        self.n_in, self.n_out, self.kw = n_in, n_out, kw
        self.use_float16, self.device, self.requires_grad = True, torch.device("cpu"), False
        weight = torch.randn(n_out, n_in, kw, kw) / math.sqrt(n_in * kw**2)
        self.w = nn.Parameter(weight, requires_grad=False)
        self.b = nn.Parameter(0.1 * torch.randn(n_out), requires_grad=False)


class FakeEncoderBlock(nn.Module):
    def __init__(self, n_in: int, n_out: int, n_layers: int) -> None:
        super().__init__()
        self.n_in, self.n_out, self.n_layers = n_in, n_out, n_layers
        self.n_hid, self.post_gain = n_out // 4, 1 / n_layers**2
        self.id_path = FakeConv2d(n_in, n_out, 1) if n_in != n_out else nn.Identity()
        self.res_path = nn.Sequential(
            OrderedDict(
                [
                    ("relu_1", nn.ReLU()),
                    ("conv_1", FakeConv2d(n_in, self.n_hid, 3)),
                    ("relu_2", nn.ReLU()),
                    ("conv_2", FakeConv2d(self.n_hid, self.n_hid, 3)),
                    ("relu_3", nn.ReLU()),
                    ("conv_3", FakeConv2d(self.n_hid, self.n_hid, 3)),
                    ("relu_4", nn.ReLU()),
                    ("conv_4", FakeConv2d(self.n_hid, n_out, 1)),
                ]
            )
        )


class FakeEncoder(nn.Module):
    def __init__(self, n_hid: int = 8, n_blk_per_group: int = 1, input_channels: int = 3, vocab_size: int = 32):
        super().__init__()
        self.n_hid, self.n_blk_per_group = n_hid, n_blk_per_group
        self.input_channels, self.vocab_size = input_channels, vocab_size
        self.device, self.requires_grad, self.use_mixed_precision = torch.device("cpu"), False, True
        n_layers = 4 * n_blk_per_group
        widths = [n_hid, 2 * n_hid, 4 * n_hid, 8 * n_hid]
        groups = []
        for index, width in enumerate(widths):
            items = [
                (f"block_{b + 1}", FakeEncoderBlock(widths[max(index - 1, 0)] if b == 0 else width, width, n_layers))
                for b in range(n_blk_per_group)
            ]
            if index < 3:
                items.append(("pool", nn.MaxPool2d(kernel_size=2)))
            groups.append((f"group_{index + 1}", nn.Sequential(OrderedDict(items))))
        output = nn.Sequential(OrderedDict([("relu", nn.ReLU()), ("conv", FakeConv2d(8 * n_hid, vocab_size, 1))]))
        self.blocks = nn.Sequential(
            OrderedDict([("input", FakeConv2d(input_channels, n_hid, 7)), *groups, ("output", output)])
        )


def _as_original(cls: type, module: str, name: str) -> None:
    cls.__module__, cls.__name__, cls.__qualname__ = module, name, name


_as_original(FakeConv2d, "dall_e.utils", "Conv2d")
_as_original(FakeEncoderBlock, "dall_e.encoder", "EncoderBlock")
_as_original(FakeEncoder, "dall_e.encoder", "Encoder")


def save_like_openai(obj: object, path, legacy: bool = False) -> None:
    """`torch.save` an object graph referencing `dall_e.*` classes, then make `dall_e` unimportable again."""
    package, utils, encoder = (types.ModuleType(name) for name in ("dall_e", "dall_e.utils", "dall_e.encoder"))
    utils.Conv2d = FakeConv2d
    encoder.Encoder, encoder.EncoderBlock = FakeEncoder, FakeEncoderBlock
    package.utils, package.encoder = utils, encoder
    sys.modules.update({"dall_e": package, "dall_e.utils": utils, "dall_e.encoder": encoder})
    try:
        with warnings.catch_warnings():  # the legacy format cannot find the renamed classes' source: harmless
            warnings.simplefilter("ignore")
            torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    finally:
        for name in ("dall_e", "dall_e.utils", "dall_e.encoder"):
            del sys.modules[name]


@pytest.fixture
def fake_original():
    """A randomly initialised fake original (biases non-zero) and its state dict under the original key names."""
    encoder = FakeEncoder()
    return encoder, {key: value.clone() for key, value in encoder.state_dict().items()}


# ----- the module -----


def test_shapes_and_indices_are_row_major_argmax():
    model = DallEEncoder(**TINY).freeze()
    images = torch.rand(2, 3, 16, 24)
    assert model(images).shape == (2, 32, 2, 3)
    assert model.get_codebook_indices(images).shape == (2, 6)

    # A freshly initialised network predicts nearly the same token everywhere: check the argmax and the flattening
    # order on logits that vary over space.
    logits = torch.randn(2, 32, 2, 3)
    model.forward = lambda pixel_values: logits
    indices = model.get_codebook_indices(images)
    assert indices.shape == (2, 6) and indices.dtype == torch.long
    assert len(set(indices.flatten().tolist())) > 3
    for batch in range(2):
        for row in range(2):
            for column in range(3):
                assert indices[batch, row * 3 + column] == logits[batch, :, row, column].argmax()


def test_downsample_factor_follows_num_groups():
    model = DallEEncoder(num_groups=2, hidden_size=4, blocks_per_group=2, num_channels=1, vocab_size=5)
    assert model.downsample_factor == 2
    assert model(torch.rand(1, 1, 6, 4)).shape == (1, 5, 3, 2)
    # widths 4 -> 8: only the first block of the second group needs a projection shortcut
    assert isinstance(model.groups[1].blocks[0].shortcut, nn.Conv2d)
    assert isinstance(model.groups[1].blocks[1].shortcut, nn.Identity)
    assert isinstance(model.groups[0].blocks[0].shortcut, nn.Identity)
    assert model.groups[0].blocks[0].post_gain == 1 / 16


def test_default_size_matches_released_encoder():
    with torch.device("meta"):
        model = DallEEncoder()
    assert sum(p.numel() for p in model.parameters()) == 53_786_240
    assert model.output_conv.weight.shape == (8192, 2048, 1, 1)
    assert model.downsample_factor == 8


@pytest.mark.parametrize(
    ("shape", "dtype", "message"),
    [
        ((3, 16, 16), torch.float32, "4-D"),
        ((1, 4, 16, 16), torch.float32, "expected 3 channels, got 4"),
        ((1, 3, 12, 16), torch.float32, "divisible by 8, got 12x16"),
        ((1, 3, 16, 20), torch.float32, "divisible by 8, got 16x20"),
        ((1, 3, 16, 16), torch.uint8, "floating-point"),
    ],
)
def test_bad_pixel_values_raise(shape, dtype, message):
    model = DallEEncoder(**TINY)
    with pytest.raises(ValueError, match=message):
        model(torch.zeros(shape, dtype=dtype))
    with pytest.raises(ValueError, match=message):
        model.get_codebook_indices(torch.zeros(shape, dtype=dtype))


def test_bad_config_raises():
    with pytest.raises(ValueError, match="divisible by 4"):
        DallEEncoder(hidden_size=6)
    with pytest.raises(ValueError, match="num_groups"):
        DallEEncoder(num_groups=0)


def test_freeze():
    model = DallEEncoder(**TINY).train().freeze()
    assert not model.training
    assert not any(parameter.requires_grad for parameter in model.parameters())
    assert not model(torch.rand(1, 3, 8, 8)).requires_grad


# ----- conversion -----


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy"])
@pytest.mark.filterwarnings("error")
def test_pickled_original_reproduces_reference(tmp_path, fake_original, legacy):
    encoder, original = fake_original
    path = tmp_path / "encoder.pkl"
    save_like_openai(encoder, path, legacy=legacy)
    assert "dall_e" not in sys.modules
    with pytest.raises(pickle.UnpicklingError):  # really a pickled module, not a state dict
        torch.load(path, weights_only=True)

    tensors, attributes = read_original_dall_e_encoder(path)
    assert tensors.keys() == original.keys()
    assert attributes["n_hid"] == 8 and attributes["vocab_size"] == 32
    assert "dall_e" not in sys.modules

    model = DallEEncoder.from_state_dict(load_dall_e_encoder_state_dict(path))
    assert model.config == TINY
    images = torch.rand(2, 3, 16, 16)
    expected = reference_logits(original, images, num_groups=4, blocks=1)
    torch.testing.assert_close(model(images), expected, rtol=1e-5, atol=1e-5)
    assert torch.equal(model.get_codebook_indices(images), expected.argmax(1).flatten(1))


def test_plain_state_dict_and_two_blocks_per_group(tmp_path):
    encoder = FakeEncoder(n_blk_per_group=2, vocab_size=20)
    original = encoder.state_dict()
    path = tmp_path / "encoder_state_dict.pt"
    torch.save(original, path)
    model = DallEEncoder.from_file(path)
    assert model.config == {**TINY, "blocks_per_group": 2, "vocab_size": 20}
    images = torch.rand(1, 3, 8, 16)
    torch.testing.assert_close(model(images), reference_logits(original, images, 4, 2), rtol=1e-5, atol=1e-5)


def test_leftover_missing_and_misshaped_tensors_raise(tmp_path, fake_original):
    _, original = fake_original
    assert convert_dall_e_state_dict(original).keys() == DallEEncoder(**TINY).state_dict().keys()

    with pytest.raises(ValueError, match=r"leftover.*blocks\.group_2\.block_1\.extra\.w"):
        convert_dall_e_state_dict({**original, "blocks.group_2.block_1.extra.w": torch.zeros(1)})
    incomplete = {key: value for key, value in original.items() if key != "blocks.group_3.block_1.res_path.conv_2.b"}
    with pytest.raises(ValueError, match=r"missing.*blocks\.group_3\.block_1\.res_path\.conv_2\.b"):
        convert_dall_e_state_dict(incomplete)
    with pytest.raises(ValueError, match=r"shapes.*blocks\.group_1\.block_1\.res_path\.conv_4\.w"):
        convert_dall_e_state_dict({**original, "blocks.group_1.block_1.res_path.conv_4.w": torch.zeros(8, 2, 3, 3)})

    path = tmp_path / "extra.pt"
    torch.save({**original, "blocks.output.extra.b": torch.zeros(3)}, path)
    with pytest.raises(ValueError, match=r"leftover.*blocks\.output\.extra\.b"):
        load_dall_e_encoder_state_dict(path)


def test_pickled_extra_parameter_is_a_leftover(tmp_path, fake_original):
    encoder, _ = fake_original
    encoder.blocks.group_4.block_1.register_buffer("scale", torch.ones(2))
    save_like_openai(encoder, tmp_path / "encoder.pkl")
    with pytest.raises(ValueError, match=r"leftover.*blocks\.group_4\.block_1\.scale"):
        load_dall_e_encoder_state_dict(tmp_path / "encoder.pkl")


def test_attributes_must_agree_with_shapes(tmp_path, fake_original):
    encoder, _ = fake_original
    encoder.n_hid = 16
    save_like_openai(encoder, tmp_path / "encoder.pkl")
    with pytest.raises(ValueError, match="n_hid"):
        load_dall_e_encoder_state_dict(tmp_path / "encoder.pkl")


CALLED = []


def _must_not_run() -> list:
    CALLED.append(True)
    return []


class _Payload:
    def __reduce__(self):
        return (_must_not_run, ())


def test_unexpected_globals_are_refused_without_running_them(tmp_path, fake_original):
    encoder, _ = fake_original
    encoder.payload = _Payload()
    save_like_openai(encoder, tmp_path / "encoder.pkl")
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to unpickle global .*_must_not_run"):
        load_dall_e_encoder_state_dict(tmp_path / "encoder.pkl")
    assert not CALLED


def test_other_pickled_modules_are_rejected(tmp_path):
    save_like_openai(nn.Sequential(nn.ReLU()), tmp_path / "other.pkl")
    with pytest.raises(ValueError, match=r"expected a pickled dall_e\.encoder\.Encoder, got .*Sequential"):
        load_dall_e_encoder_state_dict(tmp_path / "other.pkl")


def test_cli_safetensors_round_trip(tmp_path, fake_original):
    encoder, original = fake_original
    save_like_openai(encoder, tmp_path / "encoder.pkl")
    output = tmp_path / "out" / "dall_e_encoder.safetensors"
    convert_main(["--checkpoint", str(tmp_path / "encoder.pkl"), "--output", str(output)])

    with safe_open(str(output), framework="pt") as handle:
        assert handle.metadata()["vocab_size"] == "32"
        assert set(handle.keys()) == set(DallEEncoder(**TINY).state_dict())
    model = DallEEncoder.from_file(output)
    assert model.config == TINY and not model.training
    images = torch.rand(2, 3, 8, 8)
    torch.testing.assert_close(model(images), reference_logits(original, images, 4, 1), rtol=1e-5, atol=1e-5)

    with pytest.raises(ValueError, match=r"\.safetensors"):
        convert_main(["--checkpoint", str(tmp_path / "encoder.pkl"), "--output", str(tmp_path / "x.bin")])
