"""Datasets held in memory as tensors after one load (SPEC §6, §11).

``digits`` is scikit-learn's bundled 8×8 handwritten digits (offline), upscaled bilinearly to
``image_size`` (28 by default, so the paper's CNN applies unchanged) with a fixed, seeded,
stratified 1 500 / 297 split. The MNIST family goes through torchvision's loaders over
``data_dir``. The benchmarks of SPEC §11 are read from their original files in ``data_dir``
(``benchmarks.py``): ``mnist_rot`` (MNIST-rot, 12 000 / 50 000; eqtrain trains on all 12 000 of
the train_valid file, the benchmark's 10 000 training and 2 000 validation digits alike) and
``cifar10`` (``cifar-10-batches-py``, 50 000 / 10 000, 3 channels). ``rotate=continuous`` turns
every image of any of them once by its own seeded angle (``rotate.py``), after resizing.
Pixel values are in [0, 1] unless ``normalize`` is set, which standardises with one scalar mean
and std of the training set (a scalar keeps the data's symmetry intact).
"""

from __future__ import annotations

import logging
import math
import os
import socket
import struct
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..schema import DatasetConfig
from .benchmarks import FormatError, read_amat, read_cifar_batch
from .rotate import ROTATE_KINDS, TEST, TRAIN, rotate_images, rotation_angles

log = logging.getLogger(__name__)

DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "kmnist", "mnist_rot", "cifar10")
_TORCHVISION = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST", "kmnist": "KMNIST"}


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


class DataDamaged(DataUnavailable):
    """A dataset file is there but damaged (truncated, garbage, or not the file its name says)."""


def load_dataset(cfg: DatasetConfig) -> Data:
    """Load ``cfg.name`` with the limits and options of the ``dataset`` config group."""
    _validate(cfg)  # before any loading: a bad value costs nothing
    if cfg.name == "digits":
        data = _load_digits(cfg.image_size)
    else:
        data = {"mnist_rot": _load_mnist_rot, "cifar10": _load_cifar10}.get(cfg.name, _load_torchvision)(cfg)
    n_train, n_test = len(data.x_train), len(data.x_test)
    if cfg.train_limit is not None:
        data = replace(data, x_train=data.x_train[: cfg.train_limit], y_train=data.y_train[: cfg.train_limit])
    if cfg.test_limit is not None:
        data = replace(data, x_test=data.x_test[: cfg.test_limit], y_test=data.y_test[: cfg.test_limit])
    if cfg.rotate == "continuous":
        # angles drawn for the whole split, then cut with it: a limit changes no image's angle
        train_angles = rotation_angles(n_train, cfg.rotate_seed, TRAIN)[: len(data.x_train)]
        test_angles = rotation_angles(n_test, cfg.rotate_seed, TEST)[: len(data.x_test)]
        data = replace(
            data, x_train=rotate_images(data.x_train, train_angles), x_test=rotate_images(data.x_test, test_angles)
        )
    if cfg.validation is not None:  # the last N training images (their angles kept) replace the test set
        n = len(data.x_train)
        if cfg.validation >= n:
            raise ValueError(
                f"dataset.validation={cfg.validation!r} is not valid: the training set has {n} images; "
                f"hold out at most {n - 1}"
            )
        cut = n - cfg.validation
        data = replace(
            data,
            x_train=data.x_train[:cut],
            y_train=data.y_train[:cut],
            x_test=data.x_train[cut:],
            y_test=data.y_train[cut:],
        )
    if cfg.normalize:
        mean, std = data.x_train.mean(), data.x_train.std()
        data = replace(data, x_train=(data.x_train - mean) / std, x_test=(data.x_test - mean) / std)
    return data


# (channels, native height and width) of each data set's images; every one has 10 classes.
NATIVE_SHAPES = {"digits": (1, 8, 8), "cifar10": (3, 32, 32)}
N_CLASSES = 10


def image_shape_of(cfg: DatasetConfig) -> tuple[int, int, int]:
    """The shape of one image of ``cfg`` as ``load_dataset`` gives it (``Data.image_shape``), without loading:
    what the memory model needs to check a sweep's jobs before the first starts."""
    _validate(cfg)
    channels, *native = NATIVE_SHAPES.get(cfg.name, (1, 28, 28))
    return (channels, *(image_size_of(cfg.image_size) or native))


