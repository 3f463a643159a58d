"""Converter tests on synthetic checkpoints in the authors' layouts.

`OriginalPartFViT` rebuilds the released module tree (so its state dict has the original key names) and computes the
original forward with plain torch ops: one `grid_sample` per landmark on the transposed offset grid, a square mosaic
and the `(h p1) (w p2) -> (h w) (p1 p2 c)` re-cut, `to_qkv` attention scaled by `dim ** -0.5`."""

import argparse
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from faceformers.models.part_fvit import PartFViTForFaceRecognition, PartFViTImageProcessor, PartFViTModel
from faceformers.models.part_fvit.convert_part_fvit_to_hf import convert_checkpoint, main


IMAGE, PATCH, NUM_PATCHES, DIM, DEPTH, HEADS, HEAD_DIM, MLP, NUM_CLASSES = 32, 4, 16, 32, 2, 2, 12, 64, 7
BLOCKS = [  # kernel, expansion, out, se, activation, stride
    [3, 16, 8, False, "relu", 1],
    [3, 24, 16, True, "hardswish", 2],
    [5, 32, 16, True, "hardswish", 2],
    [3, 32, 16, True, "relu", 1],
]
OVERRIDES = {"image_size": IMAGE, "landmark_block_config": BLOCKS}


class HardSwish(nn.Module):
    def forward(self, x):
        return x * F.relu6(x + 3) / 6


class SqueezeExcite(nn.Module):
    def __init__(self, channels):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(channels, channels // 4, bias=False), nn.ReLU(), nn.Linear(channels // 4, channels, bias=False)
        )

    def forward(self, x):
        return x * (F.relu6(self.fc(x.mean((2, 3))) + 3) / 6)[:, :, None, None]


class Bottleneck(nn.Module):
    def __init__(self, inp, kernel, exp, out, se, activation, stride):
        super().__init__()
        act = nn.ReLU if activation == "relu" else HardSwish
        self.residual = stride == 1 and inp == out
        self.conv = nn.Sequential(
            nn.Conv2d(inp, exp, 1, bias=False),
            nn.BatchNorm2d(exp),
            act(),
            nn.Conv2d(exp, exp, kernel, stride, kernel // 2, groups=exp, bias=False),
            nn.BatchNorm2d(exp),
            SqueezeExcite(exp) if se else nn.Identity(),
            act(),
            nn.Conv2d(exp, out, 1, bias=False),
            nn.BatchNorm2d(out),
        )

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class LandmarkCNN(nn.Module):
    def __init__(self):
        super().__init__()
        layers, inp = [nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8), HardSwish())], 8
        for kernel, exp, out, se, activation, stride in BLOCKS:
            layers.append(Bottleneck(inp, kernel, exp, out, se, activation, stride))
            inp = out
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x)


