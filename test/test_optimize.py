"""Token optimization and selection on the tiny model with real photos."""

from __future__ import annotations

import json

import pytest
import torch
from photos import photo_tensors

from skp_core.attention_maps import AttentionMapper
from skp_core.backbone import load_backbone
from skp_core.checkpoint import load_checkpoint
from skp_core.config import default_config
from skp_core.optimize import OptimizationError, TokenOptimizer
from skp_core.select_tokens import most_frequent_tokens, select_best_tokens

# Small enough to run many steps on 2 cores; the captured layers keep SD 1.5's structure.
FAST = {"image_size": 64, "feature_resolution": 16, "num_tokens": 32, "images_per_step": 2}


@pytest.fixture(scope="module")
def mapper():
    cfg = default_config("tiny").with_overrides(**FAST)
    m = AttentionMapper(
        load_backbone("tiny"), feature_resolution=cfg.feature_resolution, image_size=cfg.image_size
    )
    yield m
    m.remove()


@pytest.fixture(scope="module")
def images():
    return photo_tensors()


def _config(**overrides):
    return default_config("tiny").with_overrides(**{**FAST, **overrides})


def test_same_seed_same_context(mapper, images):
    a = TokenOptimizer(mapper, images, _config(steps=3), progress=False).run()
    b = TokenOptimizer(mapper, images, _config(steps=3), progress=False).run()
    assert torch.equal(a.context, b.context)
    c = TokenOptimizer(mapper, images, _config(steps=3, seed=1), progress=False).run()
    assert not torch.equal(a.context, c.context)


def test_stop_and_resume_equals_uninterrupted_run(mapper, images, tmp_path, capsys):
    straight = TokenOptimizer(mapper, images, _config(steps=6), progress=False).run()
    ckpt = tmp_path / "ckpt"
    first = TokenOptimizer(mapper, images, _config(steps=6), ckpt, checkpoint_every=1)
    first.progress = False
    first.run(steps=3)  # "killed" after step 3
    resumed = TokenOptimizer(mapper, images, _config(steps=6), ckpt, progress=True)
    result = resumed.run()
    # It says so before anything else.
    assert capsys.readouterr().err.startswith(f"resuming at step 3 of 6 from {ckpt}\n")
    assert result.steps_done == 6
    assert torch.equal(result.context, straight.context)
    assert [h["loss"] for h in result.history] == [h["loss"] for h in straight.history]


def test_resume_refuses_other_settings(mapper, images, tmp_path):
    TokenOptimizer(mapper, images, _config(steps=1), tmp_path, progress=False).run()
    with pytest.raises(OptimizationError, match="other settings"):
        TokenOptimizer(mapper, images, _config(steps=2, lr=0.1), tmp_path, progress=False).run()


def test_non_finite_loss_stops_and_keeps_last_checkpoint(mapper, images, tmp_path):
    opt = TokenOptimizer(mapper, images, _config(steps=2), tmp_path, 1, progress=False)
    opt.run()
    saved, meta = load_checkpoint(tmp_path)
    poisoned = [torch.full_like(images[0], float("nan"))] * 3
    bad = TokenOptimizer(mapper, poisoned, _config(steps=4), tmp_path, 1, progress=False)
    with pytest.raises(OptimizationError, match="non-finite loss at step 3"):
        bad.run()
    kept, kept_meta = load_checkpoint(tmp_path)
    assert kept_meta["step"] == meta["step"] == 2
    assert torch.equal(kept["context"], saved["context"])
    assert json.loads((tmp_path / "checkpoint.json").read_text())["step"] == 2


@pytest.mark.slow
def test_loss_falls_on_real_photos(images):
    # 128 px / 32x32 maps / 64 tokens: the smallest setting where the tiny model's maps have
    # room to sharpen; 50 steps of lr 0.2 bring the loss down by about 40%.
    cfg = default_config("tiny").with_overrides(
        image_size=128, feature_resolution=32, num_tokens=64, images_per_step=2, steps=50,
        sigma=1.0, num_candidates=12, top_k=6, lr=0.2,
    )  # fmt: skip
    mapper = AttentionMapper(load_backbone("tiny"), feature_resolution=32, image_size=128)
    result = TokenOptimizer(mapper, images, cfg, progress=False).run()
    losses = torch.tensor([h["loss"] for h in result.history])
    # Per-step losses are noisy (random views); compare the first and last ten steps.
    assert losses[-10:].mean() < 0.8 * losses[:10].mean()


def test_selection_is_deterministic_and_picks_distinct_tokens(mapper, images):
    context = torch.randn(
        32, mapper.backbone.context_dim, generator=torch.Generator().manual_seed(0)
    )
    kwargs = dict(num_images=4, num_candidates=8, top_k=4, sigma=1.0, batch_size=2, progress=False)
    a, counts_a = select_best_tokens(mapper, images, context, **kwargs)
    b, counts_b = select_best_tokens(mapper, images, context, **kwargs)
    assert torch.equal(a, b) and torch.equal(counts_a, counts_b)
    assert len(set(a.tolist())) == 4
    assert int(counts_a.sum()) == 4 * 4  # every image contributes top_k picks
    unselected = torch.ones_like(counts_a, dtype=torch.bool)
    unselected[a] = False
    assert counts_a[a].min() >= counts_a[unselected].max()  # the most frequent ones


def test_most_frequent_tokens_breaks_ties_by_index():
    counts = torch.tensor([3, 5, 5, 0, 3, 1])
    assert most_frequent_tokens(counts, 4).tolist() == [1, 2, 0, 4]


def test_every_top_k_strategy_trains_and_selects(mapper, images):
    """gaussian, entropy and consistent rank different candidates: different contexts."""
    contexts = {}
    for strategy in ("gaussian", "entropy", "consistent"):
        cfg = _config(steps=2, top_k_strategy=strategy)
        contexts[strategy] = TokenOptimizer(mapper, images, cfg, progress=False).run().context
        selected, counts = select_best_tokens(
            mapper,
            images,
            contexts[strategy],
            num_images=3,
            num_candidates=cfg.num_candidates,
            top_k=cfg.top_k,
            sigma=cfg.sigma,
            progress=False,
            top_k_strategy=strategy,
        )
        assert len(set(selected.tolist())) == cfg.top_k and int(counts.sum()) == 3 * cfg.top_k
        if strategy == "consistent":  # only the first num_candidates tokens can be chosen
            assert int(counts[cfg.num_candidates :].sum()) == 0
    assert not torch.equal(contexts["gaussian"], contexts["entropy"])
    assert not torch.equal(contexts["gaussian"], contexts["consistent"])


def test_two_subjects_train_and_select_with_their_own_targets(mapper, images):
    """num_subjects changes the ranking's and the loss's targets, so the context differs."""
    one = TokenOptimizer(mapper, images, _config(steps=2), progress=False).run()
    cfg = _config(steps=2, num_subjects=2)
    two = TokenOptimizer(mapper, images, cfg, progress=False).run()
    assert not torch.equal(one.context, two.context)
    assert torch.isfinite(two.context).all()
    selected, counts = select_best_tokens(
        mapper,
        images,
        two.context,
        num_images=3,
        num_candidates=cfg.num_candidates,
        top_k=cfg.top_k,
        sigma=cfg.sigma,
        progress=False,
        num_subjects=2,
    )
    assert len(set(selected.tolist())) == cfg.top_k and int(counts.sum()) == 3 * cfg.top_k
