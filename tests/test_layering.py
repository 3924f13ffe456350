"""The runtime stands alone: nothing under server/ or voice/ imports the benchmarks, the training
code or torch, and `voice serve`'s engine, loaded with every pipeline, never loads them."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from tests.helpers import ROOT

FORBIDDEN = ("benchmarks", "training", "torch", "transformers", "peft")


def imported_modules(path) -> set[str]:  # noqa: ANN001 - a pathlib.Path
    """Every module a source file imports, at its top or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_runtime_module_imports_benchmarks_training_or_torch():
    offenders = {
        str(path.relative_to(ROOT)): sorted(name for name in imported_modules(path)
                                            if name.split(".")[0] in FORBIDDEN)
        for package in ("server", "voice") for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}


def test_the_served_engine_never_loads_them():
    script = (
        "import json, sys\n"
        "import server.app, server.cli\n"
        "from voice.engine import Engine, EngineConfig\n"
        "engine = Engine.load(EngineConfig(native_projector='bundled'))\n"
        "assert set(engine.pipelines) == {'cascade', 'native'}\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []
