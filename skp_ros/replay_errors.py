"""The one error skp-replay reports: bag writing, playback and the CLI all raise it.

Why a module of its own: the make-bag, run and CLI modules each raise it, and the CLI turns it
into an exit code with a one-line message, so it must not live in any one of them.
"""

from __future__ import annotations

__all__ = ["ReplayError"]


class ReplayError(RuntimeError):
    """The replay could not run (no subscriber, node died, bad bag); the message says why."""
