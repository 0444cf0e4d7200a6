"""Validate pixi manifests without pixi: JSON schema + a lint for what a schema cannot see.

    python tasks/check_manifests.py [MANIFEST ...]      # default: pixi.toml, envs/*/pixi.toml, every pyproject.toml

The schema is pixi's own (``validate-pyproject-schema-store`` ships it as ``pixi.schema.json``, the
``[tool.pixi]`` "partial" schema); a root ``pixi.toml`` gets the extras pixi's full schema adds on top
(no unknown top-level keys, one of workspace/project/package required). The lint checks, per manifest:

- platforms are real conda subdirs, and feature platforms are a subset of the workspace's;
- every feature an environment names exists;
- every ``depends-on`` target exists in each environment that has the task;
- every task ``cwd``, path dependency (with a ``pyproject.toml``), find-links dir and activation script exists;
- a task forwarding to another manifest (``pixi run --manifest-path M TASK``) names a task M defines;
- each task an issue promises is reachable in the environment the issue names (``EXPECTED_TASKS``),
  for the projects that exist.

Exit status 1 with one line per problem, 0 when clean. Stdlib + jsonschema only.
"""

from __future__ import annotations

import json
import re
import sys
from importlib import resources
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]

# conda subdirs pixi knows; since pixi 0.71 any identifier is a legal platform *name*, so typos like
# "osx-arm" pass the schema.
KNOWN_PLATFORMS = {
    "noarch", "unknown", "linux-32", "linux-64", "linux-aarch64", "linux-armv6l", "linux-armv7l",
    "linux-ppc64le", "linux-ppc64", "linux-s390x", "linux-riscv32", "linux-riscv64", "osx-64",
    "osx-arm64", "win-32", "win-64", "win-arm64", "emscripten-wasm32", "wasi-wasm32", "zos-z",
}

# (project folder or None for the workspace itself, task, environment): what the issues promise.
EXPECTED_TASKS = [
    (None, "test", "cpu"), (None, "test", "default"), (None, "demo", "cpu"), (None, "bench-common", "cpu"),
    (None, "gpu-check", "rtx5090"), (None, "gpu-check", "cpu"),
    ("yolov10-qat", "train-qat", "rtx5090"), ("yolov10-qat", "train-qat-smoke", "cpu"),
    ("yolov10-qat", "bench-qat", "cpu"),
    ("yolox-gaudi", "yolox-1hpu", "gaudi"), ("yolox-gaudi", "yolox-8hpu", "gaudi"),
    ("yolox-gaudi", "yolox-cuda", "rtx5090"), ("yolox-gaudi", "yolox-cpu-smoke", "cpu"),
    ("yolox-gaudi", "bench-yolox", "cpu"),
    ("yolos-bf16accum", "yolos-baseline", "rtx5090"), ("yolos-bf16accum", "yolos-progressive", "rtx5090"),
    ("yolos-bf16accum", "yolos-smoke", "cpu"), ("yolos-bf16accum", "bench-bf16acc", "cpu"),
    ("yolov1-paper", "yolov1-pretrain", "rtx5090"), ("yolov1-paper", "yolov1-detect", "rtx5090"),
    ("yolov1-paper", "yolov1-smoke", "cpu"), ("yolov1-paper", "bench-yolov1", "cpu"),
    ("yolov9001-hyper", "hyper-train", "rtx5090"), ("yolov9001-hyper", "hyper-smoke", "cpu"),
    ("yolov9001-hyper", "hyper-smoke-dino", "cpu"),
    ("yolov9001-hyper", "bench-hyper", "cpu"), ("yolov9001-hyper", "test-yolov9001-hyper", "cpu"),
    ("yolov9001-hyper", "test-yolov9001-hyper", "default"), ("yolov9001-hyper", "bench-hyper", "rtx5090"),
    ("yolov9001-hyper", "hyper-validate-aug", "cpu"), ("yolov9001-hyper", "hyper-validate-aug-full", "cpu"),
    ("yolov9001-hyper", "hyper-validate-aug", "rtx5090"),
]

# `pixi run --manifest-path M [-e ENV] TASK`; groups: manifest, environment (optional), task.
_FORWARD = re.compile(r"pixi\s+run\s+(?:-m|--manifest-path)\s+(\S+)\s+(?:(?:-e|--environment)\s+(\S+)\s+)?([\w.:-]+)")


