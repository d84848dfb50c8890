"""The shape of the code base: every cloud's knowledge in its own modules, no import cycles,
every package saying what it holds.

These read the source with `ast`; they import nothing of servestack.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Where each import package's files live (pyproject.toml maps catalog/ and components/).
PACKAGE_DIRS = {"servestack": ROOT / "servestack", "servestack.catalog": ROOT / "catalog",
                "servestack.components": ROOT / "components"}
CLOUD_NAMES = ("aws", "gcp", "azure")


def modules() -> dict[str, Path]:
    """Every module of the project by its dotted name."""
    found: dict[str, Path] = {}
    for package, folder in PACKAGE_DIRS.items():
        for path in folder.rglob("*.py"):
            relative = path.relative_to(folder).with_suffix("")
            parts = [p for p in relative.parts if p != "__init__"]
            name = ".".join([package, *parts])
            if name.startswith("servestack.catalog.") and package == "servestack" or \
                    name.startswith("servestack.components.") and package == "servestack":
                continue  # mapped from their own folders
            found[name] = path
    return found


def is_cloud_module(path: Path) -> bool:
    """A module that holds one cloud's knowledge: clouds/aws.py, components/gcp.py,
    terraform/azure.py, catalog/aws_prices.py, ..."""
    return path.stem.split("_")[0] in CLOUD_NAMES


def cloud_branches(tree: ast.AST) -> list[int]:
    """Lines comparing something with a cloud's name (`x == "aws"`, `x in ("gcp", ...)`)."""
    lines = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        for operand in [node.left, *node.comparators]:
            values = operand.elts if isinstance(operand, ast.Tuple | ast.List | ast.Set) \
                else [operand]
            if any(isinstance(v, ast.Constant) and v.value in CLOUD_NAMES for v in values):
                lines.append(node.lineno)
    return lines


def test_no_cloud_name_branches_outside_the_cloud_modules():
    offenders = []
    for path in modules().values():
        if is_cloud_module(path):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        offenders += [f"{path.relative_to(ROOT)}:{line}" for line in cloud_branches(tree)]
    assert not offenders, "branches on a cloud's name outside its own modules:\n" + \
        "\n".join(offenders)


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules `name` imports, at any level of the file (function-level imports
    count: they close cycles at run time too), except under `if TYPE_CHECKING:`."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip = {id(n) for node in ast.walk(tree) if isinstance(node, ast.If)
            and "TYPE_CHECKING" in ast.unparse(node.test) for n in ast.walk(node)}
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")
                anchor = anchor[:len(anchor) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            targets = [f"{base}.{a.name}" for a in node.names] + [base]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != name:
                found.add(target)
    return found


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def import_graph() -> dict[str, set[str]]:
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    # Importing a submodule runs its package's __init__ first: an edge to `a.b.c` is an edge
    # to `a.b` and `a` as well, which is how package-level cycles show up.
    for deps in graph.values():
        for dep in list(deps):
            parent = dep.rpartition(".")[0]
            while parent in known:
                deps.add(parent)
                parent = parent.rpartition(".")[0]
    for name, deps in graph.items():
        deps.discard(name)
        parent = name.rpartition(".")[0]
        while parent:  # a module may use its own package's __init__ without a cycle
            deps.discard(parent)
            parent = parent.rpartition(".")[0]
    return graph


def test_no_import_cycles():
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


@pytest.mark.parametrize("package", sorted(
    name for name, path in modules().items() if path.name == "__init__.py"))
def test_every_package_says_what_it_holds(package):
    path = modules()[package]
    doc = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    assert doc and len(doc.split()) >= 8, f"{path.relative_to(ROOT)} needs a docstring"


def test_every_package_folder_is_in_the_wheel():
    """setuptools lists packages by hand here: a folder missing from the list is missing
    from an installed servestack (the editable install used by the tests hides it)."""
    import tomllib

    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    folders = {"servestack": ROOT / "servestack"} | {
        name: ROOT / path for name, path in config["package-dir"].items()}
    found = {"servestack"}
    for name, folder in folders.items():
        found |= {f"{name}.{p.parent.relative_to(folder)}".replace("/", ".")
                  for p in folder.glob("*/__init__.py")}
    found |= set(config["package-dir"])
    assert found <= set(config["packages"]), sorted(found - set(config["packages"]))
