"""Patching keeps Parameter identities, state_dict keys, optimizer references and fp32 masters."""

import copy

import pytest

import torch
from torch import nn

from yolos_bf16accum.patching import (apply_patch_state, count_patched, encoder_blocks, group_linears,
                                      install_attention_function, patch_all, patch_linear, unpatch_linear)
from yolos_bf16accum.ste import BF16AccLinear


def test_patching_keeps_parameter_identities(tiny_model):
    ids = [id(p) for p in tiny_model.parameters()]
    keys = list(tiny_model.state_dict().keys())
    opt = torch.optim.AdamW(tiny_model.parameters())
    opt_ids = [id(p) for g in opt.param_groups for p in g["params"]]
    patch_all(tiny_model, accum_chunk=32)
    assert [id(p) for p in tiny_model.parameters()] == ids
    assert list(tiny_model.state_dict().keys()) == keys
    assert [id(p) for g in opt.param_groups for p in g["params"]] == opt_ids == ids
    assert all(p.dtype == torch.float32 for p in tiny_model.parameters())
    linears = [m for m in tiny_model.modules() if isinstance(m, nn.Linear)]
    assert linears and all(type(m) is BF16AccLinear for m in linears)


@pytest.mark.slow
def test_adamw_steps_after_patching_mid_training(tiny_model, tiny_batch):
    # Upstream cast masters to bf16 in place; AdamW with existing fp32 state then crashed.
    pixels, labels = tiny_batch
    for foreach in (True, False):
        model = copy.deepcopy(tiny_model)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3, foreach=foreach)
        model(pixel_values=pixels, labels=labels).loss.backward()
        opt.step()
        opt.zero_grad()
        patch_all(model, accum_chunk=16, backend="emulation")
        w = model.vit.encoder.layer[0].intermediate.dense.weight
        before = w.detach().clone()
        model(pixel_values=pixels, labels=labels).loss.backward()
        opt.step()
        assert w.dtype == torch.float32 and opt.state[w]["exp_avg"].dtype == torch.float32
        assert not torch.equal(w, before)


def test_unpatch_restores_plain_modules(tiny_model):
    patch_all(tiny_model)
    apply_patch_state(tiny_model, {})
    assert count_patched(tiny_model) == {"linears": 0, "attention": 0, "convs": 0}
    assert all(type(m) is nn.Linear for m in tiny_model.modules() if isinstance(m, nn.Linear))


def test_patched_model_state_dict_round_trips_into_unpatched(tiny_model):
    patched = copy.deepcopy(tiny_model)
    patch_all(patched)
    fresh = copy.deepcopy(tiny_model)
    fresh.load_state_dict(patched.state_dict())  # same keys, same shapes, same dtypes
    for (n, a), (_, b) in zip(fresh.state_dict().items(), patched.state_dict().items()):
        assert torch.equal(a, b), n


def test_groups_cover_every_linear_exactly_once(tiny_model):
    n = len(encoder_blocks(tiny_model))
    seen = [id(m) for g in ("qkv", "attn", "mlp") for i in range(n) for m in group_linears(tiny_model, g, i)]
    seen += [id(m) for m in group_linears(tiny_model, "head")]
    every = [id(m) for m in tiny_model.modules() if isinstance(m, nn.Linear)]
    assert sorted(seen) == sorted(every) and len(set(seen)) == len(seen) == 6 * n + 6


def test_per_block_attention_flags(tiny_model):
    install_attention_function(tiny_model)
    apply_patch_state(tiny_model, {"attn": [1, 2]}, accum_chunk=32)
    flags = [getattr(l.attention.attention, "bf16acc_chunk", None) for l in encoder_blocks(tiny_model)]
    assert flags == [None, 32, 32, None]
    assert count_patched(tiny_model) == {"linears": 2, "attention": 2, "convs": 0}


def test_attention_off_is_plain_sdpa(tiny_model, tiny_batch):
    pixels, _ = tiny_batch
    tiny_model.eval()
    with torch.no_grad():
        ref = tiny_model(pixel_values=pixels).logits
        install_attention_function(tiny_model)
        got = tiny_model(pixel_values=pixels).logits
    assert torch.equal(ref, got)


@pytest.mark.parametrize("kwargs, match", [
    (dict(accum_chunk=0), "accum_chunk"), (dict(accum_chunk=-1), "accum_chunk"),
    (dict(accum_chunk=2.5), "accum_chunk"), (dict(accum_chunk=True), "accum_chunk"),
    (dict(backend="cublas"), "backend"),
])
def test_patch_refuses_bad_arguments(kwargs, match):
    lin = nn.Linear(4, 4)
    with pytest.raises(ValueError, match=match):
        patch_linear(lin, **kwargs)
    assert type(lin) is nn.Linear            # a refused patch leaves the module as it was
    assert type(unpatch_linear(patch_linear(lin, accum_chunk=16))) is nn.Linear


def test_attention_patch_really_runs_bf16acc_attention_inside_the_model(tiny_model, tiny_batch):
    """Only block 0's attention core patched: the logits differ from SDPA, and that block's attention
    output equals a hand call of bf16acc_attention on the same q/k/v (a fall-back to SDPA fails both)."""
    import torch

    from yolos_bf16accum.patching import encoder_blocks, install_attention_function, set_attention
    from yolos_bf16accum.ste import bf16acc_attention

    pixels, _ = tiny_batch
    model = tiny_model.eval()
    install_attention_function(model)
    attn = encoder_blocks(model)[0].attention.attention
    seen = {}

    def keep(name):
        def hook(module, inputs, output):
            seen[name] = output.detach()
        return hook

    hooks = [getattr(attn, n).register_forward_hook(keep(n)) for n in ("query", "key", "value")]
    hooks.append(attn.register_forward_hook(lambda m, i, o: seen.__setitem__("context", o[0].detach())))
    try:
        with torch.no_grad():
            sdpa_logits = model(pixel_values=pixels).logits
            sdpa_context = seen["context"]
            set_attention(attn, 1, "emulation")
            patched_logits = model(pixel_values=pixels).logits
    finally:
        for h in hooks:
            h.remove()
        set_attention(attn, None)
    assert not torch.equal(patched_logits, sdpa_logits)
    b, s, _ = seen["query"].shape
    heads, d = attn.num_attention_heads, attn.attention_head_size
    q, k, v = (seen[n].view(b, s, heads, d).transpose(1, 2) for n in ("query", "key", "value"))
    manual = bf16acc_attention(q, k, v, attn.scaling, 1, "emulation").transpose(1, 2).reshape(b, s, heads * d)
    assert torch.equal(seen["context"], manual.to(seen["context"].dtype))
    assert not torch.equal(seen["context"], sdpa_context)