# ---------------------------------------------------------------- schema ----
def pixi_schema(root: bool) -> dict:
    """pixi's JSON schema; ``root=True`` adds what the full schema has over the ``[tool.pixi]`` one."""
    text = resources.files("validate_pyproject_schema_store").joinpath("resources/pixi.schema.json").read_text()
    schema = json.loads(text)
    if root:
        schema = dict(schema, additionalProperties=False)
        schema["properties"] = dict(schema["properties"], **{"$schema": {"type": "string"}})
        schema["anyOf"] = [{"required": [k]} for k in ("workspace", "project", "package")]
    return schema


def schema_errors(doc: dict, root: bool = True) -> list[str]:
    import jsonschema

    validator = jsonschema.Draft7Validator(pixi_schema(root))
    out = []
    for err in sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path)):
        where = ".".join(str(p) for p in err.absolute_path) or "<top>"
        out.append(f"schema: {where}: {err.message[:300]}")
    return out


# ------------------------------------------------------------------ lint ----
def _features(doc: dict) -> dict[str, dict]:
    """Feature name -> table; the unprefixed tables form the ``default`` feature."""
    default = {k: doc[k] for k in ("dependencies", "pypi-dependencies", "tasks", "activation",
                                    "pypi-options", "system-requirements", "target") if k in doc}
    feats = {"default": default}
    feats.update(doc.get("feature", {}))
    return feats


def _tasks_of(feature: dict) -> dict[str, object]:
    tasks = dict(feature.get("tasks", {}))
    for target in feature.get("target", {}).values():
        tasks.update(target.get("tasks", {}))
    return tasks


def environments(doc: dict) -> dict[str, list[str]]:
    """Environment name -> feature names it includes (``default`` included unless opted out)."""
    envs: dict[str, list[str]] = {"default": ["default"]}
    for name, spec in doc.get("environments", {}).items():
        if isinstance(spec, list):
            spec = {"features": spec}
        feats = list(spec.get("features", []))
        if not spec.get("no-default-feature", False):
            feats.append("default")
        envs[name] = feats
    return envs


def env_tasks(doc: dict) -> dict[str, dict[str, object]]:
    """Environment -> {task name: task spec} visible in it."""
    feats = _features(doc)
    out = {}
    for env, names in environments(doc).items():
        tasks: dict[str, object] = {}
        for f in names:
            for tname, spec in _tasks_of(feats.get(f, {})).items():
                tasks.setdefault(tname, spec)  # pixi: the first-declared feature's task wins
        out[env] = tasks
    return out


def _depends(spec: object) -> list[tuple[str, str | None]]:
    if not isinstance(spec, dict):
        return []
    dep = spec.get("depends-on", spec.get("depends_on", []))
    dep = [dep] if isinstance(dep, (str, dict)) else dep
    return [(d, None) if isinstance(d, str) else (d["task"], d.get("environment")) for d in dep]


