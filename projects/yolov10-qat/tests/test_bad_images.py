"""An image that stops decoding after ultralytics' label cache checked it (its cache verifies headers) is
skipped and counted instead of ending the epoch; in validation it is dropped, never scored twice."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow


def test_training_survives_images_that_do_not_decode(tmp_path):
    from yolov10_qat.config import DEFAULT_HYP, smoke_config
    from yolov10_qat.data import prepare_data
    from yolov10_qat.trainer import build_trainer

    cfg = smoke_config(epochs=1, synthetic_train=8, synthetic_val=4, batch=4, hyp=str(DEFAULT_HYP)).resolve()
    rd = prepare_data(cfg, tmp_path)
    yolo = rd.dataset_yaml.parent / "data" / "yolo" / "images"
    trainer = build_trainer("fp16", cfg, rd.dataset_yaml, tmp_path / "fp16")

    def corrupt(tr):   # after the label cache was built: headers were fine then
        for p in (sorted((yolo / "train").iterdir())[0], sorted((yolo / "val").iterdir())[0]):
            p.unlink()                    # a hardlink to the synthetic set: replace it, keep the source
            p.write_bytes(b"\x89PNG not really")

    trainer.add_callback("on_train_start", corrupt)
    trainer.train()
    evals = [json.loads(x) for x in (tmp_path / "fp16" / "logs" / "eval.jsonl").read_text().splitlines()]
    assert evals[0]["unreadable_train_images"] >= 1      # each draw of the bad index (mosaic partners too)
    assert evals[0]["unreadable_val_images"] == 1
    assert trainer.train_loader.dataset.skipped >= 1
