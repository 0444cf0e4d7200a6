"""The Triton kernel equals the emulation bit for bit (CPU: the Triton interpreter; CUDA: compiled)."""

import pytest
import torch

from yolos_bf16accum.emulation import bf16acc_matmul

triton = pytest.importorskip("triton")
from yolos_bf16accum.triton_kernels import triton_bf16acc_matmul  # noqa: E402

HAS_CUDA = torch.cuda.is_available()


def bits(t: torch.Tensor) -> torch.Tensor:
    # + 0.0 maps -0 to +0 (the only value whose sign the two could legitimately differ in)
    return (t.float() + 0.0).view(torch.int32)


# Tiny shapes: the interpreter runs every k step of every tile in Python (~0.2-0.5 s each here).
CASES = [  # (batch, M, K, N, chunk)
    ((), 20, 37, 24, 1),
    ((), 33, 64, 17, 16),
    ((2,), 16, 70, 9, 32),   # K not a multiple of the chunk: zero-padded last chunk
    ((), 8, 100, 8, 64),
    ((2, 3), 9, 8, 9, 1),    # attention-like [B, heads, S, D] @ [B, heads, D, S]
]


@pytest.mark.parametrize("batch,M,K,N,chunk", CASES)
def test_interpreter_kernel_is_bit_identical(batch, M, K, N, chunk):
    g = torch.Generator().manual_seed(M * K + N)
    a = torch.randn(*batch, M, K, generator=g)
    b = torch.randn(*batch, K, N, generator=g) * 3
    got = triton_bf16acc_matmul(a, b, chunk, interpret=True)
    want = bf16acc_matmul(a, b, chunk)
    assert got.dtype == want.dtype == torch.bfloat16 and got.shape == want.shape
    assert torch.equal(bits(got), bits(want))


def test_interpreter_kernel_swamps_like_the_definition():
    ones = torch.ones(1, 300)
    col = torch.ones(300, 1)
    assert triton_bf16acc_matmul(ones, col, 1, interpret=True).item() == 256.0
    assert triton_bf16acc_matmul(ones, col, 32, interpret=True).item() == 300.0


def test_interpreter_kernel_broadcasts_weights():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 6, 20, generator=g)
    w = torch.randn(20, 10, generator=g)
    assert torch.equal(bits(triton_bf16acc_matmul(x, w, 16, interpret=True)), bits(bf16acc_matmul(x, w, 16)))


def test_compiled_kernel_refuses_cpu_tensors():
    with pytest.raises(RuntimeError, match="CUDA"):
        triton_bf16acc_matmul(torch.ones(2, 2), torch.ones(2, 2), 1, interpret=False)


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
@pytest.mark.parametrize("chunk", [1, 16, 32, 64])
@pytest.mark.parametrize("shape", [(1, 300, 192, 768), (3, 257, 64, 257), (2, 129, 1125, 64)])
def test_cuda_kernel_is_bit_identical(chunk, shape):
    nb, M, K, N = shape
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(nb, M, K, device="cuda", generator=g)
    b = torch.randn(nb, K, N, device="cuda", generator=g)
    got = triton_bf16acc_matmul(a, b, chunk)
    want = bf16acc_matmul(a, b, chunk)  # emulation on the GPU
    assert torch.equal(bits(got), bits(want))
    assert torch.equal(bits(got).cpu(), bits(bf16acc_matmul(a.cpu(), b.cpu(), chunk)))


@pytest.mark.cuda
@pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
def test_cuda_patched_model_trains(tiny_model, tiny_batch):
    from yolos_bf16accum.patching import patch_all

    model = tiny_model.cuda()
    patch_all(model, accum_chunk=32, backend="triton")
    pixels, labels = tiny_batch
    labels = [{k: v.cuda() for k, v in t.items()} for t in labels]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = model(pixel_values=pixels.cuda(), labels=labels).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.vit.encoder.layer[0].attention.attention.query.weight.grad.abs().sum() > 0
