"""pixi manifests: TOML 1.0, pixi's JSON schema, and the lint for what the schema cannot see."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import check_manifests as cm

try:
    import tomllib
except ModuleNotFoundError:
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = [REPO / "pixi.toml", *sorted(REPO.glob("envs/*/pixi.toml"))]
PYPROJECTS = [REPO / "pyproject.toml", REPO / "common/pyproject.toml", *sorted(REPO.glob("projects/*/pyproject.toml"))]


@pytest.mark.parametrize("path", MANIFESTS, ids=lambda p: str(p.relative_to(REPO)))
def test_manifest_is_valid(path):
    problems = cm.check_manifest(path, repo=REPO if path == REPO / "pixi.toml" else None)
    assert problems == []


@pytest.mark.parametrize("path", PYPROJECTS, ids=lambda p: str(p.relative_to(REPO)))
def test_pyproject_parses_and_has_build_system(path):
    doc = tomllib.loads(path.read_text())
    assert cm.check_pyproject(path) == []
    if path != REPO / "pyproject.toml":
        # a path dependency without [build-system] is built by uv's legacy setuptools fallback
        assert "build-system" in doc, f"{path} needs a [build-system]"


def _root():
    return tomllib.loads((REPO / "pixi.toml").read_text())


def test_schema_catches_misspelled_keys():
    doc = _root()
    doc["feature"]["cpu"]["pypi-dependecies"] = doc["feature"]["cpu"].pop("pypi-dependencies")
    assert any("pypi-dependecies" in e for e in cm.schema_errors(doc))
    doc = _root()
    doc["environments"]["cpu"]["solve_group"] = doc["environments"]["cpu"].pop("solve-group")
    assert any("solve_group" in e for e in cm.schema_errors(doc))
    doc = _root()
    doc["unknown-table"] = {}
    assert cm.schema_errors(doc)


def test_lint_catches_misspelled_depends_on_and_feature():
    doc = _root()
    doc["feature"]["test"]["tasks"]["test"]["depends-on"] = ["check-manifest"]  # the task is check-manifests
    problems = cm.lint(REPO / "pixi.toml", doc)
    assert any("depends-on 'check-manifest'" in e for e in problems), problems

    doc = _root()
    feats = doc["environments"]["cpu"]["features"]
    feats[feats.index("test")] = "tset"
    problems = cm.lint(REPO / "pixi.toml", doc)
    assert any("feature 'tset' is not defined" in e for e in problems), problems
    # and the correct manifest is clean, so the two failures above are the typos' doing
    assert cm.lint(REPO / "pixi.toml", repo=REPO) == []


def test_lint_catches_paths_platforms_and_forwarding():
    doc = _root()
    doc["workspace"]["platforms"].append("osx-arm")
    doc["feature"]["test"]["tasks"]["test-common"]["cwd"] = "comon"
    doc["feature"]["cpu"]["pypi-dependencies"]["ghost"] = {"path": "projects/ghost", "editable": True}
    doc["feature"]["gaudi"]["tasks"]["gaudi-test"] = "pixi run --manifest-path envs/gaudi/pixi.toml tests"
    problems = cm.lint(REPO / "pixi.toml", doc)
    assert any("unknown platform 'osx-arm'" in e for e in problems)
    assert any("cwd 'comon'" in e for e in problems)
    assert any("ghost" in e and "pyproject.toml" in e for e in problems)
    assert any("has no task 'tests'" in e for e in problems)


def test_promised_tasks_are_checked():
    doc = _root()
    del doc["feature"]["test"]["tasks"]["bench-common"]
    assert any("'bench-common' is promised" in e for e in cm.lint(REPO / "pixi.toml", doc, repo=REPO))


def test_cli_exit_codes(tmp_path):
    ok = subprocess.run([sys.executable, str(REPO / "tasks/check_manifests.py")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    bad = tmp_path / "pixi.toml"
    bad.write_text('[workspace]\nname = "x"\nchannels = []\nplatforms = ["linux-64"]\n[environments]\ne = ["nope"]\n')
    out = subprocess.run([sys.executable, str(REPO / "tasks/check_manifests.py"), str(bad)], capture_output=True, text=True)
    assert out.returncode == 1 and "nope" in out.stdout


def test_toml_1_1_is_rejected(tmp_path):
    p = tmp_path / "pixi.toml"
    p.write_text('[workspace]\nname = "x"\nchannels = []\nplatforms = ["linux-64"]\n'
                 '[pypi-dependencies]\nfoo = {\n  path = ".",\n}\n')
    assert any("not TOML 1.0" in e for e in cm.check_manifest(p))


def test_conda_supplies_only_python():
    doc = _root()
    for name, feat in cm._features(doc).items():
        assert set(feat.get("dependencies", {})) <= {"python"}, f"feature {name} takes packages from conda"


def test_rtx5090_torch_index_carries_sm120():
    deps = _root()["feature"]["rtx5090"]["pypi-dependencies"]
    for pkg in ("torch", "torchvision"):
        assert "index" in deps[pkg], f"{pkg} must come from a per-dependency PyTorch index"
    index, version = deps["torch"]["index"], deps["torch"]["version"]
    # cu128 exists only for torch 2.7-2.11; newer torch needs cu130 (both carry Blackwell sm_120).
    assert index.endswith("/cu128") and "<2.12" in version or index.endswith("/cu130")
    assert deps["torchvision"]["index"] == index
    assert _root()["feature"]["rtx5090"]["system-requirements"]["cuda"] in ("12.8", "13.0")


def test_gaudi_is_isolated_and_pinned_exactly():
    root = _root()
    gaudi_env = root["environments"]["gaudi"]
    assert gaudi_env.get("no-default-feature") is True
    assert not root["feature"]["gaudi"].get("pypi-dependencies"), "Habana wheels must not enter the root lock"
    g = tomllib.loads((REPO / "envs/gaudi/pixi.toml").read_text())
    assert {"path": "wheelhouse"} in g["pypi-options"]["find-links"]
    for pkg in ("torch", "torchvision", "habana-torch-plugin", "habana-torch-dataloader"):
        assert re.fullmatch(r"==[\w.+]+", g["pypi-dependencies"][pkg]), pkg
    assert "+" in g["pypi-dependencies"]["torch"], "torch needs Intel's local label so PyPI torch never matches"


def test_sync_pins_rewrites_from_wheel_names(tmp_path):
    sys.path.insert(0, str(REPO / "envs/gaudi"))
    import sync_pins

    wh = tmp_path / "wheelhouse"
    wh.mkdir()
    for f in ("torch-2.9.0+hpu.1.23.0.695.gitabc-cp312-cp312-linux_x86_64.whl",
              "torchvision-0.24.0+hpu.1.23.0.695-cp312-cp312-linux_x86_64.whl",
              "habana_torch_plugin-1.23.0.695-cp312-cp312-linux_x86_64.whl",
              "habana_torch_dataloader-1.23.0.695-cp312-cp312-linux_x86_64.whl"):
        (wh / f).touch()
    manifest = tmp_path / "pixi.toml"
    shutil.copy(REPO / "envs/gaudi/pixi.toml", manifest)
    (tmp_path / "activate.sh").touch()
    new = tomllib.loads(sync_pins.sync(manifest, wh))
    assert new["pypi-dependencies"]["torch"] == "==2.9.0+hpu.1.23.0.695.gitabc"
    assert new["pypi-dependencies"]["habana-torch-plugin"] == "==1.23.0.695"
    assert new["dependencies"]["python"] == "3.12.*"
    (wh / "habana_torch_plugin-1.22.0.1-cp312-cp312-linux_x86_64.whl").touch()
    with pytest.raises(SystemExit, match="several versions"):
        sync_pins.sync(manifest, wh)


# ---- issue 16 item 4: the pixi path as real pixi runs it ----------------------------------------------


def test_lint_requires_the_environment_on_forwarded_runs():
    """pixi < 0.64 resolves a nested `pixi run --manifest-path M task` against the outer environment's
    name (pixi issue 5395: "unknown environment 'gaudi'"); the forwarders name `-e default`."""
    root = _root()
    for t in ("gaudi-test", "yolox-1hpu", "yolox-8hpu"):
        assert " -e default " in root["feature"]["gaudi"]["tasks"][t]["cmd"]
    doc = _root()
    doc["feature"]["gaudi"]["tasks"]["yolox-1hpu"]["cmd"] = "pixi run --manifest-path envs/gaudi/pixi.toml yolox-1hpu"
    assert any("without -e" in e for e in cm.lint(REPO / "pixi.toml", doc))
    doc["feature"]["gaudi"]["tasks"]["yolox-1hpu"]["cmd"] = "pixi run --manifest-path envs/gaudi/pixi.toml -e hpu yolox-1hpu"
    assert any("no environment 'hpu'" in e for e in cm.lint(REPO / "pixi.toml", doc))


def test_lint_checks_test_imports_are_declared():
    """Every module tests/ and tasks/ import must be declared for the environment `pixi run test` uses
    (tomli-w was missing: collection failed under pixi while uv's group had it)."""
    doc = _root()
    assert cm.import_coverage(doc, REPO) == []
    del doc["feature"]["test"]["pypi-dependencies"]["tomli-w"]
    problems = cm.import_coverage(doc, REPO)
    assert any("imports 'tomli_w'" in e for e in problems), problems
    assert any("test_export_project.py" in e or "export_project.py" in e for e in problems)


def test_lint_forbids_one_task_name_in_two_features_of_an_environment():
    """pixi takes the first-declared feature's task; rather than rely on the order, the lint forbids it."""
    doc = _root()
    doc["feature"]["yolox-gaudi"]["tasks"]["test-common"] = "echo shadow"
    problems = cm.lint(REPO / "pixi.toml", doc)
    assert any("task 'test-common' is defined by several features" in e for e in problems), problems
    tasks = cm.env_tasks(doc)["cpu"]
    assert tasks["test-common"] != "echo shadow"  # first-declared (test, before yolox-gaudi) wins, as in pixi


def test_cpu_runs_on_apple_silicon_and_the_rest_stays_linux():
    root = _root()
    assert set(root["workspace"]["platforms"]) == {"linux-64", "osx-arm64"}
    assert root["feature"]["rtx5090"]["platforms"] == ["linux-64"]
    assert root["feature"]["gaudi"]["platforms"] == ["linux-64"]
    assert "platforms" not in root["feature"]["cpu"]
