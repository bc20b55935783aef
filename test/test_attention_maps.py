"""Latents, noise at t = 0, and the captured attention maps (METHOD.md §1-2), on tiny."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import skimage.data
import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import AttnProcessor2_0

from skp_core.attention_capture import (
    CaptureProcessor,
    CaptureState,
    install_capture,
    restore_processors,
    run_capture,
)
from skp_core.attention_maps import AttentionMapper
from skp_core.backbone import Backbone, load_backbone
from skp_core.config import DEFAULT_CAPTURE_LAYERS
from skp_core.latents import alpha_bar_t0, images_to_latents, noise_latents_t0
from skp_core.upsampled_attention_reference import _WeightedHeadSumSoftmax

SIZE = 128  # image side: 16x16 latents, captured layers at 4x4 and 8x8
RES = 32  # feature resolution of the maps
TOKENS = 40


def _photos(side: int = SIZE) -> torch.Tensor:
    """astronaut, chelsea, coffee as [3, 3, side, side] in [0, 1]."""
    out = []
    for load in (skimage.data.astronaut, skimage.data.chelsea, skimage.data.coffee):
        x = torch.from_numpy(load()).permute(2, 0, 1)[None].float() / 255.0
        out.append(F.interpolate(x, size=(side, side), mode="bilinear", antialias=True))
    return torch.cat(out)


def _context(tokens: int = TOKENS, dim: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(tokens, dim, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return load_backbone("tiny")


@pytest.fixture(scope="module")
def images() -> torch.Tensor:
    return _photos()


@pytest.fixture
def mapper(backbone: Backbone) -> Iterator[AttentionMapper]:
    m = AttentionMapper(backbone, feature_resolution=RES, image_size=SIZE)
    yield m
    m.remove()


@pytest.fixture(scope="module")
def z_t(backbone: Backbone, images: torch.Tensor) -> torch.Tensor:
    z = images_to_latents(backbone.vae, images, SIZE)
    return noise_latents_t0(z, torch.Generator().manual_seed(7))


# --- latents -----------------------------------------------------------------------------------


def test_alpha_bar_t0_matches_the_scaled_linear_schedule() -> None:
    assert alpha_bar_t0() == pytest.approx(0.99915, abs=1e-12)
    sched = DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    assert alpha_bar_t0() == pytest.approx(float(sched.alphas_cumprod[0]), abs=1e-7)
    assert math.sqrt(alpha_bar_t0()) == pytest.approx(0.999575, abs=1e-6)
    assert math.sqrt(1 - alpha_bar_t0()) == pytest.approx(0.029155, abs=1e-6)


def test_noise_is_the_t0_formula_and_seeded() -> None:
    z = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    a = noise_latents_t0(z, torch.Generator().manual_seed(3))
    b = noise_latents_t0(z, torch.Generator().manual_seed(3))
    eps = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    expected = math.sqrt(0.99915) * z + math.sqrt(0.00085) * eps
    torch.testing.assert_close(a, expected, rtol=0, atol=1e-6)


def test_latents_are_batched_scaled_posterior_means(
    backbone: Backbone, images: torch.Tensor
) -> None:
    z = images_to_latents(backbone.vae, images, SIZE)
    assert z.shape == (3, 4, SIZE // 8, SIZE // 8) and z.dtype == torch.float32
    x = images[1:2] * 2 - 1
    with torch.no_grad():
        mean = backbone.vae.encode(x).latent_dist.mean
    torch.testing.assert_close(z[1:2], 0.18215 * mean, rtol=1e-5, atol=1e-6)
    # Any input size is resized to image_size first.
    big = images_to_latents(backbone.vae, _photos(2 * SIZE)[:1], SIZE)
    assert big.shape == (1, 4, SIZE // 8, SIZE // 8)


# --- capture processor -------------------------------------------------------------------------


def test_processors_on_exactly_the_captured_layers(mapper: AttentionMapper) -> None:
    procs = mapper.backbone.unet.attn_processors
    for key, proc in procs.items():
        if key in DEFAULT_CAPTURE_LAYERS:
            assert isinstance(proc, CaptureProcessor)
        else:
            assert isinstance(proc, AttnProcessor2_0)
    with pytest.raises(RuntimeError, match="already installed"):
        AttentionMapper(mapper.backbone, feature_resolution=RES, image_size=SIZE)
    mapper.remove()
    assert all(
        isinstance(p, AttnProcessor2_0) for p in mapper.backbone.unet.attn_processors.values()
    )


def test_capture_leaves_the_unet_output_unchanged(backbone: Backbone, z_t: torch.Tensor) -> None:
    unet = backbone.unet
    ctx = _context().expand(3, -1, -1)
    with torch.no_grad():
        reference = unet(z_t, 0, encoder_hidden_states=ctx).sample
        state = CaptureState(DEFAULT_CAPTURE_LAYERS)
        previous = install_capture(unet, state)
        try:
            state.begin(tuple(z_t.shape[-2:]), early_stop=False)
            captured = unet(z_t, 0, encoder_hidden_states=ctx).sample
            layers = state.finish()
        finally:
            restore_processors(unet, previous)
    assert torch.equal(captured, reference)
    assert len(layers) == 4 and all(layer.q.shape[0] == 3 for layer in layers)


def _reference_maps(backbone: Backbone, z_t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The METHOD §2 formula written out with all heads at once, from hooked attn2 inputs.

    Plain autograd throughout, so it also checks the capture's hand-written backward.
    """
    unet = backbone.unet
    inputs: dict[str, torch.Tensor] = {}
    hooks = []
    for key in DEFAULT_CAPTURE_LAYERS:
        name = key.removesuffix(".processor")

        def grab(module, args, kwargs, name=name):  # type: ignore[no-untyped-def]
            inputs[name] = args[0]

        hooks.append(unet.get_submodule(name).register_forward_pre_hook(grab, with_kwargs=True))
    b = z_t.shape[0]
    ctx = context.expand(b, -1, -1)
    unet(z_t, 0, encoder_hidden_states=ctx)
    for h in hooks:
        h.remove()
    total = 0.0
    for key in DEFAULT_CAPTURE_LAYERS:
        name = key.removesuffix(".processor")
        attn = unet.get_submodule(name)
        x = inputs[name]
        side = math.isqrt(x.shape[1])
        grid = x.transpose(1, 2).reshape(b, -1, side, side)
        up = F.interpolate(grid, size=(RES, RES), mode="bicubic", align_corners=False)
        q = attn.to_q(up.flatten(2).transpose(1, 2))
        k = attn.to_k(ctx)
        d = q.shape[-1] // attn.heads
        q = q.view(b, -1, attn.heads, d).transpose(1, 2)  # [B, H, R*R, d]
        k = k.view(b, -1, attn.heads, d).transpose(1, 2)  # [B, H, T, d]
        probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), dim=-1)  # [B, H, R*R, T]
        total = total + probs.mean(1)
    maps = total / len(DEFAULT_CAPTURE_LAYERS)
    return maps.transpose(1, 2).reshape(b, -1, RES, RES)


def test_maps_and_gradients_match_the_written_out_formula(
    backbone: Backbone, z_t: torch.Tensor
) -> None:
    weights = torch.rand(2, TOKENS, RES, RES, generator=torch.Generator().manual_seed(5))
    ref_ctx = _context().requires_grad_(True)
    expected = _reference_maps(backbone, z_t[:2], ref_ctx)
    (expected * weights).sum().backward()
    m = AttentionMapper(backbone, feature_resolution=RES, image_size=SIZE)
    try:
        ctx = _context().requires_grad_(True)
        got = m.maps_from_latents(z_t[:2], ctx)
        (got * weights).sum().backward()
    finally:
        m.remove()
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)
    assert ref_ctx.grad is not None and ctx.grad is not None
    scale = ref_ctx.grad.abs().max().item()
    torch.testing.assert_close(ctx.grad, ref_ctx.grad, rtol=1e-4, atol=1e-5 * scale)


def test_head_sum_softmax_backward_is_exact() -> None:
    g = torch.Generator().manual_seed(0)
    q = torch.randn(2, 12, 6, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda a, b: _WeightedHeadSumSoftmax.apply(a, b, 3, 0.5), (q, k)
    )


def test_early_stop_changes_no_map(mapper: AttentionMapper, z_t: torch.Tensor) -> None:
    with torch.no_grad():
        stopped = mapper.maps_from_latents(z_t, _context())
        mapper.early_stop = False
        full = mapper.maps_from_latents(z_t, _context())
    assert torch.equal(stopped, full)


def test_early_stop_skips_the_rest_of_the_decoder(
    mapper: AttentionMapper, z_t: torch.Tensor
) -> None:
    ran: list[str] = []
    unet = mapper.backbone.unet
    hooks = [
        unet.up_blocks[3].register_forward_pre_hook(lambda *_: ran.append("up3")),
        unet.up_blocks[2].attentions[1].register_forward_pre_hook(lambda *_: ran.append("a21")),
    ]
    try:
        with torch.no_grad():
            mapper.maps_from_latents(z_t, _context())
        assert ran == []
        mapper.early_stop = False
        with torch.no_grad():
            mapper.maps_from_latents(z_t, _context())
        assert ran == ["a21", "up3"]
    finally:
        for h in hooks:
            h.remove()


