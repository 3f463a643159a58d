"""The converter against an independent forward of an OpenAI-CLIP-layout state dict (fused `in_proj` attention through
`torch.nn.MultiheadAttention`, LND layout, argmax pooling), on a tiny random checkpoint in FaRL's released format."""

import pytest
import torch
import torch.nn.functional as F

from faceformers import FaRLForPreTraining, FaRLModel
from faceformers.models.farl.convert_farl_to_hf import convert_checkpoint, convert_state_dict, main


WIDTH, TEXT_WIDTH, LAYERS, PATCH, IMAGE, CONTEXT, VOCAB, EMBED = 64, 64, 2, 8, 32, 16, 300, 32


def random_openai_clip_state_dict(seed: int = 0, mim: bool = False) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)

    def rand(*shape, scale=0.1):
        return torch.randn(shape, generator=generator) * scale

    def blocks(prefix: str, width: int) -> dict[str, torch.Tensor]:
        tensors = {}
        for i in range(LAYERS):
            p = f"{prefix}{i}."
            tensors.update({
                p + "attn.in_proj_weight": rand(3 * width, width), p + "attn.in_proj_bias": rand(3 * width),
                p + "attn.out_proj.weight": rand(width, width), p + "attn.out_proj.bias": rand(width),
                p + "ln_1.weight": 1 + rand(width), p + "ln_1.bias": rand(width),
                p + "ln_2.weight": 1 + rand(width), p + "ln_2.bias": rand(width),
                p + "mlp.c_fc.weight": rand(4 * width, width), p + "mlp.c_fc.bias": rand(4 * width),
                p + "mlp.c_proj.weight": rand(width, 4 * width), p + "mlp.c_proj.bias": rand(width),
            })  # fmt: skip
        return tensors

    grid = IMAGE // PATCH
    state = {
        "visual.class_embedding": rand(WIDTH), "visual.positional_embedding": rand(grid * grid + 1, WIDTH),
        "visual.conv1.weight": rand(WIDTH, 3, PATCH, PATCH), "visual.proj": rand(WIDTH, EMBED),
        "visual.ln_pre.weight": 1 + rand(WIDTH), "visual.ln_pre.bias": rand(WIDTH),
        "visual.ln_post.weight": 1 + rand(WIDTH), "visual.ln_post.bias": rand(WIDTH),
        **blocks("visual.transformer.resblocks.", WIDTH),
        "token_embedding.weight": rand(VOCAB, TEXT_WIDTH), "positional_embedding": rand(CONTEXT, TEXT_WIDTH),
        **blocks("transformer.resblocks.", TEXT_WIDTH),
        "ln_final.weight": 1 + rand(TEXT_WIDTH), "ln_final.bias": rand(TEXT_WIDTH),
        "text_projection": rand(TEXT_WIDTH, EMBED), "logit_scale": torch.tensor(3.2),
    }  # fmt: skip
    if mim:
        state.update({
            "visual.mask_token": rand(WIDTH), **blocks("visual.lm_transformer.resblocks.", WIDTH),
            "visual.ln_lm.weight": 1 + rand(WIDTH), "visual.ln_lm.bias": rand(WIDTH),
            "visual.lm_head.weight": rand(64, WIDTH), "visual.lm_head.bias": rand(64),
        })  # fmt: skip
    return state


