"""A project copied out with tasks/export_project.py is a valid standalone repo that passes its own tests."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

import check_manifests as cm
import export_project

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "tests/fixtures/minimal-project"
# Every real project (the fixture while there is none).
REAL = sorted(p for p in (REPO / "projects").glob("*/") if (p / "pyproject.toml").is_file())
PROJECTS = REAL or [FIXTURE]


@pytest.fixture(scope="module", params=PROJECTS, ids=[p.name for p in PROJECTS])
def copy(request, tmp_path_factory):
    return export_project.export(request.param, tmp_path_factory.mktemp("standalone") / request.param.name)


def test_layout(copy):
    for rel in ("pyproject.toml", "pixi.toml", "STANDALONE.md", "tasks/run.py", "common/pyproject.toml", "tests"):
        assert (copy / rel).exists(), rel
    assert not (copy / "projects").exists()


def test_sources_point_at_the_copied_common(copy):
    doc = tomllib.loads((copy / "pyproject.toml").read_text())
    assert doc["tool"]["uv"]["sources"]["yolo-common"]["path"] == "common"
    assert (copy / doc["tool"]["uv"]["sources"]["yolo-common"]["path"] / "src/yolo_common").is_dir()


def test_standalone_manifest_is_valid(copy):
    assert cm.check_manifest(copy / "pixi.toml") == []
    doc = tomllib.loads((copy / "pixi.toml").read_text())
    assert "test" in cm.env_tasks(doc)["default"]
    # nothing in the copy may point back into the monorepo
    assert str(REPO) not in (copy / "pixi.toml").read_text() + (copy / "pyproject.toml").read_text()


def test_requirements_txt_installs_in_the_copy(copy):
    """A project with a pip requirements file (yolos-bf16accum: the seed says `pip install -r requirements.txt`)
    keeps it working standalone: the common path points at the copy's common/ and the file resolves."""
    req = copy / "requirements.txt"
    if not req.is_file():
        pytest.skip(f"{copy.name} has no requirements.txt")
    lines = [x for x in req.read_text().splitlines() if x.strip().startswith("-e")]
    assert "-e ./common" in lines and str(REPO) not in req.read_text()
    import shutil

    uv = shutil.which("uv") or str(REPO / ".uv-bootstrap" / "bin" / "uv")
    # resolve (no install) from inside the copy, as pip would read the paths: against PyPI and the copy
    out = subprocess.run([uv, "pip", "compile", "requirements.txt", "--quiet", "--no-header", "-o", "resolved.txt",
                          "--python-version", f"{sys.version_info.major}.{sys.version_info.minor}"],
                         cwd=copy, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    resolved = (copy / "resolved.txt").read_text()
    assert "transformers==" in resolved and "yolo-common" in resolved.lower().replace("_", "-")


def test_refuses_paths_outside_the_copy():
    with pytest.raises(ValueError, match="outside"):
        export_project._rel_to_project("projects/other/x", "projects/mine")


@pytest.mark.slow
def test_copy_passes_its_own_tests(copy):
    # The copy's own no-pixi command, exactly as its STANDALONE.md gives it: installs (uv, from the cache
    # where possible) and runs pytest inside the copy.
    assert "python3 tasks/run.py test" in (copy / "STANDALONE.md").read_text()
    env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
    out = subprocess.run([sys.executable, "tasks/run.py", "test"], cwd=copy, env=env,
                         capture_output=True, text=True, timeout=1200)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert " passed" in out.stdout


@pytest.mark.skipif(not (REPO / "projects/yolox-gaudi").is_dir(), reason="no yolox-gaudi")
def test_yolox_copy_keeps_its_gaudi_environment_and_tasks(tmp_path):
    """The README's `pixi run -e gaudi yolox-8hpu` must work in the copy: the gaudi workspace travels, its
    project path points at the copy, and the forwarding tasks and environment are in the copy's manifest."""
    copy = export_project.export(REPO / "projects/yolox-gaudi", tmp_path / "yolox-gaudi")
    gaudi = copy / "envs/gaudi/pixi.toml"
    text = gaudi.read_text()
    assert "../../projects" not in text
    g = tomllib.loads(text)
    assert g["pypi-dependencies"]["yolox-gaudi"]["path"] == "../.."
    assert (gaudi.parent / g["pypi-dependencies"]["yolo-common"]["path"] / "pyproject.toml").is_file()
    assert (gaudi.parent / g["pypi-dependencies"]["yolox-gaudi"]["path"] / "pyproject.toml").is_file()
    for task in g["tasks"].values():
        if isinstance(task, dict) and "cwd" in task:
            assert (gaudi.parent / task["cwd"]).is_dir(), task["cwd"]
    doc = tomllib.loads((copy / "pixi.toml").read_text())
    assert "gaudi" in doc["environments"] and doc["environments"]["gaudi"].get("no-default-feature")
    tasks = cm.env_tasks(doc)["gaudi"]
    assert {"yolox-1hpu", "yolox-8hpu", "gaudi-test"} <= set(tasks)
    assert cm.check_manifest(copy / "pixi.toml") == [] and cm.check_manifest(gaudi) == []
    for line in (copy / "README.md").read_text().splitlines():  # every `pixi run -e gaudi X` the README gives
        for t in __import__("re").findall(r"pixi run -e gaudi ([\w-]+)", line):
            assert t in tasks, t
