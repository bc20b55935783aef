"""Multi-process skp-train: 2 CPU processes (gloo, loopback only) give the single-process result.

Each rank computes its slice of every optimization step and the gradients are summed, so the
context must match a single-process run up to float summation order; precompute shards the
images and gathers them, so with the same tokens the keypoints must match exactly.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from offline_tools.distributed import Distributed, init_distributed
from offline_tools.fixtures import write_fixture
from offline_tools.train import main
from skp_core.checkpoint import load_checkpoint
from skp_core.shard import Shard, shard_slice

ROOT = Path(__file__).resolve().parents[1]

TINY = [
    "--model", "tiny",
    "--image-size", "64",
    "--feature-resolution", "16",
    "--num-tokens", "24",
    "--steps", "3",
    "--images-per-step", "3",  # uneven split over 2 ranks: 2 + 1 images
    "--top-k", "4",
    "--num-candidates", "8",
    "--num-views", "2",
    "--selection-images", "4",
    "--batch-size", "4",
    "--num-workers", "0",
    "--no-progress",
]  # fmt: skip


def _free_loopback_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def torchrun(args: list[str], processes: int = 2) -> subprocess.CompletedProcess:
    """`python -m torch.distributed.run` on this machine's loopback interface only."""
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "MASTER_ADDR": "127.0.0.1",
        "GLOO_SOCKET_IFNAME": "lo",
        "OMP_NUM_THREADS": "1",
    }
    command = [
        sys.executable, "-m", "torch.distributed.run",
        "--nproc-per-node", str(processes),
        "--master-addr", "127.0.0.1",
        "--master-port", str(_free_loopback_port()),
        "-m", "offline_tools.train", *args,
    ]  # fmt: skip
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_fixture("celeba_aligned", tmp_path_factory.mktemp("data") / "celeba")


@pytest.fixture(scope="module")
def single(dataset, tmp_path_factory) -> Path:
    """The single-process reference run: optimize, select, precompute."""
    out = tmp_path_factory.mktemp("single") / "run"
    args = ["--dataset", "celeba_aligned", "--data-root", str(dataset), "--out", str(out)]
    assert main([*args, *TINY, "--stages", "optimize,select,precompute"]) == 0
    return out


def test_shards_concatenate_to_the_whole_batch():
    for count in range(0, 11):
        for world in range(1, 5):
            blocks = [range(count)[shard_slice(count, rank, world)] for rank in range(world)]
            assert [i for block in blocks for i in block] == list(range(count))
            assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
            rows = [Shard(r, world, lambda t: None).rows(count) for r in range(world)]
            assert [range(count)[s] for s in rows] == blocks


def test_without_torchrun_everything_is_one_process(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    ctx, device = init_distributed("cpu")
    assert device == "cpu" and ctx == Distributed() and ctx.is_main and not ctx.enabled
    assert ctx.shard() is None
    assert ctx.broadcast(3) == 3 and ctx.gather("x") == ["x"]
    ctx.barrier()
    ctx.close()


def test_two_processes_optimize_like_one(single, dataset, tmp_path):
    out = tmp_path / "two"
    args = ["--dataset", "celeba_aligned", "--data-root", str(dataset), "--out", str(out)]
    done = torchrun([*args, *TINY, "--stages", "optimize,select"])
    assert done.stdout.count("skp-train summary") == 1  # only rank 0 reports

    ours, our_meta = load_checkpoint(out / "checkpoints")
    ref, ref_meta = load_checkpoint(single / "checkpoints")
    assert our_meta["step"] == ref_meta["step"] == 3
    # Same draws, gradients summed over ranks: equal up to float summation order.
    torch.testing.assert_close(ours["context"], ref["context"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours["adam.exp_avg"], ref["adam.exp_avg"], rtol=1e-3, atol=1e-6)
    ours_loss = torch.tensor([h["loss"] for h in our_meta["history"]])
    ref_loss = torch.tensor([h["loss"] for h in ref_meta["history"]])
    torch.testing.assert_close(ours_loss, ref_loss, rtol=1e-5, atol=0)
    assert torch.equal(ours["generator"], ref["generator"])  # every rank drew the same

    selected = json.loads((out / "selection.json").read_text())["selected_indices"]
    assert selected == json.loads((single / "selection.json").read_text())["selected_indices"]
    # Only rank 0 wrote, and atomically: no temporary files left behind.
    assert not [p for p in out.rglob(".*") if p.is_file()]


def test_two_processes_precompute_like_one(single, dataset, tmp_path):
    out = tmp_path / "two"
    args = ["--dataset", "celeba_aligned", "--data-root", str(dataset), "--out", str(out)]
    torchrun([*args, *TINY, "--bundle", str(single / "bundle"), "--stages", "precompute"])
    for split in ("regression", "test"):
        ours = load_file(out / f"keypoints_{split}.safetensors")
        ref = load_file(single / f"keypoints_{split}.safetensors")
        assert ours.keys() == ref.keys()
        assert torch.equal(ours["indices"], ref["indices"])
        assert torch.equal(ours["annotations"], ref["annotations"])
        assert torch.equal(ours["visibility"], ref["visibility"])
        torch.testing.assert_close(ours["keypoints"], ref["keypoints"], rtol=0, atol=1e-6)
