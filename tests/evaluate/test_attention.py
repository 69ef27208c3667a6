"""Cross-attention capture on a tiny Stable Diffusion built from configs."""

from __future__ import annotations

import numpy as np
import pytest

from alignscope.evaluate.attention import (
    attention_maps,
    capture_cross_attention,
    cross_attention_names,
    overlay,
    token_positions,
)

torch = pytest.importorskip("torch")
diffusers = pytest.importorskip("diffusers")


@pytest.fixture
def pipe(tiny_sd_dir):
    return diffusers.StableDiffusionPipeline.from_pretrained(tiny_sd_dir)


def _generate(pipe):
    return pipe(
        "a photo of a cat",
        num_inference_steps=3,
        height=16,
        width=16,
        generator=torch.Generator().manual_seed(5),
        output_type="np",
    ).images


def test_maps_are_token_distributions_and_the_model_is_unchanged(pipe):
    before_types = {k: type(v) for k, v in pipe.unet.attn_processors.items()}
    reference = _generate(pipe)
    image, maps, store = attention_maps(
        pipe, "a photo of a cat", ["cat", "photo"], steps=3, resolution=4, seed=5
    )
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8
    # before averaging: every query pixel's probabilities over the 32 tokens sum to one
    assert store.max_row_sum_error < 1e-5
    averaged = store.maps()
    tokens = pipe.tokenizer.model_max_length
    assert averaged.shape == (1, tokens, 4, 4)
    np.testing.assert_allclose(averaged.sum(axis=1), 1.0, atol=1e-5)
    # 3 steps x (down, mid, up) cross-attention layers at 4 x 4 were averaged
    assert store.count == 3 * len(cross_attention_names(pipe.unet))
    cat = token_positions(pipe.tokenizer, "a photo of a cat", "cat")
    np.testing.assert_allclose(maps["cat"], averaged[0, cat].mean(axis=0), rtol=1e-6)
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == before_types
    np.testing.assert_array_equal(_generate(pipe), reference)


def _double(linear):
    """A linear layer's weight and bias (None when it has none) in float64."""
    bias = None if linear.bias is None else linear.bias.detach().double()
    return linear.weight.detach().double(), bias


