"""How the project is built: the device install, the layers, the distribution's contents."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("edge", "training", "convert")
# Which project packages each layer may import: edge at the bottom, benchmarks on top.
ALLOWED = {
    "edge": {"edge"},
    "training": {"edge", "training"},
    "convert": {"edge", "training", "convert"},
    "benchmarks": {"edge", "training", "convert", "benchmarks"},
}
TENSORFLOW_NAMES = {"tensorflow", "keras", "tf_keras", "tensorboard"}


def pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def requirement_names(lines) -> dict[str, Requirement]:
    found = {}
    for line in lines:
        line = line.split("#", 1)[0].strip()
        if line:
            requirement = Requirement(line)
            found[requirement.name.lower()] = requirement
    return found


def test_edge_requirements_agree_with_the_base_install():
    base = requirement_names(pyproject()["project"]["dependencies"])
    edge = requirement_names((ROOT / "edge" / "requirements.txt").read_text().splitlines())
    assert set(base) == set(edge)
    for name, requirement in base.items():
        assert requirement.specifier == edge[name].specifier, name


def test_the_base_install_has_no_tensorflow_and_the_train_extra_resolves_on_arm64():
    project = pyproject()["project"]
    assert not set(requirement_names(project["dependencies"])) & (TENSORFLOW_NAMES | {"tensorflow-cpu"})
    train = [Requirement(r) for r in project["optional-dependencies"]["train"]]
    for machine, wanted in (("x86_64", "tensorflow-cpu"), ("aarch64", "tensorflow")):
        environment = {"platform_machine": machine}
        chosen = {r.name for r in train if r.marker is None or r.marker.evaluate(environment)}
        assert wanted in chosen and ({"tensorflow", "tensorflow-cpu"} - {wanted}).isdisjoint(chosen)


def test_the_lock_pins_every_dependency_once_per_platform():
    project = pyproject()["project"]
    wanted = [Requirement(r) for r in (*project["dependencies"], *project["optional-dependencies"]["train"],
                                       *project["optional-dependencies"]["test"],
                                       *project["optional-dependencies"]["mqtt"],
                                       *project["optional-dependencies"]["cluster"],
                                       *project["optional-dependencies"]["quantizer"])]
    for machine in ("x86_64", "aarch64"):
        declared = {r.name.lower() for r in wanted
                    if r.marker is None or r.marker.evaluate({"platform_machine": machine})}
        pinned: dict[str, str] = {}
        for line in (ROOT / "requirements.lock").read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if not line:
                continue
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate({"platform_machine": machine}):
                continue
            assert requirement.name not in pinned, f"{requirement.name} pinned twice for {machine}"
            assert str(requirement.specifier).startswith("=="), line
            pinned[requirement.name.lower()] = str(requirement.specifier)
        missing = {name for name in declared if name not in pinned}
        assert not missing, f"{machine}: not pinned: {missing}"


@pytest.mark.slow
def test_the_distribution_holds_exactly_the_three_packages(tmp_path):
    """The folder names are generic, so the wheel must put nothing else at top level."""
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(tmp_path), str(ROOT)], check=True, capture_output=True, timeout=300)
    (wheel,) = tmp_path.glob("crackkit-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    top = {name.split("/", 1)[0] for name in names if not name.split("/", 1)[0].endswith(".dist-info")}
    assert top == set(PACKAGES)
    assert "edge/requirements.txt" in names and "edge/crack-edge.service" in names


@pytest.mark.parametrize("command", ["crack", "crack-edge"])
def test_both_commands_print_their_version(command):
    from edge.cli_main import package_version

    result = subprocess.run([str(Path(sys.executable).parent / command), "--version"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"crackkit {package_version()}"
    assert re.fullmatch(r"\d+\.\d+\.\d+.*", package_version())


def imports_of(path: Path) -> set[str]:
    """Top-level names of every module that ``path`` imports, at any depth of the code."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module)
    return found


def project_modules() -> dict[str, Path]:
    modules = {}
    for package in (*PACKAGES, "benchmarks"):
        for path in (ROOT / package).rglob("*.py"):
            parts = path.relative_to(ROOT).with_suffix("").parts
            modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def test_layers_only_point_down():
    upward = []
    for module, path in project_modules().items():
        layer = module.split(".")[0]
        for imported in imports_of(path):
            top = imported.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[layer]:
                upward.append(f"{module} imports {imported}")
            if layer == "edge" and top in TENSORFLOW_NAMES:
                upward.append(f"{module} imports {imported} (edge never imports TensorFlow)")
    assert not upward


def test_no_import_cycles_between_modules():
    modules = project_modules()
    graph = {module: set() for module in modules}
    for module, path in modules.items():
        for imported in imports_of(path):
            # `from a.b import c` may name module a.b.c or an attribute of a.b
            for candidate in (imported, imported.rsplit(".", 1)[0]):
                if candidate in modules and candidate != module:
                    graph[module].add(candidate)
                    break
    cycles = []

    def visit(node, trail):
        for target in graph[node]:
            if target in trail:
                cycles.append(" -> ".join(trail[trail.index(target):] + [target]))
            elif target not in done:
                visit(target, trail + [target])
        done.add(node)

    done: set[str] = set()
    for module in sorted(graph):
        if module not in done:
            visit(module, [module])
    assert not cycles


BLOCK_TENSORFLOW = """
import importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in {blocked!r}:
            raise ImportError('blocked on the device: ' + name)
sys.meta_path.insert(0, Block())
import pkgutil, importlib, edge
for info in pkgutil.walk_packages(edge.__path__, 'edge.'):
    if info.name not in ('edge.__main__',):
        importlib.import_module(info.name)
sys.argv = ['crack-edge', '--help']
from edge.cli import main
main()
"""


def test_the_edge_runner_works_without_tensorflow():
    """Every edge module imports, and the CLI runs, with TensorFlow and Keras impossible to import."""
    code = BLOCK_TENSORFLOW.format(blocked=TENSORFLOW_NAMES)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=120, env={**os.environ, "COLUMNS": "120"})
    assert result.returncode == 0, result.stderr
    assert "score" in result.stdout and "stream" in result.stdout
