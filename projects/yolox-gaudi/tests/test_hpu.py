"""The HPU seam without Habana: env set-up, the clear errors, and mark_step ordering via a recording fake."""

import subprocess
import sys
import types

import pytest
import torch

from yolox_gaudi import hpu
from yolox_gaudi.config import get_exp
from yolox_gaudi.engine import TrainState, train_one_epoch
from yolox_gaudi.loss import YOLOXLoss
from yolox_gaudi.model import build_model

HAS_HABANA = False
try:
    import habana_frameworks  # noqa: F401
    HAS_HABANA = True
except ImportError:
    pass


def test_hmp_flags_map_to_autocast_lists(tmp_path):
    env = {}
    bf16 = tmp_path / "b.txt"
    bf16.write_text("conv2d\n")
    out = hpu.configure_env(bf16=True, bf16_list=str(bf16), environ=env, modules={})
    assert env[hpu.LOWER_LIST_VAR] == str(bf16.resolve())
    # the seed's ./ops_fp32_yolox.txt does not exist here: the project's configs/ copy is used
    assert env[hpu.FP32_LIST_VAR] == str(hpu.project_configs_dir() / "ops_fp32_yolox.txt")
    assert env["PT_HPU_LAZY_MODE"] == "1" and env["PT_HPU_MAX_COMPOUND_OP_SIZE"] == "100"
    assert out == env
    ops = (hpu.project_configs_dir() / "ops_bf16_yolox.txt").read_text().split()
    assert {"conv2d", "batch_norm", "sigmoid", "max_pool2d"} <= set(ops)


def test_environment_wins_over_defaults_but_not_over_flags():
    env = {"PT_HPU_LAZY_MODE": "0", hpu.LOWER_LIST_VAR: "/mine/bf16.txt"}
    hpu.configure_env(bf16=True, environ=env, modules={})
    assert env["PT_HPU_LAZY_MODE"] == "0" and env[hpu.LOWER_LIST_VAR] == "/mine/bf16.txt"
    with pytest.raises(FileNotFoundError, match="nope.txt"):
        hpu.configure_env(bf16=True, bf16_list="/x/nope.txt", environ=env, modules={})


def test_refuses_when_bridge_already_loaded():
    loaded = {"habana_frameworks.torch": types.ModuleType("habana_frameworks.torch")}
    with pytest.raises(RuntimeError, match="imported before"):
        hpu.configure_env(bf16=True, environ={}, modules=loaded)
    # nothing to change (activate.sh already set everything) -> fine even when loaded
    env = hpu.desired_env(bf16=True, environ={})
    assert hpu.configure_env(bf16=True, environ=dict(env), modules=loaded) == env


@pytest.mark.skipif(HAS_HABANA, reason="Habana stack installed")
def test_missing_habana_is_clear():
    with pytest.raises(RuntimeError, match="envs/gaudi"):
        hpu.import_core()
    with pytest.raises(RuntimeError, match="envs/gaudi"):
        hpu.HpuSteps()
    assert hpu.fused_sgd_class() is None and hpu.fused_ema_class() is None


class _Recorder:
    def __init__(self):
        self.calls = []

    def mark_step(self):
        self.calls.append("mark_step")


class _RecordingSGD(torch.optim.SGD):
    def __init__(self, params, calls, **kw):
        super().__init__(params, **kw)
        self._calls = calls

    def step(self, closure=None):
        self._calls.append("optimizer.step")
        return super().step(closure)

    def zero_grad(self, set_to_none=True):
        self._calls.append("zero_grad")
        return super().zero_grad(set_to_none)


