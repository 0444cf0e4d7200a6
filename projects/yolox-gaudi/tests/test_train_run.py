"""End-to-end runs (slow): resume continues the counters; 2 gloo processes == 1 process, same global batch."""

import json

import pytest
import torch

@pytest.mark.slow
def test_resume_continues_epoch_and_iteration(tmp_path, train):
    root = train(tmp_path, ["--batch-size", "8"], ["max_epoch", "1"])
    ck = torch.load(root / "checkpoints" / "last.pt", weights_only=True)
    assert (ck["start_epoch"], ck["iteration"]) == (1, 2)         # 16 images / batch 8
    assert (root / "eval" / "metrics.json").is_file() and (root / "curves" / "loss.csv").is_file()
    for key in ("AP", "AP50", "AR100"):
        assert key in json.loads((root / "eval" / "metrics.json").read_text())
    # as if the process had been killed after logging iterations 3 and 4 (past its last checkpoint)
    with open(root / "logs" / "train.jsonl", "a") as f:
        f.write('{"step": 3, "epoch": 1.5, "time": 0}\n{"step": 4, "epoch": 2.0, "time": 0}\n{"step": 5, "lo')
    train(tmp_path, ["--batch-size", "8", "--resume"], ["max_epoch", "2"])
    ck2 = torch.load(root / "checkpoints" / "last.pt", weights_only=True)
    assert (ck2["start_epoch"], ck2["iteration"], ck2["ema_updates"]) == (2, 4, 4)
    steps = [json.loads(line)["step"] for line in (root / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]              # the second run went on from 2; the killed run's 3, 4 trimmed
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb_steps = [e.step for e in EventAccumulator(str(root / "tb")).Reload().Scalars("train/total_loss")]
    assert tb_steps == [1, 2, 3, 4]


@pytest.mark.slow
def test_two_gloo_processes_match_one(tmp_path, train):
    # freeze_bn: BN statistics of a 2-image shard differ from those of the 4-image batch (Megvii has no
    # SyncBN), which is the one thing data parallelism legitimately changes (sync_bn: the next test);
    # everything else (sharding, loss normalisation, gradient averaging, multiscale, augmentation) must agree.
    # max_epoch 2: with no_aug_epochs 0, Megvii's rule makes the last epoch a no-aug one; `steps 3` stops
    # inside epoch 0, which keeps its mosaic
    opts = ["max_epoch", "2", "steps", "3", "freeze_bn", "True", "mosaic_prob", "1", "warmup_epochs", "0",
            "basic_lr_per_img", "0.01"]
    one = train(tmp_path, ["--batch-size", "4", "--devices", "1"], opts, "one")
    # --devices 2 without a launcher: the CLI starts 2 ranks itself (torchrun's variables, gloo on CPU)
    two = train(tmp_path, ["--batch-size", "4", "--devices", "2", "--dist-backend", "gloo"], opts, "two",
                in_process=False)
    a = torch.load(one / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(two / "checkpoints" / "last.pt", weights_only=True)
    assert a["iteration"] == b["iteration"] == 3
    cfg = json.loads((two / "config.json").read_text())
    assert cfg["world_size"] == 2 and cfg["dist_backend"] == "gloo"
    from yolox_gaudi.config import get_exp
    from yolox_gaudi.model import build_model

    torch.manual_seed(0)
    init = build_model(get_exp("yolox-nano").merge(["num_classes", "3"])).state_dict()
    moved = max((a["train_model"][k] - init[k]).abs().max().item() for k in init if init[k].is_floating_point())
    assert moved > 1e-3                                            # training really changed the weights
    for k, v in a["train_model"].items():
        if v.is_floating_point():
            torch.testing.assert_close(b["train_model"][k], v, rtol=1e-4, atol=2e-5, msg=k)


@pytest.mark.slow
def test_sync_bn_makes_two_processes_train_like_one(tmp_path, train):
    """sync_bn True (CpuSyncBatchNorm2d on gloo): the first update of 2 ranks x 2 images equals that of one
    process with the 4 images, BN in train mode. Batch-statistic BN on 2x2 feature maps amplifies fp32
    noise, so the check is on the update (relative to its size), and a run without sync_bn must miss it."""
    from yolox_gaudi.config import get_exp
    from yolox_gaudi.model import build_model

    opts = ["max_epoch", "2", "steps", "1", "mosaic_prob", "1", "warmup_epochs", "0", "basic_lr_per_img", "0.01"]
    one = train(tmp_path, ["--batch-size", "4"], [*opts, "sync_bn", "True"], "one")
    runs = {sync: train(tmp_path, ["--batch-size", "4", "--devices", "2"], [*opts, "sync_bn", str(sync)], f"two{sync}",
                        in_process=False) for sync in (True, False)}
    torch.manual_seed(0)
    init = build_model(get_exp("yolox-nano").merge(["num_classes", "3"])).state_dict()
    load = lambda root: torch.load(root / "checkpoints" / "last.pt", weights_only=True)["train_model"]  # noqa: E731
    ref = load(one)

    def update_error(other):
        errs = []
        for k, v in ref.items():
            if v.is_floating_point() and "running" not in k:
                du, do = v - init[k], other[k] - init[k]
                errs.append(float((do - du).norm() / du.norm().clamp(min=1e-12)))
        return max(errs), sorted(errs)[len(errs) // 2]

    worst, median = update_error(load(runs[True]))
    assert worst < 0.02 and median < 1e-3, (worst, median)        # measured 0.0027 / 0.00012
    worst_off, median_off = update_error(load(runs[False]))
    assert median_off > 0.3, (worst_off, median_off)              # measured 9.1 / 1.48: per-rank statistics
    key = "backbone.backbone.stem.conv.bn.running_mean"
    torch.testing.assert_close(load(runs[True])[key], ref[key], rtol=1e-4, atol=1e-3)   # global running statistics


@pytest.mark.slow
def test_trains_and_evaluates_on_a_voc_root(tmp_path, synthetic_voc):
    """--data_dir pointing at a VOCdevkit: VOC image sets, VOC mAP in eval/metrics.json."""
    from yolox_gaudi.train import main

    argv = ["--name", "yolox-nano", "--device", "cpu", "--threads", "1", "--batch-size", "8", "--data_dir",
            str(synthetic_voc), "-expn", "voc", "num_classes", "3", "input_size", "64,64", "test_size", "64,64",
            "random_size", "2,2", "data_num_workers", "0", "warmup_epochs", "0", "no_aug_epochs", "0",
            "max_epoch", "1", "train_split", "2012/train", "val_split", "val", "output_dir", str(tmp_path)]
    assert main(argv) == 0
    m = json.loads((tmp_path / "voc" / "eval" / "metrics.json").read_text())
    assert m["metric"] == "voc (all-point)" and 0 <= m["AP50"] <= 1 and len(m["per_class"]) == 3


@pytest.mark.slow
def test_eval_cli_on_a_trained_checkpoint(tmp_path, train):
    root = train(tmp_path, ["--batch-size", "8"], ["max_epoch", "1", "save_history_ckpt", "False"])
    assert sorted(p.name for p in (root / "checkpoints").glob("*.pt")) == ["best.pt", "last.pt"]
    from yolox_gaudi.eval import main

    out = tmp_path / "ev"
    assert main(["--name", "yolox-nano", "-c", str(root / "checkpoints" / "best.pt"), "--data_dir",
                 str(root / "synthetic" / "coco"), "--tsize", "64", "--out", str(out), "num_classes", "3",
                 "data_num_workers", "0"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) >= {"AP", "AP50", "AR100", "per_class"} and -1 <= metrics["AP"] <= 1
    # Megvii's preprocessing at a non-square size, and COCO test-dev (no labels: a result json, no scores)
    import shutil

    data = root / "synthetic" / "coco"
    ann = json.loads((data / "annotations" / "instances_val2017.json").read_text())
    ann.pop("annotations")
    (data / "annotations" / "image_info_test-dev2017.json").write_text(json.dumps(ann))
    shutil.copytree(data / "val2017", data / "test2017")
    assert main(["--name", "yolox-nano", "-c", str(root / "checkpoints" / "best.pt"), "--data_dir", str(data),
                 "--tsize", "64,96", "--preproc", "cv2", "--test", "--conf", "0.0", "--out", str(out / "dev"),
                 "num_classes", "3", "data_num_workers", "0"]) == 0
    dev = json.loads((out / "dev" / "yolox_testdev_2017.json").read_text())
    m = json.loads((out / "dev" / "metrics.json").read_text())
    assert len(dev) > 0 and {d["image_id"] for d in dev} <= {im["id"] for im in ann["images"]}
    assert "AP" not in m and m["images"] == len(ann["images"]) and m["test_size"] == [64, 96]
    # the demo: annotated copies and a JSON with the checkpoint's class names, an unreadable file skipped
    from yolox_gaudi.demo import main as demo

    imgs = tmp_path / "imgs"
    shutil.copytree(data / "val2017", imgs)
    (imgs / "broken.jpg").write_bytes(b"not a jpeg")
    assert demo(["image", "-n", "yolox-nano", "-c", str(root / "checkpoints" / "best.pt"), "--path", str(imgs),
                 "--conf", "0.0", "--tsize", "64", "--out", str(tmp_path / "demo")]) == 0
    res = json.loads((tmp_path / "demo" / "detections.json").read_text())
    assert len(res["images"]) == len(ann["images"]) and res["failed"] == [str(imgs / "broken.jpg")]
    names = {c["name"] for c in ann["categories"]}
    assert all((tmp_path / "demo" / r["output"]).is_file() for r in res["images"])
    dets = [d for r in res["images"] for d in r["detections"]]
    assert dets and {d["class"] for d in dets} <= names
    assert all(0 <= d["bbox"][0] <= d["bbox"][2] <= r["width"] for r in res["images"] for d in r["detections"])
    # a checkpoint of another class count is refused with a message naming the file
    assert main(["--name", "yolox-nano", "-c", str(root / "checkpoints" / "best.pt"), "--data_dir",
                 str(root / "synthetic" / "coco"), "--out", str(out), "num_classes", "80"]) == 2


def test_class_count_mismatch_names_the_annotation_file(synthetic_coco, tmp_path, capsys):
    from yolox_gaudi.train import main

    rc = main(["--name", "yolox-nano", "--device", "cpu", "--data_dir", str(synthetic_coco), "output_dir",
               str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2 and "instances_train2017.json has 3 categories but num_classes=80" in err
    assert "num_classes 3" in err


@pytest.mark.slow
def test_steps_stop_inside_an_epoch_resumes_the_rest_of_it(tmp_path, train):
    """`steps 6` with 4 iterations per epoch stops half-way through epoch 2; --resume must run exactly
    the 2 missing iterations of that epoch on the samples it had not seen, ending bit-identical to a
    run that never stopped (before: the rest of epoch 2 was skipped and training ended 2 steps short)."""
    opts = ["max_epoch", "2", "mosaic_prob", "1", "warmup_epochs", "1", "basic_lr_per_img", "0.01"]
    whole = train(tmp_path, ["--batch-size", "4"], opts, "whole")
    cut = train(tmp_path, ["--batch-size", "4"], [*opts, "steps", "6"], "cut")
    mid = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert (mid["start_epoch"], mid["iteration"], mid["epoch_iter"], mid["sampler_offset"]) == (1, 6, 2, 8)
    # epoch_1.pt stays the end of epoch 1; the mid-epoch state is last.pt only
    assert torch.load(cut / "checkpoints" / "epoch_1.pt", weights_only=True)["iteration"] == 4
    assert not (cut / "checkpoints" / "epoch_2.pt").exists()
    from yolox_gaudi.train import main

    other_batch = ["--name", "yolox-nano", "--device", "cpu", "--threads", "1", "--synthetic", "--synthetic-images",
                   "16", "--synthetic-size", "64", "-expn", "cut", "--batch-size", "8", "--resume", *train.tiny,
                   "output_dir", str(tmp_path), *opts, "steps", "0"]
    assert main(other_batch) == 2        # another global batch would shift iterations, LR and the sampler offset
    train(tmp_path, ["--batch-size", "4", "--resume"], [*opts, "steps", "0"], "cut")
    a = torch.load(whole / "checkpoints" / "last.pt", weights_only=True)
    b = torch.load(cut / "checkpoints" / "last.pt", weights_only=True)
    assert (b["start_epoch"], b["iteration"], b["epoch_iter"]) == (a["start_epoch"], a["iteration"], 0) == (2, 8, 0)
    for key in ("train_model", "model"):
        for k, v in a[key].items():
            assert torch.equal(b[key][k], v), f"{key}.{k}"
    steps = [json.loads(line)["step"] for line in (cut / "logs" / "train.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))


def test_resumable_sampler_prefix_is_the_same_for_any_world_size():
    """The skipped part of a resumed epoch is the same set of samples whatever the world size."""
    from yolox_gaudi.data import ResumableSampler

    def consumed(ws, per_rank):
        out = set()
        for r in range(ws):
            s = ResumableSampler(range(40), num_replicas=ws, rank=r, shuffle=True, seed=3, drop_last=True)
            s.set_epoch(5)
            out |= set(list(s)[:per_rank])
        return out

    def rest(ws, skip):
        out = []
        for r in range(ws):
            s = ResumableSampler(range(40), num_replicas=ws, rank=r, shuffle=True, seed=3, drop_last=True)
            s.set_epoch(5)
            s.skip = skip
            assert len(s) == len(list(s)) == 40 // ws - skip
            out += list(s)
        return set(out)

    offset = 16                                       # global samples done before the stop
    assert consumed(1, 16) == consumed(2, 8) == consumed(4, 4)
    assert rest(2, offset // 2) == rest(4, offset // 4) == set(range(40)) - consumed(1, 16)


def _corrupt(path, how):
    data = path.read_bytes()
    path.write_bytes(b"" if how == "empty" else data[: len(data) // 3] if how == "truncate" else b"not a jpeg")


@pytest.mark.slow
def test_unreadable_images_are_skipped_and_counted_not_fatal(synthetic_coco, tmp_path, caplog, train):
    """Truncated, zero-byte and garbage images (headers trusted by the reader) in train and val: the epoch
    runs with 2 loader workers, each bad file is logged by name and counted, eval drops the bad image."""
    import logging
    import shutil

    data = tmp_path / "coco"
    shutil.copytree(synthetic_coco, data)
    train_files = sorted((data / "train2017").iterdir())
    _corrupt(train_files[0], "truncate")
    _corrupt(train_files[1], "empty")
    _corrupt(sorted((data / "val2017").iterdir())[0], "garbage")
    from yolox_gaudi.train import main

    argv = ["--name", "yolox-nano", "--device", "cpu", "--threads", "1", "--batch-size", "8", "--data_dir",
            str(data), "-expn", "bad", *train.tiny, "data_num_workers", "2", "mosaic_prob", "0", "max_epoch", "2",
            "eval_interval", "1",
            "output_dir", str(tmp_path)]
    with caplog.at_level(logging.WARNING):
        assert main(argv) == 0
    metrics = json.loads((tmp_path / "bad" / "eval" / "metrics.json").read_text())
    assert metrics["unreadable_images"] == 1 and metrics["images"] == 3   # the 2nd evaluation's own count
    # the worker processes' warnings do not reach caplog; the parent's per-epoch count does
    assert "unreadable images skipped so far" in caplog.text
    summary = (tmp_path / "bad" / "summary.md").read_text()
    assert "unreadable train image loads" in summary

    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main([*argv[:-1], str(tmp_path / "v"), "verify_images", "True"]) == 0
    assert "image does not decode" in caplog.text and train_files[0].name in caplog.text
    metrics = json.loads((tmp_path / "v" / "bad" / "eval" / "metrics.json").read_text())
    assert metrics["unreadable_images"] == 0 and metrics["images"] == 3   # dropped before training
