"""The benchmarks of SPEC §11 from small files in their real formats, and the continuous rotation of a data set.

MNIST-rot: ``.amat`` text rows of 784 pixels in column-major order and a float label; CIFAR-10:
``cifar-10-batches-py`` pickles. A continuous rotation turns each image once by its own seeded
uniform angle: bilinear, zero fill, data rather than augmentation.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from eqtrain.data.datasets import DataDamaged, DataUnavailable, load_dataset
from eqtrain.data.rotate import TEST, TRAIN, rotate_images, rotation_angles
from eqtrain.schema import DatasetConfig

from ..helpers import make_config, make_mnist

TRAIN_AMAT = "mnist_all_rotation_normalized_float_train_valid.amat"
TEST_AMAT = "mnist_all_rotation_normalized_float_test.amat"
ROUND_OFF = 1e-5  # bilinear interpolation at exact pixel centres, in float32


# --- files in the benchmarks' formats -----------------------------------------------------------------


def letter_f() -> np.ndarray:
    """An upright 'F' (28x28 in [0, 1]): no rotation or mirror maps it onto itself or its transpose."""
    image = np.zeros((28, 28))
    image[4:24, 8:11] = 1.0  # the stem, on the left
    image[4:7, 8:20] = 1.0  # the top bar, to the right
    image[12:15, 8:17] = 0.5  # the middle bar, shorter and grey
    return image


def write_amat(path: Path, images: np.ndarray, labels) -> None:
    """Rows as MNIST-rot's files hold them: the 784 pixels column-major (the transpose, flattened), then the label."""
    rows = np.concatenate([images.transpose(0, 2, 1).reshape(len(images), -1), np.asarray(labels)[:, None]], axis=1)
    np.savetxt(path, rows, fmt="%.18e", delimiter=" ")


def make_mnist_rot(root: Path, n_train: int = 6, n_test: int = 4) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    files = {}
    for name, n in ((TRAIN_AMAT, n_train), (TEST_AMAT, n_test)):
        images = rng.random((n, 28, 28)) * (rng.random((n, 28, 28)) < 0.3)
        images[0] = letter_f()
        labels = rng.integers(0, 10, n)
        write_amat(root / name, images, labels.astype(float))
        files[name] = (images, labels)
    return files