class Residual(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return x + self.fn(x)


class PreNorm(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.norm, self.fn = nn.LayerNorm(DIM), fn

    def forward(self, x):
        return self.fn(self.norm(x))


class Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.to_qkv = nn.Linear(DIM, 3 * HEADS * HEAD_DIM, bias=False)
        self.to_out = nn.Sequential(nn.Linear(HEADS * HEAD_DIM, DIM), nn.Dropout(0.1))

    def forward(self, x):
        b, n, _ = x.shape
        q, k, v = (t.view(b, n, HEADS, HEAD_DIM).permute(0, 2, 1, 3) for t in self.to_qkv(x).chunk(3, dim=-1))
        attention = (q @ k.transpose(-1, -2) * DIM**-0.5).softmax(-1)
        return self.to_out((attention @ v).permute(0, 2, 1, 3).reshape(b, n, HEADS * HEAD_DIM))


class FeedForward(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(DIM, MLP), nn.GELU(), nn.Dropout(0.1), nn.Linear(MLP, DIM), nn.Dropout(0.1))

    def forward(self, x):
        return self.net(x)


class OriginalPartFViT(nn.Module):
    """Key layout of `ViT_face_landmark_patch8(with_land=...)`; eval-mode forward of the original algorithm."""

    def __init__(self, with_land=True):
        super().__init__()
        self.with_land = with_land
        if with_land:
            self.stn = LandmarkCNN()
            self.output_layer = nn.Sequential(nn.Dropout(0.5), nn.Linear(16, 2 * NUM_PATCHES))
        self.pos_embedding = nn.Parameter(torch.randn(1, NUM_PATCHES + 1, DIM))
        self.patch_to_embedding = nn.Linear(3 * PATCH * PATCH, DIM)
        self.cls_token = nn.Parameter(torch.randn(1, 1, DIM))
        self.transformer = nn.Module()
        self.transformer.layers = nn.ModuleList(
            [nn.ModuleList([Residual(PreNorm(Attention())), Residual(PreNorm(FeedForward()))]) for _ in range(DEPTH)]
        )
        self.mlp_head = nn.Sequential(nn.LayerNorm(DIM))
        self.loss = nn.Module()
        self.loss.weight = nn.Parameter(torch.randn(NUM_CLASSES, DIM))
        with torch.no_grad():  # "trained" weights: nothing left at its initial value
            for name, tensor in self.state_dict().items():
                if name.endswith("running_var"):
                    tensor.uniform_(0.5, 2.0)
                elif tensor.is_floating_point():
                    tensor.add_(torch.randn_like(tensor) * 0.2)

    def landmarks(self, x):
        theta = self.output_layer(self.stn(x).mean(dim=(-2, -1)))
        theta = (theta - theta.min(1, keepdim=True)[0]) / (
            theta.max(1, keepdim=True)[0] - theta.min(1, keepdim=True)[0]
        )
        return (theta * (IMAGE - 1)).view(x.shape[0], NUM_PATCHES, 2)

    @staticmethod
    def tokens(x, theta):
        offsets = torch.arange(-PATCH / 2, PATCH / 2)
        first, second = torch.meshgrid(offsets, offsets, indexing="ij")
        grid = torch.stack([first, second], dim=0).transpose(0, 2).transpose(0, 1)  # the original's transposes
        patches = torch.stack(
            [
                F.grid_sample(x, (grid[None] + theta[:, k, None, None]) / (IMAGE / 2) - 1, align_corners=False)
                for k in range(NUM_PATCHES)
            ],
            dim=2,
        )  # (B, C, N, p, p)
        b, c, row = x.shape[0], x.shape[1], int(math.sqrt(NUM_PATCHES))
        mosaic = (
            patches.reshape(b, c, row, row, PATCH, PATCH)
            .permute(0, 1, 2, 4, 3, 5)
            .reshape(b, c, row * PATCH, row * PATCH)
        )
        return mosaic.reshape(b, c, row, PATCH, row, PATCH).permute(0, 2, 4, 3, 5, 1).reshape(b, row * row, -1)

    def forward(self, x, theta=None):
        theta = self.landmarks(x) if theta is None else theta
        tokens = self.tokens(x, theta)
        h = self.patch_to_embedding(tokens)
        h = torch.cat([self.cls_token.expand(len(h), -1, -1), h], dim=1) + self.pos_embedding
        for attention, feed_forward in self.transformer.layers:
            h = feed_forward(attention(h))
        embedding = self.mlp_head(h[:, 0])
        logits = F.linear(F.normalize(embedding), F.normalize(self.loss.weight)) * 64
        return {"embeddings": embedding, "landmarks": theta, "patches": tokens, "tokens": h, "logits": logits}


def _assert_matches(model, reference, images, landmarks=None):
    backbone = model.part_fvit if isinstance(model, PartFViTForFaceRecognition) else model
    with torch.no_grad():
        expected = reference.eval()(images, landmarks)
        outputs = backbone.eval()(images, output_hidden_states=True)
    torch.testing.assert_close(outputs.landmarks, expected["landmarks"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(outputs.patches, expected["patches"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs.embeddings, expected["embeddings"], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(outputs.hidden_states[-1], expected["tokens"], rtol=1e-4, atol=1e-5)
    return expected


@pytest.fixture(scope="module")
def original():
    torch.manual_seed(0)
    return OriginalPartFViT().eval()


@pytest.fixture(scope="module")
def released(original, tmp_path_factory):
    path = tmp_path_factory.mktemp("released") / "Backbone_VIT_land_8_checkpoint.pth"
    torch.save({"module." + k: v for k, v in original.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def lafs(tmp_path_factory):
    torch.manual_seed(1)
    teacher, student = OriginalPartFViT(with_land=False), OriginalPartFViT(with_land=False)
    head = {
        "head.mlp.0.weight": torch.randn(8, DIM),
        "head.last_layer.weight_g": torch.ones(5, 1),
        "head.last_layer.weight_v": torch.randn(5, 8),
    }
    checkpoint = {
        "student": {
            **{"module.backbone." + k: v for k, v in student.state_dict().items()},
            **{"module." + k: v for k, v in head.items()},
        },
        "teacher": {**{"backbone." + k: v for k, v in teacher.state_dict().items()}, **head},
        "optimizer": {"state": {}, "param_groups": [{"lr": 1e-4, "params": [0, 1]}]},
        "epoch": 41,
        "args": argparse.Namespace(arch="mynet", patch_size=8, global_crops_scale=(0.4, 1.0), use_fp16=True),
        "dino_loss": {"center": torch.zeros(1, 5)},
        "fp16_scaler": {"scale": 65536.0, "growth_factor": 2.0, "_growth_tracker": 0},
    }
    path = tmp_path_factory.mktemp("lafs") / "checkpoint.pth"
    torch.save(checkpoint, path)
    return path, teacher, student


def test_released_checkpoint_reproduces_the_original(original, released, tmp_path):
    model = convert_checkpoint(released, tmp_path, head_dim=HEAD_DIM, config_overrides=OVERRIDES)
    assert isinstance(model, PartFViTModel) and model.config.attention_scale == "model_width"
    assert (model.config.num_attention_heads, model.config.num_patches, model.config.patch_size) == (
        HEADS,
        NUM_PATCHES,
        PATCH,
    )
    assert (tmp_path / "model.safetensors").exists()
    processor = PartFViTImageProcessor.from_pretrained(tmp_path)
    assert processor.size == {"height": IMAGE, "width": IMAGE}
    _assert_matches(model, original, torch.rand(3, 3, IMAGE, IMAGE) - 0.5)


def test_classifier_and_folded_head_dim_scaling(original, released, tmp_path):
    model = convert_checkpoint(
        released,
        tmp_path,
        with_classifier=True,
        attention_scale="head_dim",
        head_dim=HEAD_DIM,
        config_overrides=OVERRIDES,
    )
    assert isinstance(model, PartFViTForFaceRecognition) and model.config.num_labels == NUM_CLASSES
    qkv = original.transformer.layers[0][0].fn.fn.to_qkv.weight
    torch.testing.assert_close(
        model.part_fvit.layers[0].attention.q_proj.weight, qkv[: HEADS * HEAD_DIM] * math.sqrt(HEAD_DIM / DIM)
    )
    torch.testing.assert_close(model.part_fvit.layers[0].attention.v_proj.weight, qkv[2 * HEADS * HEAD_DIM :])
    images = torch.rand(2, 3, IMAGE, IMAGE) * 2 - 1
    expected = _assert_matches(model, original, images)
    with torch.no_grad():
        torch.testing.assert_close(model(images).logits, expected["logits"], rtol=1e-4, atol=1e-4)


def test_lafs_teacher_with_the_stage1_landmark_cnn(original, released, lafs, tmp_path):
    path, teacher, _ = lafs
    model = convert_checkpoint(
        path, tmp_path, landmark_checkpoint=released, head_dim=HEAD_DIM, config_overrides=OVERRIDES
    )
    combined = OriginalPartFViT()
    combined.load_state_dict({**original.state_dict(), **teacher.state_dict()})  # stn from stage 1, ViT from LAFS
    _assert_matches(model, combined, torch.rand(2, 3, IMAGE, IMAGE) - 0.5)


def test_lafs_student_branch_and_random_landmark_cnn(lafs, tmp_path):
    path, _, student = lafs
    with pytest.raises(ValueError, match="has no landmark CNN .* pass --landmark_checkpoint"):
        convert_checkpoint(path, tmp_path / "a", branch="student", head_dim=HEAD_DIM, config_overrides=OVERRIDES)
    model = convert_checkpoint(
        path, tmp_path / "b", branch="student", random_landmark_net=True, head_dim=HEAD_DIM, config_overrides=OVERRIDES
    )
    images = torch.rand(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        landmarks = model(images).landmarks
    _assert_matches(model, student, images, landmarks)
    with pytest.raises(ValueError, match="--with_classifier needs `loss.weight`"):
        convert_checkpoint(
            path,
            tmp_path / "c",
            random_landmark_net=True,
            with_classifier=True,
            head_dim=HEAD_DIM,
            config_overrides=OVERRIDES,
        )


def test_every_key_must_be_consumed(original, tmp_path):
    state_dict = {"module." + k: v for k, v in original.state_dict().items()}
    state_dict["module.transformer.layers.0.0.fn.fn.extra.weight"] = torch.zeros(1)
    torch.save(state_dict, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"Unconverted keys .*transformer.layers.0.0.fn.fn.extra.weight"):
        convert_checkpoint(tmp_path / "extra.pth", tmp_path / "out", head_dim=HEAD_DIM, config_overrides=OVERRIDES)


def test_clear_errors_for_wrong_inputs(original, released, tmp_path):
    torch.save({"foo.weight": torch.zeros(1)}, tmp_path / "unknown.pth")
    with pytest.raises(ValueError, match="Unrecognised Part fViT checkpoint layout"):
        convert_checkpoint(tmp_path / "unknown.pth", tmp_path / "a")
    with pytest.raises(ValueError, match="differ from the released layout; pass `landmark_block_config`"):
        convert_checkpoint(released, tmp_path / "b", head_dim=HEAD_DIM, config_overrides={"image_size": IMAGE})
    with pytest.raises(ValueError, match="not a multiple of head_dim 64"):
        convert_checkpoint(released, tmp_path / "c", config_overrides=OVERRIDES)
    with pytest.raises(ValueError, match="`branch` must be 'teacher' or 'student'"):
        convert_checkpoint(released, tmp_path / "d", branch="ema")


def test_command_line(released, tmp_path, monkeypatch):
    import faceformers.models.part_fvit.convert_part_fvit_to_hf as converter

    real = converter.convert_checkpoint
    monkeypatch.setattr(
        converter,
        "convert_checkpoint",
        lambda *a, **kw: real(*a, **{**kw, "config_overrides": {**kw["config_overrides"], **OVERRIDES}}),
    )
    main(
        [
            "--checkpoint",
            str(released),
            "--output_dir",
            str(tmp_path),
            "--head_dim",
            str(HEAD_DIM),
            "--image_size",
            str(IMAGE),
            "--with_classifier",
        ]
    )
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