def _validate(cfg: DatasetConfig) -> None:
    if cfg.name not in DATASET_NAMES:
        raise ValueError(f"dataset.name={cfg.name!r} is not valid; use one of {', '.join(DATASET_NAMES)}")
    image_size_of(cfg.image_size)
    for key in ("train_limit", "test_limit", "validation"):
        limit = getattr(cfg, key)
        if limit is not None and limit < 1:
            raise ValueError(f"dataset.{key}={limit!r} must be a positive int or null (no limit)")
    if cfg.rotate not in ROTATE_KINDS:
        raise ValueError(
            f"dataset.rotate={cfg.rotate!r} is not valid; use one of {', '.join(ROTATE_KINDS)} "
            "(continuous: every image turned once by its own seeded angle)"
        )
    if not isinstance(cfg.rotate_seed, int) or isinstance(cfg.rotate_seed, bool) or cfg.rotate_seed < 0:
        raise ValueError(f"dataset.rotate_seed={cfg.rotate_seed!r} is not valid; use an int >= 0")


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
    need, ram = x.shape[0] * x.shape[1] * size[0] * size[1] * x.element_size(), _physical_memory()
    if need > ram:  # refused before the allocation (a traceback, or the kernel's OOM kill); the rest: the memory model
        raise ValueError(
            f"dataset.image_size={list(size)} makes {x.shape[0]} images of {x.shape[1]}x{size[0]}x{size[1]} "
            f"numbers: {need / 2**30:.1f} GiB, more than this machine's {ram / 2**30:.1f} GiB; use a smaller image_size"
        )
    # Bilinear with align_corners=False commutes with the group on square images (SPEC §6).
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False).clamp(0, 1)


def _physical_memory() -> float:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not POSIX: no check
        return float("inf")


def _load_digits(image_size) -> Data:
    images, target = _digits_arrays()
    x = torch.tensor(images, dtype=torch.float32)[:, None] / 16.0  # values 0..16 -> [0, 1]
    y = torch.tensor(target, dtype=torch.long)
    x = _resize(x, image_size_of(image_size))
    train, test = (torch.tensor(indices) for indices in _digits_split())
    return Data(x[train], y[train], x[test], y[test], n_classes=10)


def _digits_arrays():
    """scikit-learn's bundled digits file, read without importing scikit-learn (1.5-3 s of a run's
    start, docs/design.md); the same arrays as ``sklearn.datasets.load_digits()`` (a test checks)."""
    import gzip
    import importlib.util

    spec = importlib.util.find_spec("sklearn")  # locates the package without running it
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if path is None or not path.is_file():  # another layout of scikit-learn: its own loader, the same data
        from sklearn.datasets import load_digits

        bunch = load_digits()
        return bunch.images, bunch.target
    with gzip.open(path, "rt") as f:
        data = np.loadtxt(f, delimiter=",")
    return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)


def _digits_split() -> tuple[tuple[int, ...], tuple[int, ...]]:
    """The fixed, stratified 1 500 / 297 split (``digits_split.txt``, made once with scikit-learn)."""
    lines = [line for line in (Path(__file__).parent / "digits_split.txt").read_text().splitlines() if line[:1] != "#"]
    train, test = (tuple(int(i) for i in line.split()) for line in lines)
    return train, test