def cifar_batch(n: int, seed: int, first_label: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {
        b"batch_label": b"synthetic",
        b"labels": [int(v) for v in (first_label + np.arange(n)) % 10],
        b"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
        b"filenames": [b"x.png"] * n,
    }


def make_cifar10(root: Path, n: int = 3) -> dict[str, dict]:
    """The six files of cifar-10-batches-py with ``n`` images each, pickled as the real (Python 2) ones: protocol 2."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": cifar_batch(n, seed=i, first_label=i) for i in range(1, 6)}
    batches["test_batch"] = cifar_batch(n, seed=9)
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    return batches


def config(name: str, data_dir: Path, **keys) -> DatasetConfig:
    return DatasetConfig(name=name, data_dir=str(data_dir), image_size=keys.pop("image_size", None), **keys)


# --- MNIST-rot ----------------------------------------------------------------------------------------


def test_mnist_rot_loads_upright_from_column_major_rows(tmp_path):
    files = make_mnist_rot(tmp_path)
    data = load_dataset(config("mnist_rot", tmp_path))
    assert data.x_train.shape == (6, 1, 28, 28) and data.x_test.shape == (4, 1, 28, 28) and data.n_classes == 10
    for x, y, name in ((data.x_train, data.y_train, TRAIN_AMAT), (data.x_test, data.y_test, TEST_AMAT)):
        images, labels = files[name]
        assert torch.allclose(x[:, 0], torch.tensor(images, dtype=torch.float32), atol=1e-7)
        assert torch.equal(y, torch.tensor(labels)) and y.dtype == torch.long
        assert 0.0 <= x.min() and x.max() <= 1.0
    f = data.x_train[0, 0]
    assert f[5, 18] == 1.0 and f[18, 5] == 0.0  # the top bar points right: upright, not mirrored about the diagonal


def test_mnist_rot_resizes_and_limits(tmp_path):
    make_mnist_rot(tmp_path)
    data = load_dataset(config("mnist_rot", tmp_path, image_size=14, train_limit=2, test_limit=3))
    assert data.x_train.shape == (2, 1, 14, 14) and data.x_test.shape == (3, 1, 14, 14)


@pytest.mark.parametrize("missing", [TRAIN_AMAT, TEST_AMAT])
def test_a_missing_amat_file_says_which_and_where_to_get_it(tmp_path, missing):
    make_mnist_rot(tmp_path)
    (tmp_path / missing).unlink()
    with pytest.raises(DataUnavailable) as err:
        load_dataset(config("mnist_rot", tmp_path))
    message = str(err.value)
    assert not isinstance(err.value, DataDamaged) and "\n" not in message
    assert message.startswith(f"dataset=mnist_rot: {tmp_path / missing} does not exist")
    assert f"dataset.data_dir={str(tmp_path)!r}" in message and "mnist_rotation_new.zip" in message


def damage_line(line: str, pixel: int | None, value: str) -> str:
    values = line.split()
    values[-1 if pixel is None else pixel] = value
    return " ".join(values)


AMAT_DAMAGE = {
    # name: (how the second line of the test file changes, words of the message)
    "short-row": (lambda line: " ".join(line.split()[:-1]), "line 2 has 784 values, not 785"),
    "long-row": (lambda line: line + " 0.5", "line 2 has 786 values, not 785"),
    "not-a-number": (lambda line: damage_line(line, 100, "abc"), "line 2, value 101 is 'abc', not a number"),
    "label-10": (lambda line: damage_line(line, None, "1.0e+01"), "line 2 has the label 10, but the classes are 0..9"),
    "label-fraction": (lambda line: damage_line(line, None, "2.5"), "line 2 has the label 2.5"),
    "pixel-255": (lambda line: damage_line(line, 0, "255"), "line 2, pixel 1 is 255, outside [0, 1]"),
    "pixel-nan": (lambda line: damage_line(line, 3, "nan"), "line 2, pixel 4 is nan, outside [0, 1]"),
    "negative": (lambda line: damage_line(line, 7, "-0.5"), "line 2, pixel 8 is -0.5, outside [0, 1]"),
}


@pytest.mark.parametrize("case", list(AMAT_DAMAGE))
def test_a_damaged_amat_line_is_named(tmp_path, case):
    make_mnist_rot(tmp_path)
    path = tmp_path / TEST_AMAT
    lines = path.read_text().splitlines()
    change, words = AMAT_DAMAGE[case]
    lines[1] = change(lines[1])
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataDamaged) as err:
        load_dataset(config("mnist_rot", tmp_path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"dataset=mnist_rot: {path} is damaged: "), message
    assert words in message and "replace it with an intact copy" in message, message


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"", "it is empty"),
        (b"\n\n  \n", "it holds no rows of numbers"),
        (bytes(range(256)) * 4, "it is binary, not text"),
        (b"<html>404 Not Found</html>\n", "line 1 has 3 values, not 785"),
        (b"0.5\n", "line 1 has 1 value, not 785"),
    ],
    ids=["empty", "blank", "binary", "html-page", "one-number"],
)
def test_an_amat_file_without_rows_of_numbers_is_damaged(tmp_path, content, words):
    make_mnist_rot(tmp_path)
    (tmp_path / TRAIN_AMAT).write_bytes(content)
    with pytest.raises(DataDamaged, match=rf"{TRAIN_AMAT} is damaged: .*{words}"):
        load_dataset(config("mnist_rot", tmp_path))


def test_amat_values_a_round_off_outside_the_unit_interval_are_clipped(tmp_path):
    """Interpolated pixels may stray by round-off (< 1e-3): read, and clipped into [0, 1], not refused."""
    make_mnist_rot(tmp_path)
    path = tmp_path / TEST_AMAT
    lines = path.read_text().splitlines()
    lines[1] = damage_line(damage_line(lines[1], 0, "-1e-9"), 1, "1.0000001")
    path.write_text("\n".join(lines) + "\n")
    data = load_dataset(config("mnist_rot", tmp_path))
    assert data.x_test.min() >= 0.0 and data.x_test.max() <= 1.0


# --- CIFAR-10 -----------------------------------------------------------------------------------------


def test_cifar10_reads_the_batches_as_three_colour_planes(tmp_path):
    batches = make_cifar10(tmp_path)
    data = load_dataset(config("cifar10", tmp_path))
    assert data.x_train.shape == (15, 3, 32, 32) and data.x_test.shape == (3, 3, 32, 32) and data.n_classes == 10
    first = batches["data_batch_1"][b"data"][0]
    # channel-major: the red plane is the first 1024 bytes, each plane row-major
    assert torch.equal(data.x_train[0, 0, 0, :5], torch.tensor(first[:5] / 255.0, dtype=torch.float32))
    assert torch.equal(data.x_train[0, 2, 31, 31], torch.tensor(first[3071] / 255.0, dtype=torch.float32))
    assert torch.equal(data.x_train[0, 1, 1, 0], torch.tensor(first[1024 + 32] / 255.0, dtype=torch.float32))
    labels = [label for i in range(1, 6) for label in batches[f"data_batch_{i}"][b"labels"]]  # in batch order
    assert data.y_train.tolist() == labels and data.y_test.tolist() == batches["test_batch"][b"labels"]
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0


def test_cifar10_resizes_and_accepts_python3_pickles(tmp_path):
    make_cifar10(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    batch = cifar_batch(3, seed=9)
    (folder / "test_batch").write_bytes(pickle.dumps({"data": batch[b"data"], "labels": batch[b"labels"]}))
    data = load_dataset(config("cifar10", tmp_path, image_size=16))
    assert data.x_train.shape == (15, 3, 16, 16) and data.x_test.shape == (3, 3, 16, 16)


def test_missing_cifar10_files_say_where_to_get_them(tmp_path):
    with pytest.raises(DataUnavailable) as err:
        load_dataset(config("cifar10", tmp_path))
    message = str(err.value)
    assert message.startswith(f"dataset=cifar10: {tmp_path / 'cifar-10-batches-py' / 'data_batch_1'} does not exist")
    assert "cifar-10-batches-py/" in message and "cifar-10-python.tar.gz" in message and "\n" not in message
    make_cifar10(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_4").unlink()
    with pytest.raises(DataUnavailable, match="data_batch_4 does not exist"):
        load_dataset(config("cifar10", tmp_path))


class Payload:
    """A pickle that would run a command when unpickled by a trusting reader."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        import os

        return os.system, (f"touch {self.marker}",)


def cifar_damage(tmp_path: Path) -> dict[str, tuple[bytes, str]]:
    good = pickle.dumps(cifar_batch(3, seed=1), protocol=2)
    wrong_shape = {**cifar_batch(3, seed=1), b"data": np.zeros((3, 1024), np.uint8)}
    floats = {**cifar_batch(3, seed=1), b"data": np.zeros((3, 3072), np.float32)}
    return {
        "empty": (b"", "it is empty"),
        "truncated": (good[: len(good) // 2], "it is truncated"),
        "garbage": (bytes(range(256)) * 8, "not"),
        "html-page": (b"<html>404</html>", "it is not"),
        "a-list": (pickle.dumps([1, 2, 3]), "it holds a list, not a CIFAR-10 batch"),
        "no-labels": (pickle.dumps({b"data": np.zeros((3, 3072), np.uint8)}), "it has no 'labels' entry"),
        "wrong-shape": (pickle.dumps(wrong_shape), "its data is uint8 (3, 1024), not uint8 (n, 3072)"),
        "floats": (pickle.dumps(floats), "its data is float32 (3, 3072)"),
        "label-10": (pickle.dumps({**cifar_batch(3, seed=1), b"labels": [0, 10, 2]}), "the label 10"),
        "fewer-labels": (pickle.dumps({**cifar_batch(3, seed=1), b"labels": [0, 1]}), "3 images but 2 labels"),
        "code": (pickle.dumps(Payload(tmp_path / "ran")), "it names posix.system"),
        # _codecs.encode("abc", "no-such-codec"): the one function the reader allows, asked for a codec that
        # does not exist (a LookupError, not a ValueError)
        "unknown-codec": (
            b"\x80\x02c_codecs\nencode\nX\x03\x00\x00\x00abcX\x0d\x00\x00\x00no-such-codec\x86R.",
            "its bytes name an unknown codec",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["empty", "truncated", "garbage", "html-page", "a-list", "no-labels", "wrong-shape", "floats", "label-10",
     "fewer-labels", "code", "unknown-codec"],
)  # fmt: skip
def test_a_damaged_cifar10_batch_is_named_and_never_executed(tmp_path, case):
    make_cifar10(tmp_path / "data")
    path = tmp_path / "data" / "cifar-10-batches-py" / "data_batch_3"
    content, words = cifar_damage(tmp_path)[case]
    path.write_bytes(content)
    with pytest.raises(DataDamaged) as err:
        load_dataset(config("cifar10", tmp_path / "data"))
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"dataset=cifar10: {path} is damaged: "), message
    assert words in message and "replace it with an intact copy" in message, message
    assert not (tmp_path / "ran").exists()  # the foreign pickle's command did not run


# --- a continuous rotation ----------------------------------------------------------------------------


def test_a_quarter_turn_is_rot90_up_to_interpolation_round_off():
    """Angle π/2 samples exactly at pixel centres: the bilinear rotation is torch.rot90(k=1), the group's generator."""
    x = torch.rand(5, 3, 12, 12)
    for k in (1, 2, 3):
        turned = rotate_images(x, torch.full((5,), k * math.pi / 2, dtype=torch.float64))
        assert (turned - torch.rot90(x, k, dims=(-2, -1))).abs().max() <= ROUND_OFF
    wide = torch.rand(2, 1, 10, 16)  # not square: a half turn is still exact
    turned = rotate_images(wide, torch.full((2,), math.pi, dtype=torch.float64))
    assert (turned - torch.rot90(wide, 2, dims=(-2, -1))).abs().max() <= ROUND_OFF


def test_any_angle_is_torchvisions_bilinear_rotate():
    """For angles off the grid the rotation is torchvision's ``rotate`` (bilinear, zero fill, counterclockwise)."""
    from torchvision.transforms.functional import InterpolationMode, rotate

    x = torch.rand(1, 1, 28, 28)
    for degrees in (17.0, 135.0, 301.5):
        ours = rotate_images(x, torch.tensor([math.radians(degrees)], dtype=torch.float64))
        theirs = rotate(x, degrees, interpolation=InterpolationMode.BILINEAR)
        assert (ours - theirs).abs().max() <= ROUND_OFF


def test_angles_are_uniform_on_the_circle():
    """10 000 draws: mean π within 5.5σ (σ = 2π/√12/100 ≈ 0.018); each eighth of the circle 1 250 ± 5σ (σ = 33)."""
    angles = rotation_angles(10_000, seed=0, stream=TRAIN)
    assert 0.0 <= angles.min() and angles.max() < 2 * math.pi
    assert abs(angles.mean().item() - math.pi) < 0.1
    counts = torch.histc(angles, bins=8, min=0.0, max=2 * math.pi)
    assert (counts - 1250).abs().max() < 170
    assert not torch.equal(rotation_angles(100, 0, TRAIN), rotation_angles(100, 0, TEST))  # separate streams


def test_the_same_seed_gives_the_same_data_and_another_seed_other_data():
    base = ("dataset.train_limit=50", "dataset.test_limit=20", "dataset.rotate=continuous")
    a, b = (load_dataset(make_config(*base).dataset) for _ in range(2))
    c = load_dataset(make_config(*base, "dataset.rotate_seed=1").dataset)
    d = load_dataset(make_config(*base, "seed=7").dataset)  # the run's seed does not move the data
    assert torch.equal(a.x_train, b.x_train) and torch.equal(a.x_test, b.x_test) and torch.equal(a.x_train, d.x_train)
    assert (a.x_train - c.x_train).abs().max() > 0.1 and (a.x_test - c.x_test).abs().max() > 0.1
    assert torch.equal(a.y_train, c.y_train)  # the labels stay with their images


def test_rotation_applies_after_resizing_with_angles_fixed_per_image():
    """The rotated set is rotate_images(resized images, the split's stream); a limit cuts images, not angles."""
    plain = load_dataset(make_config("dataset.image_size=20").dataset)
    full = load_dataset(make_config("dataset.image_size=20", "dataset.rotate=continuous").dataset)
    n_train, n_test = len(plain.x_train), len(plain.x_test)
    assert torch.equal(full.x_train, rotate_images(plain.x_train, rotation_angles(n_train, 0, TRAIN)))
    assert torch.equal(full.x_test, rotate_images(plain.x_test, rotation_angles(n_test, 0, TEST)))
    cut = load_dataset(
        make_config("dataset.image_size=20", "dataset.rotate=continuous", "dataset.train_limit=7").dataset
    )
    assert torch.equal(cut.x_train, full.x_train[:7]) and torch.equal(cut.x_test, full.x_test)
    assert full.x_train.shape == (n_train, 1, 20, 20) and 0.0 <= full.x_train.min() and full.x_train.max() <= 1.0


def test_rotated_mnist_preset_rotates_the_mnist_files(tmp_path):
    files = make_mnist(tmp_path)
    cfg = make_config("dataset=rotated_mnist", f"dataset.data_dir={tmp_path}").dataset
    assert (cfg.name, cfg.rotate, cfg.image_size) == ("mnist", "continuous", None)
    data = load_dataset(cfg)
    images = torch.tensor(files["train"][0] / 255.0, dtype=torch.float32)[:, None]
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert torch.equal(data.x_train, rotate_images(images, rotation_angles(30, 0, TRAIN)))


@pytest.mark.parametrize(
    ("override", "words"),
    [
        ("dataset.rotate=random", "dataset.rotate='random' is not valid; use one of none, continuous"),
        ("dataset.rotate=C4", "dataset.rotate='C4' is not valid; use one of none, continuous"),
        ("dataset.rotate_seed=-3", "dataset.rotate_seed=-3 is not valid; use an int >= 0"),
    ],
)
def test_a_bad_rotate_value_names_the_key_and_the_valid_ones(override, words):
    with pytest.raises(ValueError) as err:
        load_dataset(make_config(override).dataset)
    assert words in str(err.value) and "\n" not in str(err.value)


# --- the image shape without loading (the sweep's memory check) ----------------------------------------


@pytest.mark.parametrize(
    "name, image_size",
    [("digits", 28), ("digits", None), ("digits", [12, 16]), ("mnist", None), ("mnist", 20), ("mnist_rot", None),
     ("cifar10", None), ("cifar10", 16)],
)  # fmt: skip
def test_the_image_shape_is_known_before_loading(tmp_path, name, image_size):
    """``image_shape_of`` (which sizes a sweep's jobs before any starts) is the shape ``load_dataset`` gives."""
    from eqtrain.data.datasets import N_CLASSES, image_shape_of

    {"mnist": make_mnist, "mnist_rot": make_mnist_rot, "cifar10": make_cifar10}.get(name, lambda root: None)(tmp_path)
    cfg = config(name, tmp_path, image_size=image_size)
    data = load_dataset(cfg)
    assert image_shape_of(cfg) == data.image_shape and data.n_classes == N_CLASSES, (image_shape_of(cfg), data)
