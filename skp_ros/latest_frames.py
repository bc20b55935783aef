"""The worker's mailbox: the newest frame of every camera, never a queue.

A detector slower than the camera must not fall behind: each camera has one slot, a new frame
replaces an untaken one (counted as dropped by the caller), and the worker takes the newest
frame of every camera at once, so several cameras share one batched detector call.
"""

from __future__ import annotations

import threading
from typing import Any

__all__ = ["LatestFrames"]


class LatestFrames:
    """One slot per camera: the newest message wins, so the worker never falls behind a queue."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._items: dict[Any, Any] = {}

    def put(self, key: Any, item: Any) -> bool:
        """Store ``item`` for ``key``; True if it replaced one the worker had not taken."""
        with self._cond:
            replaced = key in self._items
            self._items[key] = item
            self._cond.notify()
        return replaced

    def take_all(self, timeout: float) -> dict[Any, Any]:
        """The newest item of every key that has one, waiting up to ``timeout`` seconds."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            items, self._items = self._items, {}
        return items

    def clear(self) -> None:
        """Forget every waiting item."""
        with self._cond:
            self._items = {}

    def wake(self) -> None:
        """Release a waiting ``take_all`` early (used when stopping the worker)."""
        with self._cond:
            self._cond.notify_all()
