"""Load the frozen Stable Diffusion 1.x backbone: VAE + UNet only (METHOD.md §1).

The text encoder, tokenizer and safety checker are never loaded: the optimized context tensor is
fed straight into the UNet as ``encoder_hidden_states``. Every load path fails with one
:class:`BackboneError` that says what was tried and what to pass instead; nothing ever falls back
silently to random weights.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers import AutoencoderKL, UNet2DConditionModel

logger = logging.getLogger(__name__)

DEFAULT_MODEL_ID = "sd-legacy/stable-diffusion-v1-5"
"""Hub id of the reference backbone (the old ``runwayml/...`` repository no longer exists)."""

TINY_MODEL = "tiny"
SD15_RANDOM_MODEL = "sd15-random"
SD15_NARROW_MODEL = "sd15-narrow"

_HINT = (
    "Pass `tiny` (e.g. --model tiny) for the built-in test model, `sd15-random` for the SD 1.5 "
    "architecture with random weights (speed tests only), `sd15-narrow` for its narrow variant "
    "(speed tests of the map computation), a local diffusers folder containing "
    f"vae/ and unet/, a Hugging Face hub id already in the local cache (e.g. {DEFAULT_MODEL_ID}), "
    "or a single SD 1.x .safetensors checkpoint."
)

# Pickle-based formats can run arbitrary code when loaded: they are refused outright.
_PICKLE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".pkl", ".pickle")
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")
# Only the fp32 safetensors weights and configs are fetched: never the .bin or fp16 duplicates.
_HUB_PATTERNS = [
    "vae/config.json",
    "vae/diffusion_pytorch_model.safetensors",
    "unet/config.json",
    "unet/diffusion_pytorch_model.safetensors",
]

# Exact Stable Diffusion 1.5 architecture (unet/config.json and vae/config.json of the release).
SD15_UNET_CONFIG: dict[str, Any] = {
    "sample_size": 64,
    "in_channels": 4,
    "out_channels": 4,
    "center_input_sample": False,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "down_block_types": (
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "CrossAttnDownBlock2D",
        "DownBlock2D",
    ),
    "mid_block_type": "UNetMidBlock2DCrossAttn",
    "up_block_types": (
        "UpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
        "CrossAttnUpBlock2D",
    ),
    "only_cross_attention": False,
    "block_out_channels": (320, 640, 1280, 1280),
    "layers_per_block": 2,
    "downsample_padding": 1,
    "mid_block_scale_factor": 1,
    "act_fn": "silu",
    "norm_num_groups": 32,
    "norm_eps": 1e-5,
    "cross_attention_dim": 768,
    "attention_head_dim": 8,
    "use_linear_projection": False,
}
SD15_VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "act_fn": "silu",
    "latent_channels": 4,
    "norm_num_groups": 32,
    "sample_size": 512,
    "scaling_factor": 0.18215,
}

# Tiny model: the same block types, depth and captured-layer layout as SD 1.5 (up_blocks[1] at
# 1/4 and up_blocks[2] at 1/2 of the latent resolution), with small channels so that CPU tests
# run in seconds. ``attention_head_dim`` is diffusers' legacy name for the number of heads.
TINY_UNET_CONFIG: dict[str, Any] = {
    **SD15_UNET_CONFIG,
    "sample_size": 32,
    "block_out_channels": (32, 64, 64, 64),
    "norm_num_groups": 8,
    "cross_attention_dim": 32,
    "attention_head_dim": 2,
}
TINY_VAE_CONFIG: dict[str, Any] = {
    **SD15_VAE_CONFIG,
    "block_out_channels": (8, 16, 32, 32),
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "sample_size": 256,
}
# Narrow model: SD 1.5's blocks, 8 heads and 768-wide context, a tenth of its channel widths, so
# that the method's own map computation (500 tokens x 128^2 pixels x 8 heads x 4 layers, which
# does not depend on the widths) is nearly all of the cost: the benchmark that shows it.
NARROW_UNET_CONFIG: dict[str, Any] = {**SD15_UNET_CONFIG, "block_out_channels": (32, 64, 128, 128)}
NARROW_VAE_CONFIG: dict[str, Any] = {
    **SD15_VAE_CONFIG,
    "block_out_channels": (16, 32, 64, 64),
    "norm_num_groups": 16,
}

# Built-in random-weight models for measuring: name -> (VAE config, UNet config, description).
_RANDOM_MODELS: dict[str, tuple[dict[str, Any], dict[str, Any], str]] = {
    SD15_RANDOM_MODEL: (SD15_VAE_CONFIG, SD15_UNET_CONFIG, "the SD 1.5 architecture"),
    SD15_NARROW_MODEL: (NARROW_VAE_CONFIG, NARROW_UNET_CONFIG, "SD 1.5 blocks at narrow widths"),
}

TINY_CROSS_ATTENTION_GAIN = 3.0
"""Factor applied to the to_q and to_k weights of every attn2 layer of the tiny model.

