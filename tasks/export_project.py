"""Copy one project out of the monorepo as a standalone repository.

    python tasks/export_project.py NAME TARGET        # NAME: a folder under projects/ (or a path to a project)

TARGET gets the project's files at its top, ``common/`` next to them, and:

- the project's ``pyproject.toml`` with its ``[tool.uv.sources]`` path to common rewritten to ``common``,
  so ``uv run --extra test pytest`` (or ``python3 tasks/run.py test``) works in the copy; a
  ``requirements.txt`` (pip's ``-r`` line) gets its ``-e`` path to common rewritten to ``./common``;
- a standalone ``pixi.toml``: the root workspace's hardware features, the project's own feature (paths and
  ``cwd`` rewritten) and a ``test`` task, with only the environments that carry the project;
- ``tasks/run.py`` (the no-pixi runner) and ``STANDALONE.md`` with the commands;
- every ``envs/<env>/`` workspace that installs the project (today: ``envs/gaudi`` for yolox-gaudi), with its
  project path rewritten to the copy's top, plus the root's forwarding feature and environment for it, so
  ``pixi run -e gaudi yolox-8hpu`` works in the copy as in the monorepo.

Nothing else of the monorepo is copied; the copy never refers back to it.
"""

from __future__ import annotations

import argparse
import copy
import re
import shutil
import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

import tomli_w

REPO = Path(__file__).resolve().parents[1]
IGNORE = shutil.ignore_patterns("__pycache__", "*.egg-info", ".pytest_cache", ".venv", "runs", "build", ".pixi")
HARDWARE = ("cpu", "rtx5090")


def _rewrite_sources(text: str, project_dir: Path) -> str:
    """Point every ``path = "..."`` in the pyproject that resolves to the repo's common/ at ``common``."""
    def fix(m: re.Match) -> str:
        target = (project_dir / m.group(2)).resolve()
        return f'{m.group(1)}"common"' if target == (REPO / "common").resolve() else m.group(0)

    return re.sub(r'(path\s*=\s*)"([^"]+)"', fix, text)


def _rewrite_requirements(text: str, project_dir: Path) -> str:
    """``-e <path to the repo's common>`` lines -> ``-e ./common``; every other line unchanged."""
    out = []
    for line in text.splitlines():
        m = re.match(r"^(\s*-e\s+)(\S+)(.*)$", line)
        if m and not m.group(2).startswith(".[") and (project_dir / m.group(2)).resolve() == (REPO / "common").resolve():
            line = f"{m.group(1)}./common{m.group(3)}"
        out.append(line)
    return "\n".join(out) + "\n"


def _rel_to_project(value: str, project_rel: str) -> str:
    """A root-relative path of the monorepo, as seen from the copy's top (the project folder)."""
    v = value.rstrip("/")
    if v == project_rel:
        return "."
    if v.startswith(project_rel + "/"):
        return v[len(project_rel) + 1:]
    if v == "common" or v.startswith("common/"):
        return v
    raise ValueError(f"{value!r} points outside {project_rel} and common/: the copy would not contain it")


def own_workspaces(name: str) -> list[str]:
    """``envs/<env>`` workspaces whose pixi.toml installs the project (they travel with a copy)."""
    return sorted(p.parent.name for p in (REPO / "envs").glob("*/pixi.toml")
                  if f"../../projects/{name}" in p.read_text())


