"""SkipUnreadable: a corrupt image becomes a counted, logged skip, also inside DataLoader workers."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader
from torch.utils.data._utils.collate import default_collate

from yolo_common.data import SkipUnreadable, UnreadableImage, drop_none
from yolo_common.preprocess import read_image


class Files:
    """Decodes one file per index (PIL, as the projects do)."""

    def __init__(self, paths):
        self.paths = paths

    def __len__(self):
        return len(self.paths)

    def describe(self, i):
        return str(self.paths[i])

    def __getitem__(self, i):
        return torch.from_numpy(read_image(self.paths[i]).copy()), i


class WithCollate(Files):
    collate_fn = staticmethod(default_collate)


@pytest.fixture
def files(tmp_path):
    paths = []
    for i in range(8):
        p = tmp_path / f"{i}.png"
        Image.fromarray(np.full((8, 8, 3), i * 20, np.uint8)).save(p)
        paths.append(p)
    paths[2].write_bytes(b"")                                   # zero bytes
    paths[5].write_bytes(paths[5].read_bytes()[:30])            # truncated
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not a jpeg")  # corrupt
    paths[6] = tmp_path / "bad.jpg"
    return paths


def test_unwrapped_dataset_crashes(files):
    with pytest.raises(OSError):
        list(DataLoader(Files(files), batch_size=4))


@pytest.mark.parametrize("workers", [0, 2])
def test_replace_counts_across_workers_and_logs_names(files, workers, caplog):
    ds = SkipUnreadable(Files(files))
    with caplog.at_level(logging.WARNING, "yolo_common.data"):
        batches = list(DataLoader(ds, batch_size=4, num_workers=workers))
    idx = torch.cat([b[1] for b in batches]).tolist()
    assert idx == [0, 1, 3, 3, 4, 7, 7, 7]  # 2 -> 3, 5 -> 6 -> 7, 6 -> 7
    assert ds.skipped == 4 and ds.summary() == "4 unreadable images skipped"
    if workers == 0:  # worker processes log to their own stderr
        assert "2.png" in caplog.text and "bad.jpg" in caplog.text


def test_drop_mode_removes_samples_from_the_batch(files):
    ds = SkipUnreadable(Files(files), mode="drop")
    batches = list(DataLoader(ds, batch_size=4, collate_fn=drop_none(default_collate)))
    assert [len(b[1]) for b in batches] == [3, 2] and ds.skipped == 3


def test_placeholder_mode_keeps_one_sample_per_index(files):
    class WithPlaceholder(Files):
        def placeholder(self, i):
            return torch.zeros(8, 8, 3, dtype=torch.uint8), -1 - i    # the caller recognises i < 0

    ds = SkipUnreadable(WithPlaceholder(files), mode="placeholder")
    idx = torch.cat([b[1] for b in DataLoader(ds, batch_size=4, num_workers=2)]).tolist()
    assert idx == [0, 1, -3, 3, 4, -6, -7, 7] and ds.skipped == 3
    with pytest.raises(TypeError, match="placeholder"):
        SkipUnreadable(Files(files), mode="placeholder")


def test_only_decode_errors_are_caught(files):
    class Buggy(Files):
        def __getitem__(self, i):
            raise KeyError("a label bug")

    with pytest.raises(KeyError):
        SkipUnreadable(Buggy(files))[0]

    class Cv2Like(Files):
        def __getitem__(self, i):
            raise UnreadableImage("cv2.imread returned None")

    with pytest.raises(RuntimeError, match="consecutive images"):
        SkipUnreadable(Cv2Like(files), max_tries=3)[0]


def test_wrapper_forwards_attributes(files):
    inner = Files(files)
    inner.epoch = 3
    assert SkipUnreadable(inner).epoch == 3 and len(SkipUnreadable(inner)) == 8
    w = SkipUnreadable(inner)
    w.epoch = 7            # e.g. ultralytics' `train_loader.dataset.mosaic = False`: reaches the dataset
    assert inner.epoch == 7 and "epoch" not in vars(w)
    w.note = "x"           # a name the dataset does not have stays on the wrapper
    assert not hasattr(inner, "note") and w.note == "x"


def test_drop_mode_collate_fn_for_loaders_that_read_it(files):
    """ultralytics' build_dataloader passes ``dataset.collate_fn``; in drop mode it must skip the Nones,
    and it must pickle for spawned workers."""
    import pickle

    ds = SkipUnreadable(WithCollate(files), mode="drop")
    assert pickle.loads(pickle.dumps(ds.collate_fn)).collate is default_collate
    batches = list(DataLoader(ds, batch_size=4, num_workers=1, collate_fn=ds.collate_fn))
    assert [len(b[1]) for b in batches] == [3, 2]


def test_list_images_file_folder_glob_and_errors(tmp_path):
    from yolo_common.data import list_images

    for name in ("b.jpg", "a.PNG", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "c.jpg").write_bytes(b"x")
    assert [p.name for p in list_images(tmp_path)] == ["a.PNG", "b.jpg"]          # a folder: its images
    assert list_images(tmp_path / "b.jpg") == [tmp_path / "b.jpg"]
    assert [p.name for p in list_images(str(tmp_path / "**" / "*.jpg"))] == ["b.jpg", "c.jpg"]
    with pytest.raises(FileNotFoundError, match="no images found"):
        list_images(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no images found"):
        list_images(tmp_path / "sub" / "*.png")


def test_draw_boxes_colours_and_tags():
    from yolo_common.draw import PALETTE, draw_boxes

    img = np.zeros((40, 60, 3), np.uint8)
    out = np.asarray(draw_boxes(img, [[10, 15, 50, 35]], [1], ["a", "b"], [0.9]))
    assert tuple(out[25, 10]) == PALETTE[1] and tuple(out[25, 30]) == (0, 0, 0)   # outline, not fill
    assert img.sum() == 0                                                       # input untouched
    assert np.asarray(draw_boxes(img, [[1, 1, 5, 5]], [7], ["a"])).any()        # unknown label: its number


def test_output_names_are_unique_when_stems_repeat():
    from pathlib import Path

    from yolo_common.data import output_names

    files = [Path("a/x.jpg"), Path("b/x.png"), Path("a/y.jpg")]
    assert output_names(files) == ["00000_x", "00001_x", "y"]
    assert output_names([]) == []


def test_detection_writer_outputs(tmp_path, capsys):
    import json
    from pathlib import Path

    import numpy as np
    from PIL import Image

    from yolo_common.draw import DetectionWriter

    files = [Path("a/x.jpg"), Path("b/x.jpg"), Path("c/bad.jpg"), Path("d/gt.jpg")]
    w = DetectionWriter(tmp_path / "out", files, ["cat", "dog"], "tool")
    img = np.zeros((20, 30, 3), np.uint8)
    w.add(0, files[0], img, [[1, 2, 10, 12]], [1], [0.875])
    w.add(1, files[1], Image.fromarray(img), [], [], [])
    w.skip(files[2], "cannot decode")
    gt = w.add(3, files[3], img, [[0, 0, 5, 5]], [0])   # boxes without scores (ground truth)
    assert gt["detections"] == [{"class": "cat", "score": None, "bbox": [0, 0, 5, 5]}]
    res = w.close(checkpoint="ck.pt")
    assert res == {"images": 3, "failed": ["c/bad.jpg"], "out": str(tmp_path / "out")}
    doc = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert doc["checkpoint"] == "ck.pt" and [i["output"] for i in doc["images"]] == ["00000_x.jpg", "00001_x.jpg",
                                                                                     "gt.jpg"]
    assert doc["images"][0]["detections"] == [{"class": "dog", "score": 0.875, "bbox": [1, 2, 10, 12]}]
    assert (doc["images"][0]["width"], doc["images"][0]["height"]) == (30, 20)
    assert Image.open(tmp_path / "out" / "00000_x.jpg").size == (30, 20)
    err = capsys.readouterr()
    assert "[tool] skipped c/bad.jpg: cannot decode" in err.err and "3 images, 2 detections" in err.out


def test_samples_grid_draws_gt_and_predictions(tmp_path):
    from PIL import Image

    from yolo_common.data import read_coco
    from yolo_common.draw import samples_grid
    from yolo_common.synthetic import make_synthetic

    root = make_synthetic(tmp_path / "s", layouts=("coco",), num_train=2, num_val=3, image_size=96, seed=0)["coco"]
    split = read_coco(root, "val")
    r = split.records[0]
    x1, y1, x2, y2 = r.boxes[0].tolist()
    dets = [{"image_id": r.image_id, "category_id": int(r.category_ids[0]), "bbox": [x1, y1, x2 - x1, y2 - y1],
             "score": 0.9}, {"image_id": r.image_id, "category_id": int(r.category_ids[0]),
                             "bbox": [0, 0, 5, 5], "score": 0.1}]
    path = samples_grid(split.records, dets, split.categories, tmp_path / "samples" / "val.png", n=2, cell=128)
    with Image.open(path) as im:
        assert im.format == "PNG" and im.size == (256, 2 * (128 + 14))
        a = np.asarray(im.convert("RGB")).astype(int)
    from yolo_common.preprocess import read_image

    raw = np.asarray(Image.fromarray(read_image(r.path)).resize((128, 128), Image.BILINEAR)).astype(int)
    left, right = a[14:142, :128], a[14:142, 128:]
    s = 128 / 96
    edge = (slice(int(y1 * s) + 1, int(y2 * s) - 1), int(x1 * s))     # the left edge of the predicted box
    assert np.abs(right[edge] - raw[edge]).max() > 60 and np.abs(left[edge] - raw[edge]).max() > 60
    corner = (slice(1, 6), slice(1, 6))                                 # the 0.1 box is below the threshold
    if not any((b[0] < 8 and b[1] < 8) for b in r.boxes.tolist()):
        assert np.abs(right[corner] - raw[corner]).max() < 40
    empty = samples_grid(split.records[1:2], [], split.categories, tmp_path / "e.png", n=1, cell=64)
    with Image.open(empty) as im:
        assert im.size == (128, 78)
