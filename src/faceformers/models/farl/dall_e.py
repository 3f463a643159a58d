"""The encoder half of OpenAI's DALL-E discrete VAE, used by FaRL (and BEiT) as a frozen image tokenizer: the masked
image modelling targets are the argmax of its logits over an 8192-entry visual vocabulary, one token per 8x8 patch.

Architecture (OpenAI's `dall_e` package, `dall_e/encoder.py` and `dall_e/utils.py`, version 0.1):

- a 7x7 input convolution to `hidden_size` channels;
- `num_groups` groups of `blocks_per_group` residual blocks; group `g` (0-based) is `2**g * hidden_size` wide, and
  every group but the last ends in a 2x2 max-pool (so 4 groups downsample by 8);
- each block is `shortcut(x) + post_gain * (relu > conv3 > relu > conv3 > relu > conv3 > relu > conv1)(x)`, with a
  bottleneck of a quarter of the block's output width, a 1x1-convolution shortcut only when the width changes and
  `post_gain = 1 / (num_groups * blocks_per_group) ** 2`;
- ReLU, then a 1x1 convolution to `vocab_size` logits.

Every convolution has a bias and "same" padding. Pixels in [0, 1] are first squeezed into [0.1, 0.9] (the package's
`map_pixels`, logit-Laplace epsilon 0.1); `DallEEncoder.forward` does that itself.

OpenAI released the weights as `encoder.pkl`, a `torch.save` of the whole `dall_e.encoder.Encoder` object rather than
a state dict. `load_dall_e_encoder_state_dict` reads it without the `dall_e` package (and without running any code
from the file) by unpickling it against inert stand-in classes, then renames the tensors to `DallEEncoder`'s keys.
"""

from __future__ import annotations

import _compat_pickle
import logging
import pickle
import re
import types
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn


logger = logging.getLogger(__name__)

# `dall_e.utils.logit_laplace_eps`: pixels are mapped from [0, 1] to [eps, 1 - eps].
LOGIT_LAPLACE_EPS = 0.1


def map_pixels(pixel_values: torch.Tensor) -> torch.Tensor:
    """Map pixels in [0, 1] to [0.1, 0.9], the range the dVAE was trained on (same arithmetic as `dall_e`)."""
    return (1 - 2 * LOGIT_LAPLACE_EPS) * pixel_values + LOGIT_LAPLACE_EPS


