"""Run a pixi.toml task without pixi: sync a uv environment, then run the task's command in it.

    python3 tasks/run.py TASK [ARGS ...]          # e.g. `test`, `demo`, `bench-common`
    python3 tasks/run.py -e rtx5090 TASK          # read TASK's definition from another environment
    python3 tasks/run.py --list                   # tasks per environment

pixi.toml is the single source of truth for task commands; this script only interprets it: it follows
``depends-on`` (in order, each once), honours ``cwd``, ``env`` and ``args`` defaults, and appends extra
command-line words to the last command as pixi does. Needs only Python 3.10+ (stdlib): when ``uv`` is not
on PATH it installs it into ``.uv-bootstrap/`` with pip from PyPI. Dependencies always come from the one
uv environment ``.venv`` (root pyproject.toml: common + every project + test tools, PyPI's default torch),
i.e. the uv path is the ``cpu`` environment; ``-e`` only selects which task definition to read.
Environment variables: ``YOLO_SKIP_SYNC=1`` skips ``uv sync`` (offline reruns).
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import subprocess
import sys
import venv
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: pip vendors a TOML 1.0 parser
    from pip._vendor import tomli as tomllib  # type: ignore[no-redef]

REPO = Path(__file__).resolve().parents[1]


def find_uv() -> str:
    """Path of a uv binary; installs one into .uv-bootstrap/ when none is on PATH."""
    uv = shutil.which("uv")
    if uv:
        return uv
    boot = REPO / ".uv-bootstrap"
    exe = boot / ("Scripts/uv.exe" if os.name == "nt" else "bin/uv")
    if not exe.exists():
        print(f"[run] uv not found: installing it into {boot} (pip, from PyPI)", flush=True)
        venv.create(boot, with_pip=True)
        py = boot / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
        subprocess.run([str(py), "-m", "pip", "install", "-q", "uv"], check=True)
    return str(exe)


def sync(uv: str) -> Path:
    """``uv sync`` the root project into .venv with this interpreter; returns the venv path."""
    venv_dir = REPO / ".venv"
    if os.environ.get("YOLO_SKIP_SYNC") != "1":
        print("[run] uv sync (common + projects + test tools)", flush=True)
        env = dict(os.environ, UV_PYTHON_DOWNLOADS="never")
        env.pop("VIRTUAL_ENV", None)
        cmd = [uv, "sync", "--python", sys.executable]
        # A standalone project copy keeps its test tools in the `test` extra (the monorepo root in a group).
        if "test" in tomllib.loads((REPO / "pyproject.toml").read_text()).get("project", {}).get("optional-dependencies", {}):
            cmd += ["--extra", "test"]
        subprocess.run(cmd, cwd=REPO, env=env, check=True)
    return venv_dir


# ------------------------------------------------------------ pixi.toml ----
def load_tasks(manifest: Path) -> dict[str, dict[str, dict]]:
    """Environment -> {task: normalised spec}; features merged as pixi merges them."""
    doc = tomllib.loads(manifest.read_text())
    default = {"tasks": doc.get("tasks", {})}
    feats = {"default": default, **doc.get("feature", {})}
    envs = {"default": ["default"]}
    for name, spec in doc.get("environments", {}).items():
        spec = {"features": spec} if isinstance(spec, list) else spec
        envs[name] = list(spec.get("features", [])) + ([] if spec.get("no-default-feature") else ["default"])
    out: dict[str, dict[str, dict]] = {}
    for env, names in envs.items():
        tasks: dict[str, dict] = {}
        for f in names:
            for tname, spec in feats.get(f, {}).get("tasks", {}).items():
                # pixi's rule: the first-declared feature's task wins (the lint forbids duplicates anyway)
                tasks.setdefault(tname, {"cmd": spec} if isinstance(spec, (str, list)) else dict(spec))
        out[env] = tasks
    return out


def plan(tasks: dict[str, dict[str, dict]], env: str, name: str) -> list[tuple[str, str, dict]]:
    """Topologically ordered (env, task, spec) list: dependencies first, each task once."""
    order: list[tuple[str, str, dict]] = []
    seen: set[tuple[str, str]] = set()

    def visit(e: str, t: str, stack: tuple) -> None:
        if (e, t) in seen:
            return
        if (e, t) in stack:
            raise SystemExit(f"[run] depends-on cycle: {' -> '.join(x for _, x in stack)} -> {t}")
        if t not in tasks.get(e, {}):
            where = sorted(x for x, ts in tasks.items() if t in ts)
            hint = f" (defined in: {', '.join(where)}; use -e)" if where else ""
            raise SystemExit(f"[run] no task {t!r} in environment {e!r}{hint}")
        spec = tasks[e][t]
        deps = spec.get("depends-on", spec.get("depends_on", []))
        for d in [deps] if isinstance(deps, (str, dict)) else deps:
            dn, de = (d, e) if isinstance(d, str) else (d["task"], d.get("environment", e))
            visit(de, dn, stack + ((e, t),))
        seen.add((e, t))
        order.append((e, t, spec))

    visit(env, name, ())
    return order


def render(spec: dict, extra: list[str]) -> str:
    """The shell command of one task, with the extra command-line words handled as pixi handles them.

    - A task without ``args``: the words are appended; a ``--`` right after the task name is dropped
      (``pixi run t -- -k x`` == ``pixi run t -k x``), a later one is passed on.
    - A task with ``args``: the words up to the first ``--`` fill ``{{ arg }}`` in order (defaults for
      the rest); more words than args is an error, as in pixi; what follows ``--`` is appended
      (pixi >= 0.66, PR 5569; older pixi has no way to pass extra words to such a task).
    """
    cmd = spec.get("cmd", "")
    cmd = " ".join(cmd) if isinstance(cmd, list) else cmd
    args = spec.get("args", [])
    if not args:
        if extra[:1] == ["--"]:
            extra = extra[1:]
        return " ".join([cmd, *map(shlex.quote, extra)]).strip()
    trailing: list[str] = []
    if "--" in extra:
        cut = extra.index("--")
        extra, trailing = extra[:cut], extra[cut + 1:]
    names = [(a if isinstance(a, str) else a["arg"]) for a in args]
    if len(extra) > len(args):
        raise SystemExit(f"[run] task takes {len(args)} argument(s) ({', '.join(names)}) but got {len(extra)}: "
                         f"{extra}; put extra words after `--`")
    values = {}
    for i, a in enumerate(args):
        a = {"arg": a} if isinstance(a, str) else a
        if i < len(extra):
            values[a["arg"]] = extra[i]
        elif "default" in a:
            values[a["arg"]] = a["default"]
        else:
            raise SystemExit(f"[run] task needs argument {a['arg']!r}")
    out = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: shlex.quote(str(values[m.group(1)])), cmd)
    return " ".join([out, *map(shlex.quote, trailing)]).strip()


def run_task(venv_dir: Path, env: str, name: str, spec: dict, extra: list[str], uv: str = "uv") -> int:
    if "cmd" not in spec:
        return 0  # an alias task: only depends-on
    cmd = render(spec, extra)
    if re.search(r"\bpixi\s+(run|install)\b", cmd):
        raise SystemExit(f"[run] task {name!r} ({env}) calls pixi itself: `{cmd}`; it needs pixi (see envs/{env}/README.md)")
    bindir = venv_dir / ("Scripts" if os.name == "nt" else "bin")
    # The venv first, then uv's own folder (tasks may call uv, e.g. the standalone-copy test).
    path = os.pathsep.join([str(bindir), str(Path(uv).parent), os.environ.get("PATH", "")])
    child = dict(os.environ, VIRTUAL_ENV=str(venv_dir), PATH=path)
    child.update({"PIXI_PROJECT_ROOT": str(REPO), "PIXI_ENVIRONMENT_NAME": env})
    child.update({k: str(v) for k, v in spec.get("env", {}).items()})
    cwd = REPO / spec.get("cwd", ".")
    print(f"[run] {name} ({env}) in {cwd.relative_to(REPO) or '.'}: {cmd}", flush=True)
    return subprocess.run(["bash", "-c", cmd], cwd=cwd, env=child).returncode


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run a pixi.toml task through uv (no pixi needed).")
    ap.add_argument("-e", "--environment", default="cpu")
    ap.add_argument("--manifest", type=Path, default=REPO / "pixi.toml")
    ap.add_argument("--list", action="store_true", help="list tasks per environment and exit")
    ap.add_argument("task", nargs="?")
    ap.add_argument("args", nargs=argparse.REMAINDER)
    ns = ap.parse_args(argv)
    tasks = load_tasks(ns.manifest)
    if ns.list or not ns.task:
        for env, ts in tasks.items():
            print(f"{env}: {', '.join(sorted(ts))}")
        return 0
    steps = plan(tasks, ns.environment, ns.task)
    uv = find_uv()
    venv_dir = sync(uv)
    for env, name, spec in steps:
        rc = run_task(venv_dir, env, name, spec, ns.args if name == ns.task else [], uv)
        if rc != 0:
            print(f"[run] task {name!r} failed with exit code {rc}", flush=True)
            return rc
    return 0


if __name__ == "__main__":
    sys.exit(main())