def test_mark_step_ordering_with_recording_fake(monkeypatch):
    fake = _Recorder()
    # Injected as the real module name: HpuSteps imports habana_frameworks.torch.core through sys.modules.
    for name in ("habana_frameworks", "habana_frameworks.torch"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    core = types.ModuleType("habana_frameworks.torch.core")
    core.mark_step = fake.mark_step
    monkeypatch.setitem(sys.modules, "habana_frameworks.torch.core", core)
    steps = hpu.HpuSteps(lazy=True)
    assert steps.core is core

    exp = get_exp("yolox-nano").merge(["num_classes", "2", "print_interval", "100", "multiscale_range", "0"])
    model = build_model(exp)
    # backward is recorded when the first layer's weight gets its gradient (the end of backward)
    model.backbone.backbone.stem.conv.conv.weight.register_hook(lambda g: fake.calls.append("backward"))
    opt = _RecordingSGD(model.parameters(), fake.calls, lr=0.0)
    targets = torch.zeros(2, 4, 5)
    targets[:, 0] = torch.tensor([1, 16, 16, 12, 10])
    loader = [(torch.rand(2, 3, 32, 32) * 255, targets, [0, 1])] * 2
    state = TrainState(input_size=(32, 32))
    train_one_epoch(model, YOLOXLoss(2), opt, loader, torch.device("cpu"), epoch=0, exp=exp, state=state,
                    lr_fn=lambda it: 0.0, steps=steps, multiscale=False, loss_on_cpu=True)
    one = ["backward", "mark_step", "optimizer.step", "mark_step", "zero_grad"]
    # the progress line at the epoch end adds one sync mark_step after the last iteration
    assert fake.calls == one + one + ["mark_step"]
    assert state.iteration == 2


def _run_cli(args, **kw):
    return subprocess.run([sys.executable, "-m", "yolox_gaudi.train", *args], capture_output=True, text=True,
                          timeout=120, **kw)


SEED_BF16_1HPU = ("--name yolox-s --batch-size 8 --data_dir /data/COCO --use_hpu --hmp --hmp-opt-level O1 "
                  "--hmp-fp32 ./ops_fp32_yolox.txt --hmp-bf16 ./ops_bf16_yolox.txt steps 500 output_dir ./yolox_output")
SEED_BF16_8HPU = ("--name yolox-s --devices 8 --batch-size 64 --data_dir /data/COCO --use_hpu --hmp --hmp-opt-level O1 "
                  "--hmp-fp32 ./ops_fp32_yolox.txt --hmp-bf16 ./ops_bf16_yolox.txt print_interval 100 max_epoch 300 "
                  "save_history_ckpt False eval_interval 300 output_dir ./yolox_output")
SEED_FP32_8HPU = ("--name yolox-s --devices 8 --batch-size 64 --data_dir /data/COCO --use_hpu max_epoch 2 "
                  "output_dir ./yolox_output")
HEAD_1HPU = "--model-name yolox-s --devices 1 --batch-size 16 --data-dir /data/COCO --hpu --autocast"


@pytest.mark.parametrize("line", [SEED_BF16_1HPU, SEED_BF16_8HPU, SEED_FP32_8HPU, HEAD_1HPU])
def test_seed_command_lines_parse(line):
    from yolox_gaudi.train import parse_args, precision_of

    args = parse_args(line.split())
    exp = get_exp(args.name).merge(args.opts)
    assert args.use_hpu and args.name == "yolox-s" and args.data_dir == "/data/COCO"
    assert precision_of(args) == ("fp32" if "max_epoch 2" in line else "bf16")
    if "save_history_ckpt False" in line:
        assert exp.save_history_ckpt is False and exp.max_epoch == 300 and exp.eval_interval == 300
    if "steps 500" in line:
        assert exp.steps == 500 and exp.output_dir == "./yolox_output"


@pytest.mark.skipif(HAS_HABANA, reason="Habana stack installed")
@pytest.mark.parametrize("line", [SEED_BF16_1HPU, SEED_BF16_8HPU])
def test_use_hpu_without_habana_stops_with_the_install_hint(line, tmp_path):
    r = _run_cli(line.split(), cwd=tmp_path)
    assert r.returncode == 2, r.stderr
    assert "habana_frameworks" in r.stderr and "envs/gaudi" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "yolox_output").exists()   # stopped before touching anything


def test_flag_after_overrides_is_a_clear_error():
    from yolox_gaudi.train import parse_args

    with pytest.raises(SystemExit, match="--data_dir comes after"):
        parse_args(["--name", "yolox-s", "max_epoch", "3", "--data_dir", "/x"])


def test_use_lazy_mode_parses_booleans():
    from yolox_gaudi.train import parse_args

    assert parse_args(["--use_lazy_mode", "False"]).use_lazy_mode is False
    assert parse_args(["--use_lazy_mode", "1"]).use_lazy_mode is True
    with pytest.raises(SystemExit):
        parse_args(["--use_lazy_mode", "maybe"])