class DallEEncoderBlock(nn.Module):
    """Pre-activation bottleneck residual block whose residual branch is scaled by a constant `post_gain`."""

    def __init__(self, in_channels: int, out_channels: int, post_gain: float) -> None:
        super().__init__()
        bottleneck = out_channels // 4
        self.post_gain = post_gain
        self.shortcut = (
            nn.Conv2d(in_channels, out_channels, kernel_size=1) if in_channels != out_channels else nn.Identity()
        )
        self.conv1 = nn.Conv2d(in_channels, bottleneck, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(bottleneck, bottleneck, kernel_size=3, padding=1)
        self.conv3 = nn.Conv2d(bottleneck, bottleneck, kernel_size=3, padding=1)
        self.conv4 = nn.Conv2d(bottleneck, out_channels, kernel_size=1)

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (B, in_channels, H, W) -> (B, out_channels, H, W)
        residual = self.conv1(F.relu(hidden_states))
        residual = self.conv2(F.relu(residual))
        residual = self.conv3(F.relu(residual))
        residual = self.conv4(F.relu(residual))
        return self.shortcut(hidden_states) + self.post_gain * residual


class DallEEncoderGroup(nn.Module):
    """`blocks_per_group` residual blocks at one resolution, optionally followed by a 2x2 max-pool."""

    def __init__(self, in_channels: int, out_channels: int, num_blocks: int, post_gain: float, downsample: bool):
        super().__init__()
        self.blocks = nn.ModuleList(
            DallEEncoderBlock(in_channels if index == 0 else out_channels, out_channels, post_gain)
            for index in range(num_blocks)
        )
        self.pool = nn.MaxPool2d(kernel_size=2) if downsample else nn.Identity()

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        # (B, in_channels, H, W) -> (B, out_channels, H / 2, W / 2) when downsampling, else (..., H, W)
        for block in self.blocks:
            hidden_states = block(hidden_states)
        return self.pool(hidden_states)


class DallEEncoder(nn.Module):
    """DALL-E dVAE encoder: images in [0, 1] to per-patch logits over the visual vocabulary.

    The defaults are the released model (`encoder.pkl`, 8192 tokens, one per 8x8 patch). The module has no dropout
    or normalisation, so train and eval mode compute the same thing; `freeze()` turns gradients off.

    Numerics: everything runs in the parameters' dtype (float32 by default). The original, when on a CUDA device,
    silently ran every convolution except the output one in float16; on CPU it is float32 like this module.
    """

    def __init__(
        self,
        num_groups: int = 4,
        hidden_size: int = 256,
        blocks_per_group: int = 2,
        num_channels: int = 3,
        vocab_size: int = 8192,
    ) -> None:
        super().__init__()
        for name, value in (
            ("num_groups", num_groups),
            ("hidden_size", hidden_size),
            ("blocks_per_group", blocks_per_group),
            ("num_channels", num_channels),
            ("vocab_size", vocab_size),
        ):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if hidden_size % 4 != 0:
            raise ValueError(f"hidden_size must be divisible by 4 (blocks have a 4x bottleneck), got {hidden_size}")

        self.num_groups = num_groups
        self.hidden_size = hidden_size
        self.blocks_per_group = blocks_per_group
        self.num_channels = num_channels
        self.vocab_size = vocab_size
        # One 2x2 max-pool after every group except the last.
        self.downsample_factor = 2 ** (num_groups - 1)

        post_gain = 1 / (num_groups * blocks_per_group) ** 2
        widths = [hidden_size * 2**index for index in range(num_groups)]
        self.input_conv = nn.Conv2d(num_channels, hidden_size, kernel_size=7, padding=3)
        self.groups = nn.ModuleList(
            DallEEncoderGroup(
                in_channels=widths[max(index - 1, 0)],
                out_channels=widths[index],
                num_blocks=blocks_per_group,
                post_gain=post_gain,
                downsample=index < num_groups - 1,
            )
            for index in range(num_groups)
        )
        self.output_conv = nn.Conv2d(widths[-1], vocab_size, kernel_size=1)

    @property
    def config(self) -> dict[str, int]:
        """The constructor arguments."""
        return {
            "num_groups": self.num_groups,
            "hidden_size": self.hidden_size,
            "blocks_per_group": self.blocks_per_group,
            "num_channels": self.num_channels,
            "vocab_size": self.vocab_size,
        }

    def freeze(self) -> DallEEncoder:
        """Turn off gradients and switch to eval mode (the tokenizer is never trained); returns `self`."""
        self.requires_grad_(False)
        return self.eval()

    def _check_pixel_values(self, pixel_values: torch.Tensor) -> None:
        if pixel_values.ndim != 4:
            raise ValueError(
                f"pixel_values must be 4-D (batch, channels, height, width), got shape {tuple(pixel_values.shape)}"
            )
        if not pixel_values.is_floating_point():
            raise ValueError(f"pixel_values must be a floating-point tensor in [0, 1], got dtype {pixel_values.dtype}")
        channels, height, width = pixel_values.shape[1:]
        if channels != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {channels}")
        factor = self.downsample_factor
        if height % factor or width % factor:
            raise ValueError(f"height and width must be divisible by {factor}, got {height}x{width}")

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, num_channels, H, W) images in [0, 1] -> (B, vocab_size, H / f, W / f) logits, f = downsample_factor."""
        self._check_pixel_values(pixel_values)
        hidden_states = map_pixels(pixel_values.to(self.input_conv.weight.dtype))
        hidden_states = self.input_conv(hidden_states)  # (B, hidden_size, H, W)
        for group in self.groups:
            hidden_states = group(hidden_states)  # (B, hidden_size * 2**g, H / 2**g', W / 2**g')
        return self.output_conv(F.relu(hidden_states))  # (B, vocab_size, H / f, W / f)

    @torch.no_grad()
    def get_codebook_indices(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, num_channels, H, W) images in [0, 1] -> (B, (H / f) * (W / f)) token ids, patches in row-major order."""
        logits = self(pixel_values)  # (B, vocab_size, H / f, W / f)
        return logits.argmax(dim=1).flatten(1)

    # ----- (de)serialisation -----

    @staticmethod
    def config_from_state_dict(state_dict: Mapping[str, torch.Tensor]) -> dict[str, int]:
        """Read the constructor arguments off the tensor shapes of a `DallEEncoder` state dict."""
        for key in ("input_conv.weight", "output_conv.weight"):
            if key not in state_dict:
                raise ValueError(f"not a DallEEncoder state dict: {key!r} is missing")
        hidden_size, num_channels = state_dict["input_conv.weight"].shape[:2]
        group_ids = {int(match[1]) for key in state_dict if (match := re.match(r"groups\.(\d+)\.", key))}
        block_ids = {int(match[1]) for key in state_dict if (match := re.match(r"groups\.0\.blocks\.(\d+)\.", key))}
        if not group_ids or not block_ids:
            raise ValueError("not a DallEEncoder state dict: no `groups.<g>.blocks.<b>.` keys")
        return {
            "num_groups": max(group_ids) + 1,
            "hidden_size": int(hidden_size),
            "blocks_per_group": max(block_ids) + 1,
            "num_channels": int(num_channels),
            "vocab_size": int(state_dict["output_conv.weight"].shape[0]),
        }

    @classmethod
    def from_state_dict(cls, state_dict: Mapping[str, torch.Tensor]) -> DallEEncoder:
        """Build a frozen encoder whose architecture is inferred from `state_dict`, and load it strictly."""
        model = cls(**cls.config_from_state_dict(state_dict))
        model.load_state_dict(state_dict, strict=True)
        return model.freeze()

    @classmethod
    def from_file(cls, path: str | Path) -> DallEEncoder:
        """Load a frozen encoder from a `.safetensors` file written by `save_safetensors` (or the conversion script),
        or from an original OpenAI `encoder.pkl` / original-key state dict (any other suffix)."""
        path = Path(path)
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state_dict = load_file(str(path))
        else:
            state_dict = load_dall_e_encoder_state_dict(path)
        return cls.from_state_dict(state_dict)

    def save_safetensors(self, path: str | Path) -> None:
        """Write the weights to a `.safetensors` file; the constructor arguments go into its metadata (informative:
        `from_file` infers them from the tensor shapes)."""
        from safetensors.torch import save_file

        tensors = {key: value.detach().contiguous() for key, value in self.state_dict().items()}
        metadata = {"format": "pt", **{key: str(value) for key, value in self.config.items()}}
        save_file(tensors, str(path), metadata=metadata)


