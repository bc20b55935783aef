"""`scripts/gpu-check`: every CUDA path of skp, in one short run on a GPU machine.

1. skp-bench on sd15-random at 512 px on CUDA, float32, then float16 (backbone and maps);
2. skp-train --model tiny --device cuda end to end on real photos;
3. the keypoint node on CUDA over a 50-frame generated bag (skp-replay; needs rclpy/rosbags);
4. a 2-process torchrun of skp-train over NCCL, when 2 GPUs are present.

Each part runs as its own process with a time limit; one that cannot run here (no rclpy, one
GPU) is reported as skipped with the reason, one that fails keeps the tail of its output. One
summary is printed and written as JSON. Meant to finish in under 5 minutes on one GPU.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

#: Seconds each part may take before it is stopped and reported as failed.
PART_LIMIT_S = {"bench_fp32": 120, "bench_fp16": 120, "train": 90, "node": 120, "nccl": 90}


def _run(name: str, command: list[str], log: Path) -> dict[str, Any]:
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    try:
        done = subprocess.run(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=PART_LIMIT_S[name],
            env=env,
            check=False,
        )
        output, code = done.stdout, done.returncode
    except subprocess.TimeoutExpired as exc:
        output = exc.stdout if isinstance(exc.stdout, str) else ""
        code = None
    log.write_text(output)
    result: dict[str, Any] = {
        "status": "ok" if code == 0 else ("timeout" if code is None else "failed"),
        "seconds": round(time.perf_counter() - start, 1),
        "log": str(log),
    }
    if code != 0:
        result["tail"] = output.strip().splitlines()[-15:]
    return result


def _bench_figures(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    data = json.loads(path.read_text())
    return {
        row["key"]: {
            "ours_ms": round(row["ours_s"] * 1000, 1),
            "bare_ms": round(row["bare_s"] * 1000, 1),
            "ratio": round(row["ratio"], 2),
            "target": row.get("target"),
            "ours_peak_mib": round(row["ours_peak_mib"]),
            "memory_ratio": round(row["memory_ratio"], 2),
        }
        for row in data["rows"]
    }


def run_checks(out: Path) -> dict[str, Any]:
    import torch

    py = sys.executable
    out.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "gpus": torch.cuda.device_count(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "parts": {},
    }
    if not torch.cuda.is_available():
        summary["error"] = "no CUDA device: this check needs a GPU and a CUDA build of torch"
        return summary
    parts = summary["parts"]
    bench = [py, "-m", "skp_core.benchmark_cli", "--model", "sd15-random", "--device", "cuda",
             "--image-size", "512", "--repeat", "3", "--latent-views"]  # fmt: skip
    fp32 = [*bench, "--json", str(out / "bench_fp32.json")]
    parts["bench_fp32"] = _run("bench_fp32", fp32, out / "bench_fp32.log")
    parts["bench_fp32"]["figures"] = _bench_figures(out / "bench_fp32.json")
    half = ["--dtype", "float16", "--map-dtype", "float16"]
    fp16 = [*bench[:-1], *half, "--json", str(out / "bench_fp16.json")]
    parts["bench_fp16"] = _run("bench_fp16", fp16, out / "bench_fp16.log")
    parts["bench_fp16"]["figures"] = _bench_figures(out / "bench_fp16.json")

    from offline_tools.demo import write_photos

    write_photos(out / "photos")
    train = ["--dataset", "custom", "--data-root", str(out / "photos"), "--model", "tiny",
             "--device", "cuda", "--no-progress"]  # fmt: skip
    call_train = "import sys; from offline_tools.train import main; sys.exit(main(sys.argv[1:]))"
    parts["train"] = _run(
        "train", [py, "-c", call_train, *train, "--out", str(out / "train")], out / "train.log"
    )
    bundle = out / "train" / "bundle"

    missing = [m for m in ("rclpy", "rosbags") if importlib.util.find_spec(m) is None]
    if missing:
        parts["node"] = {"status": "skipped", "reason": f"not installed: {', '.join(missing)}"}
    elif not bundle.is_dir():
        parts["node"] = {"status": "skipped", "reason": "skp-train made no bundle"}
    else:
        replay = [py, "-m", "skp_ros.replay"]
        bag = str(out / "bag")
        make = [*replay, "make-bag", bag, "--sweep", "astronaut", "--frames", "50"]
        run = [*replay, "run", bag, "--out", str(out / "replay"), "--bundle", str(bundle)]
        run += ["--device", "cuda", "--local"]
        both = f"{_quote(make)} && {_quote(run)}"
        parts["node"] = _run("node", ["bash", "-c", both], out / "node.log")
        report = out / "replay" / "report.json"
        if report.is_file():
            parts["node"]["report"] = json.loads(report.read_text())

    if summary["gpus"] < 2:
        parts["nccl"] = {"status": "skipped", "reason": f"{summary['gpus']} GPU(s); needs 2"}
    else:
        torchrun = [py, "-m", "torch.distributed.run", "--nproc-per-node", "2", "-m",
                    "offline_tools.train", *train, "--out", str(out / "train_nccl")]  # fmt: skip
        parts["nccl"] = _run("nccl", torchrun, out / "nccl.log")
    return summary


def _quote(command: list[str]) -> str:
    import shlex

    return " ".join(shlex.quote(c) for c in command)


def format_summary(summary: dict[str, Any]) -> str:
    lines = [f"gpu-check: {summary.get('gpu')} x{summary.get('gpus')}, torch {summary['torch']}"]
    if "error" in summary:
        lines.append(f"  {summary['error']}")
    for name, part in summary["parts"].items():
        detail = part.get("reason", f"{part.get('seconds', 0)} s")
        lines.append(f"  {name:<11} {part['status']:<8} {detail}")
        for key, fig in part.get("figures", {}).items():
            target = "" if fig["target"] is None else f" (target {fig['target']})"
            lines.append(
                f"      {key:<22} ours {fig['ours_ms']:>9.1f} ms  bare {fig['bare_ms']:>9.1f} ms"
                f"  ratio {fig['ratio']:.2f}{target}  memory x{fig['memory_ratio']:.2f}"
            )
        for line in part.get("tail", []):
            lines.append(f"      | {line}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpu-check", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/gpu-check"))
    args = parser.parse_args(argv)
    summary = run_checks(args.out)
    (args.out / "gpu-check.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(format_summary(summary))
    print(f"summary: {args.out / 'gpu-check.json'}")
    ok = "error" not in summary and all(
        p["status"] in ("ok", "skipped") for p in summary["parts"].values()
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
