"""The fused map computation equals the written-out oracle: maps, ranking, losses, gradients.

Synthetic captures cover every strategy, shared and per-image keys, non-square grids, ragged
tiles and float64 gradcheck; the tiny diffusers model covers real captures, batches,
non-square latents and a whole optimization step (candidate ranking, losses, context grad).
"""

from __future__ import annotations

import pytest
import skimage.data
import torch
import torch.nn.functional as F

from skp_core.attention_maps import AttentionMapper
from skp_core.backbone import Backbone, load_backbone
from skp_core.candidates import gaussian_kl_scores, gaussian_kl_scores_reference
from skp_core.config import default_config
from skp_core.latents import noise_latents_t0
from skp_core.optimize import TokenOptimizer
from skp_core.upsampled_attention import LayerQK, MapSettings, fused_maps, layer_strategies
from skp_core.upsampled_attention_plan import bicubic_matrix, choose_strategy
from skp_core.upsampled_attention_reference import reference_maps

STRATEGIES = ("logits", "query", "flash")


def _layers(
    batch: int = 2,
    heads: int = 2,
    width: int = 8,
    tokens: int = 7,
    grids: tuple[tuple[int, int], ...] = ((4, 4), (3, 5)),
    shared: bool = True,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
) -> list[LayerQK]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for h, w in grids:
        q = torch.randn(batch, h * w, width, generator=g, dtype=dtype).requires_grad_(True)
        k = torch.randn(1 if shared else batch, tokens, width, generator=g, dtype=dtype)
        out.append(LayerQK(q, k.requires_grad_(True), heads, (h, w), 1.0 / (heads * len(grids))))
    return out


def _inputs(layers: list[LayerQK]) -> list[torch.Tensor]:
    return [t for layer in layers for t in (layer.q, layer.k)]


