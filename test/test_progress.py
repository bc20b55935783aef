"""Progress stays readable in logs: plain lines when the stream is not a terminal."""

from __future__ import annotations

import io

from skp_core.progress import LogProgress, progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_a_log_gets_about_ten_plain_lines() -> None:
    log = io.StringIO()
    bar = progress(total=60, desc="optimize tokens", unit="steps", file=log)
    assert isinstance(bar, LogProgress)
    for step in range(60):
        bar.set_postfix(loss=f"{1.0 / (step + 1):.3g}")
        bar.update(1)
    bar.close()
    text = log.getvalue()
    lines = text.splitlines()
    assert "\r" not in text
    assert 9 <= len(lines) <= 11, lines
    assert lines[0].startswith("optimize tokens: 6/60 steps (10 %)") and "loss=0.167" in lines[0]
    assert lines[-1].startswith("optimize tokens: 60/60 steps (100 %)")
    assert lines[-1].endswith("loss=0.0167")


def test_iteration_resumed_totals_and_tiny_totals() -> None:
    log = io.StringIO()
    assert list(progress(range(3), desc="select", file=log)) == [0, 1, 2]
    assert log.getvalue().splitlines() == [
        line for line in log.getvalue().splitlines() if line.startswith("select: ")
    ]
    assert log.getvalue().splitlines()[-1].startswith("select: 3/3 it (100 %)")
    resumed = io.StringIO()
    with progress(total=10, initial=5, desc="optimize", file=resumed) as bar:
        for _ in range(5):
            bar.update(1)
    lines = resumed.getvalue().splitlines()
    assert lines[0].startswith("optimize: 6/10") and lines[-1].startswith("optimize: 10/10")


def test_a_terminal_gets_the_live_bar_and_disabled_prints_nothing() -> None:
    terminal = _Terminal()
    bar = progress(total=4, desc="replay", file=terminal)
    assert not isinstance(bar, LogProgress)
    bar.update(4)
    bar.close()
    assert "\r" in terminal.getvalue()
    quiet = io.StringIO()
    bar = progress(total=4, desc="replay", disable=True, file=quiet)
    bar.update(4)
    bar.close()
    assert quiet.getvalue() == ""
