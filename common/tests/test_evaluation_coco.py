"""coco_map: faster-coco-eval and pycocotools agree, and the wrapper's own promises hold."""

import copy
import json
import math

import numpy as np
import pytest

from yolo_common.evaluation import COCO_STAT_NAMES, coco_map

CATS = [{"id": 1, "name": "person"}, {"id": 7, "name": "train"}, {"id": 42, "name": "surfboard"},
        {"id": 90, "name": "toothbrush"}]


def make_case(seed, n_images=24, crowd_frac=0.1, drop_optional_keys=False):
    """A random COCO case that exercises every branch of the protocol.

    Sparse category ids; box sides log-uniform in 4..400 px (small, medium and large areas); ~10% crowd
    GT; some images without GT; some without detections; a few with 130-200 detections so the
    maxDets=100 cut (and AR1/AR10) changes the answer. Detections are jittered GT (sometimes on the
    wrong class) plus false positives, all with random scores.
    """
    rng = np.random.default_rng(seed)
    W, H = 640, 480
    images, anns, dets = [], [], []
    cat_ids = [c["id"] for c in CATS]
    for img_id in range(1, n_images + 1):
        images.append({"id": img_id, "width": W, "height": H, "file_name": f"{img_id}.jpg"})
        n_gt = 0 if rng.random() < 0.15 else int(rng.integers(1, 12))
        wh = np.exp(rng.uniform(np.log(4), np.log(400), size=(n_gt, 2)))
        xy = rng.uniform(0, 1, size=(n_gt, 2)) * np.maximum([W, H] - wh, 1)
        gt_boxes = np.concatenate([xy, wh], 1)
        gt_cats = rng.choice(cat_ids, size=n_gt)
        for b, c in zip(gt_boxes, gt_cats):
            a = {"image_id": img_id, "category_id": int(c), "bbox": [float(v) for v in b],
                 "iscrowd": int(rng.random() < crowd_frac), "area": float(b[2] * b[3])}
            if drop_optional_keys:
                del a["iscrowd"], a["area"]
            anns.append(a)
        if rng.random() < 0.15:
            continue  # an image with no detections at all
        for b, c in zip(gt_boxes, gt_cats):
            if rng.random() < 0.85:
                jb = b + rng.normal(0, 0.05, 4) * np.r_[b[2:], b[2:]]
                jb[2:] = np.maximum(jb[2:], 1.0)
                jc = int(c) if rng.random() < 0.9 else int(rng.choice(cat_ids))
                # True positives tend to outscore false positives, as with a real detector.
                dets.append({"image_id": img_id, "category_id": jc, "bbox": [float(v) for v in jb],
                             "score": float(rng.uniform(0.3, 1.0))})
        n_fp = int(rng.integers(130, 200)) if rng.random() < 0.2 else int(rng.integers(0, 15))
        wh = np.exp(rng.uniform(np.log(4), np.log(400), size=(n_fp, 2)))
        xy = rng.uniform(0, 1, size=(n_fp, 2)) * np.maximum([W, H] - wh, 1)
        for b, c in zip(np.concatenate([xy, wh], 1), rng.choice(cat_ids, size=n_fp)):
            dets.append({"image_id": img_id, "category_id": int(c), "bbox": [float(v) for v in b],
                         "score": float(rng.uniform(0.0, 0.7))})
    gt = {"images": images, "annotations": [dict(a, id=i + 1) for i, a in enumerate(anns)],
          "categories": copy.deepcopy(CATS)}
    if not drop_optional_keys:
        gt["info"] = {"description": "random"}
    return gt, dets


def assert_same(a, b, tol=1e-6):
    for k in COCO_STAT_NAMES:
        assert abs(a[k] - b[k]) <= tol, (k, a[k], b[k])
    assert a["per_class"].keys() == b["per_class"].keys()
    for k in a["per_class"]:
        x, y = a["per_class"][k], b["per_class"][k]
        assert (math.isnan(x) and math.isnan(y)) or abs(x - y) <= tol, (k, x, y)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_backends_agree_on_random_cases(seed):
    gt, dets = make_case(seed, drop_optional_keys=(seed == 3))
    # The case really covers what it claims (otherwise agreement proves less than it seems).
    per_img = np.bincount([d["image_id"] for d in dets], minlength=len(gt["images"]) + 1)[1:]
    assert per_img.max() > 100 and (per_img == 0).any()
    assert len({a["image_id"] for a in gt["annotations"]}) < len(gt["images"])
    if seed != 3:
        assert any(a["iscrowd"] for a in gt["annotations"])
        areas = np.array([a["area"] for a in gt["annotations"]])
        assert (areas < 32**2).any() and ((areas > 32**2) & (areas < 96**2)).any() and (areas > 96**2).any()

    fast = coco_map(gt, dets, backend="faster")
    ref = coco_map(gt, dets, backend="pycocotools")
    assert fast["backend"].startswith("faster-coco-eval") and ref["backend"].startswith("pycocotools")
    assert_same(fast, ref)
    # Not a degenerate agreement (e.g. both all-zero): the jittered boxes give a middling AP, and
    # the maxDets cut makes recall grow with the detection budget.
    assert 0.1 < fast["AP"] < 0.9
    assert fast["AR1"] < fast["AR10"] < fast["AR100"]
    assert set(fast["per_class"]) == {c["name"] for c in CATS}
    # per_class is read off the same precision array as AP, so its mean is AP.
    assert np.nanmean(list(fast["per_class"].values())) == pytest.approx(fast["AP"], abs=1e-12)


