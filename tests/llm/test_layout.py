"""The analyst package holds no test doubles and imports none (they live in celeris.testing)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

# Import every module of celeris.llm in a fresh interpreter and list what came with them.
_IMPORT_ALL = """
import importlib, json, pkgutil, sys
import celeris.llm as package
names = [m.name for m in pkgutil.iter_modules(package.__path__)]
for name in names:
    importlib.import_module(f"celeris.llm.{name}")
print(json.dumps({"modules": names, "testing": sorted(n for n in sys.modules
                                                       if n.startswith("celeris.testing"))}))
"""


def test_llm_package_test_doubles_moved_to_celeris_testing() -> None:
    assert importlib.util.find_spec("celeris.llm.server") is None
    assert importlib.util.find_spec("celeris.llm.local") is None
    from celeris.testing.llm_server import OpenAICompatibleServer
    from celeris.testing.tiny_llm import LocalChatModel, build_tiny_model

    assert callable(build_tiny_model) and LocalChatModel and OpenAICompatibleServer


def test_llm_package_every_module_imports_nothing_from_celeris_testing() -> None:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_ALL], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert {"client", "analyst", "finetune"} <= set(seen["modules"]), seen
    assert seen["testing"] == [], seen
