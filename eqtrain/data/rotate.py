"""A continuous rotation of an image set (SPEC §11): data, not augmentation.

``dataset.rotate=continuous`` turns every image once, by its own angle drawn uniformly from
[0, 2π), with bilinear interpolation and zero fill (what torchvision's ``rotate`` does), and the
result is fixed for the run. The angles are not elements of the group G: only C4's quarter turns
are exact on the pixel grid, so the rotated set is a new data set whose symmetry is SO(2).

Sign convention: a positive angle turns the image counterclockwise as displayed (row 0 at the
top), the direction of ``torch.rot90(x, k=1, dims=(-2, -1))`` and of the group's generator
(``geometry.group``); the angle π/2 reproduces that rot90 up to interpolation round-off (a test).

The angles come from ``torch.Generator`` streams seeded by ``dataset.rotate_seed`` alone, one
stream for the training set and one for the test set, and are drawn for the whole split before
``train_limit`` / ``test_limit`` cut it: limiting the training set changes no test angle, and the
first N images keep their angles whatever N is. The run's own ``seed`` does not enter.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

ROTATE_KINDS = ("none", "continuous")
TRAIN, TEST = 0, 1  # the two streams of angles
_BATCH = 4096  # images per grid_sample call: bounds the grid's memory (4096 x 32 x 32 x 2 floats)


def rotation_angles(n: int, seed: int, stream: int) -> torch.Tensor:
    """``n`` angles uniform in [0, 2π) (float64), the same for the same (seed, stream) on every machine."""
    # 2 * seed + stream: distinct seeds for every (seed, stream) pair, so no two streams coincide
    generator = torch.Generator().manual_seed(2 * seed + stream)
    return torch.rand(n, generator=generator, dtype=torch.float64) * (2 * math.pi)


def rotate_images(x: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Each image ``x[i]`` of (N, C, H, W) turned by ``angles[i]`` about its centre: bilinear, zero fill, in [0, 1]."""
    if len(angles) != len(x):
        raise ValueError(f"rotate_images: {len(x)} images but {len(angles)} angles")
    h, w = x.shape[-2:]
    cos, sin = torch.cos(angles), torch.sin(angles)
    # affine_grid maps each output position to where it samples the input, in coordinates
    # normalised to [-1, 1] per axis (x across the width, y down the height). Sampling at R(θ)·p
    # turns the image by θ in the sense of rot90(k=1); the factors h/w and w/h make it a rotation
    # in pixels, not in normalised units, when the image is not square.
    theta = torch.zeros(len(x), 2, 3, dtype=torch.float64)
    theta[:, 0, 0], theta[:, 0, 1] = cos, -sin * (h / w)
    theta[:, 1, 0], theta[:, 1, 1] = sin * (w / h), cos
    out = torch.empty_like(x)
    for start in range(0, len(x), _BATCH):  # batches of images, not a loop over images
        chunk = x[start : start + _BATCH]
        grid = F.affine_grid(
            theta[start : start + _BATCH].to(x.device, x.dtype), list(chunk.shape), align_corners=False
        )
        out[start : start + _BATCH] = F.grid_sample(
            chunk, grid, mode="bilinear", padding_mode="zeros", align_corners=False
        )
    return out.clamp(0, 1)  # a bilinear mix of values in [0, 1] and zeros, up to round-off