At default init, q.k/sqrt(d) has a standard deviation of about 0.3, so the softmax over hundreds
of tokens is almost uniform and every map is flat: tests of argmax/Gaussian logic would then
exercise nothing. Scaling both projections by 3 multiplies the logits by 9 (std about 3), which
gives peaked, varied maps like a trained model's.
"""


class BackboneError(RuntimeError):
    """The requested backbone could not be loaded; the message says what to pass instead."""


@dataclass
class Backbone:
    """Frozen VAE + UNet pair and where it came from."""

    vae: AutoencoderKL
    unet: UNet2DConditionModel
    model_id: str
    device: torch.device
    dtype: torch.dtype
    seed: int | None = None
    """Seed of the random weights for the built-in models; None for loaded weights."""

    @property
    def context_dim(self) -> int:
        """Width of one context token (768 for SD 1.x)."""
        return int(self.unet.config.cross_attention_dim)

    @property
    def fingerprint(self) -> dict[str, Any]:
        """JSON-able architecture summary; bundles compare it to reject a mismatched backbone."""
        u = self.unet.config
        v = self.vae.config
        head_dim = u.attention_head_dim
        return {
            "model_id": self.model_id,
            "seed": self.seed,
            "unet": {
                "cross_attention_dim": int(u.cross_attention_dim),
                "block_out_channels": [int(c) for c in u.block_out_channels],
                "layers_per_block": int(u.layers_per_block),
                "attention_head_dim": (
                    [int(h) for h in head_dim]
                    if isinstance(head_dim, list | tuple)
                    else int(head_dim)
                ),
                "in_channels": int(u.in_channels),
                "down_block_types": list(u.down_block_types),
                "up_block_types": list(u.up_block_types),
            },
            "vae": {
                "latent_channels": int(v.latent_channels),
                "scaling_factor": float(v.scaling_factor),
                "block_out_channels": [int(c) for c in v.block_out_channels],
                "downsample_factor": 2 ** (len(v.block_out_channels) - 1),
            },
        }


def load_backbone(
    model: str,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype = "float32",
    seed: int = 0,
    allow_download: bool = True,
) -> Backbone:
    """Load VAE + UNet, frozen and in eval mode, on ``device`` in ``dtype``.

    ``model`` is ``tiny``, ``sd15-random``, ``sd15-narrow``, a local diffusers folder, a hub id
    (resolved from the local Hugging Face cache first) or an SD 1.x ``.safetensors`` file.
    ``seed`` only matters for the built-in random models. ``allow_download=False`` never
    touches the network: a hub id must then be in the local cache (robots run offline). The
    global torch RNG state is left untouched.
    """
    torch_device = _parse_device(device)
    torch_dtype = _parse_dtype(dtype)
    model = str(model)
    # Loading without accelerate constructs (randomly initializes) the modules first: keep that
    # off the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        if model == TINY_MODEL:
            vae, unet = _build_tiny(seed)
            model_seed: int | None = seed
        elif model in _RANDOM_MODELS:
            vae_config, unet_config, what = _RANDOM_MODELS[model]
            logger.warning(
                "%s: %s with RANDOM weights (seed %d); for speed and memory measurements only, "
                "its keypoints mean nothing.",
                model,
                what,
                seed,
            )
            vae, unet = _build_random(vae_config, unet_config, seed)
            model_seed = seed
        else:
            vae, unet, model = _load_weights(model, torch_dtype, allow_download)
            model_seed = None
    for module in (vae, unet):
        module.requires_grad_(False)
        module.eval()
        # nn.Module.to, not ModelMixin.to: the latter logs a spurious "keep in float32" warning
        # on every dtype cast although these models have no such modules.
        torch.nn.Module.to(module, device=torch_device, dtype=torch_dtype)
    return Backbone(
        vae=vae,
        unet=unet,
        model_id=model,
        device=torch_device,
        dtype=torch_dtype,
        seed=model_seed,
    )


def _parse_device(device: str | torch.device) -> torch.device:
    """Validate the device up front so a missing GPU is one clear error, not a CUDA traceback."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as err:
        raise BackboneError(f"Unknown device {device!r}: use cpu, cuda or cuda:N.") from err
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackboneError(
                f"Device {device!r} was requested but CUDA is not available on this machine "
                "(no GPU or a CPU-only torch build): pass --device cpu."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BackboneError(
                f"Device {device!r} was requested but only {torch.cuda.device_count()} CUDA "
                "device(s) exist."
            )
    elif dev.type == "mps":
        if not torch.backends.mps.is_available():
            raise BackboneError(f"Device {device!r} was requested but MPS is not available.")
    elif dev.type != "cpu":
        raise BackboneError(f"Unsupported device {device!r}: use cpu, cuda or cuda:N.")
    return dev


_DTYPES = {
    "float32": torch.float32,
    "fp32": torch.float32,
    "float": torch.float32,
    "float16": torch.float16,
    "fp16": torch.float16,
    "half": torch.float16,
    "bfloat16": torch.bfloat16,
    "bf16": torch.bfloat16,
}


def _parse_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """Accept the usual spellings; other dtypes are not meaningful for the backbone."""
    if isinstance(dtype, torch.dtype):
        if dtype in (torch.float32, torch.float16, torch.bfloat16):
            return dtype
    elif isinstance(dtype, str):
        key = dtype.lower().removeprefix("torch.")
        if key in _DTYPES:
            return _DTYPES[key]
    raise BackboneError(f"Unsupported dtype {dtype!r}: use float32, float16 or bfloat16.")


def _build_random(
    vae_config: dict[str, Any], unet_config: dict[str, Any], seed: int
) -> tuple[AutoencoderKL, UNet2DConditionModel]:
    """Build both models from configs with seeded init (caller has forked the RNG)."""
    torch.manual_seed(seed)
    vae = AutoencoderKL(**vae_config)
    unet = UNet2DConditionModel(**unet_config)
    return vae, unet


def _build_tiny(seed: int) -> tuple[AutoencoderKL, UNet2DConditionModel]:
    """The built-in test model: seeded, bit-identical on every CPU run, with peaked attention."""
    vae, unet = _build_random(TINY_VAE_CONFIG, TINY_UNET_CONFIG, seed)
    with torch.no_grad():
        for name, module in unet.named_modules():
            if name.endswith("attn2"):
                module.to_q.weight.mul_(TINY_CROSS_ATTENTION_GAIN)
                module.to_k.weight.mul_(TINY_CROSS_ATTENTION_GAIN)
    return vae, unet


def _load_weights(
    model: str, dtype: torch.dtype, allow_download: bool = True
) -> tuple[AutoencoderKL, UNet2DConditionModel, str]:
    """Dispatch on the form of ``model``; returns the models and the id to record."""
    lower = model.lower()
    if lower.endswith(_PICKLE_SUFFIXES):
        raise BackboneError(
            f"Refusing to load {model!r}: pickle-based checkpoints (.ckpt/.pt/.bin) can execute "
            "arbitrary code. Convert it to a .safetensors file or a diffusers folder. " + _HINT
        )
    path = Path(model).expanduser()
    if lower.endswith(".safetensors"):
        if not path.is_file():
            raise BackboneError(f"Checkpoint file {str(path)!r} does not exist. " + _HINT)
        vae, unet = _load_single_file(path, SD15_VAE_CONFIG, SD15_UNET_CONFIG, dtype)
        return vae, unet, str(path.resolve())
    if path.is_dir():
        vae, unet = _load_folder(path, dtype, what=f"local folder {str(path)!r}")
        return vae, unet, str(path.resolve())
    if path.exists():
        raise BackboneError(f"{model!r} is a file of an unsupported kind. " + _HINT)
    if _HUB_ID.match(model):
        folder = _resolve_hub(model, allow_download)
        vae, unet = _load_folder(folder, dtype, what=f"hub snapshot {model!r} at {str(folder)!r}")
        return vae, unet, model
    raise BackboneError(f"No model folder or file at {str(path)!r}. " + _HINT)


def _weights_variant(folder: Path, what: str) -> str | None:
    """Pick the safetensors weights of one subfolder; pickle-only folders are refused."""
    if (folder / "diffusion_pytorch_model.safetensors").is_file() or (
        folder / "diffusion_pytorch_model.safetensors.index.json"
    ).is_file():
        return None
    if (folder / "diffusion_pytorch_model.fp16.safetensors").is_file():
        return "fp16"
    if any(folder.glob("*.bin")) or any(folder.glob("*.ckpt")):
        raise BackboneError(
            f"{what}: {folder.name}/ holds only pickle weights (.bin), which are not loaded for "
            "safety; re-save it with safetensors (save_pretrained(..., safe_serialization=True))."
        )
    raise BackboneError(f"{what}: no diffusion_pytorch_model.safetensors in {str(folder)!r}.")


def _load_folder(
    folder: Path, dtype: torch.dtype, what: str
) -> tuple[AutoencoderKL, UNet2DConditionModel]:
    """Load vae/ and unet/ of a diffusers-format folder from disk only (never the network)."""
    missing = [sub for sub in ("vae", "unet") if not (folder / sub / "config.json").is_file()]
    if missing:
        raise BackboneError(
            f"{what} has no {' or '.join(s + '/config.json' for s in missing)}; expected a "
            "diffusers pipeline folder with vae/ and unet/ subfolders. " + _HINT
        )
    vae_variant = _weights_variant(folder / "vae", what)
    unet_variant = _weights_variant(folder / "unet", what)
    try:
        vae = AutoencoderKL.from_pretrained(
            folder,
            subfolder="vae",
            torch_dtype=dtype,
            use_safetensors=True,
            variant=vae_variant,
            local_files_only=True,
        )
        unet = UNet2DConditionModel.from_pretrained(
            folder,
            subfolder="unet",
            torch_dtype=dtype,
            use_safetensors=True,
            variant=unet_variant,
            local_files_only=True,
        )
    except Exception as err:
        raise BackboneError(f"Could not load the VAE/UNet from {what}: {err}") from err
    return vae, unet


def _hub_cache_dir() -> str:
    """Cache folder read at call time, so HF_HUB_CACHE/HF_HOME set after import are honoured."""
    from huggingface_hub import constants

    if os.environ.get("HF_HUB_CACHE"):
        return os.path.expanduser(os.environ["HF_HUB_CACHE"])
    if os.environ.get("HF_HOME"):
        return os.path.join(os.path.expanduser(os.environ["HF_HOME"]), "hub")
    return constants.HF_HUB_CACHE


def _hub_offline() -> bool:
    """Offline flag read at call time (huggingface_hub only reads it at import)."""
    from huggingface_hub import constants

    flag = os.environ.get("HF_HUB_OFFLINE", "")
    return constants.HF_HUB_OFFLINE or flag.upper() in {"1", "ON", "YES", "TRUE"}


def _snapshot_complete(folder: Path) -> bool:
    """Whether a cached snapshot holds configs and safetensors weights for vae/ and unet/."""
    names = (
        "diffusion_pytorch_model.safetensors",
        "diffusion_pytorch_model.safetensors.index.json",
        "diffusion_pytorch_model.fp16.safetensors",
    )
    return all(
        (folder / sub / "config.json").is_file()
        and any((folder / sub / name).is_file() for name in names)
        for sub in ("vae", "unet")
    )


def _resolve_hub(repo_id: str, allow_download: bool = True) -> Path:
    """Local cache first (no network at all); download only if the caller and the env allow."""
    from huggingface_hub import snapshot_download

    cache_dir = _hub_cache_dir()
    local_error: Exception
    try:
        folder = Path(
            snapshot_download(
                repo_id,
                cache_dir=cache_dir,
                local_files_only=True,
                allow_patterns=_HUB_PATTERNS,
            )
        )
    except Exception as cached_err:
        local_error = cached_err
    else:
        if _snapshot_complete(folder):
            return folder
        local_error = FileNotFoundError(f"partial snapshot {folder} lacks vae/ or unet/ weights")
    if not allow_download:
        raise BackboneError(
            f"{repo_id!r} is not a local folder and is not in the Hugging Face cache "
            f"{cache_dir!r} ({local_error.__class__.__name__}); downloads are not allowed here, "
            "so nothing was fetched (for the node: set allow_download:=true, or download it "
            "once beforehand). " + _HINT
        )
    if _hub_offline():
        raise BackboneError(
            f"{repo_id!r} is not a local folder and is not in the Hugging Face cache "
            f"{cache_dir!r} ({local_error.__class__.__name__}), and HF_HUB_OFFLINE is set so "
            "nothing is downloaded. Download it once online (unset HF_HUB_OFFLINE) or point "
            "HF_HUB_CACHE at a cache that holds it. " + _HINT
        )
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache_dir, allow_patterns=_HUB_PATTERNS))
    except Exception as err:
        raise BackboneError(
            f"{repo_id!r} is not a local folder, is not in the Hugging Face cache {cache_dir!r}, "
            f"and downloading it failed ({err.__class__.__name__}: {err}). " + _HINT
        ) from err


