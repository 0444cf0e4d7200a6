"""HyperComputeModule: matmul distances == cdist incidence, aggregation semantics, gradients."""

from __future__ import annotations

import torch

from yolov9001.models.hypergraph import HyperComputeModule, pairwise_sq_dist


def test_sq_dist_mask_equals_cdist_mask():
    g = torch.Generator().manual_seed(0)
    for c, scale in ((16, 1.0), (128, 0.3), (256, 2.0)):
        x = torch.randn(2, 400, c, generator=g) * scale
        d = torch.cdist(x, x)
        thr = float(d.median())  # about half of the pairs on either side: a real test of the rule
        ours = pairwise_sq_dist(x) < thr ** 2
        assert torch.equal(ours, d < thr)
        assert 0.2 < ours.float().mean() < 0.8


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
