"""Backbone loading: built-in models, local folders, the HF cache, single files, refusals."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from skp_core import backbone as bb
from skp_core.backbone import (
    DEFAULT_MODEL_ID,
    Backbone,
    BackboneError,
    load_backbone,
)
from skp_core.config import DEFAULT_CAPTURE_LAYERS


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny() -> Backbone:
    return load_backbone("tiny")


@pytest.fixture(scope="module")
def saved_tiny(tiny: Backbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tiny saved as a diffusers pipeline folder (vae/ and unet/, safetensors)."""
    folder = tmp_path_factory.mktemp("tiny_pipeline")
    tiny.vae.save_pretrained(folder / "vae")
    tiny.unet.save_pretrained(folder / "unet")
    return folder


def test_tiny_is_deterministic_and_leaves_global_rng_alone(tiny: Backbone) -> None:
    before = torch.get_rng_state()
    again = load_backbone("tiny")
    assert torch.equal(torch.get_rng_state(), before)
    assert _same_weights(tiny.unet, again.unet)
    assert _same_weights(tiny.vae, again.vae)
    other = load_backbone("tiny", seed=1)
    assert not _same_weights(tiny.unet, other.unet)
    assert tiny.fingerprint["seed"] == 0 and other.fingerprint["seed"] == 1


def test_only_frozen_vae_and_unet_are_loaded(tiny: Backbone) -> None:
    assert [f for f in Backbone.__dataclass_fields__] == [
        "vae",
        "unet",
        "model_id",
        "device",
        "dtype",
        "seed",
    ]
    assert "transformers" not in sys.modules
    for module in (tiny.vae, tiny.unet):
        assert not module.training
        assert all(not p.requires_grad for p in module.parameters())
    assert tiny.device == torch.device("cpu") and tiny.dtype == torch.float32
    assert tiny.model_id == "tiny"
    assert tiny.context_dim == 32


def test_tiny_has_the_sd15_captured_layer_structure(tiny: Backbone) -> None:
    unet = tiny.unet
    assert unet.config.down_block_types == bb.SD15_UNET_CONFIG["down_block_types"]
    assert unet.config.up_block_types == bb.SD15_UNET_CONFIG["up_block_types"]
    assert unet.config.layers_per_block == 2
    assert tiny.vae.config.scaling_factor == pytest.approx(0.18215)
    for key in DEFAULT_CAPTURE_LAYERS:
        assert key in unet.attn_processors
    # Native token counts of the captured layers for a 16x16 latent (128 px image).
    tokens: dict[str, int] = {}
    hooks = []
    for key in DEFAULT_CAPTURE_LAYERS:
        name = key.removesuffix(".processor")

        def record(module, args, kwargs, name=name):  # type: ignore[no-untyped-def]
            tokens[name] = args[0].shape[1]

        hooks.append(unet.get_submodule(name).register_forward_pre_hook(record, with_kwargs=True))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        unet(torch.randn(1, 4, 16, 16, generator=g), 0, torch.randn(1, 3, 32, generator=g))
    for h in hooks:
        h.remove()
    counts = [tokens[k.removesuffix(".processor")] for k in DEFAULT_CAPTURE_LAYERS]
    assert counts == [4 * 4, 4 * 4, 4 * 4, 8 * 8]  # 1/4 and 1/2 of the latent side, as SD 1.5


def test_fingerprint_is_json_and_describes_the_architecture(tiny: Backbone) -> None:
    fp = json.loads(json.dumps(tiny.fingerprint))
    assert fp["model_id"] == "tiny"
    assert fp["unet"]["cross_attention_dim"] == 32
    assert fp["unet"]["block_out_channels"] == [32, 64, 64, 64]
    assert fp["vae"]["downsample_factor"] == 8 and fp["vae"]["latent_channels"] == 4


def test_sd15_configs_are_the_release_architecture() -> None:
    u, v = bb.SD15_UNET_CONFIG, bb.SD15_VAE_CONFIG
    assert u["block_out_channels"] == (320, 640, 1280, 1280)
    assert u["cross_attention_dim"] == 768 and u["attention_head_dim"] == 8
    assert u["sample_size"] == 64 and u["layers_per_block"] == 2
    assert v["block_out_channels"] == (128, 256, 512, 512)
    assert v["scaling_factor"] == 0.18215 and v["latent_channels"] == 4
    assert DEFAULT_MODEL_ID == "sd-legacy/stable-diffusion-v1-5"


def test_dtype_strings() -> None:
    half = load_backbone("tiny", dtype="bf16")
    assert half.dtype == torch.bfloat16
    assert next(half.unet.parameters()).dtype == torch.bfloat16
    with pytest.raises(BackboneError, match="dtype"):
        load_backbone("tiny", dtype="int8")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_a_clear_error() -> None:
    with pytest.raises(BackboneError, match="CUDA is not available"):
        load_backbone("tiny", device="cuda")
    with pytest.raises(BackboneError, match="CUDA is not available"):
        load_backbone("tiny", device="cuda:1")