# ----- reading OpenAI's encoder.pkl -----

# The pickled object graph of a released `dall_e.encoder.Encoder` references these classes. They are replaced by inert
# stand-ins that only record the pickled `__dict__`; nothing from the original classes (or any other code) is run.
_STAND_IN_CLASSES = frozenset(
    {
        ("dall_e.encoder", "Encoder"),
        ("dall_e.encoder", "EncoderBlock"),
        ("dall_e.utils", "Conv2d"),
        ("torch.nn.modules.container", "Sequential"),
        ("torch.nn.modules.activation", "ReLU"),
        ("torch.nn.modules.pooling", "MaxPool2d"),
        ("torch.nn.modules.linear", "Identity"),
    }
)


def _parameter_data(data: torch.Tensor, requires_grad: bool, backward_hooks: Any, state: Any = None) -> torch.Tensor:
    """Stand-in for `torch._utils._rebuild_parameter(_with_state)`: keep the plain tensor, drop the rest."""
    return data


# Harmless callables the pickle may reference (storages are resolved by torch.load itself).
_ALLOWED_GLOBALS: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): OrderedDict,
    ("builtins", "set"): set,
    ("torch", "device"): torch.device,
    ("torch._utils", "_rebuild_tensor_v2"): torch._utils._rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _parameter_data,
    ("torch._utils", "_rebuild_parameter_with_state"): _parameter_data,
}


class _PickledObject:
    """Inert stand-in for a pickled module: `pickled_class` names the original class, `state` is its `__dict__`."""

    pickled_class = ""
    dump_patches = False  # read by torch's legacy (pre-1.6) loader when it checks saved module sources

    def __setstate__(self, state: Any) -> None:
        if not isinstance(state, dict):
            raise pickle.UnpicklingError(f"unexpected pickled state of type {type(state).__name__}")
        self.state = state


_stand_in_cache: dict[tuple[str, str], type] = {}


