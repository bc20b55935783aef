"""The README's Python example runs as written."""

from __future__ import annotations

import re
import runpy
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_example_runs(tmp_path, monkeypatch, capsys):
    blocks = python_blocks()
    assert blocks, "the README has no Python example"
    monkeypatch.chdir(tmp_path)
    for i, block in enumerate(blocks):
        script = tmp_path / f"readme_{i}.py"
        script.write_text(block)
        runpy.run_path(str(script), run_name="__main__")
    out = capsys.readouterr().out
    assert "[[" in out  # the detected pixel coordinates were printed
    assert (tmp_path / "my_bundle" / "bundle.json").is_file()
