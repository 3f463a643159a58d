"""Converter tests on synthetic checkpoints in the authors' key layout. `OriginalSegFace` is an independent, compact
re-implementation of the original module tree (same names, same forward, forward hooks for the features as in the
original), used both to produce the original keys and as the numerical reference."""

import collections
import logging
import math

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from faceformers.models.segface import SegFaceForSemanticSegmentation
from faceformers.models.segface.configuration_segface import TORCHVISION_BACKBONE_CHANNELS, SegFaceConfig
from faceformers.models.segface.convert_segface_to_hf import (
    ORIGINAL_CLASS_TOKENS,
    RELEASED_VARIANTS,
    convert_checkpoint,
    convert_state_dict,
    detect_backbone,
    load_original_checkpoint,
    main,
    resolve_config,
)


HOOKED_STAGES = {
    "swin_b": ["0.1", "0.3", "0.5", "0.7"],
    "swin_v2_b": ["0.1", "0.3", "0.5", "0.7"],
    "convnext_base": ["0.1", "0.3", "0.5", "0.7"],
    "convnext_small": ["0.1", "0.3", "0.5", "0.7"],
    "convnext_tiny": ["0.1", "0.3", "0.5", "0.7"],
    "mobilenet_v3_large": ["3", "6", "12", "16"],
    "efficientnet_v2_m": ["2", "3", "5", "8"],
    "resnet101": ["4", "5", "6", "7"],
}


class OriginalAttention(nn.Module):
    def __init__(self, dim: int, heads: int, downsample: int = 1):
        super().__init__()
        self.heads, self.internal = heads, dim // downsample
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(dim, self.internal) for _ in range(3))
        self.out_proj = nn.Linear(self.internal, dim)

    def forward(self, q, k, v):
        def split(x):
            return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

        q, k, v = split(self.q_proj(q)), split(self.k_proj(k)), split(self.v_proj(v))
        attn = torch.softmax(q @ k.permute(0, 1, 3, 2) / math.sqrt(q.shape[-1]), dim=-1)
        out = (attn @ v).transpose(1, 2)
        return self.out_proj(out.reshape(out.shape[0], out.shape[1], self.internal))