def standalone_manifest(root_doc: dict, name: str, project_rel: str, workspaces: tuple[str, ...] = ()) -> dict:
    """The copy's pixi.toml, built from the monorepo's (which stays the source of truth)."""
    ws = dict(root_doc["workspace"], name=name)
    doc: dict = {"workspace": ws}
    doc["dependencies"] = copy.deepcopy(root_doc.get("dependencies", {}))
    doc["pypi-dependencies"] = {"yolo-common": {"path": "common", "editable": True}}
    feats_in = root_doc.get("feature", {})
    feats: dict = {h: copy.deepcopy(feats_in[h]) for h in HARDWARE if h in feats_in}
    test = copy.deepcopy(feats_in.get("test", {}))
    test["tasks"] = {"test": {"cmd": "pytest", "description": f"{name}'s tests"}}
    feats["test"] = test
    if name in feats_in:
        feat = copy.deepcopy(feats_in[name])
        for dep in feat.get("pypi-dependencies", {}).values():
            if isinstance(dep, dict) and "path" in dep:
                dep["path"] = _rel_to_project(dep["path"], project_rel)
        for spec in feat.get("tasks", {}).values():
            if isinstance(spec, dict) and "cwd" in spec:
                spec["cwd"] = _rel_to_project(spec["cwd"], project_rel)
        feats[name] = feat
    else:  # a project without its own feature yet: install it through the default feature
        doc["pypi-dependencies"][name] = {"path": ".", "editable": True}
    for ws_name in workspaces:  # forwarding features (tasks only) of the envs/<env> workspaces that travel
        if ws_name in feats_in:
            feats[ws_name] = copy.deepcopy(feats_in[ws_name])
    doc["feature"] = feats
    envs = {}
    for env, spec in root_doc.get("environments", {}).items():
        spec = {"features": spec} if isinstance(spec, list) else dict(spec)
        wanted = spec.get("features", [])
        if env in workspaces:  # the forwarding environment of a workspace that travels with the copy
            spec["features"] = [f for f in wanted if f in feats]
            envs[env] = spec
            continue
        if name in feats_in and name not in wanted:
            continue
        if not any(h in wanted for h in HARDWARE):
            continue  # forwards to its own workspace, which this project is not part of
        spec["features"] = [f for f in wanted if f in feats]
        envs[env] = spec
    doc["environments"] = envs
    return doc


def export(project: str | Path, target: Path, *, force: bool = False) -> Path:
    """Copy ``project`` (name under projects/ or a path) standalone into ``target``; returns target."""
    src = Path(project)
    if not src.is_dir():
        src = REPO / "projects" / str(project)
    src = src.resolve()
    if not (src / "pyproject.toml").is_file():
        raise SystemExit(f"{src}: not a project (no pyproject.toml)")
    name = src.name
    target = Path(target).resolve()
    if target.exists() and any(target.iterdir()):
        if not force:
            raise SystemExit(f"{target} exists and is not empty (use --force to replace it)")
        shutil.rmtree(target)
    shutil.copytree(src, target, ignore=IGNORE, dirs_exist_ok=True)
    shutil.copytree(REPO / "common", target / "common", ignore=IGNORE)
    (target / "tasks").mkdir(exist_ok=True)
    shutil.copy2(REPO / "tasks" / "run.py", target / "tasks" / "run.py")

    pyproject = target / "pyproject.toml"
    pyproject.write_text(_rewrite_sources(pyproject.read_text(), src))
    requirements = target / "requirements.txt"
    if requirements.is_file():   # pip's install line (yolos-bf16accum's seed): its common path moves too
        requirements.write_text(_rewrite_requirements(requirements.read_text(), src))
    try:
        project_rel = src.relative_to(REPO).as_posix()
    except ValueError:
        project_rel = f"projects/{name}"
    workspaces = tuple(own_workspaces(name))
    for ws_name in workspaces:
        dst = target / "envs" / ws_name
        shutil.copytree(REPO / "envs" / ws_name, dst, ignore=IGNORE)
        m = dst / "pixi.toml"
        m.write_text(m.read_text().replace(f"../../projects/{name}", "../.."))
    root_doc = tomllib.loads((REPO / "pixi.toml").read_text())
    manifest = standalone_manifest(root_doc, name, project_rel, workspaces)
    header = f"# Standalone copy of {name}, exported from the monorepo by tasks/export_project.py.\n"
    (target / "pixi.toml").write_text(header + tomli_w.dumps(manifest))
    (target / "STANDALONE.md").write_text(
        f"# {name} (standalone copy)\n\n"
        "Exported from the detection monorepo with `common/` (import name `yolo_common`) next to the project.\n\n"
        "Without pixi (Python 3.10+ only; installs uv and the dependencies itself):\n\n"
        "    python3 tasks/run.py test\n\n"
        "With pixi:\n\n"
        "    pixi run test\n\n"
        f"Other tasks: `python3 tasks/run.py --list`. Environments: {', '.join(manifest['environments'])}.\n"
    )
    return target


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("project", help="folder name under projects/, or a path to a project folder")
    ap.add_argument("target", type=Path)
    ap.add_argument("--force", action="store_true", help="replace a non-empty target")
    ns = ap.parse_args(argv)
    out = export(ns.project, ns.target, force=ns.force)
    print(f"exported {ns.project} -> {out}\n  cd {out} && python3 tasks/run.py test")
    return 0


if __name__ == "__main__":
    sys.exit(main())