def _stand_in(module: str, name: str) -> type:
    if (module, name) not in _stand_in_cache:
        _stand_in_cache[module, name] = type(name, (_PickledObject,), {"pickled_class": f"{module}.{name}"})
    return _stand_in_cache[module, name]


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only the globals of a pickled DALL-E encoder, and refuses everything else."""

    def find_class(self, module: str, name: str) -> Any:
        # Protocol-2 pickles may carry Python 2 names (e.g. `__builtin__.set`).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[module, name]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _STAND_IN_CLASSES:
            return _stand_in(module, name)
        if (module, name) in _ALLOWED_GLOBALS:
            return _ALLOWED_GLOBALS[module, name]
        raise pickle.UnpicklingError(
            f"refusing to unpickle global {module}.{name}: a DALL-E encoder checkpoint only needs "
            f"{sorted('.'.join(item) for item in _STAND_IN_CLASSES | _ALLOWED_GLOBALS.keys())}"
        )


def _restricted_load(file: Any, **kwargs: Any) -> Any:
    return _RestrictedUnpickler(file, **kwargs).load()


# What torch.load needs from a `pickle_module`.
_restricted_pickle = types.SimpleNamespace(
    __name__="dall_e_restricted_pickle", Unpickler=_RestrictedUnpickler, load=_restricted_load
)


def _collect_tensors(obj: _PickledObject, prefix: str, out: dict[str, torch.Tensor]) -> None:
    """Walk a tree of pickled modules, collecting parameters and persistent buffers under `state_dict()` names."""
    state = obj.state
    non_persistent = state.get("_non_persistent_buffers_set") or set()
    tensors = [*(state.get("_parameters") or {}).items()]
    tensors += [(key, value) for key, value in (state.get("_buffers") or {}).items() if key not in non_persistent]
    for key, value in tensors:
        if value is None:
            continue
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"{prefix}{key} of {obj.pickled_class} is a {type(value).__name__}, not a tensor")
        out[prefix + key] = value
    for key, child in (state.get("_modules") or {}).items():
        if child is None:
            continue
        if not isinstance(child, _PickledObject):
            raise TypeError(f"submodule {prefix}{key} is a {type(child).__name__}, not a pickled module")
        _collect_tensors(child, f"{prefix}{key}.", out)


# Constructor fields of the original `Encoder` (attrs attributes) -> how to read them off the converted config.
_ORIGINAL_FIELDS = {
    "n_hid": "hidden_size",
    "n_blk_per_group": "blocks_per_group",
    "input_channels": "num_channels",
    "vocab_size": "vocab_size",
}


def read_original_dall_e_encoder(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read the tensors of an original DALL-E encoder file, under the original `state_dict()` names
    (`blocks.input.w`, `blocks.group_1.block_1.res_path.conv_1.w`, ...).

    Accepts OpenAI's `encoder.pkl` (a pickled `dall_e.encoder.Encoder`, read with a restricted unpickler) or a plain
    state dict (read with `weights_only=True`). Also returns the pickled encoder's scalar attributes (empty for a
    state dict).
    """
    path = Path(path)
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        loaded = None  # not a plain state dict: the weights-only loader refused the pickled classes
    if loaded is not None:
        if not isinstance(loaded, Mapping) or not all(isinstance(value, torch.Tensor) for value in loaded.values()):
            raise ValueError(f"{path}: expected a state dict of tensors, got {type(loaded).__name__}")
        logger.info("Read a plain state dict with %d tensors from %s", len(loaded), path)
        return dict(loaded), {}

    # `weights_only=False` is safe here only because `pickle_module` is the restricted unpickler above: every global
    # goes through its allow-list. torch's own weights-only loader cannot read the legacy (pre-1.6) format at all.
    with warnings.catch_warnings():
        # The legacy (pre-1.6) format stores module sources and compares them with the (stand-in) classes.
        warnings.filterwarnings("ignore", category=torch.serialization.SourceChangeWarning)
        warnings.filterwarnings("ignore", message="Couldn't retrieve source code")
        root = torch.load(path, map_location="cpu", pickle_module=_restricted_pickle, weights_only=False)
    if not isinstance(root, _PickledObject) or root.pickled_class != "dall_e.encoder.Encoder":
        found = root.pickled_class if isinstance(root, _PickledObject) else type(root).__name__
        raise ValueError(f"{path}: expected a pickled dall_e.encoder.Encoder, got {found}")
    tensors: dict[str, torch.Tensor] = {}
    _collect_tensors(root, "", tensors)
    attributes = {key: value for key, value in root.state.items() if not key.startswith("_")}
    logger.info(
        "Read a pickled dall_e Encoder with %d tensors from %s (attributes %s)",
        len(tensors),
        path,
        {key: value for key, value in attributes.items() if key != "training"},
    )
    return tensors, attributes


