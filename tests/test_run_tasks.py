"""tasks/run.py reads pixi.toml's tasks exactly as pixi would order and fill them."""

from pathlib import Path

import pytest

import run

REPO = Path(__file__).resolve().parents[1]

MANIFEST = """
[workspace]
name = "t"
channels = []
platforms = ["linux-64"]
[tasks]
a = "echo a"
[feature.x.tasks]
b = { cmd = "echo b", depends-on = ["a"] }
c = { cmd = "echo c {{ what }}", args = [{ arg = "what", default = "world" }], depends-on = ["b", "a"] }
d = { depends-on = [{ task = "b", environment = "ex" }] }
loop1 = { cmd = "x", depends-on = ["loop2"] }
loop2 = { cmd = "y", depends-on = ["loop1"] }
[environments]
ex = ["x"]
only = { features = ["x"], no-default-feature = true }
"""


@pytest.fixture
def tasks(tmp_path):
    p = tmp_path / "pixi.toml"
    p.write_text(MANIFEST)
    return run.load_tasks(p)


def test_dependencies_run_first_and_once(tasks):
    assert [t for _, t, _ in run.plan(tasks, "ex", "c")] == ["a", "b", "c"]


def test_args_defaults_and_extra_words(tasks):
    assert run.render(tasks["ex"]["c"], []) == "echo c world"
    assert run.render(tasks["ex"]["c"], ["there"]) == "echo c there"
    assert run.render(tasks["ex"]["a"], ["-k", "x y"]) == "echo a -k 'x y'"


def test_unknown_task_names_where_it_lives(tasks):
    with pytest.raises(SystemExit, match="defined in: ex, only"):
        run.plan(tasks, "default", "b")
    # no-default-feature: the default feature's task `a` is not there
    with pytest.raises(SystemExit, match="no task 'a'"):
        run.plan(tasks, "only", "b")


def test_cycle_is_reported(tasks):
    with pytest.raises(SystemExit, match="cycle"):
        run.plan(tasks, "ex", "loop1")


def test_cross_environment_dependency(tasks):
    assert [(e, t) for e, t, _ in run.plan(tasks, "ex", "d")] == [("ex", "a"), ("ex", "b"), ("ex", "d")]


def test_repo_manifest_test_task_is_pytest():
    tasks = run.load_tasks(REPO / "pixi.toml")
    steps = run.plan(tasks, "cpu", "test")
    assert steps[-1][2]["cmd"].startswith("pytest")
    assert set(tasks["cpu"]) == set(tasks["default"])


def test_extra_words_follow_pixi(tasks):
    """pixi: a task with args takes at most that many words, and (>= 0.66) the words after `--` go to the
    command; a task without args gets every word, a leading `--` dropped."""
    c, a = tasks["ex"]["c"], tasks["ex"]["a"]
    with pytest.raises(SystemExit, match="takes 1 argument"):
        run.render(c, ["there", "-v"])  # used to drop "-v" silently
    assert run.render(c, ["there", "--", "-v", "x y"]) == "echo c there -v 'x y'"
    assert run.render(c, ["--", "-v"]) == "echo c world -v"
    assert run.render(a, ["--", "-k", "x"]) == "echo a -k x"
    assert run.render(a, ["-k", "--", "x"]) == "echo a -k -- x"


def test_first_declared_feature_wins(tmp_path):
    p = tmp_path / "pixi.toml"
    p.write_text(MANIFEST + '[feature.y.tasks]\nb = "echo shadow"\n[environments.both]\nfeatures = ["x", "y"]\n')
    assert run.load_tasks(p)["both"]["b"]["cmd"] == "echo b"
