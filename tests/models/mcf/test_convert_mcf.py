"""Converter tests on synthetic checkpoints in the authors' key layout, built from timm modules (which share MCF's
key names), checked against an independent re-computation of the original forward pass."""

from functools import partial

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block, VisionTransformer
from torch import nn

from faceformers import MCFForPreTraining, MCFModel
from faceformers.models.mcf.convert_mcf_to_hf import convert_checkpoint, main


DIM, DEPTH, HEADS, IMAGE, PATCH = 32, 2, 4, 32, 8
DECODER_DIM, DECODER_HEADS, MLP_DIM, OUT_DIM = 16, 2, 64, 16
NUM_PATCHES = (IMAGE // PATCH) ** 2


def timm_vit(num_classes: int = 0) -> VisionTransformer:
    return VisionTransformer(
        img_size=IMAGE, patch_size=PATCH, embed_dim=DIM, depth=DEPTH, num_heads=HEADS, mlp_ratio=2.0, qkv_bias=True,
        norm_layer=partial(nn.LayerNorm, eps=1e-6), num_classes=num_classes,
    )


def moco_mlp(in_dim: int, out_dim: int, last_bn: bool) -> nn.Sequential:
    layers = [nn.Linear(in_dim, MLP_DIM, bias=False), nn.BatchNorm1d(MLP_DIM), nn.ReLU(), nn.Linear(MLP_DIM, out_dim, bias=False)]
    return nn.Sequential(*layers, *([nn.BatchNorm1d(out_dim, affine=False)] if last_bn else []))


class OriginalLayout(nn.Module):
    """Holds tensors under the released checkpoint's names; `reference_forward` recomputes the original algorithm."""

    def __init__(self):
        super().__init__()
        self.online_encoder, self.target_encoder = timm_vit(), timm_vit()
        self.online_encoder.fc = moco_mlp(DIM, OUT_DIM, True)
        self.target_encoder.fc = moco_mlp(DIM, OUT_DIM, True)
        self.predictor = moco_mlp(OUT_DIM, OUT_DIM, False)
        self.decoder_embed = nn.Linear(DIM, DECODER_DIM)
        self.mask_token = nn.Parameter(torch.randn(1, 1, DECODER_DIM))
        self.decoder_pos_embed = nn.Parameter(torch.randn(1, NUM_PATCHES + 1, DECODER_DIM))
        norm = partial(nn.LayerNorm, eps=1e-6)
        self.decoder_blocks = nn.ModuleList([Block(DECODER_DIM, DECODER_HEADS, 2.0, qkv_bias=True, norm_layer=norm)])
        self.decoder_norm = norm(DECODER_DIM)
        self.decoder_pred = nn.Linear(DECODER_DIM, PATCH * PATCH * 3)
        self.perceptual_loss = nn.Module()
        self.perceptual_loss.model = timm_vit(num_classes=10)
        with torch.no_grad():  # "trained" weights: nothing left at its initial value
            for name, tensor in self.state_dict().items():
                if tensor.is_floating_point():
                    tensor.add_(torch.randn_like(tensor) * (0.5 if "running_var" not in name else 0.1)).abs_() if "running_var" in name else tensor.add_(torch.randn_like(tensor) * 0.1)

    def encode(self, vit, images, noise):
        x = vit.patch_embed(images) + vit.pos_embed[:, 1:]
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        keep = int(NUM_PATCHES * 0.25)
        x = torch.gather(x, 1, ids_shuffle[:, :keep, None].repeat(1, 1, DIM))
        x = torch.cat([(vit.cls_token + vit.pos_embed[:, :1]).repeat(len(x), 1, 1), x], dim=1)
        for block in vit.blocks:
            x = block(x)
        mask = torch.ones(len(x), NUM_PATCHES)
        mask[:, :keep] = 0
        return vit.norm(x), torch.gather(mask, 1, ids_restore), ids_restore

    def reference_forward(self, images, noise, target_noise, momentum=0.99):
        latent, mask, ids_restore = self.encode(self.online_encoder, images, noise)
        x = self.decoder_embed(latent)
        tokens = torch.cat([x[:, 1:], self.mask_token.repeat(len(x), NUM_PATCHES + 1 - x.shape[1], 1)], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].repeat(1, 1, DECODER_DIM))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        pred = self.decoder_pred(self.decoder_norm(x))[:, 1:]
        query = self.predictor(self.online_encoder.fc(latent[:, 0]))
        with torch.no_grad():
            for online, target in zip(self.online_encoder.parameters(), self.target_encoder.parameters()):
                target.mul_(momentum).add_(online * (1 - momentum))
        key = self.target_encoder.fc(self.encode(self.target_encoder, images, target_noise)[0][:, 0])
        logits = F.normalize(query, dim=1) @ F.normalize(key, dim=1).T / 0.2
        contrastive = F.cross_entropy(logits, torch.arange(len(images))) * 0.4
        grid = IMAGE // PATCH
        pred_images = pred.reshape(-1, grid, grid, PATCH, PATCH, 3).permute(0, 5, 1, 3, 2, 4).reshape(-1, 3, IMAGE, IMAGE)
        teacher = self.perceptual_loss.model
        feats = [teacher.forward_intermediates(x, norm=False, output_fmt="NLC", return_prefix_tokens=True, intermediates_only=True)
                 for x in (pred_images, images)]
        perceptual = 0
        for (p_patch, p_cls), (t_patch, t_cls) in zip(*feats):
            p, t = torch.cat([p_cls, p_patch], 1), torch.cat([t_cls, t_patch], 1)
            perceptual = perceptual + F.mse_loss(F.normalize(p, dim=1), F.normalize(t, dim=1))
        return {"logits": pred, "mask": mask, "query_embeds": query, "key_embeds": key,
                "contrastive_loss": contrastive, "perceptual_loss": perceptual, "loss": 1000 * perceptual + contrastive}