class OriginalMLPBlock(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin1, self.lin2 = nn.Linear(256, 2048), nn.Linear(2048, 256)

    def forward(self, x):
        return self.lin2(F.relu(self.lin1(x)))


class OriginalTwoWayBlock(nn.Module):
    def __init__(self, skip_first_layer_pe: bool):
        super().__init__()
        self.self_attn, self.norm1 = OriginalAttention(256, 8), nn.LayerNorm(256)
        self.cross_attn_token_to_image, self.norm2 = OriginalAttention(256, 8, 2), nn.LayerNorm(256)
        self.mlp, self.norm3 = OriginalMLPBlock(), nn.LayerNorm(256)
        self.norm4, self.cross_attn_image_to_token = nn.LayerNorm(256), OriginalAttention(256, 8, 2)
        self.skip_first_layer_pe = skip_first_layer_pe

    def forward(self, queries, keys, query_pe, key_pe):
        if self.skip_first_layer_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        queries = self.norm2(queries + self.cross_attn_token_to_image(queries + query_pe, keys + key_pe, keys))
        queries = self.norm3(queries + self.mlp(queries))
        keys = self.norm4(keys + self.cross_attn_image_to_token(keys + key_pe, queries + query_pe, queries))
        return queries, keys


class OriginalTransformer(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList([OriginalTwoWayBlock(i == 0) for i in range(2)])
        self.final_attn_token_to_image, self.norm_final_attn = OriginalAttention(256, 8, 2), nn.LayerNorm(256)

    def forward(self, image, image_pe, tokens):
        keys, key_pe = image.flatten(2).permute(0, 2, 1), image_pe.flatten(2).permute(0, 2, 1)
        queries = tokens
        for layer in self.layers:
            queries, keys = layer(queries, keys, tokens, key_pe)
        queries = self.norm_final_attn(queries + self.final_attn_token_to_image(queries + tokens, keys + key_pe, keys))
        return queries, keys


class OriginalLayerNorm2d(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.ones(channels)), nn.Parameter(torch.zeros(channels))

    def forward(self, x):
        u = x.mean(1, keepdim=True)
        s = (x - u).pow(2).mean(1, keepdim=True)
        return self.weight[:, None, None] * ((x - u) / torch.sqrt(s + 1e-6)) + self.bias[:, None, None]


class OriginalFaceDecoder(nn.Module):
    def __init__(self, token_names):
        super().__init__()
        self.transformer = OriginalTransformer()
        self.token_names = token_names
        for name in token_names:
            setattr(self, f"{name}_token", nn.Embedding(1, 256))
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(256, 64, 2, 2),
            OriginalLayerNorm2d(64),
            nn.GELU(),
            nn.ConvTranspose2d(64, 32, 2, 2),
            nn.GELU(),
        )
        self.output_hypernetwork_mlps = nn.Module()
        self.output_hypernetwork_mlps.layers = nn.ModuleList(
            [nn.Linear(256, 256), nn.Linear(256, 256), nn.Linear(256, 32)]
        )

    def forward(self, image, image_pe):
        tokens = torch.cat([getattr(self, f"{n}_token").weight for n in self.token_names]).expand(len(image), -1, -1)
        b, c, h, w = image.shape
        hs, src = self.transformer(image, image_pe.expand(b, -1, -1, -1), tokens)
        up = self.output_upscaling(src.transpose(1, 2).reshape(b, c, h, w))
        x = hs
        for i, layer in enumerate(self.output_hypernetwork_mlps.layers):
            x = F.relu(layer(x)) if i < 2 else layer(x)
        return (x @ up.flatten(2)).reshape(b, -1, *up.shape[-2:])


class OriginalSegFace(nn.Module):
    """The original `SegFace{Celeb,Lapa,Helen}` module tree (without the LaPa warp)."""

    def __init__(self, backbone: str, dataset: str):
        super().__init__()
        classifier = getattr(torchvision.models, backbone)(weights=None)
        if backbone in ("mobilenet_v3_large", "efficientnet_v2_m"):
            self.backbone = classifier.features
        else:
            self.backbone = nn.Sequential(*list(classifier.children())[:-1])
        self.is_swin = backbone.startswith("swin")
        self.pe_layer = nn.Module()
        self.pe_layer.register_buffer("positional_encoding_gaussian_matrix", torch.randn(2, 128))
        self.linear_c = nn.ModuleList()
        for channels in TORCHVISION_BACKBONE_CHANNELS[backbone]:
            self.linear_c.append(nn.Module())
            self.linear_c[-1].proj = nn.Linear(channels, 256)
        self.linear_fuse = nn.Conv2d(1024, 256, 1, bias=False)
        self.face_decoder = OriginalFaceDecoder(ORIGINAL_CLASS_TOKENS[dataset])
        self.features = []
        for name, module in self.backbone.named_modules():
            if name in HOOKED_STAGES[backbone]:
                module.register_forward_hook(
                    lambda m, i, o: self.features.append(o.permute(0, 3, 1, 2) if self.is_swin else o)
                )

    def positional_encoding(self, h, w):
        grid = torch.ones(h, w)
        y, x = (grid.cumsum(0) - 0.5) / h, (grid.cumsum(1) - 0.5) / w
        coords = 2 * torch.stack([x, y], dim=-1) - 1
        coords = 2 * math.pi * (coords @ self.pe_layer.positional_encoding_gaussian_matrix)
        return torch.cat([coords.sin(), coords.cos()], dim=-1).permute(2, 0, 1)

    def forward(self, x):
        self.features.clear()
        self.backbone(x)
        maps = []
        for feature, mlp in zip(self.features, self.linear_c):
            b, _, h, w = feature.shape
            projected = mlp.proj(feature.flatten(2).transpose(1, 2)).permute(0, 2, 1).reshape(b, -1, h, w)
            maps.append(
                F.interpolate(projected, size=self.features[0].shape[2:], mode="bilinear", align_corners=False)
            )
        fused = self.linear_fuse(torch.cat(maps[::-1], dim=1))
        return self.face_decoder(fused, self.positional_encoding(*fused.shape[-2:])[None]), fused


def trained_looking(model: nn.Module, seed: int) -> nn.Module:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if not tensor.is_floating_point():
                continue
            noise = torch.randn(tensor.shape, generator=generator)
            if name.endswith("running_var"):
                tensor.copy_(noise.abs() * 0.5 + 0.5)
            elif tensor.ndim == 1 or "_token" in name or "gaussian" in name:
                tensor.add_(noise * (1.0 if "_token" in name or "gaussian" in name else 0.1))
    return model.eval()


def save_released(model: nn.Module, path) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[80, 200], gamma=0.1)
    state = {
        "epoch": 299,
        "iteration": 10,
        "state_dict_backbone": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
    }
    assert isinstance(state["scheduler"]["milestones"], collections.Counter)
    torch.save(state, path)


@pytest.fixture(scope="module", params=["celebamask_hq", "lapa"])
def released_mobilenet(request, tmp_path_factory):
    torch.manual_seed(0)
    original = trained_looking(OriginalSegFace("mobilenet_v3_large", request.param), seed=1)
    path = tmp_path_factory.mktemp(request.param) / "model_299.pt"
    save_released(original, path)
    variant = "mobilenet_celeba_512" if request.param == "celebamask_hq" else None
    return original, path, request.param, variant


@torch.no_grad()
def test_converted_checkpoint_reproduces_the_original_forward(released_mobilenet, tmp_path):
    original, path, dataset, variant = released_mobilenet
    if variant is None:  # no released mobilenet LaPa model: convert the state dict directly
        config = SegFaceConfig.for_dataset(dataset, backbone="mobilenet_v3_large")
        model = SegFaceForSemanticSegmentation(config).eval()
        model.load_state_dict(convert_state_dict(load_original_checkpoint(path), "mobilenet_v3_large", dataset))
    else:
        model = convert_checkpoint(path, variant, tmp_path).eval()
        assert (tmp_path / "model.safetensors").exists() and (tmp_path / "config.json").exists()
    pixel_values = torch.randn(2, 3, 128, 128)
    reference_logits, reference_fused = original(pixel_values)
    outputs = model(pixel_values, output_hidden_states=True)
    torch.testing.assert_close(outputs.fused_hidden_state, reference_fused, rtol=1e-5, atol=1e-5)
    for ours, reference in zip(outputs.hidden_states, original.features):
        torch.testing.assert_close(ours, reference)
    torch.testing.assert_close(outputs.logits, reference_logits, rtol=1e-4, atol=1e-5)
    assert model.config.num_labels == len(ORIGINAL_CLASS_TOKENS[dataset])


