"""``python -m yolov1.<module>`` self-checks (called in-process: no extra interpreter start-up)."""

from __future__ import annotations

from yolov1 import imagenet100, loss, model, scheduler, voc


def test_loss_module(capsys):
    loss.main()
    assert "self-check: OK" in capsys.readouterr().out


def test_scheduler_module(capsys):
    scheduler.main([])
    assert "self-check: OK" in capsys.readouterr().out


def test_model_module(capsys):
    info = model.main(["--width", "0.125", "--hidden", "32", "--C", "3"])
    assert info["detector_output"] == (1, 7, 7, 13)
    assert "self-check: OK" in capsys.readouterr().out


def test_dataset_modules(capsys):
    voc.main(["--size", "128"])
    imagenet100.main(["--size", "32"])
    out = capsys.readouterr().out
    assert out.count("self-check: OK") == 2 and "target boxes (4, 2, 2, 2, 4)" in out


def test_progress_bars_throttled_without_a_terminal(monkeypatch):
    import io
    import sys

    from yolov1.engine import progress

    class Tty(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file / CI: one line per 30 s at most
    bar = progress(range(3))
    assert bar.mininterval == 30 and bar.maxinterval >= 30
    bar.close()
    monkeypatch.setattr(sys, "stderr", Tty())  # a terminal: tqdm's usual live redraw
    bar = progress(range(3))
    assert bar.mininterval < 1
    bar.close()
