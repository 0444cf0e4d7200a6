"""Undecodable images (the VOC reader trusts the xml's size) do not end a detection run: each is
counted and skipped in training (2 loader workers) and scored as "no detections" in evaluation."""

from __future__ import annotations

import json
import shutil

import pytest


@pytest.mark.slow
def test_detection_run_survives_unreadable_images(synthetic_voc, tmp_path):
    from yolov1 import detection_train
    from yolov1.voc import read_voc_parts

    root = tmp_path / "voc"
    shutil.copytree(synthetic_voc, root)
    (train,) = read_voc_parts(root, "2012:train")
    (val,) = read_voc_parts(root, "2012:val")
    for r, payload in ((train.records[0], b""), (train.records[1], None), (val.records[0], b"\xff\xd8 no")):
        data = r.path.read_bytes()
        r.path.unlink()   # the copy may hard-link the fixture: replace, do not write through
        r.path.write_bytes(data[: len(data) // 3] if payload is None else payload)   # None: truncated
    out = detection_train.main([f"data_root={root}", "train_split=2012:train", "val_split=2012:val",
                                f"output_dir={tmp_path}", "run_name=bad", "verify_images=false", "num_workers=2",
                                "S=2", "hidden=16", "width=0.125", "batch_size=4", "epochs=2", "eval_every=1", "lr=0.001", "grad_clip_norm=10",
                                "lr_milestones=5", "log_every=1"])
    m = out["metrics"]
    # one per index, none lost; and per evaluation (this is the second one), not summed over the run
    assert m["num_images"] == len(val) and m["unreadable_images"] == 1
    assert 0 <= m["voc07_mAP"] <= 1
    summary = (out["run_dir"] / "summary.md").read_text()
    assert "unreadable train image loads" in summary
    saved = json.loads((out["run_dir"] / "eval" / "metrics.json").read_text())
    assert saved["unreadable_images"] == 1
