"""Projects never import each other; common imports no project (static AST scan)."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def project_packages() -> dict[str, set[str]]:
    """project folder -> import names it owns (the packages under its src/)."""
    out = {}
    for proj in sorted((REPO / "projects").glob("*/")):
        out[proj.name] = {p.name for p in (proj / "src").glob("*/") if (p / "__init__.py").exists()}
    return out


def imported_roots(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module":
            if node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str):
                roots.add(node.args[0].value.split(".")[0])
    return roots


def offenders(folder: Path, forbidden: set[str]) -> list[str]:
    bad = []
    for py in sorted(folder.rglob("*.py")):
        if ".venv" in py.parts:
            continue
        hit = imported_roots(py) & forbidden
        if hit:
            bad.append(f"{py.relative_to(REPO)} imports {sorted(hit)}")
    return bad


def test_common_imports_no_project():
    every = set().union(*project_packages().values()) if project_packages() else set()
    every |= {p.replace("-", "_") for p in project_packages()}
    assert offenders(REPO / "common", every) == []


@pytest.mark.parametrize("project", sorted(project_packages()) or ["<none yet>"])
def test_project_imports_no_other_project(project):
    if project == "<none yet>":
        pytest.skip("no project exists yet")
    others = set()
    for name, pkgs in project_packages().items():
        if name != project:
            others |= pkgs | {name.replace("-", "_")}
    assert offenders(REPO / "projects" / project, others) == []


def test_scanner_sees_imports(tmp_path):
    # the scan must catch every import form a project could use, or the tests above prove nothing
    f = tmp_path / "m.py"
    f.write_text("import a.b\nfrom c import d\nfrom .rel import x\nimport importlib\nimportlib.import_module('e.f')\n")
    assert imported_roots(f) == {"a", "c", "importlib", "e"}