@pytest.fixture(scope="module")
def original():
    torch.manual_seed(0)
    return OriginalLayout().eval()


@pytest.fixture(scope="module")
def checkpoint(original, tmp_path_factory):
    path = tmp_path_factory.mktemp("original") / "checkpoint.pth"
    torch.save({"model": original.state_dict(), "epoch": 15}, path)
    return path


CONVERT_KWARGS = dict(num_attention_heads=HEADS, decoder_num_attention_heads=DECODER_HEADS)


def test_pretraining_checkpoint_reproduces_the_original_forward(original, checkpoint, tmp_path):
    model = convert_checkpoint(checkpoint, tmp_path, pretraining=True, **CONVERT_KWARGS)
    assert isinstance(model, MCFForPreTraining) and model.config.decoder_num_hidden_layers == 1
    assert model.perceptual_teacher.config.num_hidden_layers == DEPTH and (tmp_path / "model.safetensors").exists()
    images = torch.randn(3, 3, IMAGE, IMAGE)
    noise, target_noise = torch.rand(3, NUM_PATCHES), torch.rand(3, NUM_PATCHES)
    reference = OriginalLayout().eval()
    reference.load_state_dict(original.state_dict())
    expected = reference.reference_forward(images, noise, target_noise)
    model.update_momentum_encoder(0.99)
    with torch.no_grad():
        outputs = model(images, noise=noise, momentum_noise=target_noise)
    for key, value in expected.items():
        torch.testing.assert_close(outputs[key], value.detach(), rtol=1e-4, atol=1e-5, msg=key)


@pytest.mark.parametrize("encoder", ["online", "target"])
def test_encoder_export_matches_timm(original, checkpoint, tmp_path, encoder):
    model = convert_checkpoint(checkpoint, tmp_path, encoder=encoder, **CONVERT_KWARGS)
    assert isinstance(model, MCFModel)
    vit = getattr(original, f"{encoder}_encoder")
    images = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(model(images).last_hidden_state, vit.forward_features(images), rtol=1e-4, atol=1e-5)


def test_encoder_only_and_ddp_prefixed_files(original, tmp_path):
    encoder = {k: v for k, v in original.online_encoder.state_dict().items() if not k.startswith("fc.")}
    torch.save({"module." + k: v for k, v in encoder.items()}, tmp_path / "ddp.pth")
    model = convert_checkpoint(tmp_path / "ddp.pth", tmp_path / "out", **CONVERT_KWARGS)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        torch.testing.assert_close(model(images).pooler_output, original.online_encoder.forward_features(images)[:, 0], rtol=1e-4, atol=1e-5)


def test_mocov3_teacher_replaces_the_checkpoint_teacher(original, checkpoint, tmp_path):
    teacher = timm_vit(num_classes=10)
    moco = {"module.base_encoder." + k: v for k, v in teacher.state_dict().items()}
    moco["module.predictor.0.weight"] = torch.randn(MLP_DIM, OUT_DIM)
    moco["module.momentum_encoder.cls_token"] = torch.randn(1, 1, DIM)
    torch.save({"state_dict": moco, "epoch": 300}, tmp_path / "moco.pth")
    model = convert_checkpoint(checkpoint, tmp_path / "out", pretraining=True, teacher_checkpoint=tmp_path / "moco.pth", **CONVERT_KWARGS)
    images = torch.randn(2, 3, IMAGE, IMAGE)
    with torch.no_grad():
        features = model.perceptual_teacher(images).last_hidden_state
    torch.testing.assert_close(features, teacher.eval().forward_features(images), rtol=1e-4, atol=1e-5)
    assert bool(model.has_perceptual_teacher_weights)


def test_every_key_must_be_consumed(original, tmp_path):
    state_dict = original.state_dict()
    state_dict["online_encoder.blocks.0.attn.extra.weight"] = torch.zeros(1)
    torch.save({"model": state_dict}, tmp_path / "extra.pth")
    with pytest.raises(ValueError, match=r"Unconverted keys .*online_encoder.blocks.0.attn.extra.weight"):
        convert_checkpoint(tmp_path / "extra.pth", tmp_path / "out", pretraining=True, **CONVERT_KWARGS)


def test_clear_errors_for_wrong_inputs(original, checkpoint, tmp_path):
    torch.save({"model": {"foo.weight": torch.zeros(1)}}, tmp_path / "unknown.pth")
    with pytest.raises(ValueError, match="Unrecognised MCF checkpoint layout"):
        convert_checkpoint(tmp_path / "unknown.pth", tmp_path / "a")
    torch.save(original.online_encoder.state_dict(), tmp_path / "encoder.pth")
    with pytest.raises(ValueError, match="--pretraining needs a pre-training checkpoint"):
        convert_checkpoint(tmp_path / "encoder.pth", tmp_path / "b", pretraining=True)
    no_teacher = {k: v for k, v in original.state_dict().items() if not k.startswith("perceptual_loss.")}
    torch.save({"model": no_teacher}, tmp_path / "no_teacher.pth")
    with pytest.raises(ValueError, match="no perceptual teacher; pass --teacher_checkpoint"):
        convert_checkpoint(tmp_path / "no_teacher.pth", tmp_path / "c", pretraining=True, **CONVERT_KWARGS)


def test_command_line(checkpoint, tmp_path):
    main(["--checkpoint", str(checkpoint), "--output_dir", str(tmp_path), "--num_attention_heads", str(HEADS)])
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= {p.name for p in tmp_path.iterdir()}
