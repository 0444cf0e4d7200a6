"""The seed's example command lines, verbatim but for a small dataset, few epochs and a small side."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from yolov9001.cli import main

SMALL = ["--img-size", "64", "--workers", "0", "--device", "cpu", "--tb-only"]


@pytest.mark.slow
def test_seed_examples(synthetic, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the examples use relative runs/ paths
    data = str(synthetic["yolo"])
    # Train (fresh), as the seed writes it: low.yaml switches DINO on with the gated facebook/dinov3 teacher;
    # offline and without a token that stops at once with what to set ...
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    with pytest.raises(SystemExit, match="HF_TOKEN"):
        main(["train", "--data", data, "--hyp", "models/hyps/low.yaml", "--epochs", "100", "--batch-size", "16"])
    # ... and runs with it switched off (epochs 2 here; the real command says 100)
    res = main(["train", "--data", data, "--hyp", "models/hyps/low.yaml", "--epochs", "2", "--batch-size", "16",
                "--hypo", "dino.enabled:false,warmup_min_iters:0", *SMALL])
    run = Path(res["run_dir"])
    assert run == Path("runs/exp").resolve() or run == Path("runs/exp")
    cfg = json.loads((tmp_path / "runs" / "exp" / "config.json").read_text())["config"]
    assert cfg["assign_mode"] == "simota" and cfg["lrf"] == 0.02 and cfg["mosaic"] == 0.9
    # Train (resume): a finished run says so and trains nothing more
    main(["train", "--resume", "runs/exp", *SMALL])
    assert not (tmp_path / "runs" / "exp2").exists()
    # Validate / Detect single image / Benchmark
    stats = main(["val", "--data", data, "--weights", "runs/exp/checkpoints/best.pt", *SMALL])
    assert 0 <= stats["AP"] <= 1
    image = sorted((synthetic["yolo"] / "images" / "val").glob("*"))[0]
    det = main(["detect", "--data", str(image), "--weights", "runs/exp/checkpoints/best.pt", *SMALL])
    assert det["images"] == 1
    bench = main(["benchmark", "--data", data, "--batch-size", "4", "--steps", "1", *SMALL])
    assert bench["train_step_eager_ms"]["total"] > 0
    # Inline overrides, as written, with the teacher in a local folder (a saved tiny DINOv3: the real one is
    # gated): low.yaml's dino block (resolution 512, fp16, objfor02, saliency weights, centroids) trains
    from yolov9001.utils.dino_teacher import tiny_config
    from transformers import AutoModel

    AutoModel.from_config(tiny_config()).save_pretrained(tmp_path / "dinov3-local")
    res = main(["train", "--data", data, "--hyp", "models/hyps/low.yaml", "--hypo",
                "dino.enabled:true,dino.quant:fp16,assign_mode:simota"
                f",dino.model_name:{tmp_path / 'dinov3-local'},warmup_min_iters:0",
                "--epochs", "1", "--batch-size", "8", "--name", "dino", *SMALL])
    row = json.loads((Path(res["run_dir"]) / "logs" / "train.jsonl").read_text().splitlines()[0])
    assert row["dino/centroid"] > 0 and row["dino/teacher_loaded"] == 1.0