def test_class_tokens_are_stacked_in_the_explicit_order(released_mobilenet):
    original, path, dataset, _ = released_mobilenet
    converted = convert_state_dict(load_original_checkpoint(path), "mobilenet_v3_large", dataset)
    queries = converted["decoder.class_queries.weight"]
    for index, name in enumerate(ORIGINAL_CLASS_TOKENS[dataset]):
        assert torch.equal(queries[index], getattr(original.face_decoder, f"{name}_token").weight[0]), name
    assert torch.equal(
        converted["positional_embedding.gaussian_matrix"], original.pe_layer.positional_encoding_gaussian_matrix
    )


def test_counter_pickle_loads_with_the_safe_loader(released_mobilenet):
    original, path, _, _ = released_mobilenet
    state_dict = load_original_checkpoint(path)
    assert state_dict.keys() == original.state_dict().keys()
    assert collections.Counter in torch.serialization.get_safe_globals()


def test_every_key_must_be_consumed(released_mobilenet):
    original, path, dataset, _ = released_mobilenet
    state_dict = load_original_checkpoint(path)
    with pytest.raises(ValueError, match=r"Unconverted keys .*face_decoder\.extra_head\.weight"):
        convert_state_dict(
            {**state_dict, "face_decoder.extra_head.weight": torch.zeros(1)}, "mobilenet_v3_large", dataset
        )
    missing = {k: v for k, v in state_dict.items() if k != "face_decoder.hair_token.weight"}
    with pytest.raises(ValueError, match=r"Missing class tokens .*face_decoder\.hair_token\.weight"):
        convert_state_dict(missing, "mobilenet_v3_large", dataset)


@pytest.mark.parametrize("backbone", list(TORCHVISION_BACKBONE_CHANNELS))
@pytest.mark.parametrize("dataset", ["celebamask_hq", "helen"])
def test_key_mapping_covers_every_backbone(backbone, dataset):
    """Built on the meta device: key sets and shapes only. Swin's final norm (`backbone.1.*`) is the only drop."""
    with torch.device("meta"):
        original = OriginalSegFace(backbone, dataset)
        model = SegFaceForSemanticSegmentation(SegFaceConfig.for_dataset(dataset, backbone=backbone))
    original_state = original.state_dict()
    converted = convert_state_dict(original_state, backbone, dataset)
    expected = model.state_dict()
    assert converted.keys() == expected.keys()
    assert all(converted[k].shape == expected[k].shape for k in expected)
    dropped = len(original_state) - len(ORIGINAL_CLASS_TOKENS[dataset]) + 1 - len(converted)
    assert dropped == (2 if backbone.startswith("swin") else 0)
    assert detect_backbone(original_state) == backbone


def test_released_variants_resolve_to_their_configs(caplog):
    assert len(RELEASED_VARIANTS) == 14
    for variant, (backbone, dataset, size) in RELEASED_VARIANTS.items():
        config = resolve_config(variant, {})  # nothing to detect: the table decides
        assert config.backbone_config == {"library": "torchvision", "name": backbone}
        assert config.image_size == size and config.num_labels == (19 if dataset == "celebamask_hq" else 11)
    assert RELEASED_VARIANTS["swinb_lapa_448"] == ("swin_b", "lapa", 448)
    # a ConvNeXt-S file in the convnext folder (the original "convnext_tiny" option) converts as what it holds
    with torch.device("meta"):
        small = OriginalSegFace("convnext_small", "celebamask_hq").state_dict()
    with caplog.at_level(logging.WARNING):
        config = resolve_config("convnext_celeba_512", small)
    assert (
        config.backbone_config["name"] == "convnext_small"
        and "convnext_small backbone, not convnext_base" in caplog.text
    )
    with pytest.raises(ValueError, match="Unknown SegFace variant 'swinb_celeba_1024'"):
        resolve_config("swinb_celeba_1024", {})


def test_wrong_files_raise(tmp_path):
    torch.save({"state_dict_backbone": {"x": 1}}, tmp_path / "bad.pt")
    with pytest.raises(ValueError, match="holds no SegFace state dict"):
        load_original_checkpoint(tmp_path / "bad.pt")


@pytest.mark.parametrize("released_mobilenet", ["celebamask_hq"], indirect=True)
def test_command_line(released_mobilenet, tmp_path):
    _, path, _, variant = released_mobilenet
    main(["--checkpoint", str(path), "--variant", variant, "--output_dir", str(tmp_path)])
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    assert SegFaceConfig.from_pretrained(tmp_path).id2label[8] == "left_eye"
