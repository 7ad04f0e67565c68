"""Every Python example in README.md and docs/ runs as written (in a temporary directory)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _blocks() -> list[tuple[str, int, str]]:
    out = []
    for path in DOCS:
        text = path.read_text()
        for k, match in enumerate(re.finditer(r"```python\n(.*?)```", text, re.S)):
            out.append((path.name, k, match.group(1)))
    return out


@pytest.mark.parametrize(("doc", "k", "code"), _blocks(), ids=lambda v: str(v)[:20])
def test_docs_python_example_runs(doc, k, code, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("CELERIS_HOME", str(tmp_path / "home"))
    namespace: dict = {"__name__": f"doc_{doc}_{k}"}
    exec(compile(code, f"{doc}[{k}]", "exec"), namespace)