def _reference_maps(calls, side):
    """Cross-attention probabilities from their definition, in float64: softmax over tokens of
    (h W_q)(c W_k)^T / sqrt(head dim) per head, averaged over heads, then over every recorded
    layer whose queries form a side x side map. Returns (batch, tokens, side, side)."""
    total, count = None, 0
    for attn, hidden, context in calls:
        if hidden.shape[1] != side * side:
            continue
        # the plain attention of SD's transformer blocks: no extra norms on these inputs
        assert attn.group_norm is None and attn.spatial_norm is None and not attn.norm_cross
        with torch.no_grad():
            q = torch.nn.functional.linear(hidden.double(), *_double(attn.to_q))
            k = torch.nn.functional.linear(context.double(), *_double(attn.to_k))
        b, n, dim = q.shape
        heads = attn.heads
        q = q.reshape(b, n, heads, dim // heads).transpose(1, 2)
        k = k.reshape(b, k.shape[1], heads, dim // heads).transpose(1, 2)
        probs = torch.softmax(q @ k.transpose(-1, -2) / np.sqrt(dim // heads), dim=-1)
        maps = probs.mean(dim=1).transpose(1, 2).reshape(b, -1, side, side).numpy()
        total = maps if total is None else total + maps
        count += 1
    assert count > 0
    return total / count


def test_guidance_records_the_conditional_half(pipe):
    """With classifier-free guidance the batch is [uncond, cond]: the maps kept are the
    conditional half's, recomputed here from the inputs of every cross-attention layer (seen
    through forward hooks, outside alignscope's recorder); without guidance they are the same
    after one step from the same noise."""
    calls = []

    def grab(module, args, kwargs):
        calls.append((module, args[0].detach(), kwargs["encoder_hidden_states"].detach()))

    hooks = [
        m.register_forward_pre_hook(grab, with_kwargs=True)
        for m in pipe.unet.modules()
        if getattr(m, "is_cross_attention", False)
    ]
    try:
        _, with_cfg, _ = attention_maps(
            pipe, "a photo of a cat", ["cat"], steps=1, guidance=7.5, resolution=4, seed=2
        )
    finally:
        for hook in hooks:
            hook.remove()
    want = _reference_maps(calls, 4)
    assert want.shape[0] == 2  # [uncond, cond]: one UNet call of a guided step
    # the byte-level test tokenizer: start token, then one token per character without spaces,
    # so "cat" is tokens 10-12 of "a photo of a cat"
    cat = [10, 11, 12]
    np.testing.assert_allclose(with_cfg["cat"], want[1, cat].mean(axis=0), atol=1e-6)
    # the unconditional half differs, so recording it instead would fail the line above
    assert np.abs(want[0, cat].mean(axis=0) - want[1, cat].mean(axis=0)).max() > 1e-3
    _, without, _ = attention_maps(
        pipe, "a photo of a cat", ["cat"], steps=1, guidance=1.0, resolution=4, seed=2
    )
    np.testing.assert_allclose(without["cat"], want[1, cat].mean(axis=0), atol=1e-6)


def test_non_square_images_keep_their_layout(pipe):
    # 16 x 32 px -> latents 8 x 16 -> cross-attention at 4 x 8 (after one downsampling)
    image, maps, store = attention_maps(
        pipe, "a photo of a cat", ["cat"], steps=1, height=16, width=32, resolution=(4, 8)
    )
    assert image.shape == (16, 32, 3) and maps["cat"].shape == (4, 8)
    assert store.seen == {(4, 8)}
    np.testing.assert_allclose(store.maps().sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match=r"this UNet's are \[\(4, 8\)\]"):
        attention_maps(
            pipe, "a photo of a cat", ["cat"], steps=1, height=16, width=32, resolution=(8, 4)
        )


def test_only_cross_attention_layers_are_replaced(pipe):
    names = cross_attention_names(pipe.unet)
    assert names and all("attn2" in n for n in names)
    with capture_cross_attention(pipe.unet, latent_hw=(8, 8), resolution=4) as _:
        procs = pipe.unet.attn_processors
        assert {type(procs[n]).__name__ for n in names} == {"_Recorder"}
        assert all(type(p).__name__ != "_Recorder" for n, p in procs.items() if n not in names)


def test_resizing_every_layer_and_clear_errors(pipe):
    _, maps, _ = attention_maps(
        pipe, "a photo of a cat", ["cat"], steps=2, resolution=16, layers="all"
    )
    assert maps["cat"].shape == (16, 16)
    with pytest.raises(ValueError, match=r"no cross-attention layer has maps of size \(16, 16\)"):
        attention_maps(pipe, "a photo of a cat", ["cat"], steps=1, resolution=16)
    with pytest.raises(ValueError, match="word 'dog' is not a token sequence"):
        attention_maps(pipe, "a photo of a cat", ["dog"], steps=1, resolution=4)
    with pytest.raises(ValueError, match="layers must be one of"):
        with capture_cross_attention(pipe.unet, latent_hw=(8, 8), layers="some"):
            pass


def test_token_positions_and_overlay(pipe):
    # the byte-level test tokenizer: one token per character, the start token at 0
    assert token_positions(pipe.tokenizer, "a cat", "cat") == [2, 3, 4]
    # a concept that also occurs in the template maps to its own (last) occurrence
    assert token_positions(pipe.tokenizer, "a photo of a", "a") == [9]  # not [1]
    image = np.zeros((8, 8, 3), dtype=np.uint8)
    heat = np.zeros((2, 2))
    heat[0, 0] = 1.0
    out = overlay(image, heat, alpha=1.0)
    assert out[0, 0, 0] > 100 and out[0, 0, 2] == 0  # hot corner is red in jet
    assert out[7, 7, 2] > 100 and out[7, 7, 0] == 0  # cold corner is blue
