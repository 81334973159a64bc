"""Datasets held in memory as tensors after one load (SPEC §6).

``digits`` is scikit-learn's bundled 8×8 handwritten digits (offline), upscaled bilinearly to
``image_size`` (28 by default, so the paper's CNN applies unchanged) with a fixed, seeded,
stratified 1 500 / 297 split. The MNIST family goes through torchvision's loaders over
``data_dir``. Pixel values are in [0, 1] unless ``normalize`` is set, which standardises with
one scalar mean and std of the training set (a scalar keeps the data's symmetry intact).
"""

from __future__ import annotations

import socket
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from ..schema import DatasetConfig

DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "kmnist")
_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}
DIGITS_TEST_SIZE = 297
SPLIT_SEED = 0  # the digits split is part of the dataset's definition, not of the run's seed


@dataclass(frozen=True)
class Data:
    x_train: torch.Tensor  # (N, C, H, W)
    y_train: torch.Tensor  # (N,) long
    x_test: torch.Tensor
    y_test: torch.Tensor
    n_classes: int

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    def to(self, device: torch.device | str, dtype: torch.dtype) -> Data:
        return Data(
            self.x_train.to(device, dtype),
            self.y_train.to(device),
            self.x_test.to(device, dtype),
            self.y_test.to(device),
            self.n_classes,
        )


class DataUnavailable(ValueError):
    """The dataset files are not where the config says and cannot be downloaded."""


def load_dataset(cfg: DatasetConfig) -> Data:
    """Load ``cfg.name`` with the limits and options of the ``dataset`` config group."""
    if cfg.name not in DATASET_NAMES:
        raise ValueError(f"dataset.name={cfg.name!r} is not valid; use one of {', '.join(DATASET_NAMES)}")
    image_size_of(cfg.image_size)  # validate before any loading
    data = _load_digits(cfg.image_size) if cfg.name == "digits" else _load_torchvision(cfg)
    for key in ("train_limit", "test_limit"):
        limit = getattr(cfg, key)
        if limit is not None and limit < 1:
            raise ValueError(f"dataset.{key}={limit!r} must be a positive int or null (no limit)")
    if cfg.train_limit is not None:
        data = replace(data, x_train=data.x_train[: cfg.train_limit], y_train=data.y_train[: cfg.train_limit])
    if cfg.test_limit is not None:
        data = replace(data, x_test=data.x_test[: cfg.test_limit], y_test=data.y_test[: cfg.test_limit])
    if cfg.normalize:
        mean, std = data.x_train.mean(), data.x_train.std()
        data = replace(data, x_train=(data.x_train - mean) / std, x_test=(data.x_test - mean) / std)
    return data


def image_size_of(value) -> tuple[int, int] | None:
    """``dataset.image_size``: null, an int (square) or [h, w]."""
    if value is None:
        return None
    size = (value, value) if isinstance(value, int) else tuple(value)
    if len(size) != 2 or any(not isinstance(v, int) or v < 1 for v in size):
        raise ValueError(f"dataset.image_size={value!r} is not valid: use a positive int, [h, w] or null (native size)")
    return size


def _resize(x: torch.Tensor, size: tuple[int, int] | None) -> torch.Tensor:
    if size is None or tuple(x.shape[-2:]) == size:
        return x
    # Bilinear with align_corners=False commutes with the group on square images (SPEC §6).
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _load_digits(image_size) -> Data:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0  # values 0..16 -> [0, 1]
    y = torch.tensor(bunch.target, dtype=torch.long)
    x = _resize(x, image_size_of(image_size))
    train, test = train_test_split(
        torch.arange(len(y)).numpy(), test_size=DIGITS_TEST_SIZE, stratify=y.numpy(), random_state=SPLIT_SEED
    )
    train, test = torch.as_tensor(train), torch.as_tensor(test)
    return Data(x[train], y[train], x[test], y[test], n_classes=10)


def _load_torchvision(cfg: DatasetConfig) -> Data:
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION[cfg.name])
    where = f"{cfg.data_dir}/{cls.__name__}/raw/"
    hint = (
        f"put the IDX files (train-images-idx3-ubyte, ...) in {where} or pass dataset.data_dir=...; "
        "dataset=digits works offline"
    )
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # an unreachable mirror must fail in seconds, not hang
    try:
        splits = [cls(root=cfg.data_dir, train=train, download=cfg.download) for train in (True, False)]
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True ..."
        raise DataUnavailable(f"dataset={cfg.name}: no data in dataset.data_dir={cfg.data_dir!r}; {hint}") from err
    except OSError as err:  # network errors, timeouts, unreadable files
        raise DataUnavailable(f"dataset={cfg.name}: download failed ({err}); {hint}") from err
    finally:
        socket.setdefaulttimeout(old_timeout)

    def tensors(ds):
        return ds.data[:, None].float() / 255.0, ds.targets.long()

    (x_tr, y_tr), (x_te, y_te) = (tensors(ds) for ds in splits)
    size = image_size_of(cfg.image_size)
    x_tr, x_te = _resize(x_tr, size), _resize(x_te, size)
    return Data(x_tr, y_tr, x_te, y_te, n_classes=10)
