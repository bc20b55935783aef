"""Peak working memory of one block of code, for skp-bench: GPU allocations or sampled RSS.

On CUDA the allocator's own peak counter is exact. On the CPU there is no such counter, so a
background thread samples the process's resident set every millisecond; freed memory is first
handed back to the system (``malloc_trim``) so that the resting level is low and the peak above
it is what the block itself needed. Torch kernels release the GIL, so the sampler keeps running.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import resource
import threading
from types import TracebackType

import torch

__all__ = ["PeakMemory"]

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def _resident_bytes() -> int | None:
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _trim() -> None:
    """Give freed heap memory back to the system (glibc only; a no-op elsewhere)."""
    name = ctypes.util.find_library("c")
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass


class PeakMemory:
    """``with PeakMemory(device) as m: ...`` then ``m.peak_mib``: peak above the start level."""

    def __init__(self, device: torch.device, interval_s: float = 0.001) -> None:
        self.device = device
        self.interval_s = interval_s
        self.peak_mib = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._start = 0
        self._peak = 0

    def _sample(self) -> None:
        while not self._stop.is_set():
            now = _resident_bytes()
            if now is not None and now > self._peak:
                self._peak = now
            self._stop.wait(self.interval_s)

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._start = torch.cuda.memory_allocated(self.device)
            return self
        _trim()
        start = _resident_bytes()
        if start is None:  # no /proc: the lifetime peak is all there is
            self._start = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            return self
        self._start = self._peak = start
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            peak = torch.cuda.max_memory_allocated(self.device)
        elif self._thread is not None:
            self._stop.set()
            self._thread.join()
            peak = max(self._peak, _resident_bytes() or 0)
        else:
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        self.peak_mib = max(0, peak - self._start) / 2**20
