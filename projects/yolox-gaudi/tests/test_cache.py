"""``--cache ram|disk``: the same pixels as no cache, reuse on disk, the memory check, bad images, workers."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from yolox_gaudi import cache as cache_mod
from yolox_gaudi.cache import ImageCache
from yolox_gaudi.config import get_exp
from yolox_gaudi.data import CocoSource, TrainDataset, build_train_loader, load_coco_split


@pytest.fixture(scope="module")
def split(synthetic_coco):
    return load_coco_split(synthetic_coco, "train2017")


@pytest.mark.parametrize("mode", ["ram", "disk"])
def test_cached_samples_equal_uncached_ones(split, tmp_path, mode):
    exp = get_exp("yolox-s").merge(["num_classes", "3", "input_size", "96,128", "mosaic_prob", "1"])
    plain = TrainDataset(CocoSource(split), exp, seed=4)
    c = ImageCache(split.records, mode, cache_dir=tmp_path / "c", threads=2).fill()
    cached = TrainDataset(CocoSource(split, c), exp, seed=4)
    for mosaic in (True, False):
        plain.enable_mosaic = cached.enable_mosaic = mosaic
        for i in (0, 5, 11):
            a, b = plain[i], cached[i]
            assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert c.hits > 0
    img = c.get(0)
    img[:] = 0                                   # a caller's edit must not reach the cache
    assert c.get(0).any()


def test_disk_cache_is_reused_and_refreshed(split, tmp_path, monkeypatch):
    data = tmp_path / "imgs"
    shutil.copytree(split.records[0].path.parent, data)
    records = [r.__class__(**{**r.__dict__, "path": data / r.path.name}) for r in split.records[:4]]
    ImageCache(records, "disk", cache_dir=tmp_path / "c", threads=1).fill()
    decoded = []
    real = cache_mod.read_image
    monkeypatch.setattr(cache_mod, "read_image", lambda p: decoded.append(p) or real(p))
    again = ImageCache(records, "disk", cache_dir=tmp_path / "c", threads=1).fill()
    assert decoded == []                                    # nothing decoded twice
    np.testing.assert_array_equal(again.get(2), real(records[2].path))
    # an image changed on disk is decoded again (size/mtime in the manifest)
    from PIL import Image

    Image.fromarray(np.full((records[1].height, records[1].width, 3), 7, np.uint8)).save(records[1].path)
    fresh = ImageCache(records, "disk", cache_dir=tmp_path / "c", threads=1).fill()
    assert decoded == [records[1].path] and (fresh.get(1) == 7).all()
    assert len(json.loads((tmp_path / "c" / "manifest.json").read_text())) == 4


def test_ram_cache_checks_memory_first(split):
    c = ImageCache(split.records, "ram")
    need = c.bytes_needed()
    assert need == sum(r.width * r.height * 3 for r in split.records) > 0
    with pytest.raises(MemoryError, match="--cache disk"):
        c.check_memory(available=need)            # 80% headroom: exactly `need` available is too little
    c.check_memory(available=2 * need)


def test_unreadable_image_in_the_cache_is_skipped_by_the_loader(split, tmp_path):
    data = tmp_path / "imgs"
    shutil.copytree(split.records[0].path.parent, data)
    records = [r.__class__(**{**r.__dict__, "path": data / r.path.name}) for r in split.records]
    records[3].path.write_bytes(records[3].path.read_bytes()[:50])       # truncated
    c = ImageCache(records, "ram", threads=2).fill()
    assert list(c.unreadable) == [3]
    with pytest.raises(OSError, match=records[3].path.name):
        c.get(3)
    from dataclasses import replace

    src = CocoSource(replace(split, records=records), c)
    exp = get_exp("yolox-s").merge(["num_classes", "3", "input_size", "64,64", "mosaic_prob", "0"])
    ds = TrainDataset(src, exp, seed=0)
    # 2 workers: the filled buffer reaches forked workers; the bad image is replaced and counted
    loader = build_train_loader(ds, 4, 0, 1, 0, num_workers=2)
    n = sum(len(b[2]) for b in loader)
    assert n == 16 and loader.dataset.skipped == 1


@pytest.mark.slow
def test_cli_cache_ram_runs(tmp_path, train):
    root = train(tmp_path, ["--batch-size", "8", "--cache", "ram"], ["max_epoch", "1", "data_num_workers", "2"])
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["cache"] == "ram" and (root / "checkpoints" / "last.pt").is_file()