def test_local_folder_loads_the_same_weights(tiny: Backbone, saved_tiny: Path) -> None:
    loaded = load_backbone(str(saved_tiny))
    assert _same_weights(tiny.unet, loaded.unet)
    assert _same_weights(tiny.vae, loaded.vae)
    assert loaded.model_id == str(saved_tiny.resolve()) and loaded.seed is None
    assert all(not p.requires_grad for p in loaded.unet.parameters())


def test_missing_folder_names_path_and_suggests_tiny(tmp_path: Path) -> None:
    missing = tmp_path / "no_such_model"
    with pytest.raises(BackboneError) as err:
        load_backbone(str(missing))
    assert str(missing) in str(err.value) and "tiny" in str(err.value)


def test_folder_without_unet_is_refused(tmp_path: Path, tiny: Backbone) -> None:
    tiny.vae.save_pretrained(tmp_path / "vae")
    with pytest.raises(BackboneError, match=re.escape("unet/config.json")):
        load_backbone(str(tmp_path))


def test_pickle_only_folder_is_refused(tmp_path: Path, tiny: Backbone) -> None:
    tiny.vae.save_pretrained(tmp_path / "vae", safe_serialization=False)
    tiny.unet.save_pretrained(tmp_path / "unet")
    with pytest.raises(BackboneError, match="pickle"):
        load_backbone(str(tmp_path))


@pytest.mark.parametrize("name", ["model.ckpt", "model.pt", "model.bin"])
def test_pickle_checkpoints_are_refused(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"not loaded")
    with pytest.raises(BackboneError, match="pickle"):
        load_backbone(str(path))


def _offline_cache(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(cache.parent))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))


def test_uncached_hub_id_offline_fails_fast(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _offline_cache(monkeypatch, tmp_path / "hub")
    with pytest.raises(BackboneError) as err:
        load_backbone("someone/not-cached")
    message = str(err.value)
    assert "someone/not-cached" in message and "HF_HUB_OFFLINE" in message and "tiny" in message


def test_no_download_unless_allowed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """allow_download=False (the node's default) refuses before any network access, online
    mode or not, and says how to allow it."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(BackboneError) as err:
        load_backbone("someone/not-cached", allow_download=False)
    message = str(err.value)
    assert "someone/not-cached" in message and "downloads are not allowed" in message
    assert "allow_download:=true" in message and "downloading it failed" not in message


def _hand_built_cache(cache: Path, repo_id: str, tiny: Backbone, parts: tuple[str, ...]) -> None:
    """Lay out a Hugging Face cache entry by hand: models--org--name/{refs/main,snapshots/<c>}."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    for part in parts:
        getattr(tiny, part).save_pretrained(snapshot / part)
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)


def test_hand_built_hub_cache_resolves_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: Backbone
) -> None:
    cache = tmp_path / "hub"
    _hand_built_cache(cache, "org/tiny-sd", tiny, ("vae", "unet"))
    _offline_cache(monkeypatch, cache)
    before = torch.get_rng_state()
    loaded = load_backbone("org/tiny-sd")
    assert torch.equal(torch.get_rng_state(), before)
    assert loaded.model_id == "org/tiny-sd"
    assert _same_weights(tiny.unet, loaded.unet)
    assert _same_weights(tiny.vae, loaded.vae)


def test_partial_hub_cache_is_reported_as_not_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tiny: Backbone
) -> None:
    cache = tmp_path / "hub"
    _hand_built_cache(cache, "org/half-sd", tiny, ("vae",))
    _offline_cache(monkeypatch, cache)
    with pytest.raises(BackboneError, match="not in the Hugging Face cache"):
        load_backbone("org/half-sd")


# --- single-file checkpoints -------------------------------------------------------------------

_LDM_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}


