"""Method settings: every field has a type-and-range check that names the value it got."""

from __future__ import annotations

import re
from dataclasses import fields

import pytest

from skp_core.config import FIELD_CHECKS, MethodConfig, default_config, settings_problem


def test_every_setting_has_a_check_and_the_defaults_pass() -> None:
    assert set(FIELD_CHECKS) == {f.name for f in fields(MethodConfig)}
    for model in ("tiny", "sd15-random"):
        default_config(model).validate()


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"num_views": 1_000_000_000}, "num_views must be between 1 and 256, got 1000000000"),
        ({"num_views": 1e9}, "num_views must be an integer, got 1000000000.0"),
        ({"num_views": True}, "num_views must be an integer, got True"),
        ({"num_views": 0}, "num_views must be between 1 and 256, got 0"),
        ({"image_size": 500}, "image_size must be a multiple of 8"),
        ({"image_size": 1 << 20}, "image_size must be between 8 and 2048"),
        ({"sigma": float("nan")}, "sigma must be finite, got nan"),
        ({"sigma": 0.0}, "sigma must be > 0.0, got 0.0"),
        ({"lr": "fast"}, "lr must be a number, got 'fast'"),
        ({"translation": 2.0}, "translation must be >= 0.0 and <= 1.0, got 2.0"),
        ({"layers": []}, "layers must be a non-empty list"),
        ({"layers": ["a", "a"]}, "layers must not repeat a layer"),
        ({"layers": [[1, 0]]}, "layers must hold layer names"),
        ({"view_space": "pixels"}, "view_space must be one of ('image', 'latent'), got 'pixels'"),
        ({"include_identity_view": 1}, "include_identity_view must be true or false, got 1"),
        ({"top_k": 30, "num_candidates": 16}, "top_k (30) must not exceed num_candidates (16)"),
        ({"scale_min": 1.2, "scale_max": 1.0}, "need scale_min <= scale_max, got 1.2 and 1.0"),
        ({"colour": "red"}, "unknown settings: colour"),
        ({"selection_sigma": 0.0}, "selection_sigma must be > 0.0, got 0.0"),
        ({"top_k_strategy": "random"}, "top_k_strategy must be one of ('gaussian'"),
        ({"max_loc_strategy": "median"}, "max_loc_strategy must be one of ('argmax'"),
        ({"max_loc_distance": -2.0}, "max_loc_distance must be >= -1.0"),
        ({"max_loc_distance": -0.5}, "max_loc_distance must be >= 0, or -1 for the whole map"),
    ],
)
def test_bad_settings_are_named_with_their_values(values: dict, message: str) -> None:
    assert message in settings_problem(values)
    with pytest.raises(ValueError, match=re.escape(message)):
        MethodConfig.from_dict(values)


def test_a_subset_is_checked_alone() -> None:
    """A bundle may hold only some settings: relations need both sides given."""
    assert settings_problem({"top_k": 30}) is None
    assert settings_problem({"num_views": 10, "view_space": "latent"}) is None
    assert settings_problem({"selection_sigma": None}) is None
    with pytest.raises(ValueError, match="top_k"):
        default_config("tiny").with_overrides(top_k=99).validate()