def _load_torchvision(cfg: DatasetConfig) -> Data:
    import torchvision

    cls = getattr(torchvision.datasets, _TORCHVISION[cfg.name])
    where = f"{cfg.data_dir}/{cls.__name__}/raw/"
    hint = (
        f"put the IDX files (train-images-idx3-ubyte, ...) in {where} or pass dataset.data_dir=...; "
        "dataset=digits works offline"
    )
    raw = Path(cfg.data_dir) / cls.__name__ / "raw"
    check_idx_files(cfg.name, raw)  # the files already there: torchvision's reader fails on damage with a traceback
    old_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(10)  # an unreachable mirror must fail in seconds, not hang
    try:
        splits = [cls(root=cfg.data_dir, train=train, download=cfg.download) for train in (True, False)]
    except RuntimeError as err:  # torchvision: "Dataset not found. You can use download=True ..."
        check_idx_files(cfg.name, raw)  # a download may have left a damaged file
        packed = [
            f for pair in IDX_FILES.values() for f in pair if (raw / f"{f}.gz").exists() and not (raw / f).exists()
        ]
        if packed:
            raise DataUnavailable(
                f"dataset={cfg.name}: {raw} holds {packed[0]}.gz but not {packed[0]}: decompress the .gz files "
                f"there (gunzip -k {raw}/*.gz)"
            ) from err
        raise DataUnavailable(f"dataset={cfg.name}: no data in dataset.data_dir={cfg.data_dir!r}; {hint}") from err
    except (ValueError, AssertionError) as err:  # torchvision's IDX parser on a file the check let through
        check_idx_files(cfg.name, raw)
        raise DataDamaged(
            f"dataset={cfg.name}: cannot read the IDX files in {raw} ({type(err).__name__}: {err}); "
            "replace them with intact copies"
        ) from err
    except OSError as err:  # network errors, timeouts, unreadable files
        what = "download failed" if cfg.download else f"cannot read the files in {raw}"
        raise DataUnavailable(f"dataset={cfg.name}: {what} ({err}); {hint}") from err
    finally:
        socket.setdefaulttimeout(old_timeout)

    def tensors(ds):
        return ds.data[:, None].float() / 255.0, ds.targets.long()

    (x_tr, y_tr), (x_te, y_te) = (tensors(ds) for ds in splits)
    size = image_size_of(cfg.image_size)
    x_tr, x_te = _resize(x_tr, size), _resize(x_te, size)
    return Data(x_tr, y_tr, x_te, y_te, n_classes=10)


# The benchmarks of SPEC §11, from their original files directly in data_dir (readers: benchmarks.py).
MNIST_ROT_FILES = {
    "train": "mnist_all_rotation_normalized_float_train_valid.amat",
    "test": "mnist_all_rotation_normalized_float_test.amat",
}
CIFAR10_DIR = "cifar-10-batches-py"
CIFAR10_FILES = {"train": tuple(f"data_batch_{i}" for i in range(1, 6)), "test": ("test_batch",)}
# the originals' sizes; another count is read, with a warning (a copy cut at a line or a file short)
EXPECTED = {"mnist_rot": (12_000, 50_000), "cifar10": (50_000, 10_000)}
SOURCES = {
    "mnist_rot": "the .amat files of mnist_rotation_new.zip (Larochelle et al. 2007, "
    "http://www.iro.umontreal.ca/~lisa/icml2007data/)",
    "cifar10": "cifar-10-batches-py/ of cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html)",
}


def _load_mnist_rot(cfg: DatasetConfig) -> Data:
    (x_tr, y_tr), (x_te, y_te) = (
        _read(cfg, Path(cfg.data_dir) / MNIST_ROT_FILES[split], read_amat) for split in ("train", "test")
    )
    _check_counts(cfg.name, len(y_tr), len(y_te))
    size = image_size_of(cfg.image_size)
    x_tr, x_te = (_resize(torch.from_numpy(x)[:, None], size) for x in (x_tr, x_te))
    return Data(x_tr, torch.from_numpy(y_tr), x_te, torch.from_numpy(y_te), n_classes=10)


def _load_cifar10(cfg: DatasetConfig) -> Data:
    root = Path(cfg.data_dir) / CIFAR10_DIR
    splits = []
    for split in ("train", "test"):
        batches = [_read(cfg, root / file, read_cifar_batch) for file in CIFAR10_FILES[split]]
        images, labels = (np.concatenate(arrays) for arrays in zip(*batches))
        # uint8 -> [0, 1]; the 3 colour channels are 3 trivial fields for G (SPEC §11)
        splits.append((_resize(torch.from_numpy(images).float() / 255.0, image_size_of(cfg.image_size)), labels))
    (x_tr, y_tr), (x_te, y_te) = splits
    _check_counts(cfg.name, len(y_tr), len(y_te))
    return Data(x_tr, torch.from_numpy(y_tr), x_te, torch.from_numpy(y_te), n_classes=10)


