"""Data: layout detection, names, workers that see set_epoch, reproducible samples, caches, bad data."""

from __future__ import annotations

import os
import shutil

import numpy as np
import pytest
import torch
import yaml

from yolov9001.core.config import get_config
from yolov9001.utils.dataloaders import create_dataloader
from yolov9001.utils.datasets import load_dataset_split


def cfg_for(**over):
    base = {"imgsz": 96, "epochs": 4, "close_mosaic": 1, "batch_size": 4, "workers": 0}
    base.update(over)
    return get_config(hyp=base)


@pytest.mark.parametrize("layout", ["yolo", "coco"])
def test_both_layouts_load_with_names(synthetic, layout):
    split = load_dataset_split(synthetic[layout], "train")
    assert len(split) == 16 and split.class_names == ["circle", "square", "triangle"]
    loader, ds = create_dataloader(synthetic[layout], "val", cfg_for(), augment=False)
    images, targets, metas = next(iter(loader))
    assert images.dtype == torch.uint8 and images.shape[1:] == (96, 96, 3)  # HWC; to_input makes NCHW
    assert targets.shape[1] == 6 and {"image_id", "ratio", "pad", "orig"} <= set(metas[0])


def test_yolo_without_data_yaml_gets_class_k_names(synthetic, tmp_path):
    root = tmp_path / "noyaml"
    shutil.copytree(synthetic["yolo"], root)
    (root / "data.yaml").unlink()
    split = load_dataset_split(root, "train")
    assert split.class_names == ["class_0", "class_1", "class_2"]
    assert not (root / "data.yaml").exists()  # the dataset is never written to


def test_val_pixels_equal_common_letterbox(synthetic):
    """Validation letterboxing is yolo_common's, so torch AP and ONNX-evaluator AP see the same pixels."""
    from yolo_common.preprocess import LetterboxSpec, letterbox, read_image

    loader, ds = create_dataloader(synthetic["coco"], "val", cfg_for(imgsz=128), augment=False)
    img, _, meta = ds[0]
    ref, m = letterbox(read_image(ds.records[0].path), LetterboxSpec(size=128, scale=1.0))
    assert np.array_equal(img.numpy(), ref.astype(np.uint8).transpose(1, 2, 0))
    assert meta["pad"] == (m.pad_x, m.pad_y) and meta["ratio"] == pytest.approx(m.ratio)


def test_bad_data_root_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_dataloader(tmp_path / "nope", "train", cfg_for())
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="neither a YOLO root"):
        create_dataloader(tmp_path / "empty", "train", cfg_for())


def test_missing_split_names_found_splits(synthetic, tmp_path):
    root = tmp_path / "y"
    shutil.copytree(synthetic["yolo"], root)
    (root / "data.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="found splits"):
        load_dataset_split(root, "test")


def test_malformed_label_names_file_and_line(synthetic, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(synthetic["yolo"], root)
    label = sorted((root / "labels" / "train").glob("*.txt"))[0]
    label.write_text(label.read_text() + "1 0.5 0.5 oops 0.1\n")
    data = yaml.safe_load((root / "data.yaml").read_text())
    data["path"] = str(root)
    (root / "data.yaml").write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match=rf"{label.name}:\d+"):
        create_dataloader(root, "train", cfg_for())


def test_unreadable_image_is_counted_and_replaced(synthetic, tmp_path):
    root = tmp_path / "corrupt"
    shutil.copytree(synthetic["coco"], root)
    victim = sorted((root / "train2017").glob("*"))[0]
    victim.write_bytes(b"not an image")
    loader, ds = create_dataloader(root, "train", cfg_for(mosaic=0.0, workers=2), augment=True)
    n = sum(len(b[0]) for b in loader)
    assert n == len(ds) and ds.skipped == 1  # replaced by the next sample, counted across 2 workers
    # validation drops it instead (no other image's predictions under its id)
    vroot = tmp_path / "corrupt"
    bad_val = sorted((vroot / "val2017").glob("*"))[0]
    bad_val.write_bytes(b"")
    vloader, vds = create_dataloader(vroot, "val", cfg_for(), augment=False)
    ids = [m["image_id"] for b in vloader for m in b[2]]
    assert len(ids) == len(vds) - 1 == len(set(ids)) and vds.skipped == 1


def _samples(loader):
    return [(im.clone(), t.clone()) for im, t, _ in loader]


def test_workers_give_identical_samples_and_see_set_epoch(synthetic):
    """num_workers=2 with persistent workers: same tensors as in-process loading, and the epoch switch
    (close_mosaic) reaches the long-lived workers."""
    cfg = cfg_for(epochs=3, close_mosaic=1, mosaic=1.0, workers=2)
    loader0, ds0 = create_dataloader(synthetic["yolo"], "train", cfg, augment=True, workers=0)
    loader2, ds2 = create_dataloader(synthetic["yolo"], "train", cfg, augment=True, workers=2)
    assert loader2.persistent_workers
    per_epoch = []
    for epoch in range(3):
        for ld, ds in ((loader0, ds0), (loader2, ds2)):
            ds.set_epoch(epoch)
            ld.sampler.set_epoch(epoch)
        a, b = _samples(loader0), _samples(loader2)
        assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) for x, y in zip(a, b))
        per_epoch.append(b)
    # epochs differ (new order and new draws), and close_mosaic switched mosaic off in the last one: the
    # workers' samples equal the in-process ones above, so a worker stuck at epoch 0 would have failed there
    assert not torch.equal(per_epoch[0][0][0], per_epoch[1][0][0])
    assert ds0.mosaic_active() is False and ds2.epoch == 2


@pytest.mark.parametrize("mode,compression", [("disk", "none"), ("disk", "lz4"), ("hybrid", "zstd"), ("ram", "none")])
def test_cache_hit_and_rebuild(synthetic, tmp_path, mode, compression):
    root = tmp_path / "data"
    shutil.copytree(synthetic["coco"], root)
    cfg = cfg_for(cache=mode, cache_compression=compression)
    _, ds1 = create_dataloader(root, "val", cfg)
    ref = [ds1[i][0] for i in range(len(ds1))]
    assert ds1.cache.stats["built"] == len(ds1)
    if mode != "ram":  # a build killed mid-write leaves a temp file: the next build removes it
        (ds1.cache.directory / "0123.npy.4242.tmp").write_bytes(b"half")
    _, ds2 = create_dataloader(root, "val", cfg)
    if mode == "ram":
        assert ds2.cache.stats["built"] == len(ds2)  # RAM caches live as long as the process
        return
    assert ds2.cache.stats == {"hits": len(ds2), "built": 0, "pruned": 1}
    assert not list(ds2.cache.directory.glob("*.tmp"))
    assert all(torch.equal(ds2[i][0], ref[i]) for i in range(len(ds2)))
    # change one image: only it is rebuilt, its stale entry pruned, and the new pixels are served
    changed = ds2.records[0].path
    from PIL import Image

    Image.fromarray(np.zeros((96, 96, 3), np.uint8)).save(changed)
    st = os.stat(changed)
    os.utime(changed, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    _, ds3 = create_dataloader(root, "val", cfg)
    assert ds3.cache.stats == {"hits": len(ds3) - 1, "built": 1, "pruned": 1}
    assert ds3[0][0].float().mean() < 10 < ref[0].float().mean()


def test_compression_requires_a_cache():
    from yolov9001.core.config import ConfigError

    with pytest.raises(ConfigError, match="needs a cache"):
        cfg_for(cache="none", cache_compression="lz4")
    assert cfg_for(cache="ram", cache_compression="lz4").cache_compression == "lz4"   # --ram-compress