def lint(path: Path, doc: dict | None = None, *, repo: Path | None = None) -> list[str]:
    """Problems a schema cannot see, one line each (empty when clean)."""
    path = Path(path)
    base = path.parent
    doc = doc if doc is not None else tomllib.loads(path.read_text())
    problems: list[str] = []
    ws = doc.get("workspace", doc.get("project", {}))
    ws_platforms = set(ws.get("platforms", []))
    for p in sorted(ws_platforms - KNOWN_PLATFORMS):
        problems.append(f"workspace.platforms: unknown platform {p!r}")

    feats = _features(doc)
    for name, feat in feats.items():
        fp = set(feat.get("platforms", [])) if name != "default" else set()
        if fp - ws_platforms:
            problems.append(f"feature.{name}.platforms: {sorted(fp - ws_platforms)} not in workspace platforms")
        for dep_name, dep in feat.get("pypi-dependencies", {}).items():
            if isinstance(dep, dict) and "path" in dep:
                target = base / dep["path"]
                if not (target / "pyproject.toml").is_file() and not target.suffix == ".whl":
                    problems.append(f"feature.{name}.pypi-dependencies.{dep_name}: no pyproject.toml in {target}")
        for fl in feat.get("pypi-options", {}).get("find-links", []):
            if "path" in fl and not (base / fl["path"]).is_dir():
                problems.append(f"feature.{name}.pypi-options.find-links: missing directory {base / fl['path']}")
        for script in feat.get("activation", {}).get("scripts", []):
            if not (base / script).is_file():
                problems.append(f"feature.{name}.activation.scripts: missing {base / script}")
        for tname, spec in _tasks_of(feat).items():
            if isinstance(spec, dict) and "cwd" in spec and not (base / spec["cwd"]).is_dir():
                problems.append(f"task {tname}: cwd {spec['cwd']!r} does not exist")
            cmd = spec.get("cmd", "") if isinstance(spec, dict) else spec
            cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
            for m in _FORWARD.finditer(cmd or ""):
                other = base / m.group(1)
                other = other / "pixi.toml" if other.is_dir() else other
                if not other.is_file():
                    problems.append(f"task {tname}: forwards to missing manifest {other}")
                    continue
                other_doc = tomllib.loads(other.read_text())
                other_env, other_task = m.group(2), m.group(3)
                if other_env is None:
                    # pixi < 0.64 resolves the nested run's environment from the outer PIXI_ENVIRONMENT_NAME
                    # ("unknown environment 'gaudi'", pixi issue 5395): always name it.
                    problems.append(f"task {tname}: forwards to {m.group(1)} without -e (pixi < 0.64 would "
                                    f"use the outer environment's name there)")
                    other_env = "default"
                other_tasks = env_tasks(other_doc)
                if other_env not in other_tasks:
                    problems.append(f"task {tname}: {other} has no environment {other_env!r}")
                elif other_task not in other_tasks[other_env]:
                    problems.append(f"task {tname}: {other} has no task {other_task!r} in environment {other_env!r}")

    envs = environments(doc)
    for env, names in envs.items():
        for f in names:
            if f not in feats:
                problems.append(f"environments.{env}: feature {f!r} is not defined")
    for env, names in envs.items():
        owners: dict[str, list[str]] = {}
        for f in names:
            for tname in _tasks_of(feats.get(f, {})):
                owners.setdefault(tname, []).append(f)
        for tname, fs in owners.items():
            if len(fs) > 1:
                # pixi takes the first-declared feature's; forbidding it keeps run.py, the lint and pixi equal
                problems.append(f"environments.{env}: task {tname!r} is defined by several features {fs}")
    tasks = env_tasks(doc)
    for env, visible in tasks.items():
        for tname, spec in visible.items():
            for dep, dep_env in _depends(spec):
                where = tasks.get(dep_env or env)
                if where is None:
                    problems.append(f"task {tname} (env {env}): depends-on environment {dep_env!r} does not exist")
                elif dep not in where:
                    problems.append(f"task {tname} (env {env}): depends-on {dep!r}, which is not a task there")

    if repo is not None:
        problems += import_coverage(doc, repo)
        for project, tname, env in EXPECTED_TASKS:
            if project is not None and not (repo / "projects" / project).is_dir():
                continue
            if tname not in tasks.get(env, {}):
                problems.append(f"task {tname!r} is promised in environment {env!r} but is not reachable there")
    return sorted(set(problems))


def check_pyproject(path: Path) -> list[str]:
    """A project's pyproject: [tool.pixi] (if any) must be a whole workspace and match the partial schema."""
    doc = tomllib.loads(Path(path).read_text())
    pixi = doc.get("tool", {}).get("pixi")
    if pixi is None:
        return []
    problems = [f"{path}: {e}" for e in schema_errors(pixi, root=False)]
    if not any(k in pixi for k in ("workspace", "project", "package")):
        # pixi >= 0.47 refuses [tool.pixi.*] fragments without a workspace (prefix-dev/pixi#3704).
        problems.append(f"{path}: [tool.pixi] without [tool.pixi.workspace] is an error in pixi")
    return problems


def check_manifest(path: Path, *, repo: Path | None = None) -> list[str]:
    """tomllib (TOML 1.0) + schema + lint for one pixi.toml."""
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as e:
        return [f"{path}: not TOML 1.0: {e}"]
    return [f"{path}: {p}" for p in schema_errors(doc) + lint(path, doc, repo=repo)]


