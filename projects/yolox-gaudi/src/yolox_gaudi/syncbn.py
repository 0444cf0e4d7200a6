"""``sync_bn True``: batch statistics over every rank's images, so N ranks train like one process.

Without it each rank normalises with the statistics of its own ``batch / N`` images (Megvii has no
SyncBN either), which is the one thing data parallelism changes in YOLOX. On CUDA and HPU this is
torch's ``SyncBatchNorm``. torch's refuses CPU tensors, so on the CPU (gloo; also what the tests run)
:class:`CpuSyncBatchNorm2d` does the same computation with autograd-aware all-reduces: the mean and
then the variance around it (two collectives per layer instead of torch's one; numerically the stable
way round, not sum and sum of squares). Eval mode, and a world of one, use plain batch norm.

Cost: one or two small all-reduces per BN layer per forward and again in backward, synchronous. Worth
it when the per-rank batch is small (YOLOX-S at 8 images/rank): the statistics of 8 images are noisy.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


class _AllReduceSum(torch.autograd.Function):
    """Sum over ranks; the backward is the same sum of the incoming gradients (every rank's loss
    depends on every rank's statistics)."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:
        t = t.clone()
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        grad = grad.clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class CpuSyncBatchNorm2d(nn.BatchNorm2d):
    """``BatchNorm2d`` whose training statistics are those of the whole global batch (any device, gloo)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        xf = x.float()
        c = x.shape[1]
        sums = _all_reduce_sum(torch.cat([xf.sum((0, 2, 3)), xf.new_tensor([float(x.numel() // c)])]))
        count = sums[c].detach()
        mean = sums[:c] / count
        centred = xf - mean[None, :, None, None]
        var = _all_reduce_sum((centred * centred).sum((0, 2, 3))) / count
        if self.track_running_stats:
            with torch.no_grad():
                n = float(count)
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked + 1)
                self.running_mean.mul_(1 - momentum).add_(mean.detach(), alpha=momentum)
                self.running_var.mul_(1 - momentum).add_(var.detach() * n / max(n - 1, 1.0), alpha=momentum)
                self.num_batches_tracked.add_(1)
        y = centred * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y.to(x.dtype)


def convert_sync_bn(model: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` becomes a synchronised one (same parameters, buffers, eps and
    momentum objects, so optimizer groups and checkpoints are unchanged)."""
    if device.type in ("cuda", "hpu"):
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            new = CpuSyncBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                     child.track_running_stats)
            if child.affine:
                new.weight, new.bias = child.weight, child.bias
            if child.track_running_stats:
                new.running_mean, new.running_var = child.running_mean, child.running_var
                new.num_batches_tracked = child.num_batches_tracked
            new.train(child.training)
            setattr(model, name, new)
        else:
            convert_sync_bn(child, device)
    return model
