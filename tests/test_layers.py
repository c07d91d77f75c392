"""The import direction docs/ARCHITECTURE.md documents, checked on the source (every import,
function-level ones included): a change that imports against it fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parent.parent / "lit_itpo"
# layer -> the lit_itpo layers it may import (besides itself). cli and __main__ are the top
# and may import anything; nothing imports them (the pipeline reaches LightningCLI through
# stages -> lightning_cli), so there is no import circle.
ALLOWED = {
    "errors": set(),
    "stats": set(),
    "utils": {"errors"},
    "nets": set(),
    "world_models": {"nets", "envs", "errors"},  # envs: an exact model reads its env
    "policies": {"nets"},
    "itpo": {"nets", "world_models", "errors"},
    "data": {"errors", "utils"},
    "envs": {"errors"},
    "evaluation": {"envs", "errors"},
    "ascent": {"envs"},
    "collect": {"data", "envs", "errors", "utils", "evaluation"},
    "modules": {"nets", "world_models", "policies", "itpo", "data", "evaluation", "errors"},
    "callbacks": {
        "nets",
        "world_models",
        "policies",
        "itpo",
        "modules",
        "data",
        "evaluation",
        "envs",
        "errors",
        "utils",
        "stats",
        "ascent",
    },  # fmt: skip
    "lightning_cli": {"data", "modules", "errors", "utils"},
    "stages": {"lightning_cli", "itpo", "data", "errors", "utils"},
    "pipeline": {
        "stages",
        "lightning_cli",
        "itpo",
        "world_models",
        "data",
        "errors",
        "utils",
        "stats",
    },
}
# data: the LightningDataModule only
LIGHTNING = {"modules", "callbacks", "cli", "lightning_cli", "data"}


def imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return found


def layer(path: Path) -> str:
    return path.relative_to(PKG).with_suffix("").parts[0]


SOURCES = sorted(p for p in PKG.rglob("*.py") if layer(p) in ALLOWED or layer(p) == "__init__")


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(PKG)))
def test_imports_follow_the_documented_direction(path):
    own = layer(path)
    allowed = ALLOWED.get(own, set()) | {own}
    for mod in imports(path):
        if mod.startswith("lit_itpo."):
            assert mod.split(".")[1] in allowed, f"{path.relative_to(PKG)} imports {mod}"
        if mod.split(".")[0] in ("lightning", "pytorch_lightning"):
            assert own in LIGHTNING, f"{path.relative_to(PKG)} imports {mod}"


def test_the_check_sees_imports():
    assert "lit_itpo.nets.normalizer" in imports(PKG / "nets" / "mlp.py")
    assert len(SOURCES) > 30


def test_nothing_imports_the_entry_point():
    """``cli`` is the top: the pipeline and the stage runs reach LightningCLI without it, so
    no import circle hides behind a function-level import."""
    for path in PKG.rglob("*.py"):
        if layer(path) not in ("cli", "__main__"):
            assert "lit_itpo.cli" not in imports(path), path.relative_to(PKG)


def test_no_benchmark_and_nothing_in_the_package_imports_a_study():
    """Studies (``benchmarks/studies/``) may import benchmarks; the package and the benchmarks
    that reproduce today's tables never import a study (docs/ARCHITECTURE.md)."""
    bench = PKG.parent / "benchmarks"
    sources = [*PKG.rglob("*.py"), *(p for p in bench.glob("*.py"))]
    assert len(sources) > 40
    for path in sources:
        for mod in imports(path):
            assert not mod.startswith("benchmarks.studies"), f"{path} imports {mod}"
            if mod == "benchmarks":  # `from benchmarks import x`: x must not be a study
                names = {
                    a.name
                    for n in ast.walk(ast.parse(path.read_text()))
                    if isinstance(n, ast.ImportFrom) and n.module == "benchmarks"
                    for a in n.names
                }
                assert "studies" not in names, path
    assert (bench / "studies" / "render.py").is_file()