# --- maps --------------------------------------------------------------------------------------


def test_maps_are_per_pixel_distributions_over_tokens(
    mapper: AttentionMapper, images: torch.Tensor
) -> None:
    with torch.no_grad():
        maps = mapper.maps(images, _context(), torch.Generator().manual_seed(0))
    assert maps.shape == (3, TOKENS, RES, RES) and maps.dtype == torch.float32
    assert (maps >= 0).all()
    torch.testing.assert_close(maps.sum(1), torch.ones(3, RES, RES), rtol=0, atol=1e-5)
    # tiny's boosted cross-attention: maps are far from uniform (1 / TOKENS everywhere).
    assert maps.amax(1).mean() > 5.0 / TOKENS


def test_image_maps_do_not_depend_on_the_batch(mapper: AttentionMapper, z_t: torch.Tensor) -> None:
    with torch.no_grad():
        batch = mapper.maps_from_latents(z_t, _context())
        alone = [mapper.maps_from_latents(z_t[i : i + 1], _context()) for i in range(3)]
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], alone[i], rtol=1e-5, atol=1e-6)
    assert not torch.allclose(batch[0], batch[1])


def test_max_batch_chunks_give_the_same_maps(backbone: Backbone, images: torch.Tensor) -> None:
    m = AttentionMapper(backbone, feature_resolution=RES, image_size=SIZE, max_batch=2)
    try:
        with torch.no_grad():
            chunked = m.maps(images, _context(), torch.Generator().manual_seed(4))
            m.max_batch = None
            whole = m.maps(images, _context(), torch.Generator().manual_seed(4))
    finally:
        m.remove()
    torch.testing.assert_close(chunked, whole, rtol=1e-5, atol=1e-6)


def test_same_seed_same_maps(mapper: AttentionMapper, images: torch.Tensor) -> None:
    ctx = _context()
    with torch.no_grad():
        a = mapper.maps(images[:2], ctx, torch.Generator().manual_seed(11))
        b = mapper.maps(images[:2], ctx, torch.Generator().manual_seed(11))
        c = mapper.maps(images[:2], ctx, torch.Generator().manual_seed(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_gradient_reaches_the_context(mapper: AttentionMapper, z_t: torch.Tensor) -> None:
    ctx = _context().requires_grad_(True)
    maps = mapper.maps_from_latents(z_t[:2], ctx)
    assert maps.requires_grad
    loss = (maps[:, :5] ** 2).mean()  # not the total, which is constant (sum over tokens = 1)
    loss.backward()
    assert ctx.grad is not None and torch.isfinite(ctx.grad).all()
    assert ctx.grad.abs().sum() > 0
    assert all(p.grad is None for p in mapper.backbone.unet.parameters())


def test_reduced_precision_backbone_gives_float32_maps(images: torch.Tensor) -> None:
    half = load_backbone("tiny", dtype="bfloat16")
    m = AttentionMapper(half, feature_resolution=RES, image_size=SIZE)
    with torch.no_grad():
        maps = m.maps(images[:1], _context(), torch.Generator().manual_seed(0))
    assert maps.dtype == torch.float32 and torch.isfinite(maps).all()
    torch.testing.assert_close(maps.sum(1), torch.ones(1, RES, RES), rtol=0, atol=1e-5)


def test_bad_layer_names_are_refused(backbone: Backbone) -> None:
    with pytest.raises(ValueError, match="no attention layer"):
        AttentionMapper(backbone, layers=("up_blocks.9.attentions.0.transformer_blocks.0.attn2",))
    with pytest.raises(ValueError, match="not a cross-attention layer"):
        AttentionMapper(backbone, layers=("up_blocks.1.attentions.0.transformer_blocks.0.attn1",))


def test_capture_without_a_forward_is_an_error(mapper: AttentionMapper, z_t: torch.Tensor) -> None:
    state = mapper.state
    with pytest.raises(RuntimeError, match="incomplete"):
        state.begin((16, 16), early_stop=True)
        state.finish()
    # a normal, unarmed UNet call still works with the processors installed
    with torch.no_grad():
        out = mapper.backbone.unet(z_t[:1], 0, encoder_hidden_states=_context()[None]).sample
    assert out.shape == z_t[:1].shape
    with torch.no_grad():
        layers = run_capture(mapper.backbone.unet, state, z_t[:1], 0, _context()[None])
    assert [layer.k.shape for layer in layers] == [
        (1, TOKENS, layer.q.shape[-1]) for layer in layers
    ]