def test_bicubic_matrices_are_torch_bicubic() -> None:
    x = torch.randn(3, 5, 7, dtype=torch.float64)
    uy = bicubic_matrix(5, 19, torch.float64, x.device)
    ux = bicubic_matrix(7, 19, torch.float64, x.device)
    expected = F.interpolate(x[None], size=(19, 19), mode="bicubic", align_corners=False)[0]
    torch.testing.assert_close(uy @ x @ ux.T, expected, rtol=0, atol=1e-12)


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("shared", [True, False])
def test_maps_and_gradients_equal_the_oracle(strategy: str, shared: bool) -> None:
    layers = _layers(shared=shared)
    settings = MapSettings(12, strategy=strategy, block_pixels=30)  # ragged last tile
    g = torch.Generator().manual_seed(1)
    # every token; distinct kept tokens (tiles put them first); repeated ones, alone or mixed
    repeated = torch.tensor([[5, 1, 5], [6, 0, 6]])
    for tokens in (None, torch.tensor([[1, 3, 5], [0, 6, 2]]), torch.tensor([4, 4]), repeated):
        expected = reference_maps(layers, 12, tokens)
        got = fused_maps(layers, settings, tokens)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        weights = torch.randn(expected.shape, generator=g)
        want = torch.autograd.grad((expected * weights).sum(), _inputs(layers))
        have = torch.autograd.grad((got * weights).sum(), _inputs(layers))
        for a, b in zip(have, want, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_gradcheck_in_float64(strategy: str) -> None:
    base = _layers(heads=2, width=4, tokens=5, grids=((3, 3), (2, 4)), shared=False,
                   dtype=torch.float64)  # fmt: skip
    settings = MapSettings(7, strategy=strategy, block_pixels=14)
    tokens = torch.tensor([[1, 3], [0, 4]])

    def run(*tensors: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        layers = [
            LayerQK(tensors[2 * i], tensors[2 * i + 1], b.heads, b.grid, b.weight)
            for i, b in enumerate(base)
        ]
        return fused_maps(layers, settings, kept)

    inputs = tuple(_inputs(base))
    assert torch.autograd.gradcheck(lambda *t: run(*t, kept=tokens), inputs)
    assert torch.autograd.gradcheck(lambda *t: run(*t, kept=None), inputs)


def test_precomputed_values_are_returned_and_backward_is_exact() -> None:
    layers = _layers()
    settings = MapSettings(10, block_pixels=20)
    tokens = torch.tensor([[2, 5], [1, 0]])
    with torch.no_grad():
        values = fused_maps(layers, settings, tokens)
    reused = fused_maps(layers, settings, tokens, precomputed=values)
    assert torch.equal(reused, values)
    fresh = fused_maps(layers, settings, tokens)
    a = torch.autograd.grad(reused.square().sum(), _inputs(layers))
    b = torch.autograd.grad(fresh.square().sum(), _inputs(layers))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-6, atol=1e-7)
    with pytest.raises(ValueError, match="precomputed maps must be"):
        fused_maps(layers, settings, tokens, precomputed=values[:1])


def test_bad_tokens_are_refused() -> None:
    layers = _layers()
    settings = MapSettings(8)
    with pytest.raises(ValueError, match=r"token indices must lie in \[0, 7\)"):
        fused_maps(layers, settings, torch.tensor([7]))
    with pytest.raises(ValueError, match="tokens must be"):
        fused_maps(layers, settings, torch.zeros(3, 2, dtype=torch.long))


def test_strategy_follows_the_shapes() -> None:
    """Wide heads upsample logits, a few kept tokens of narrow heads take the flash kernel."""
    wide = LayerQK(torch.zeros(1, 64, 1280), torch.zeros(1, 500, 1280), 8, (8, 8), 1.0)
    narrow = LayerQK(torch.zeros(1, 256, 64), torch.zeros(1, 500, 64), 8, (16, 16), 1.0)
    assert choose_strategy(wide, 128, 8, kept=10) == "logits"
    assert choose_strategy(wide, 128, 8, kept=None) == "logits"
    assert choose_strategy(narrow, 128, 8, kept=10) == "flash"
    assert choose_strategy(narrow, 128, 8, kept=None) == "logits"
    tiny_heads = LayerQK(torch.zeros(1, 1024, 4), torch.zeros(1, 500, 4), 4, (32, 32), 1.0)
    assert choose_strategy(tiny_heads, 128, 8, kept=None) == "query"
    assert layer_strategies([wide, narrow], MapSettings(128), kept=10) == ["logits", "flash"]
    # 25 kept tokens pad the flash width to 32: tiles on a CPU, the fused kernel on CUDA
    assert choose_strategy(narrow, 128, 8, kept=25) == "logits"
    assert choose_strategy(narrow, 128, 8, kept=25, flash_max_width=32) == "flash"
    # "auto" on a CPU: a flash forward, a tile backward (faster there); explicit flash: both
    from skp_core.upsampled_attention_plan import LayerPlan

    auto = LayerPlan(narrow, MapSettings(128), kept=10)
    assert (auto.strategy, auto.backward_strategy) == ("flash", "logits")
    forced = LayerPlan(narrow, MapSettings(128, strategy="flash"), kept=10)
    assert (forced.strategy, forced.backward_strategy) == ("flash", "flash")


def test_fast_kl_scores_equal_the_written_out_formula() -> None:
    g = torch.Generator().manual_seed(3)
    for shape, sigma in (((3, 40, 32, 24), 1.0), ((2, 64, 128, 128), 2.0)):
        maps = torch.softmax(torch.randn(shape, generator=g) * 3, dim=1)
        want = gaussian_kl_scores_reference(maps, sigma)
        got = gaussian_kl_scores(maps, sigma)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        order = torch.sort(want, dim=-1, stable=True).indices[:, :25]
        assert torch.equal(torch.sort(got, dim=-1, stable=True).indices[:, :25], order)
    maps64 = torch.softmax(torch.randn(2, 30, 17, 23, generator=g, dtype=torch.float64), dim=1)
    torch.testing.assert_close(
        gaussian_kl_scores(maps64, 1.5), gaussian_kl_scores_reference(maps64, 1.5), rtol=0,
        atol=1e-12,
    )  # fmt: skip


# --- on the real tiny diffusers model ---------------------------------------------------------


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    return load_backbone("tiny")


def _photos(height: int, width: int) -> torch.Tensor:
    out = []
    for load in (skimage.data.astronaut, skimage.data.chelsea, skimage.data.coffee):
        x = torch.from_numpy(load()).permute(2, 0, 1)[None].float() / 255.0
        out.append(F.interpolate(x, size=(height, width), mode="bilinear", antialias=True))
    return torch.cat(out)


@pytest.mark.parametrize("shape", [(128, 128), (128, 192)])
def test_real_captures_equal_the_oracle(backbone: Backbone, shape: tuple[int, int]) -> None:
    """Batches of real photos, square and non-square latents, all tokens and kept ones."""
    photos = _photos(*shape)
    vae = backbone.vae
    with torch.no_grad():
        z = vae.encode(photos * 2 - 1).latent_dist.mean * vae.config.scaling_factor
    z_t = noise_latents_t0(z, torch.Generator().manual_seed(2))
    context = torch.randn(48, 32, generator=torch.Generator().manual_seed(0))
    results = {}
    for method in ("reference", "fused"):
        mapper = AttentionMapper(backbone, feature_resolution=32, image_size=128, map_method=method)
        try:
            ctx = context.clone().requires_grad_(True)
            captured = mapper.capture(z_t, ctx)
            full = captured.maps()
            kept = captured.maps(torch.tensor([[3, 7, 11], [0, 1, 2], [47, 20, 5]]))
            (full[:, :9].square().sum() + kept.square().sum() * 3).backward()
            results[method] = (full.detach(), kept.detach(), ctx.grad)
        finally:
            mapper.remove()
    for want, got in zip(results["reference"], results["fused"], strict=True):
        scale = want.abs().max().item()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * max(scale, 1.0))
    # one image alone gets the same maps as in its batch
    mapper = AttentionMapper(backbone, feature_resolution=32, image_size=128)
    try:
        with torch.no_grad():
            alone = mapper.maps_from_latents(z_t[1:2], context)
    finally:
        mapper.remove()
    torch.testing.assert_close(alone, results["fused"][0][1:2], rtol=1e-5, atol=1e-6)