def default_targets(repo: Path = REPO) -> list[Path]:
    out = [repo / "pixi.toml", *sorted(repo.glob("envs/*/pixi.toml"))]
    out += [repo / "common" / "pyproject.toml", *sorted(repo.glob("projects/*/pyproject.toml"))]
    return [p for p in out if p.is_file()]


# ------------------------------------------------------- import coverage ----
_NORMALISE = re.compile(r"[-_.]+")


def _dist(name: str) -> str:
    return _NORMALISE.sub("-", name).lower()


def _imports(path: Path) -> set[str]:
    """Top-level modules a file imports, leaving out optional ones: a ``try: import a`` / ``except ImportError:
    import b`` pair is a version switch (tomllib / tomli), neither side is required."""
    import ast

    tree = ast.parse(path.read_text(encoding="utf-8"))
    optional: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Try) and any(
                isinstance(h.type, ast.Name) and h.type.id in ("ImportError", "ModuleNotFoundError")
                for h in node.handlers):
            for stmt in [*node.body, *(x for h in node.handlers for x in h.body)]:
                optional.update(id(n) for n in ast.walk(stmt))
    mods = set()
    for node in ast.walk(tree):
        if id(node) in optional:
            continue
        if isinstance(node, ast.Import):
            mods.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            mods.add(node.module.split(".")[0])
    return mods


def _declared(doc: dict, env: str, base: Path) -> tuple[set[str], set[str]]:
    """(distributions an environment installs directly or through its path projects' declared
    dependencies, the path projects' own import packages)."""
    feats = _features(doc)
    dists, path_pkgs = set(), set()
    for f in environments(doc).get(env, []):
        for name, spec in feats.get(f, {}).get("pypi-dependencies", {}).items():
            dists.add(_dist(name))
            if isinstance(spec, dict) and "path" in spec and (base / spec["path"] / "pyproject.toml").is_file():
                proj = tomllib.loads((base / spec["path"] / "pyproject.toml").read_text())["project"]
                for dep in proj.get("dependencies", []):
                    dists.add(_dist(re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0]))
                for extra in spec.get("extras", []):
                    for dep in proj.get("optional-dependencies", {}).get(extra, []):
                        dists.add(_dist(re.split(r"[\s\[<>=!~;]", dep, maxsplit=1)[0]))
                src = base / spec["path"] / "src"
                path_pkgs.update(p.name for p in src.iterdir() if (p / "__init__.py").is_file()) if src.is_dir() else None
    return dists, path_pkgs


def import_coverage(doc: dict, repo: Path, env: str = "default") -> list[str]:
    """Every module the repo tests (``tests/``) and tasks (``tasks/``) import must come from the stdlib, the
    repo itself, or a distribution the environment that runs them (``default``: ``pixi run test``)
    declares. uv's environment can hold more (its own groups), so a missing one only breaks under pixi:
    tomli-w was such a case (``pixi run test`` stopped at collection)."""
    from importlib.metadata import packages_distributions

    providers = packages_distributions()
    dists, path_pkgs = _declared(doc, env, repo)
    files = [p for p in (repo / "tests").glob("*.py")] + [p for p in (repo / "tasks").glob("*.py")]
    local = {p.stem for p in files} | {p.stem for p in (repo / "envs").glob("*/*.py")}  # tests add envs/* to the path
    problems = []
    for f in sorted(files):
        for mod in sorted(_imports(f)):
            if mod in sys.stdlib_module_names or mod in local or mod in path_pkgs or mod == "__future__":
                continue
            owners = {_dist(d) for d in providers.get(mod, [])}
            if not owners:
                problems.append(f"{f.relative_to(repo)}: imports {mod!r}, which no installed distribution provides")
            elif not owners & dists:
                problems.append(f"{f.relative_to(repo)}: imports {mod!r} (from {sorted(owners)}), which environment "
                                f"{env!r} does not declare; add it to the pixi feature that runs it")
    return problems


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    targets = [Path(a) for a in argv] or default_targets()
    problems: list[str] = []
    for t in targets:
        if t.name == "pyproject.toml":
            problems += check_pyproject(t)
        else:
            problems += check_manifest(t, repo=REPO if t.resolve() == (REPO / "pixi.toml") else None)
    for p in problems:
        print(p)
    print(f"checked {len(targets)} manifest(s): {'OK' if not problems else f'{len(problems)} problem(s)'}")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