def reference_blocks(x: torch.Tensor, state: dict, prefix: str, causal: bool) -> torch.Tensor:
    """OpenAI CLIP's residual blocks on an LND sequence, with torch's own fused-projection attention."""
    width = x.shape[-1]
    mask = torch.full((x.shape[0], x.shape[0]), float("-inf")).triu(1) if causal else None
    for i in range(LAYERS):
        p = f"{prefix}{i}."
        attention = torch.nn.MultiheadAttention(width, width // 64)
        attention.load_state_dict({k.removeprefix(p + "attn."): v for k, v in state.items() if k.startswith(p + "attn.")})
        h = F.layer_norm(x, (width,), state[p + "ln_1.weight"], state[p + "ln_1.bias"], 1e-5)
        x = x + attention(h, h, h, need_weights=False, attn_mask=mask)[0]
        h = F.layer_norm(x, (width,), state[p + "ln_2.weight"], state[p + "ln_2.bias"], 1e-5)
        h = F.linear(h, state[p + "mlp.c_fc.weight"], state[p + "mlp.c_fc.bias"])
        x = x + F.linear(h * torch.sigmoid(1.702 * h), state[p + "mlp.c_proj.weight"], state[p + "mlp.c_proj.bias"])
    return x


@torch.no_grad()
def reference_embeddings(state: dict, pixel_values: torch.Tensor, text: torch.Tensor) -> tuple[torch.Tensor, ...]:
    x = F.conv2d(pixel_values, state["visual.conv1.weight"], stride=PATCH).flatten(2).transpose(1, 2)
    x = torch.cat([state["visual.class_embedding"].expand(x.shape[0], 1, -1), x], dim=1) + state["visual.positional_embedding"]
    x = F.layer_norm(x, (WIDTH,), state["visual.ln_pre.weight"], state["visual.ln_pre.bias"], 1e-5)
    x = reference_blocks(x.permute(1, 0, 2), state, "visual.transformer.resblocks.", causal=False).permute(1, 0, 2)
    image = F.layer_norm(x[:, 0], (WIDTH,), state["visual.ln_post.weight"], state["visual.ln_post.bias"], 1e-5) @ state["visual.proj"]

    t = state["token_embedding.weight"][text] + state["positional_embedding"][: text.shape[1]]
    t = reference_blocks(t.permute(1, 0, 2), state, "transformer.resblocks.", causal=True).permute(1, 0, 2)
    t = F.layer_norm(t, (TEXT_WIDTH,), state["ln_final.weight"], state["ln_final.bias"], 1e-5)
    text_embeds = t[torch.arange(len(text)), text.argmax(dim=-1)] @ state["text_projection"]
    image, text_embeds = F.normalize(image, dim=-1), F.normalize(text_embeds, dim=-1)
    return image, text_embeds, state["logit_scale"].exp() * image @ text_embeds.t()


def tokens() -> torch.Tensor:
    """SOT ... EOT, zero padding (the EOT id is the largest, as in CLIP's vocabulary)."""
    text = torch.zeros(3, CONTEXT, dtype=torch.long)
    for row, length in enumerate((4, 9, 16)):
        text[row, 0], text[row, length - 1] = VOCAB - 2, VOCAB - 1
        text[row, 1 : length - 1] = torch.arange(1, length - 1) * (row + 3) % 250 + 1
    return text


@pytest.mark.parametrize("half", [False, True], ids=["fp32", "fp16-file"])
def test_converted_checkpoint_reproduces_the_openai_clip_forward(tmp_path, half):
    state = random_openai_clip_state_dict()
    stored = {k: v.half() for k, v in state.items()} if half else state
    torch.save({"state_dict": stored}, tmp_path / "farl.pth")
    main(["--checkpoint", str(tmp_path / "farl.pth"), "--output_dir", str(tmp_path / "hf")])
    model = FaRLModel.from_pretrained(tmp_path / "hf").eval()
    assert model.config.vision_config.num_hidden_layers == LAYERS and model.config.text_config.eos_token_id == VOCAB - 1
    reference_state = {k: v.float() for k, v in stored.items()}

    pixel_values = torch.randn(2, 3, IMAGE, IMAGE, generator=torch.Generator().manual_seed(1))
    text = tokens()
    image, text_embeds, logits = reference_embeddings(reference_state, pixel_values, text)
    with torch.no_grad():
        outputs = model(input_ids=text, attention_mask=(text > 0).long(), pixel_values=pixel_values)
    torch.testing.assert_close(outputs.image_embeds, image, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs.text_embeds, text_embeds, rtol=0, atol=1e-5)
    torch.testing.assert_close(outputs.logits_per_image, logits, rtol=0, atol=1e-4)


def test_mim_keys_are_dropped_or_kept_for_pretraining(tmp_path):
    state = random_openai_clip_state_dict(mim=True)
    assert not any(k.startswith(("mask_token", "mim_")) for k in convert_state_dict(state))
    torch.save({"state_dict": state}, tmp_path / "farl_mim.pth")
    model = convert_checkpoint(tmp_path / "farl_mim.pth", tmp_path / "hf", with_pretraining_head=True)
    assert isinstance(model, FaRLForPreTraining)
    torch.testing.assert_close(model.mask_token.data, state["visual.mask_token"])
    torch.testing.assert_close(model.mim_head.weight.data, state["visual.lm_head.weight"])
    q_weight = state["visual.lm_transformer.resblocks.1.attn.in_proj_weight"][:WIDTH]
    torch.testing.assert_close(model.mim_encoder.layers[1].self_attn.q_proj.weight.data, q_weight)
    assert model.config.image_tokenizer_config["vocab_size"] == 64 and model.config.mim_num_hidden_layers == LAYERS


def test_unknown_keys_and_foreign_files_are_refused(tmp_path):
    state = random_openai_clip_state_dict()
    with pytest.raises(ValueError, match=r"Unconverted keys in the FaRL checkpoint: \['visual.extra'\]"):
        convert_state_dict({**state, "visual.extra": torch.zeros(1)})
    torch.save({"model": {"encoder.weight": torch.zeros(2)}}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="holds no FaRL state dict"):
        convert_checkpoint(tmp_path / "other.pth", tmp_path / "out")