def _read(cfg: DatasetConfig, path: Path, reader):
    """One benchmark file through its reader; a missing or damaged file is one line naming it."""
    if not path.exists():
        raise DataUnavailable(
            f"dataset={cfg.name}: {path} does not exist; put {SOURCES[cfg.name]} in dataset.data_dir={cfg.data_dir!r} "
            "(eqtrain does not download it) or pass dataset.data_dir=...; dataset=digits works offline"
        )
    try:
        return reader(path)
    except FormatError as err:
        raise DataDamaged(
            f"dataset={cfg.name}: {path} is damaged: {err.problem}; replace it with an intact copy "
            f"({SOURCES[cfg.name]})"
        ) from err
    except OSError as err:  # unreadable: permissions, I/O errors
        raise DataUnavailable(f"dataset={cfg.name}: cannot read {path} ({err.strerror or err})") from err


def _check_counts(name: str, n_train: int, n_test: int) -> None:
    expected = EXPECTED[name]
    if (n_train, n_test) != expected:
        log.warning(
            "dataset=%s: read %d training and %d test images; the original files hold %d and %d "
            "(a shortened copy?)",
            name, n_train, n_test, *expected,
        )  # fmt: skip


# The MNIST family's IDX files (what torchvision reads from <data_dir>/<Name>/raw/): per split, an
# images file of unsigned bytes with 3 dimensions (n, h, w) and a labels file with 1 dimension (n).
IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IDX_UBYTE = 0x08
N_CLASSES = 10


def check_idx_files(name: str, raw: Path) -> None:
    """Raise DataDamaged naming the first damaged IDX file in ``raw`` (missing files are torchvision's to report).

    Checked: the header (magic 0, 0, type, ndim; big-endian sizes), that the size on disk is the
    header's promise, that images and labels agree on n, and that the labels are classes 0..9.
    """
    for images, labels in IDX_FILES.values():
        counts = {}
        for file, ndim in ((images, 3), (labels, 1)):
            path = raw / file
            if not path.exists():
                continue
            problem, dims = _idx_problem(path, ndim)
            if problem is None and ndim == 1:
                top = max(path.read_bytes()[8:], default=0)
                if top >= N_CLASSES:
                    problem = f"it holds the label {top}, but the classes are 0..{N_CLASSES - 1}"
            if problem is not None:
                raise DataDamaged(
                    f"dataset={name}: {path} is damaged: {problem}; replace it with an intact copy "
                    "(or delete it and pass dataset.download=true to fetch it again)"
                )
            counts[file] = dims[0]
        if len(counts) == 2 and counts[images] != counts[labels]:
            raise DataDamaged(
                f"dataset={name}: {raw / images} holds {counts[images]} images but {raw / labels} holds "
                f"{counts[labels]} labels; one of them is from another data set or damaged: replace it with an "
                "intact copy (or delete both and pass dataset.download=true)"
            )


def _idx_problem(path: Path, ndim: int) -> tuple[str | None, tuple[int, ...]]:
    """What is wrong with an IDX file that should hold ``ndim``-dimensional unsigned bytes (None if nothing)."""
    if not path.is_file():
        return "it is not a file", ()
    with path.open("rb") as f:
        head = f.read(4 + 4 * ndim)
    size = path.stat().st_size
    if size == 0:
        return "it is empty", ()
    if len(head) < 4 or head[:2] != b"\x00\x00":
        return "it is not an IDX file (no IDX magic number at its start)", ()
    if head[2] != IDX_UBYTE or head[3] != ndim:
        kind = "images (3 dimensions)" if ndim == 3 else "labels (1 dimension)"
        return f"its header says type 0x{head[2]:02x} with {head[3]} dimension(s), not unsigned-byte {kind}", ()
    if len(head) < 4 + 4 * ndim:
        return f"it is truncated ({size} bytes, shorter than its header)", ()
    dims = struct.unpack(f">{ndim}I", head[4:])
    expected = 4 + 4 * ndim + math.prod(dims)
    if size < expected:
        return f"it is truncated ({size} bytes; its header promises {expected})", dims
    if size > expected:
        return f"it has {size - expected} bytes more than its header promises ({expected})", dims
    return None, dims