def test_an_optimization_step_equals_the_oracle_step(backbone: Backbone) -> None:
    """Same candidates and selected tokens, same losses, same context gradient."""
    photos = list(_photos(128, 128))
    cfg = default_config("tiny").with_overrides(images_per_step=3)
    outcome = {}
    for method in ("reference", "fused"):
        mapper = AttentionMapper(backbone, cfg.layers, cfg.feature_resolution, cfg.image_size,
                                 map_method=method)  # fmt: skip
        grads: list[torch.Tensor] = []
        try:
            opt = TokenOptimizer(
                mapper, photos, cfg, progress=False,
                gradient_hook=lambda g, out=grads: out.append(g.clone()),
            )  # fmt: skip
            record = opt.train_step()
        finally:
            mapper.remove()
        outcome[method] = (record, grads[0])
    ref_record, ref_grad = outcome["reference"]
    record, grad = outcome["fused"]
    for key in ("loss", "equivariance", "localization"):
        assert record[key] == pytest.approx(ref_record[key], rel=1e-5, abs=1e-7)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-4, atol=1e-5 * ref_grad.abs().max().item())


@pytest.mark.parametrize("strategy", ["flash", "auto"])
def test_stored_log_sum_exp_gives_the_same_backward(strategy: str) -> None:
    """A flash forward of kept tokens stores each pixel's lse (the CPU kernel returns it);
    the backward then skips recomputing it -- through the flash kernel's backward, or (auto,
    on a CPU) through tiles -- and must not change a gradient. Tiles over all tokens leave
    the store empty: there it would cost more than it saves."""
    from skp_core.attention_maps import CapturedAttention
    from skp_core.upsampled_attention_plan import LayerPlan
    from skp_core.upsampled_attention_reference import upsampled_queries

    layers = _layers(batch=3)
    settings = MapSettings(12, strategy=strategy, block_pixels=30)
    tokens = torch.tensor([[1, 3], [0, 6], [2, 2]])
    plans = [LayerPlan(layer, settings, kept=2) for layer in layers]
    assert {p.strategy for p in plans} == {"flash"}
    expected_backward = "flash" if strategy == "flash" else "logits"
    assert {p.backward_strategy for p in plans} <= {expected_backward, "query"}
    captured = CapturedAttention(layers, settings)
    with torch.no_grad():
        captured.maps()  # every token: tiles, nothing stored
        for layer in layers:
            assert layer.lse_known is not None and not layer.lse_known.any()
        captured.maps(tokens)  # kept tokens: flash, stores every image
    for layer in layers:
        assert layer.lse_known is not None and layer.lse is not None
        assert layer.lse_known.tolist() == [True, True, True]
        q = upsampled_queries(layer, 12).detach()
        k = layer.k.detach().expand(3, -1, -1)
        d = q.shape[-1] // layer.heads
        for h in range(layer.heads):
            logits = q[..., h * d : (h + 1) * d] @ k[..., h * d : (h + 1) * d].transpose(1, 2)
            torch.testing.assert_close(
                layer.lse[:, h], torch.logsumexp(logits, -1), rtol=0, atol=1e-5
            )
    plain = [LayerQK(x.q, x.k, x.heads, x.grid, x.weight) for x in layers]  # no stores
    fresh = reference_maps(plain, 12, tokens)
    stored = captured.maps(tokens, precomputed=fresh.detach().unflatten(-1, (12, 12)))
    weights = torch.randn(stored.shape, generator=torch.Generator().manual_seed(4))
    a = torch.autograd.grad((stored.flatten(2) * weights.flatten(2)).sum(), _inputs(layers))
    b = torch.autograd.grad((fresh * weights.flatten(2)).sum(), _inputs(layers))
    for x, y in zip(a, b, strict=True):
        torch.testing.assert_close(x, y, rtol=1e-4, atol=1e-6)
