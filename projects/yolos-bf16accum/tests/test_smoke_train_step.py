"""A single forward/backward/optimizer step, baseline and fully patched (the seed's smoke test)."""

import pytest
import torch

from yolos_bf16accum.patching import count_patched, encoder_blocks, patch_all


def _step(model, batch, precision_ctx=None):
    pixels, labels = batch
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ctx = precision_ctx or torch.autocast("cpu", enabled=False)
    with ctx:
        out = model(pixel_values=pixels, labels=labels)
    assert torch.isfinite(out.loss)
    assert set(out.loss_dict) >= {"loss_ce", "loss_bbox", "loss_giou"}
    out.loss.backward()
    opt.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    return out, changed


def test_baseline_step_updates_every_trainable_tensor(tiny_model, tiny_batch):
    out, changed = _step(tiny_model, tiny_batch)
    assert out.logits.shape == (2, 10, 4)  # 10 detection tokens, 3 classes + no-object
    names = {n for n, _ in tiny_model.named_parameters()}
    assert names - changed == set()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_patched_step_has_gradients_everywhere(tiny_model, tiny_batch, precision):
    counts = patch_all(tiny_model, accum_chunk=16, backend="emulation")
    n = len(encoder_blocks(tiny_model))
    assert counts == {"linears": 6 * n + 6, "attention": n, "convs": 0}
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16" else None
    out, changed = _step(tiny_model, tiny_batch, ctx)
    assert count_patched(tiny_model)["linears"] == 6 * n + 6
    for i, layer in enumerate(encoder_blocks(tiny_model)):
        sa = layer.attention.attention
        for lin in (sa.query, sa.key, sa.value):  # upstream's CUDA attention left these without grad
            assert lin.weight.grad is not None and lin.weight.grad.abs().sum() > 0, f"block {i}"
            assert lin.weight.dtype == torch.float32 and lin.weight.grad.dtype == torch.float32
    assert "vit.encoder.layer.0.attention.attention.query.weight" in changed


def test_patched_forward_differs_from_fp32_but_not_by_much(tiny_model, tiny_batch):
    pixels, _ = tiny_batch
    tiny_model.eval()
    with torch.no_grad():
        ref = tiny_model(pixel_values=pixels).pred_boxes
        patch_all(tiny_model, accum_chunk=1, backend="emulation")
        got = tiny_model(pixel_values=pixels).pred_boxes
    diff = (got - ref).abs().max().item()
    assert 0 < diff < 0.1  # the kernels are really in the path, and the model still works
