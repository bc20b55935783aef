"""One crash-safe write scheme: a process killed mid-write leaves the old content whole."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load

from skp_core.atomic_files import atomic_write_bytes, interrupted_backups, replace_dir
from skp_core.safetensors_io import serialize

ROOT = Path(__file__).resolve().parents[1]

# The child starts replacing `target` (a file or a directory), writes half of the new
# content, announces it and blocks; the test then kills it with SIGKILL, a real crash.
CHILD = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from skp_core.atomic_files import atomic_write, replace_dir

    kind, target, ready = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

    def half_then_hang(path):
        with open(path, "wb") as handle:
            handle.write(b"new" * 1000)
            handle.flush()
        ready.write_text("writing")
        time.sleep(600)

    if kind == "file":
        atomic_write(target, half_then_hang)
    else:
        replace_dir(target, lambda folder: half_then_hang(folder / "data"))
    """
)


@pytest.mark.parametrize("kind", ["file", "dir"])
def test_sigkill_mid_write_keeps_the_old_content(tmp_path: Path, kind: str) -> None:
    target = tmp_path / "result"
    if kind == "file":
        target.write_bytes(b"old")
    else:
        target.mkdir()
        (target / "data").write_bytes(b"old")
    ready = tmp_path / "ready"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, kind, str(target), str(ready)],
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    try:
        while not ready.exists():  # waits on an event, not a duration
            assert child.poll() is None, "the writer died before writing"
            time.sleep(0.01)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=60)
    assert child.returncode == -signal.SIGKILL
    old = target.read_bytes() if kind == "file" else (target / "data").read_bytes()
    assert old == b"old"
    # The half-written temporary is hidden beside the target, never in its place.
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == [
        "ready",
        "result",
    ]
    # The next write goes through despite the debris.
    if kind == "file":
        atomic_write_bytes(target, b"new")
        assert target.read_bytes() == b"new"
    else:
        replace_dir(target, lambda folder: (folder / "data").write_bytes(b"new"))
        assert (target / "data").read_bytes() == b"new"
    assert interrupted_backups(target) == []


def test_failed_build_or_rename_keeps_the_old_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "result"
    replace_dir(target, lambda folder: (folder / "data").write_bytes(b"old"))

    def broken(folder: Path) -> None:
        (folder / "data").write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        replace_dir(target, broken)
    real_replace = os.replace

    def second_rename_fails(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> None:
        if ".tmp-" in os.fspath(src):
            raise OSError("simulated crash")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", second_rename_fails)
    with pytest.raises(OSError, match="simulated crash"):
        replace_dir(target, lambda folder: (folder / "data").write_bytes(b"new"))
    monkeypatch.undo()
    assert (target / "data").read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["result"]


def test_file_mode_follows_the_umask(tmp_path: Path) -> None:
    umask = os.umask(0o022)
    try:
        atomic_write_bytes(tmp_path / "shared", b"x")
    finally:
        os.umask(umask)
    assert (tmp_path / "shared").stat().st_mode & 0o777 == 0o644


SERIALIZE = (
    "import sys, torch; from skp_core.safetensors_io import serialize; "
    "meta = {f'key{i}': str(i) for i in range(40)}; "
    "sys.stdout.buffer.write(serialize({'b': torch.arange(6.0), 'a': torch.ones(2, 3)}, meta))"
)


def test_safetensors_bytes_are_the_same_in_every_process() -> None:
    """The library's metadata order changes between processes; ours does not."""
    outputs = {
        subprocess.run(
            [sys.executable, "-c", SERIALIZE],
            env={**os.environ, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            check=True,
            timeout=120,
        ).stdout
        for _ in range(3)
    }
    assert len(outputs) == 1
    data = outputs.pop()
    assert data == serialize(
        {"b": torch.arange(6.0), "a": torch.ones(2, 3)}, {f"key{i}": str(i) for i in range(40)}
    )
    tensors = load(data)
    assert torch.equal(tensors["b"], torch.arange(6.0)) and torch.equal(
        tensors["a"], torch.ones(2, 3)
    )
