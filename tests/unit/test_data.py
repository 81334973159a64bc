"""Data loading: digits offline, the MNIST family from IDX files written here (SPEC §6)."""

import pytest
import torch

from eqtrain.data.datasets import DataUnavailable, load_dataset

from ..helpers import fast_first, make_config, make_mnist


@pytest.mark.parametrize(
    "name,folder", fast_first([("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
)
def test_mnist_family_loads_idx_files_from_data_dir(tmp_path, name, folder):
    files = make_mnist(tmp_path, folder)
    data = load_dataset(make_config(f"dataset={name}", f"dataset.data_dir={tmp_path}").dataset)
    images, labels = files["train"]
    assert data.x_train.shape == (30, 1, 28, 28) and data.x_test.shape == (20, 1, 28, 28)
    assert torch.allclose(data.x_train[:, 0], torch.tensor(images / 255.0, dtype=torch.float32))
    assert torch.equal(data.y_train, torch.tensor(labels))
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0


def test_missing_mnist_files_fail_with_where_to_put_them(tmp_path):
    cfg = make_config("dataset=mnist", f"dataset.data_dir={tmp_path}").dataset
    with pytest.raises(DataUnavailable, match=rf"dataset=mnist.*{tmp_path}/MNIST/raw/.*dataset=digits works offline"):
        load_dataset(cfg)


def test_digits_default_is_28x28_in_unit_range_with_a_fixed_stratified_split():
    data = load_dataset(make_config().dataset)
    assert data.x_train.shape == (1500, 1, 28, 28) and data.x_test.shape == (297, 1, 28, 28)
    assert 0.0 <= data.x_train.min() and data.x_train.max() <= 1.0
    counts = torch.bincount(data.y_test, minlength=10)
    assert counts.min() >= 28 and counts.max() <= 31  # stratified: ~29.7 per class
    again = load_dataset(make_config("seed=5").dataset)
    assert torch.equal(again.x_train, data.x_train)  # the split does not depend on the run's seed


@pytest.mark.slow  # imports scikit-learn (~2.5 s)
def test_digits_are_scikit_learns_data_and_split_read_without_importing_it():
    """The file read and the shipped split equal what scikit-learn's own loader and split give."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    train, test = train_test_split(range(1797), test_size=297, stratify=bunch.target, random_state=0)
    data = load_dataset(make_config("dataset.image_size=null").dataset)
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    assert torch.equal(data.x_train, x[train]) and torch.equal(data.x_test, x[test])
    assert torch.equal(data.y_train, torch.tensor(bunch.target)[train])
    assert torch.equal(data.y_test, torch.tensor(bunch.target)[test])


def test_limits_and_native_size():
    data = load_dataset(
        make_config("dataset.train_limit=40", "dataset.test_limit=7", "dataset.image_size=null").dataset
    )
    assert data.x_train.shape == (40, 1, 8, 8) and data.x_test.shape == (7, 1, 8, 8)


def test_normalize_standardises_with_a_scalar():
    data = load_dataset(make_config("dataset.normalize=true").dataset)
    assert abs(data.x_train.mean().item()) < 1e-4 and abs(data.x_train.std().item() - 1) < 1e-4


def test_a_validation_split_holds_out_the_last_training_images_in_place_of_the_test_set(tmp_path):
    make_mnist(tmp_path, "MNIST")
    args = ("dataset=rotated_mnist", f"dataset.data_dir={tmp_path}", "dataset.train_limit=25")
    full = load_dataset(make_config(*args).dataset)
    held = load_dataset(make_config(*args, "dataset.validation=5").dataset)
    assert torch.equal(held.x_train, full.x_train[:20]) and torch.equal(held.y_train, full.y_train[:20])
    assert torch.equal(held.x_test, full.x_train[20:]) and torch.equal(held.y_test, full.y_train[20:])  # angles kept
    with pytest.raises(ValueError, match=r"dataset.validation=25 is not valid: the training set has 25 images"):
        load_dataset(make_config(*args, "dataset.validation=25").dataset)
    with pytest.raises(ValueError, match=r"dataset.validation=0 must be a positive int or null"):
        load_dataset(make_config(*args, "dataset.validation=0").dataset)