def _ldm_unet_key(key: str, config: dict) -> str:
    """Original CompVis name of a diffusers UNet weight (written for this test)."""
    per = config["layers_per_block"] + 1
    fixed = {
        "time_embedding.linear_1.": "time_embed.0.",
        "time_embedding.linear_2.": "time_embed.2.",
        "conv_in.": "input_blocks.0.0.",
        "conv_norm_out.": "out.0.",
        "conv_out.": "out.2.",
    }
    for ours, theirs in fixed.items():
        if key.startswith(ours):
            return theirs + key[len(ours) :]

    def resnet(rest: str) -> str:
        head, _, tail = rest.partition(".")
        return f"{_LDM_RESNET[head]}.{tail}"

    if m := re.fullmatch(r"down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        idx = per * int(m[1]) + int(m[3]) + 1
        return (
            f"input_blocks.{idx}.0.{resnet(m[4])}"
            if m[2] == "resnets"
            else (f"input_blocks.{idx}.1.{m[4]}")
        )
    if m := re.fullmatch(r"down_blocks\.(\d+)\.downsamplers\.0\.conv\.(.+)", key):
        return f"input_blocks.{per * (int(m[1]) + 1)}.0.op.{m[2]}"
    if m := re.fullmatch(r"mid_block\.resnets\.(\d+)\.(.+)", key):
        return f"middle_block.{2 * int(m[1])}.{resnet(m[2])}"
    if m := re.fullmatch(r"mid_block\.attentions\.0\.(.+)", key):
        return f"middle_block.1.{m[1]}"
    if m := re.fullmatch(r"up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)", key):
        idx = per * int(m[1]) + int(m[3])
        return (
            f"output_blocks.{idx}.0.{resnet(m[4])}"
            if m[2] == "resnets"
            else (f"output_blocks.{idx}.1.{m[4]}")
        )
    if m := re.fullmatch(r"up_blocks\.(\d+)\.upsamplers\.0\.conv\.(.+)", key):
        block = int(m[1])
        sub = 2 if "CrossAttn" in config["up_block_types"][block] else 1
        return f"output_blocks.{per * block + per - 1}.{sub}.conv.{m[2]}"
    raise KeyError(key)


def _ldm_vae_key(key: str, levels: int) -> str:
    """Original CompVis name of a diffusers VAE weight (written for this test)."""
    key = key.replace("conv_norm_out.", "norm_out.").replace("conv_shortcut.", "nin_shortcut.")
    key = re.sub(r"mid_block\.resnets\.(\d)\.", lambda m: f"mid.block_{int(m[1]) + 1}.", key)
    for ours, theirs in (
        ("group_norm.", "norm."),
        ("to_q.", "q."),
        ("to_k.", "k."),
        ("to_v.", "v."),
        ("to_out.0.", "proj_out."),
    ):
        key = key.replace(f"mid_block.attentions.0.{ours}", f"mid.attn_1.{theirs}")
    key = re.sub(r"down_blocks\.(\d+)\.resnets\.", r"down.\1.block.", key)
    key = re.sub(r"down_blocks\.(\d+)\.downsamplers\.0\.", r"down.\1.downsample.", key)
    key = re.sub(
        r"up_blocks\.(\d+)\.resnets\.", lambda m: f"up.{levels - 1 - int(m[1])}.block.", key
    )
    return re.sub(
        r"up_blocks\.(\d+)\.upsamplers\.0\.",
        lambda m: f"up.{levels - 1 - int(m[1])}.upsample.",
        key,
    )


def _write_ldm_checkpoint(path: Path, backbone: Backbone) -> None:
    """Save a backbone the way original SD 1.x single-file checkpoints are laid out."""
    tensors = {}
    for key, value in backbone.unet.state_dict().items():
        tensors["model.diffusion_model." + _ldm_unet_key(key, backbone.unet.config)] = value
    levels = len(backbone.vae.config.block_out_channels)
    for key, value in backbone.vae.state_dict().items():
        ldm = _ldm_vae_key(key, levels)
        if ".mid.attn_1." in ldm and value.ndim == 2:
            value = value[:, :, None, None]  # the original VAE attention uses 1x1 convolutions
        tensors["first_stage_model." + ldm] = value
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path))


def test_single_file_checkpoint_converts_offline(
    tmp_path: Path, tiny: Backbone, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiny-sd.safetensors"
    _write_ldm_checkpoint(path, tiny)
    _offline_cache(monkeypatch, tmp_path / "hub")
    # The public path pins the SD 1.x architecture: a 32-wide context is refused clearly.
    with pytest.raises(BackboneError, match=re.escape("only SD 1.x")):
        load_backbone(str(path))
    # The same conversion with tiny's configs reproduces tiny exactly, without any network.
    vae, unet = bb._load_single_file(path, bb.TINY_VAE_CONFIG, bb.TINY_UNET_CONFIG, torch.float32)
    assert _same_weights(tiny.unet, unet)
    assert _same_weights(tiny.vae, vae)


def test_single_file_that_is_not_sd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(path))
    with pytest.raises(
        BackboneError, match=re.escape("not a full Stable Diffusion 1.x checkpoint")
    ):
        load_backbone(str(path))
    with pytest.raises(BackboneError, match="does not exist"):
        load_backbone(str(tmp_path / "absent.safetensors"))


def test_sd15_narrow_has_sd15_blocks_heads_and_context_at_narrow_widths() -> None:
    narrow = load_backbone("sd15-narrow")
    unet = narrow.unet
    assert narrow.context_dim == 768 and narrow.seed == 0
    assert list(unet.config.block_out_channels) == [32, 64, 128, 128]
    assert unet.config.down_block_types == bb.SD15_UNET_CONFIG["down_block_types"]
    assert unet.config.up_block_types == bb.SD15_UNET_CONFIG["up_block_types"]
    for key in DEFAULT_CAPTURE_LAYERS:
        attn = unet.get_submodule(key.removesuffix(".processor"))
        assert attn.heads == 8 and attn.to_k.in_features == 768
    assert sum(p.numel() for p in unet.parameters()) < 0.02 * 860e6  # SD 1.5's UNet: 860M