def _original_key(key: str) -> str:
    """`DallEEncoder` state-dict key -> original `dall_e` Encoder key."""
    module, _, kind = key.rpartition(".")
    suffix = {"weight": "w", "bias": "b"}[kind]
    if module == "input_conv":
        return f"blocks.input.{suffix}"
    if module == "output_conv":
        return f"blocks.output.conv.{suffix}"
    match = re.fullmatch(r"groups\.(\d+)\.blocks\.(\d+)\.(shortcut|conv(\d))", module)
    if match is None:
        raise KeyError(key)
    block = f"blocks.group_{int(match[1]) + 1}.block_{int(match[2]) + 1}"
    if match[3] == "shortcut":
        return f"{block}.id_path.{suffix}"
    return f"{block}.res_path.conv_{match[4]}.{suffix}"


def _config_from_original(original: Mapping[str, torch.Tensor]) -> dict[str, int]:
    missing = [key for key in ("blocks.input.w", "blocks.output.conv.w") if key not in original]
    if missing:
        raise ValueError(f"not a DALL-E encoder state dict: missing {missing}")
    group_ids = {int(match[1]) for key in original if (match := re.match(r"blocks\.group_(\d+)\.", key))}
    block_ids = {int(match[1]) for key in original if (match := re.match(r"blocks\.group_1\.block_(\d+)\.", key))}
    if not block_ids:
        raise ValueError("not a DALL-E encoder state dict: no `blocks.group_1.block_<n>.` keys")
    hidden_size, num_channels = original["blocks.input.w"].shape[:2]
    return {
        "num_groups": max(group_ids),
        "hidden_size": int(hidden_size),
        "blocks_per_group": max(block_ids),
        "num_channels": int(num_channels),
        "vocab_size": int(original["blocks.output.conv.w"].shape[0]),
    }


def convert_dall_e_state_dict(original: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename an original-key DALL-E encoder state dict to `DallEEncoder` keys. Raises `ValueError` unless every
    original tensor is used exactly once and every `DallEEncoder` key is filled with a tensor of the right shape."""
    config = _config_from_original(original)
    with torch.device("meta"):
        expected = DallEEncoder(**config).state_dict()
    remaining = dict(original)
    converted: dict[str, torch.Tensor] = {}
    missing, wrong_shape = [], []
    for key, reference in expected.items():
        source = _original_key(key)
        if source not in remaining:
            missing.append(source)
            continue
        tensor = remaining.pop(source)
        if tensor.shape != reference.shape:
            wrong_shape.append(f"{source}: {tuple(tensor.shape)}, expected {tuple(reference.shape)}")
        converted[key] = tensor
    problems = []
    if missing:
        problems.append(f"missing original tensors {missing}")
    if remaining:
        problems.append(f"unused (leftover) original tensors {sorted(remaining)}")
    if wrong_shape:
        problems.append(f"unexpected shapes {wrong_shape}")
    if problems:
        raise ValueError(f"cannot convert DALL-E encoder ({config}): " + "; ".join(problems))
    return converted


def load_dall_e_encoder_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read OpenAI's `encoder.pkl` (or an original-key state dict) and return it under `DallEEncoder` keys; build the
    model with `DallEEncoder.from_state_dict`. The `dall_e` package is not needed and no pickled code is run."""
    original, attributes = read_original_dall_e_encoder(path)
    converted = convert_dall_e_state_dict(original)
    config = DallEEncoder.config_from_state_dict(converted)
    mismatched = {
        field: (attributes[field], config[ours])
        for field, ours in _ORIGINAL_FIELDS.items()
        if field in attributes and attributes[field] != config[ours]
    }
    if mismatched:
        raise ValueError(
            f"{path}: pickled Encoder attributes disagree with the tensor shapes (pickled, shapes): {mismatched}"
        )
    return converted