def _load_single_file(
    path: Path,
    vae_config: dict[str, Any],
    unet_config: dict[str, Any],
    dtype: torch.dtype,
) -> tuple[AutoencoderKL, UNet2DConditionModel]:
    """Convert an original-format SD 1.x checkpoint with diffusers, fully offline.

    ``from_single_file`` would fetch the diffusers configs from the hub; handing it a local
    folder holding our own configs keeps it offline and pins the architecture.
    """
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            keys = set(f.keys())
            probe = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight"
            context_width = f.get_slice(probe).get_shape()[-1] if probe in keys else None
    except Exception as err:
        raise BackboneError(f"{str(path)!r} is not a readable safetensors file: {err}") from err
    has_vae = any(k.startswith("first_stage_model.") for k in keys)
    if context_width is None or not has_vae:
        raise BackboneError(
            f"{str(path)!r} is not a full Stable Diffusion 1.x checkpoint (needs "
            "model.diffusion_model.* and first_stage_model.* weights). Convert it to a diffusers "
            "folder with vae/ and unet/ instead. " + _HINT
        )
    if context_width != unet_config["cross_attention_dim"]:
        raise BackboneError(
            f"{str(path)!r} has cross-attention width {context_width}, not "
            f"{unet_config['cross_attention_dim']}: only SD 1.x checkpoints are supported."
        )
    try:
        with tempfile.TemporaryDirectory(prefix="skp-config-") as tmp:
            for sub, cls, config in (
                ("vae", AutoencoderKL, vae_config),
                ("unet", UNet2DConditionModel, unet_config),
            ):
                os.makedirs(os.path.join(tmp, sub))
                with open(os.path.join(tmp, sub, "config.json"), "w") as fh:
                    json.dump({"_class_name": cls.__name__, **config}, fh)
            vae = AutoencoderKL.from_single_file(
                str(path), config=tmp, subfolder="vae", torch_dtype=dtype, local_files_only=True
            )
            unet = UNet2DConditionModel.from_single_file(
                str(path), config=tmp, subfolder="unet", torch_dtype=dtype, local_files_only=True
            )
    except Exception as err:
        raise BackboneError(
            f"Could not convert the single-file checkpoint {str(path)!r} ({err}). Convert it "
            "to a diffusers folder with vae/ and unet/ instead. " + _HINT
        ) from err
    return vae, unet
