"""bench-yolox runs and reports four parts whose shares add up to the step."""

import pytest

from yolox_gaudi.bench import main


@pytest.mark.slow
def test_bench_parts_and_shares(capsys):
    out = main(["--name", "yolox-nano", "--batch", "2", "--size", "64", "--iters", "1", "--warmup", "1",
                "--device", "cpu"])
    assert list(out["share"]) == ["forward", "assignment+loss", "backward", "optimizer+ema"]
    assert abs(sum(out["share"].values()) - 1) < 1e-9 and all(v > 0 for v in out["ms"].values())
    text = capsys.readouterr().out
    assert "backward" in text and "images/s" in text and "%" in text
