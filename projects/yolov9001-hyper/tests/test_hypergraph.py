"""HyperComputeModule: matmul distances == cdist incidence, aggregation semantics, gradients."""

from __future__ import annotations

import pytest
import torch

from yolov9001.models.hypergraph import HyperComputeModule, pairwise_sq_dist


def test_sq_dist_mask_equals_cdist_mask_on_model_features(synthetic):
    """The incidence built on the model's own layer-15 features of real images equals cdist's, entry for
    entry (random-init features are small, so the radius is their 30% distance quantile, not 6)."""
    from yolo_common.preprocess import LetterboxSpec, letterbox, read_image

    from yolov9001.models import HyperYOLO

    torch.manual_seed(0)
    model = HyperYOLO("n", nc=3).eval()
    hcm = model.hyper_modules()[0]
    seen = []
    hcm.register_forward_pre_hook(lambda m, i: seen.append(i[0].flatten(2).transpose(1, 2).clone()))
    files = sorted((synthetic["yolo"] / "images" / "train").glob("*"))[:4]
    x = torch.stack([torch.from_numpy(letterbox(read_image(f), LetterboxSpec(size=320))[0]) for f in files])
    with torch.no_grad():
        model(x)
    v = seen[0]
    d = torch.cdist(v.double(), v.double(), compute_mode="donot_use_mm_for_euclid_dist")
    # a radius near the 30% quantile, at the middle of the widest gap between neighbouring distances: the
    # synthetic backgrounds give exactly tied distances, and a radius on a tie is decided by rounding alone
    u = d.flatten().unique()
    k = int(0.3 * len(u))
    window = u[max(k - 500, 0): k + 500]
    j = int((window[1:] - window[:-1]).argmax())
    thr = float((window[j] + window[j + 1]) / 2)
    exact = d < thr
    ours = pairwise_sq_dist(v) < thr ** 2
    assert 0.05 < exact.float().mean() < 0.95
    assert torch.equal(ours, exact)
    assert torch.equal(ours, torch.cdist(v, v) < thr)
    hcm.threshold = thr
    hcm(seen[0].transpose(1, 2).reshape(len(files), -1, 20, 20))
    assert float(hcm.last_edge_size) == pytest.approx(float(exact.sum(-1).double().mean()))


def test_sq_dist_mask_equals_cdist_mask_up_to_rounding():
    """On random features with the threshold at the median distance (half the pairs on either side), the
    masks differ only for pairs within fp32 rounding of the threshold (|d - t| < 1e-5 t)."""
    g = torch.Generator().manual_seed(0)
    for c, scale in ((16, 1.0), (128, 0.3), (256, 2.0)):
        x = torch.randn(2, 400, c, generator=g) * scale
        d = torch.cdist(x.double(), x.double(), compute_mode="donot_use_mm_for_euclid_dist")
        thr = float(d.median())
        ours = pairwise_sq_dist(x) < thr ** 2
        differ = ours != (d < thr)
        assert ((d[differ] - thr).abs() < 1e-5 * thr).all()
        assert differ.float().mean() < 1e-4 and 0.2 < ours.float().mean() < 0.8


def test_module_equals_paper_formula():
    """out = SiLU(BN(X + Dv^-1 H De^-1 H^T X Theta)) with H the epsilon-ball incidence."""
    torch.manual_seed(0)
    m = HyperComputeModule(8, 8, threshold=2.5).eval()
    m.bn.running_mean.uniform_(-0.1, 0.1)
    m.bn.running_var.uniform_(0.8, 1.2)
    x = torch.randn(1, 8, 5, 6)
    v = x.flatten(2).transpose(1, 2)[0]                      # [N, C]
    h = (torch.cdist(v, v) < 2.5).float()
    xt = m.hgconv.fc(v)
    e = torch.diag(1 / h.sum(0)) @ h.T @ xt
    agg = torch.diag(1 / h.sum(1)) @ h @ e
    expected = m.act(m.bn((agg + v).T.reshape(1, 8, 5, 6)))
    torch.testing.assert_close(m(x), expected, rtol=1e-5, atol=1e-5)
    assert 1.0 < float(m.last_edge_size) < 30.0


def test_gradients_flow_through_fc_only_path():
    m = HyperComputeModule(8, 8, threshold=3.0)
    x = torch.randn(2, 8, 4, 4, requires_grad=True)
    m(x).sum().backward()
    assert m.hgconv.fc.weight.grad is not None and m.hgconv.fc.weight.grad.abs().sum() > 0
    assert x.grad is not None


def test_normalized_distance_is_scale_free():
    m = HyperComputeModule(64, 64, threshold=1.0, distance="normalized")
    x = torch.randn(1, 64, 6, 6)
    m(x)
    a = float(m.last_edge_size)
    m(x * 1.0)
    assert float(m.last_edge_size) == a
    ref = HyperComputeModule(64, 64, threshold=8.0)
    ref(x)
    # normalized with threshold t equals euclidean with threshold t * sqrt(C)
    assert float(ref.last_edge_size) == a
