"""CPPE-5 through ``datasets`` from a local parquet copy (a tiny one written here in CPPE-5's schema)."""

import numpy as np
import pytest

datasets = pytest.importorskip("datasets")


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("cppe5")
    names = ["Coverall", "Face_Shield", "Gloves", "Goggles", "Mask"]
    features = datasets.Features({
        "image_id": datasets.Value("int64"), "image": datasets.Image(),
        "width": datasets.Value("int32"), "height": datasets.Value("int32"),
        "objects": {"id": datasets.List(datasets.Value("int64")), "area": datasets.List(datasets.Value("int64")),
                    "bbox": datasets.List(datasets.List(datasets.Value("float32"), length=4)),
                    "category": datasets.List(datasets.ClassLabel(names=names))},
    })
    rng = np.random.default_rng(0)
    for split, n in (("train", 3), ("test", 2)):
        rows = {"image_id": [], "image": [], "width": [], "height": [], "objects": []}
        for i in range(n):
            w, h = 80, 60
            rows["image_id"].append(100 * (split == "test") + i)
            rows["image"].append(Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)))
            rows["width"].append(w)
            rows["height"].append(h)
            # the second box spills over the right edge: it is clipped to the image
            rows["objects"].append({"id": [1, 2], "area": [100, 200], "bbox": [[5, 5, 10, 10], [70, 20, 20, 10]],
                                    "category": [i % 5, 4]})
        (root / "data").mkdir(exist_ok=True)
        datasets.Dataset.from_dict(rows, features=features).to_parquet(str(root / "data" / f"{split}-0000.parquet"))
    return root


@pytest.mark.slow  # datasets + parquet round trip: ~10 s here
def test_cppe5_from_local_parquet(parquet_dir, tmp_path):
    from yolos_bf16accum.config import TrainConfig
    from yolos_bf16accum.data import build_datasets

    cfg = TrainConfig(dataset="cppe5", cppe5_path=str(parquet_dir), output_dir=str(tmp_path), image_size=(32, 48),
                      augment=False)
    train_ds, eval_ds, gt, labels = build_datasets(cfg)
    assert (len(train_ds), len(eval_ds)) == (3, 2)
    assert [c["name"] for c in labels.categories][0] == "Coverall" and labels.num_labels == 5
    assert {im["id"] for im in gt["images"]} == {100, 101}
    assert gt["annotations"][1]["bbox"] == [70.0, 20.0, 10.0, 10.0]  # clipped at x = 80
    pixels, target = train_ds[0]
    assert pixels.shape == (3, 32, 48) and target["class_labels"].tolist() == [0, 4]


def test_cppe5_missing_split_names_the_folder(parquet_dir, tmp_path):
    from yolos_bf16accum.data import _cppe5_source

    with pytest.raises(FileNotFoundError, match="validation"):
        _cppe5_source(str(parquet_dir), "validation", None)