def test_cli_path_imports_no_torch_before_the_hpu_env_is_set():
    # train.main must be able to write PT_HPU_* before torch (which may autoload the bridge) is imported.
    code = ("import sys, yolox_gaudi.train, yolox_gaudi.hpu, yolox_gaudi.config; "
            "from yolox_gaudi.train import parse_args; parse_args(['--use_hpu', '--use_lazy_mode', 'False']); "
            "print(sorted(m for m in ('torch', 'habana_frameworks') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_device_auto_on_a_gaudi_host_gets_the_hpu_setup():
    """Issue 13 bug 7: --device auto with the Habana packages installed is routed through the same
    PT_HPU_* set-up as --use_hpu (before torch loads); without them nothing changes."""
    from yolox_gaudi.train import parse_args, wants_hpu

    have = lambda name: object() if name == "habana_frameworks" else None  # noqa: E731
    none = lambda name: None  # noqa: E731
    assert wants_hpu(parse_args([]), find_spec=have)              # --device auto is the default
    assert not wants_hpu(parse_args([]), find_spec=none)
    assert not wants_hpu(parse_args(["--device", "cpu"]), find_spec=have)
    assert wants_hpu(parse_args(["--device", "hpu"]), find_spec=none) and wants_hpu(parse_args(["--hpu"]), none)


def test_device_auto_with_a_fake_bridge_sets_the_hpu_variables(tmp_path):
    # A `habana_frameworks` package that cannot open a device: the variables are set before torch is
    # imported (config.json records them), then auto falls back to the CPU with a warning and trains.
    pkg = tmp_path / "fake" / "habana_frameworks"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    env = {k: v for k, v in __import__("os").environ.items() if not k.startswith("PT_HPU_")}
    env["PYTHONPATH"] = str(tmp_path / "fake") + ":" + env.get("PYTHONPATH", "")
    r = _run_cli(["--name", "yolox-nano", "--threads", "1", "--synthetic", "--synthetic-images", "8",
                  "--synthetic-size", "64", "--batch-size", "8", "-expn", "auto", "num_classes", "3",
                  "input_size", "64,64", "test_size", "64,64", "random_size", "2,2", "max_epoch", "1",
                  "warmup_epochs", "0", "data_num_workers", "0", "output_dir", str(tmp_path)], env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    import json

    cfg = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert cfg["hpu_env"]["PT_HPU_LAZY_MODE"] == "1" and cfg["hpu_env"]["PT_HPU_MAX_COMPOUND_OP_SIZE"] == "100"
    assert cfg["device"] == "cpu" and "falling back to cpu" in r.stderr


def test_lazy_mode_is_the_bridges_not_the_variables(monkeypatch):
    """Bridges >= 1.21 run eager when PT_HPU_LAZY_MODE is unset: HpuSteps asks the bridge (is_lazy)."""
    for name in ("habana_frameworks", "habana_frameworks.torch", "habana_frameworks.torch.utils"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    internal = types.ModuleType("habana_frameworks.torch.utils.internal")
    internal.is_lazy = lambda: False
    monkeypatch.setitem(sys.modules, "habana_frameworks.torch.utils.internal", internal)
    monkeypatch.setenv("PT_HPU_LAZY_MODE", "1")
    assert hpu.bridge_is_lazy() is False
    steps = hpu.HpuSteps(core=_Recorder())
    steps.after_backward()
    assert not steps.lazy and steps.core.calls == []            # eager: no mark_step
    internal.is_lazy = lambda: True
    assert hpu.HpuSteps(core=_Recorder()).lazy
    # a bridge without is_lazy: the variable decides, unset meaning eager (the >= 1.21 default)
    monkeypatch.delitem(sys.modules, "habana_frameworks.torch.utils.internal")
    monkeypatch.setitem(sys.modules, "habana_frameworks.torch.utils.internal", None)
    monkeypatch.delenv("PT_HPU_LAZY_MODE")
    assert hpu.bridge_is_lazy() is False
    assert hpu.bridge_is_lazy({"PT_HPU_LAZY_MODE": "1"}) is True


def test_no_flag_is_silently_ignored(tmp_path):
    """Issue 13 bug 8: --hmp-opt-level O2 is refused with the reason; --dist-backend is checked against the
    device; --cache takes ram|disk."""
    from yolox_gaudi.train import main, parse_args

    with pytest.raises(SystemExit, match="HMP was removed"):
        parse_args(["--hmp-opt-level", "O2"])
    assert parse_args(["--hmp-opt-level", "O1", "--cache"]).cache == "ram"
    assert parse_args(["--cache", "disk", "--dist_backend", "gloo"]).dist_backend == "gloo"
    with pytest.raises(SystemExit):
        parse_args(["--cache", "ssd"])
    rc = main(["--name", "yolox-nano", "--device", "cpu", "--dist-backend", "nccl", "--synthetic",
               "output_dir", str(tmp_path)])
    assert rc == 2