@pytest.mark.parametrize("seed", [0, 3])
def test_fast_path_equals_faster_coco_evals_own_loadres(seed):
    """coco_map builds faster-coco-eval's result set itself (no loadRes polygons): the same 12 stats."""
    from faster_coco_eval import COCO, COCOeval_faster

    from yolo_common.evaluation.coco import _prepare_dets, _prepare_gt

    gt, dets = make_case(seed, drop_optional_keys=(seed == 3))
    quiet = lambda *a, **k: None  # noqa: E731
    coco_gt = COCO(_prepare_gt(gt), print_function=quiet)
    ev = COCOeval_faster(coco_gt, coco_gt.loadRes(_prepare_dets(dets, "bbox")), iouType="bbox", print_function=quiet)
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    ours = coco_map(gt, dets, backend="faster")
    assert [ours[k] for k in COCO_STAT_NAMES] == [float(x) for x in ev.stats]


def test_backends_agree_on_image_subset():
    gt, dets = make_case(5)
    ids = [im["id"] for im in gt["images"]][::2]
    fast = coco_map(gt, dets, img_ids=ids)
    assert_same(fast, coco_map(gt, dets, backend="pycocotools", img_ids=ids))
    assert abs(fast["AP"] - coco_map(gt, dets)["AP"]) > 1e-6  # the subset really changed the answer


def _perfect(gt):
    return [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0}
            for a in gt["annotations"] if not a["iscrowd"]]


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_perfect_detections_score_one(backend):
    gt, _ = make_case(7, crowd_frac=0.0)
    r = coco_map(gt, _perfect(gt), backend=backend)
    for k in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR100"):
        assert r[k] == pytest.approx(1.0, abs=1e-12), k
    assert all(v == pytest.approx(1.0, abs=1e-12) for v in r["per_class"].values())


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_wrong_class_scores_zero(backend):
    gt, _ = make_case(7, crowd_frac=0.0)
    # One class per image, so a relabelled box cannot land on some other GT of its new class.
    for a in gt["annotations"]:
        a["category_id"] = CATS[a["image_id"] % len(CATS)]["id"]
    ids = [c["id"] for c in CATS]
    shift = {c: ids[(i + 1) % len(ids)] for i, c in enumerate(ids)}
    dets = [dict(d, category_id=shift[d["category_id"]]) for d in _perfect(gt)]
    r = coco_map(gt, dets, backend=backend)
    assert all(r[k] == 0.0 for k in COCO_STAT_NAMES), r
    assert all(v == 0.0 for v in r["per_class"].values())


@pytest.mark.parametrize("backend", ["faster", "pycocotools"])
def test_empty_detections(backend):
    gt, _ = make_case(1)
    r = coco_map(gt, [], backend=backend)
    # Every bucket has GT in this case, so COCO gives 0 everywhere (-1 only for empty buckets).
    assert all(r[k] == 0.0 for k in COCO_STAT_NAMES), r
    assert all(v == 0.0 for v in r["per_class"].values())


def test_class_without_gt_is_nan_and_empty_bucket_is_minus_one():
    gt = {"images": [{"id": 5, "width": 100, "height": 100}],
          "categories": [{"id": 1, "name": "a"}, {"id": 2, "name": "b"}],
          "annotations": [{"id": 1, "image_id": 5, "category_id": 1, "bbox": [10, 10, 10, 10]}]}
    dets = [{"image_id": 5, "category_id": 1, "bbox": [10, 10, 10, 10], "score": 0.9},
            {"image_id": 5, "category_id": 2, "bbox": [50, 50, 10, 10], "score": 0.8}]
    for backend in ("faster", "pycocotools"):
        r = coco_map(gt, dets, backend=backend)
        assert r["per_class"]["a"] == pytest.approx(1.0) and math.isnan(r["per_class"]["b"])
        assert r["APm"] == -1.0 and r["APl"] == -1.0 and r["ARl"] == -1.0  # no medium/large GT
        assert r["APs"] == pytest.approx(1.0)


def test_inputs_not_mutated_and_paths_accepted(tmp_path):
    gt, dets = make_case(2, drop_optional_keys=True)
    gt_before, dets_before = copy.deepcopy(gt), copy.deepcopy(dets)
    fast = coco_map(gt, dets)
    ref = coco_map(gt, dets, backend="pycocotools")
    assert gt == gt_before and dets == dets_before
    (tmp_path / "gt.json").write_text(json.dumps(gt))
    (tmp_path / "dt.json").write_text(json.dumps(dets))
    from_files = coco_map(tmp_path / "gt.json", str(tmp_path / "dt.json"), backend="pycocotools")
    assert_same(from_files, ref, tol=0.0)
    assert_same(fast, ref)


def test_unknown_image_ids_raise():
    gt, dets = make_case(0)
    bad = dets + [dict(dets[0], image_id=9999), dict(dets[0], image_id=4242)]
    for backend in ("faster", "pycocotools"):
        with pytest.raises(ValueError, match=r"4242, 9999"):
            coco_map(gt, bad, backend=backend)
    with pytest.raises(ValueError, match="img_ids"):
        coco_map(gt, dets, img_ids=[1, 31337])
    with pytest.raises(ValueError, match="backend"):
        coco_map(gt, dets, backend="detectron")


def test_quiet_by_default_verbose_prints(capsys):
    gt, dets = make_case(0, n_images=4)
    for backend in ("faster", "pycocotools"):
        coco_map(gt, dets, backend=backend)
        assert capsys.readouterr().out == ""
        coco_map(gt, dets, backend=backend, verbose=True)
        assert "Average Precision" in capsys.readouterr().out
