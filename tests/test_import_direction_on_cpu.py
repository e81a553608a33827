"""Imports run one way: verl_ext <- data_prep <- recipe; GPU code imports nothing from verl_ext/cpu; no recipe imports
another recipe's private names; no import circle.

Two checks: every import statement of the tree, lazy ones inside functions included, read from the source (`ast`);
and each package imported alone in a fresh interpreter, whose `sys.modules` must hold nothing of a package it may
not use.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("verl_ext", "data_prep", "recipe")
# Recipe modules that are CPU-only by design (the CPU demo) may use the CPU stand-ins.
CPU_ONLY = ("recipe.domain_grpo.demo", "recipe.domain_grpo.demo_pipeline", "recipe.domain_grpo.demo_report")
# The one switch to the CPU stand-in: the SFT launcher's `cpu=True` branch (a lazy import, never on the GPU path).
CPU_SWITCH = {("recipe.common.sft", "verl_ext.cpu.sft")}
# Violations another part of issue 16 removes (each must still be one: a fixed entry is removed from this list).
PENDING: set[tuple[str, str, str]] = set()  # known wrong-way imports still to fix (none)


def module_name(path: Path, root: Path = REPO) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def source_modules(root: Path = REPO) -> dict[str, Path]:
    return {module_name(p, root): p for pkg in PACKAGES for p in sorted((root / pkg).rglob("*.py"))}


def imports_of(path: Path, module: str) -> list[tuple[str, str | None]]:
    """(module, imported name or None) of every import statement in `path`, at any depth, relative ones resolved."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            found += [(base, alias.name) for alias in node.names]
    return found


def resolve(modules: dict[str, Path], target: str, name: str | None) -> str:
    """The first-party module an import statement loads (`from a import b`: `a.b` when that is a module)."""
    return f"{target}.{name}" if name and f"{target}.{name}" in modules else target


def violations(root: Path = REPO) -> set[tuple[str, str, str]]:
    """(rule, importer, imported) for every import against the rules of the module docstring."""
    modules = source_modules(root)
    found, graph = set(), {m: set() for m in modules}
    for module, path in modules.items():
        for target, name in imports_of(path, module):
            imported, top = resolve(modules, target, name), target.split(".")[0]
            if module.startswith("verl_ext") and top in ("data_prep", "recipe"):
                found.add(("verl_ext imports " + top, module, imported))
            if module.startswith("data_prep") and top == "recipe":
                found.add(("data_prep imports recipe", module, imported))
            uses_cpu = imported == "verl_ext.cpu" or imported.startswith("verl_ext.cpu.")
            gpu_code = not module.startswith("verl_ext.cpu") and module not in CPU_ONLY
            if uses_cpu and gpu_code and (module, imported) not in CPU_SWITCH:
                found.add(("GPU code imports verl_ext.cpu", module, imported))
            other_recipe = (
                top == "recipe" and module.startswith("recipe.") and target.split(".")[:2] != module.split(".")[:2]
            )
            if other_recipe and name and name.startswith("_"):
                found.add(("private", module, f"{target}.{name}"))
            if imported in modules and imported != module:
                graph[module].add(imported)
    for a, deps in graph.items():  # a circle: two modules that reach each other
        for b in deps:
            if a < b and reaches(graph, b, a):
                found.add(("circle", a, b))
    return found


def reaches(graph: dict[str, set[str]], start: str, goal: str) -> bool:
    seen, todo = set(), [start]
    while todo:
        node = todo.pop()
        if node == goal:
            return True
        if node not in seen:
            seen.add(node)
            todo.extend(graph.get(node, ()))
    return False


def test_every_import_statement_runs_one_way() -> None:
    found = violations()
    assert not found - PENDING, sorted(found - PENDING)
    assert not PENDING - found, f"fixed, remove from PENDING: {sorted(PENDING - found)}"


def test_the_checker_sees_lazy_imports_circles_and_private_names(tmp_path: Path) -> None:
    """A tree with one of each mistake (what the old code had) is caught."""
    files = {
        "verl_ext/__init__.py": "",
        "verl_ext/probe.py": "def f():\n    from data_prep.s2demo import load_bands\n",  # lazy, inside a function
        "verl_ext/transforms.py": "from verl_ext.priors import stain\n",
        "verl_ext/priors/__init__.py": "",
        "verl_ext/priors/stain.py": "from verl_ext.transforms import register_transform\n",
        "verl_ext/cpu/__init__.py": "",
        "verl_ext/cpu/tiny_task.py": "",
        "data_prep/__init__.py": "",
        "data_prep/s2demo.py": "",
        "data_prep/pairs.py": "from recipe.domain_grpo.sft_data import answer_text\n",
        "recipe/__init__.py": "",
        "recipe/domain_grpo/__init__.py": "",
        "recipe/domain_grpo/sft_data.py": "",
        "recipe/pivot/__init__.py": "",
        "recipe/pivot/sft.py": "from verl_ext.cpu.tiny_task import f\nfrom recipe.domain_grpo.x import _y\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert violations(tmp_path) == {
        ("verl_ext imports data_prep", "verl_ext.probe", "data_prep.s2demo"),
        ("circle", "verl_ext.priors.stain", "verl_ext.transforms"),
        ("data_prep imports recipe", "data_prep.pairs", "recipe.domain_grpo.sft_data"),
        ("GPU code imports verl_ext.cpu", "recipe.pivot.sft", "verl_ext.cpu.tiny_task"),
        ("private", "recipe.pivot.sft", "recipe.domain_grpo.x._y"),
    }


LOADED = """
import importlib, json, sys
for name in sys.argv[2:]:
    importlib.import_module(name)
print(json.dumps(sorted({m.split(".")[0] if m.split(".")[0] != "verl_ext" or not m.startswith("verl_ext.cpu")
                        else "verl_ext.cpu" for m in sys.modules if m.split(".")[0] in json.loads(sys.argv[1])})))
"""


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [("verl_ext", ["data_prep", "recipe"]), ("data_prep", ["recipe"]), ("recipe", ["verl_ext.cpu"])],
)
def test_each_package_alone_loads_nothing_it_may_not_use(package: str, forbidden: list[str]) -> None:
    """Import every module of `package` (recipe: its GPU modules) in a fresh interpreter; read `sys.modules`."""
    names = [
        m
        for m in source_modules()
        if m.split(".")[0] == package
        and not m.endswith("__main__")
        and not m.startswith("verl_ext.cpu")
        and m not in CPU_ONLY
    ]
    env = {k: v for k, v in os.environ.items() if k not in ("VERL_USE_EXTERNAL_MODULES", "VERL_PLATFORM")}
    env["PYTHONPATH"] = str(REPO)
    result = subprocess.run(
        [sys.executable, "-c", LOADED, json.dumps(["data_prep", "recipe", "verl_ext"]), *names],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=env,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert not set(forbidden) & set(loaded), (package, loaded)
