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
def test_cli_cache_ram_serves_the_training_images(tmp_path, train, monkeypatch):
    """--cache ram through the CLI: after the fill, training never opens an image file (counted in this
    process: data_num_workers 0)."""
    import yolox_gaudi.data as data_mod

    served = []
    real_get = ImageCache.get
    monkeypatch.setattr(ImageCache, "get", lambda self, i: served.append(i) or real_get(self, i))
    opened = []
    monkeypatch.setattr(data_mod, "read_image", lambda p: opened.append(p) or cache_mod.read_image(p))
    root = train(tmp_path, ["--batch-size", "8", "--cache", "ram"], ["max_epoch", "1"])
    cfg = json.loads((root / "config.json").read_text())
    assert cfg["cache"] == "ram" and (root / "checkpoints" / "last.pt").is_file()
    assert len(served) >= 16                           # every training sample (the one epoch is a no-aug one)
    assert all("train2017" not in str(p) for p in opened)      # only the val images are read from files


def test_disk_cache_other_ranks_attach_without_writing(split, tmp_path, monkeypatch):
    """Local rank 0 fills; the other ranks read its manifest and write nothing (several writers of one
    manifest raced); a refill with nothing to do does not rewrite it either."""
    ImageCache(split.records, "disk", cache_dir=tmp_path / "c", threads=1).fill()
    manifest = tmp_path / "c" / "manifest.json"
    before = manifest.stat().st_mtime_ns
    decoded = []
    real = cache_mod.read_image
    monkeypatch.setattr(cache_mod, "read_image", lambda p: decoded.append(p) or real(p))
    other = ImageCache(split.records, "disk", cache_dir=tmp_path / "c").attach()
    np.testing.assert_array_equal(other.get(3), real(split.records[3].path))
    ImageCache(split.records, "disk", cache_dir=tmp_path / "c", threads=1).fill()
    assert decoded == [] and manifest.stat().st_mtime_ns == before
    assert not list((tmp_path / "c").glob("*.tmp*"))
    # an image the manifest does not vouch for is read from its file
    (tmp_path / "c" / "manifest.json").write_text("{}")
    late = ImageCache(split.records, "disk", cache_dir=tmp_path / "c").attach()
    late.get(2)
    assert decoded == [split.records[2].path]


def test_local_world_size_reads_torchrun_and_mpi():
    from yolox_gaudi.cache import local_world_size

    assert local_world_size({}) == 1
    assert local_world_size({"LOCAL_WORLD_SIZE": "4"}) == 4
    assert local_world_size({"OMPI_COMM_WORLD_LOCAL_SIZE": "8"}) == 8      # the README's mpirun task
    assert local_world_size({"MPI_LOCALNRANKS": "2"}) == 2
