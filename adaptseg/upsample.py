"""Bilinear upsampling as two matrix products: ``A_h @ X @ A_w^T``.

Exactly the interpolation ``F.interpolate(mode="bilinear")`` computes (the same source
coordinates and neighbour weights, for both ``align_corners`` values), but carried out by matrix
multiplication: fast on Tensor Cores, and deterministic on CUDA, where the backward pass of
``F.interpolate`` accumulates with atomics. The interpolation matrices are built once per
(size, device) and the products run in float32 whatever the autocast dtype. ``upsample:
separable`` selects it (on in the fast mode); the default ``interpolate`` is the official call.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch
from torch import Tensor


def interpolation_matrix(
    size_in: int, size_out: int, align_corners: bool, device: torch.device | str = "cpu"
) -> Tensor:
    """(size_out, size_in) float32 weights of 1-D linear interpolation, as PyTorch's
    ``area_pixel_compute_source_index`` defines the source coordinate of each output pixel
    (in float32 arithmetic, as PyTorch computes it for float32 input)."""
    dst = torch.arange(size_out, dtype=torch.float32)
    if align_corners:
        scale = torch.tensor((size_in - 1) / (size_out - 1) if size_out > 1 else 0.0)
        src = scale.float() * dst
    else:
        # scale * (dst + 0.5) - 0.5 rounded once, as the fused multiply-add of PyTorch's kernel
        scale = torch.tensor(size_in / size_out).float().double()
        src = (scale * (dst + 0.5).double() - 0.5).float().clamp(min=0.0)
    low = src.floor().long().clamp(max=size_in - 1)
    high = (low + 1).clamp(max=size_in - 1)
    upper = src - low.float()
    matrix = torch.zeros(size_out, size_in, dtype=torch.float32)
    rows = torch.arange(size_out)
    matrix.index_put_((rows, low), 1.0 - upper, accumulate=True)
    matrix.index_put_((rows, high), upper, accumulate=True)
    return matrix.to(device)


@lru_cache(maxsize=64)
def _matrices(
    size_in: tuple[int, int], size_out: tuple[int, int], align_corners: bool, device: str
) -> tuple[Tensor, Tensor]:
    height = interpolation_matrix(size_in[0], size_out[0], align_corners, device)
    width = interpolation_matrix(size_in[1], size_out[1], align_corners, device)
    return height, width.t().contiguous()


def separable_bilinear(x: Tensor, size: tuple[int, int], align_corners: bool) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=...)`` for (N, C, H, W) ``x``,
    as ``A_h @ x @ A_w^T`` in float32 (returned in float32)."""
    if x.dim() != 4 or len(size) != 2 or min(size) <= 0 or not math.prod(x.shape[-2:]):
        raise ValueError(f"expected an (N, C, H, W) tensor and an HxW size, got {tuple(x.shape)}")
    height, width = _matrices(
        (int(x.shape[-2]), int(x.shape[-1])),
        (int(size[0]), int(size[1])),
        align_corners,
        str(x.device),
    )
    with torch.autocast(x.device.type, enabled=False):
        return height @ x.float() @ width
