"""The patch-embedding group, per-role datapaths (e.g. PV's chunk apart from QKᵀ's), the config's
datapath flags, and stochastic rounding's per-call streams inside layers."""

import pytest
import torch
from torch import nn

from yolos_bf16accum.config import smoke_config
from yolos_bf16accum.formats import round_to_format
from yolos_bf16accum.patching import (apply_patch_state, count_patched, encoder_blocks, install_attention_function,
                                      patch_all, patch_conv, patch_embedding_conv, patch_linear, unpatch_conv)
from yolos_bf16accum.schedule import ProgressiveSchedule, parse_schedule
from yolos_bf16accum.spec import AccumSpec


def test_patch_conv_is_the_conv_on_its_datapath_with_the_conv_gradient():
    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 8, 4, stride=4)
    x = torch.randn(2, 3, 13, 17, generator=g)           # 13 x 17: the conv drops the partial patches
    ref_conv = nn.Conv2d(3, 8, 4, stride=4)
    ref_conv.load_state_dict(conv.state_dict())
    # reference: the conv on bf16-rounded operands, fp32 accumulation
    with torch.no_grad():
        ref_conv.weight.copy_(round_to_format(ref_conv.weight, "bf16"))
    xr = round_to_format(x, "bf16").requires_grad_(True)
    ref = ref_conv(xr)
    x1 = x.clone().requires_grad_(True)
    patch_conv(conv, AccumSpec(64, acc="fp32"))
    out = conv(x1)
    assert out.shape == ref.shape == (2, 8, 3, 4)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    # bf16 accumulation really changes the numbers; the gradient is still the plain conv's (STE)
    patch_conv(conv, AccumSpec(1))
    x2 = x.clone().requires_grad_(True)
    y = conv(x2)
    assert not torch.allclose(y, ref, rtol=1e-5, atol=1e-5)
    plain = nn.Conv2d(3, 8, 4, stride=4)
    plain.load_state_dict(conv.state_dict())
    x3 = x.clone().requires_grad_(True)
    gy = torch.randn(y.shape, generator=g)
    y.backward(gy)
    plain(x3).backward(gy)
    torch.testing.assert_close(x2.grad, x3.grad, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(conv.weight.grad, plain.weight.grad, rtol=1e-5, atol=1e-5)
    assert type(unpatch_conv(conv)) is nn.Conv2d


def test_only_patchifying_convs_are_patched():
    with pytest.raises(ValueError, match="patchifying"):
        patch_conv(nn.Conv2d(3, 8, 3, stride=1, padding=1))
    conv = nn.Conv2d(3, 8, 4, stride=2)
    with pytest.raises(ValueError, match="patchifying"):
        patch_conv(conv)
    assert type(conv) is nn.Conv2d                       # refused before the class swap


def test_patch_embed_group_in_the_model_and_the_schedule(tiny_model, tiny_batch):
    pixels, labels = tiny_batch
    base = tiny_model(pixel_values=pixels).logits
    counts = patch_all(tiny_model, AccumSpec(32), backend="emulation", patch_embed=True)
    assert counts["convs"] == 1 and type(patch_embedding_conv(tiny_model)).__name__ == "BF16AccPatchConv"
    patched = tiny_model(pixel_values=pixels, labels=labels)
    assert not torch.allclose(patched.logits, base)
    patched.loss.backward()
    assert patch_embedding_conv(tiny_model).weight.grad.abs().sum() > 0
    s = ProgressiveSchedule(parse_schedule("attn@0.2,patch_embed@0.5"), 10, len(encoder_blocks(tiny_model)))
    assert "patch_embed" not in s.state_at(4) and s.state_at(5)["patch_embed"] == (0,)
    assert s.describe(9)["patch_embed"] == "on"
    apply_patch_state(tiny_model, s.state_at(4), 16)
    assert count_patched(tiny_model)["convs"] == 0


def test_per_role_specs_reach_their_modules(tiny_model):
    install_attention_function(tiny_model)
    n = len(encoder_blocks(tiny_model))
    state = {"attn": range(n), "mlp": range(n), "qkv": range(n), "head": [0], "patch_embed": [0]}
    apply_patch_state(tiny_model, state, {"default": AccumSpec(32, acc="fp16"), "pv": AccumSpec(128),
                                          "mlp": AccumSpec(16, rounding="rtz")})
    layer = encoder_blocks(tiny_model)[0]
    sa = layer.attention.attention
    assert sa.bf16acc_spec == AccumSpec(32, acc="fp16") and sa.bf16acc_spec_pv == AccumSpec(128)
    assert sa.bf16acc_chunk == 32
    assert layer.intermediate.dense.bf16acc_spec == AccumSpec(16, rounding="rtz")
    assert layer.intermediate.dense.accum_chunk == 16
    assert sa.query.bf16acc_spec == AccumSpec(32, acc="fp16")
    assert patch_embedding_conv(tiny_model).bf16acc_spec == AccumSpec(32, acc="fp16")
    with pytest.raises(ValueError, match="unknown spec key"):
        apply_patch_state(tiny_model, state, {"attention": 32})


def test_config_builds_the_datapath_and_rejects_bad_values(tmp_path):
    cfg = smoke_config("progressive", str(tmp_path), accum_chunk=32, accum_format="e6m7", rounding="sr",
                       operand_format="fp16", bias_placement="init", group_chunks="pv=256,mlp=16", seed=5)
    specs = cfg.accum_specs()
    assert specs["qkv"] == AccumSpec(32, acc="e6m7", rounding="sr", operands="fp16", bias="init", seed=5)
    assert specs["pv"].chunk == 256 and specs["qk"].chunk == 32 and specs["mlp"].chunk == 16
    for bad, match in ((dict(accum_format="fp8"), "format"), (dict(rounding="nearest"), "rounding"),
                       (dict(operand_format="fp32"), "operand"), (dict(group_chunks="pv:3"), "group_chunks"),
                       (dict(group_chunks="attention=3"), "group_chunks"), (dict(bias_placement="x"), "bias")):
        with pytest.raises(ValueError, match=match):
            smoke_config("progressive", str(tmp_path), **bad)


def test_stochastic_rounding_draws_a_fresh_stream_per_call_and_is_reproducible():
    def layer():
        torch.manual_seed(0)
        return patch_linear(nn.Linear(256, 8), AccumSpec(1, rounding="sr", seed=3), backend="emulation")

    x = torch.randn(4, 256, generator=torch.Generator().manual_seed(1))
    lin = layer()
    first, second = lin(x), lin(x)
    assert not torch.equal(first, second)                 # a new stream per call
    again = layer()
    assert torch.equal(again(x), first) and torch.equal(again(x), second)   # seeded: the same sequence


def test_layer_errors_report_each_patched_module_and_rank_the_formats(tiny_model, tiny_batch):
    from yolos_bf16accum.layer_errors import layer_errors, summarize

    pixels, _ = tiny_batch
    assert layer_errors(tiny_model, pixels) == {}
    patch_all(tiny_model, AccumSpec(1), backend="emulation", patch_embed=True)
    bf16 = layer_errors(tiny_model, pixels)
    n = len(encoder_blocks(tiny_model))
    assert len(bf16) == 6 * n + 6 + n + 1               # every Linear, every attention core, the patch conv
    assert "vit.encoder.layer.0.attention.attention.core" in bf16
    assert all(1e-4 < e < 0.2 for e in bf16.values()), bf16
    patch_all(tiny_model, AccumSpec(1, acc="e5m2"), backend="emulation", patch_embed=True)
    e5m2 = layer_errors(tiny_model, pixels)
    assert sum(e5m2[k] > bf16[k] for k in bf16) == len(bf16)
    assert summarize(bf16)["layer_err/max"] == max(bf16.values())
    assert tiny_model.training                           # the report leaves the mode as it found it


def test_stochastic_rounding_streams_differ_between_modules_and_between_qk_and_pv(tiny_model):
    """Two patched modules with the same seed draw different streams (their names), and a PV matmul on
    SR advances per call even when QKᵀ rounds to nearest."""
    from yolos_bf16accum.ste import call_spec, next_call

    install_attention_function(tiny_model)
    n = len(encoder_blocks(tiny_model))
    sr = AccumSpec(1, rounding="sr", seed=42)
    apply_patch_state(tiny_model, {"qkv": range(n), "attn": range(n)}, {"default": sr, "qk": AccumSpec(1)})
    sa = encoder_blocks(tiny_model)[0].attention.attention
    q, k = sa.query, sa.key
    assert call_spec(q, sr, 0).seed != call_spec(k, sr, 0).seed
    seeds = []
    for _ in range(3):
        call = next_call(sa)
        assert call_spec(sa, sa.bf16acc_spec, call) == AccumSpec(1)          # QK^T: RNE, unchanged
        seeds.append(call_spec(sa, sa.bf16acc_spec_pv, call, stream=1).seed)
    assert len(set(seeds)) == 3


def test_layer_error_reference_is_fp32_under_autocast():
    """Under bf16 autocast the reference must still be fp32: an fp32-accumulating patched Linear then
    reports the bf16 operand rounding (~1e-3), not ~0 from comparing against a bf16 reference."""
    from yolos_bf16accum.layer_errors import layer_errors

    class Wrap(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(256, 32)

        def forward(self, pixel_values):
            return self.lin(pixel_values)

    torch.manual_seed(0)
    m = Wrap()
    patch_linear(m.lin, AccumSpec(256, acc="fp32"), backend="emulation")
    x = torch.randn(16, 256)
    plain = layer_errors(m, x)["lin"]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        amp = layer_errors(m, x)["lin"]
    assert 1e-4 < plain < 1e-2 and amp > 0.5 * plain
