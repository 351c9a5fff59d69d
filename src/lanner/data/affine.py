"""Random rotation, shear, translation and scale for a whole batch at once (``augment.rotate`` etc.).

One 3x3 matrix per image maps its input pixels to output pixels (about the image centre); the pixels
go through one ``affine_grid`` + ``grid_sample`` call for the batch, and boxes follow the same matrix
(their four corners mapped, the enclosing box kept; the caller clips them by visible fraction).
Random numbers come from a CPU generator, the pixel work runs on the batch's device.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def _uniform(n: int, limit: float, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=g, dtype=torch.float64) * 2 - 1) * limit


def random_affines(n: int, side: int, geometry: tuple[float, float, float, float], g: torch.Generator):
    """[n, 3, 3] float64 forward matrices (input pixel -> output pixel) for ``side`` x ``side`` images:
    rotation and shear in +-degrees, translation in +-fraction of the side, scale in 1 +- fraction."""
    rotate, shear, translate, scale = geometry
    angle, skew = torch.deg2rad(_uniform(n, rotate, g)), torch.deg2rad(_uniform(n, shear, g))
    shift, zoom = _uniform(2 * n, translate, g).view(n, 2) * side, 1 + _uniform(n, scale, g)
    cos, sin, tan = torch.cos(angle), torch.sin(angle), torch.tan(skew)
    linear = torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)  # [n, 2, 2] rotate
    linear = linear @ torch.stack([torch.stack([torch.ones(n), tan], 1),
                                   torch.stack([torch.zeros(n), torch.ones(n)], 1)], 1).double()  # fmt: skip
    linear = linear * zoom.view(n, 1, 1)
    centre = torch.full((n, 2, 1), side / 2, dtype=torch.float64)
    out = torch.eye(3, dtype=torch.float64).repeat(n, 1, 1)
    out[:, :2, :2] = linear
    out[:, :2, 2:] = centre + shift.view(n, 2, 1) - linear @ centre  # x' = L (x - c) + c + t
    return out


def warp_batch(x: torch.Tensor, forward: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """[B, 3, S, S] images moved by the ``forward`` matrices [B, 3, 3]; uncovered pixels get ``fill``
    ([1, 3, 1, 1])."""
    side = x.shape[-1]
    # pixel coords -> grid_sample's normalised ones (align_corners=False): u = (2x + 1) / S - 1
    to_unit = torch.tensor([[2 / side, 0, 1 / side - 1], [0, 2 / side, 1 / side - 1], [0, 0, 1]],
                           dtype=torch.float64)  # fmt: skip
    theta = to_unit @ torch.linalg.inv(forward) @ torch.linalg.inv(to_unit)  # output unit -> input unit
    grid = F.affine_grid(theta[:, :2].to(x.dtype).to(x.device), list(x.shape), align_corners=False)
    return F.grid_sample(x - fill, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + fill


def warp_boxes(boxes: np.ndarray, forward: np.ndarray) -> np.ndarray:
    """[N, 4] xyxy boxes -> the boxes enclosing their four corners moved by ``forward`` [3, 3]."""
    if len(boxes) == 0:
        return boxes.reshape(0, 4).astype(np.float32)
    x0, y0, x1, y1 = boxes.T
    corners = np.stack([np.stack([x0, y0]), np.stack([x1, y0]), np.stack([x0, y1]), np.stack([x1, y1])])
    moved = np.einsum("ij,cjn->cin", forward[:2, :2], corners) + forward[:2, 2][None, :, None]  # [4, 2, N]
    return np.stack(
        [moved[:, 0].min(0), moved[:, 1].min(0), moved[:, 0].max(0), moved[:, 1].max(0)], 1
    ).astype(np.float32)


def is_identity(geometry: tuple[float, float, float, float]) -> bool:
    """Nothing to do (and no random numbers drawn: batches stay as they were without it)."""
    return not any(math.isfinite(v) and v > 0 for v in geometry)
