import gzip
import os
import shutil
import struct
import sys

import numpy as np
import pytest

from conftest import require
from mnist_jax import data


def test_real_mnist(mnist):
  train, test = mnist["train"], mnist["test"]
  assert train.images.shape == (60_000, 28, 28, 1) and train.images.dtype == np.uint8
  assert test.images.shape == (10_000, 28, 28, 1)
  assert train.labels.shape == (60_000,) and test.labels.shape == (10_000,)
  assert list(train.labels[:10]) == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
  assert train.images.mean() == pytest.approx(33.32, abs=0.005)
  assert np.bincount(train.labels).min() > 5000


def _write_idx(path, magic, array, gz=True, count=None):
  header = struct.pack(">i", magic) + struct.pack(
      f">{array.ndim}i", count if count is not None else array.shape[0], *array.shape[1:])
  payload = header + array.astype(np.uint8).tobytes()
  with (gzip.open if gz else open)(path, "wb") as f:
    f.write(payload)


def test_a_gz_file_reads_as_gzip_reads_it_in_one_member_or_several(tmp_path):
  """The loader decompresses in one call per member (it runs beside train.py's imports in a
  thread); what it reads must be what Python's gzip reads, a file of several members (what
  `cat a.gz b.gz` makes) too."""
  payload = np.random.default_rng(1).integers(0, 256, 300_000).astype(np.uint8).tobytes()
  one, several = tmp_path / "one.gz", tmp_path / "several.gz"
  one.write_bytes(gzip.compress(payload))
  several.write_bytes(b"".join(gzip.compress(payload[i:i + 100_000])
                               for i in range(0, len(payload), 100_000)))
  for path in (one, several):
    assert data.read_idx_file(str(path)) == gzip.open(path).read() == payload


def _write_dataset(folder, n_train=12, n_test=5, gz=True, size=28):
  """Writes random IDX files; returns the folder and what was written: {split: (images, labels)}."""
  rng = np.random.default_rng(0)
  os.makedirs(folder, exist_ok=True)
  suffix = ".gz" if gz else ""
  written = {}
  for split, n in (("train", n_train), ("test", n_test)):
    images_name, labels_name = data.IDX_FILES[split]
    written[split] = rng.integers(0, 256, (n, size, size)), rng.integers(0, 10, n)
    _write_idx(os.path.join(folder, images_name + suffix), data.IMAGES_MAGIC, written[split][0], gz)
    _write_idx(os.path.join(folder, labels_name + suffix), data.LABELS_MAGIC, written[split][1], gz)
  return folder, written


@pytest.mark.parametrize("gz", [True, False])
def test_small_idx_dataset_roundtrips(tmp_path, gz):
  folder, written = _write_dataset(str(tmp_path), gz=gz)
  loaded = data.load_mnist(folder)
  for split, (images, labels) in written.items():
    assert loaded[split].images.dtype == np.uint8 and loaded[split].labels.dtype == np.int32
    np.testing.assert_array_equal(loaded[split].images, images[..., None])  # every pixel
    np.testing.assert_array_equal(loaded[split].labels, labels)


def test_torchvision_layout(tmp_path, mnist_dir):
  raw = tmp_path / "MNIST" / "raw"
  raw.mkdir(parents=True)
  for name in os.listdir(mnist_dir):
    if name.endswith(".gz"):
      shutil.copy(os.path.join(mnist_dir, name), raw)
  loaded = data.load_mnist(str(tmp_path))
  assert len(loaded["train"].labels) == 60_000


TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"


def _corrupt_truncated_gz(path):
  raw = open(path, "rb").read()
  open(path, "wb").write(raw[: len(raw) // 2])


def _corrupt_not_gzip(path):
  open(path, "wb").write(b"this is not gzip data at all")


def _corrupt_magic(path):
  _write_idx(path, 1234, np.zeros((12, 28, 28)))


def _corrupt_size(path):
  _write_idx(path, data.IMAGES_MAGIC, np.zeros((12, 32, 32)))


def _corrupt_count(path):
  _write_idx(path, data.IMAGES_MAGIC, np.zeros((12, 28, 28)), count=13)


def _corrupt_mismatch(path):
  _write_idx(path, data.IMAGES_MAGIC, np.zeros((11, 28, 28)))


def _corrupt_label(path):
  _write_idx(path, data.LABELS_MAGIC, np.array([0, 1, 2, 10, 4, 5, 6, 7, 8, 9, 0, 1]))


def _corrupt_missing(path):
  os.remove(path)


def _corrupt_short_header(path):
  with gzip.open(path, "wb") as f:
    f.write(b"\x00\x00\x08")


# Every malformed input the loader must name: (what to do to which file, words of the message).
CORRUPTIONS = {
    "missing file": (TRAIN_IMAGES, _corrupt_missing, "file not found"),
    "truncated gz": (TRAIN_IMAGES, _corrupt_truncated_gz, "truncated or corrupt gzip"),
    "not gzip": (TRAIN_LABELS, _corrupt_not_gzip, "not a gzip file"),
    "wrong magic": (TRAIN_IMAGES, _corrupt_magic, "magic number 1234, expected 2051"),
    "wrong image size": (TRAIN_IMAGES, _corrupt_size, "images are 32x32, expected 28x28"),
    "count vs length": (TRAIN_IMAGES, _corrupt_count, "header says 13 items"),
    "image/label mismatch": (TRAIN_IMAGES, _corrupt_mismatch, "12 labels for 11 images"),
    "label out of range": (TRAIN_LABELS, _corrupt_label, "label 10 at index 3"),
    "short header": (TRAIN_IMAGES, _corrupt_short_header, "shorter than an IDX header"),
}


@pytest.mark.parametrize("case", sorted(CORRUPTIONS))
def test_malformed_files_raise_a_clear_error(tmp_path, case):
  name, corrupt, message = CORRUPTIONS[case]
  folder, _ = _write_dataset(str(tmp_path))
  corrupt(os.path.join(folder, name))
  with pytest.raises(data.DataError, match=message) as error:
    data.load_mnist(folder)
  text = str(error.value)
  assert "\n" not in text
  assert name.replace(".gz", "") in text  # names the file


def test_unreadable_file(tmp_path):
  folder, _ = _write_dataset(str(tmp_path))
  path = os.path.join(folder, TRAIN_IMAGES)
  os.remove(path)
  # Root reads any file whatever its mode; /proc/self/mem is unreadable at offset 0 for all.
  os.symlink("/proc/self/mem", path)
  with pytest.raises(data.DataError, match="cannot read"):
    data.load_mnist(folder)


def test_a_directory_in_place_of_a_file_cannot_be_read(tmp_path):
  folder, _ = _write_dataset(str(tmp_path), gz=False)
  path = os.path.join(folder, "train-images-idx3-ubyte")
  os.remove(path)
  os.mkdir(path + ".gz")  # the right name, but not a file
  with pytest.raises(data.DataError, match="file not found"):
    data.load_mnist(folder)


@pytest.mark.parametrize("make, message", [
    (lambda p: str(p / "absent"), "no such directory"),
    (lambda p: (p / "file").write_text("x") and str(p / "file"), "is a file, not a directory"),
    (lambda p: str(p), "file not found"),
])
def test_bad_data_dir(tmp_path, make, message):
  with pytest.raises(data.DataError, match=message):
    data.load_mnist(make(tmp_path))


def test_offline_without_cache_fails_fast(tmp_path):
  require("tensorflow_datasets")
  with pytest.raises(data.DataError, match="--data-dir"):
    # An address nothing listens on stands in for the unreachable download server.
    data.load_tfds(str(tmp_path / "tfds"), builder_url="http://127.0.0.1:9/mnist/")


@pytest.mark.parametrize("module, package", [("tensorflow", "tensorflow-cpu"),
                                             ("tensorflow_datasets", "tensorflow-datasets")])
def test_a_partial_install_names_the_missing_package(monkeypatch, module, package):
  monkeypatch.setitem(sys.modules, module, None)  # makes `import module` fail
  with pytest.raises(data.DataError, match=f"needs {package}, which is not installed"):
    data.load_tfds()


@pytest.mark.slow
def test_real_tfds_builder_gives_the_same_examples(tmp_path, mnist, mnist_dir, capfd):
  """The real MNIST builder, its download pointed at a local copy of the files; without
  progress bars, TFDS and TensorFlow print nothing (no bars, no oneDNN lines)."""
  require("tensorflow_datasets")
  downloads = tmp_path / "downloads"
  downloads.mkdir()
  for name in os.listdir(mnist_dir):
    if name.endswith(".gz"):
      shutil.copy(os.path.join(mnist_dir, name), downloads)
  capfd.readouterr()
  tfds_splits = data.load_tfds(str(tmp_path / "tfds"), builder_url=f"{downloads}/",
                               show_progress=False)
  printed = capfd.readouterr()
  assert printed.out == "" and "%|" not in printed.err and "oneDNN" not in printed.err, printed
  for split in ("train", "test"):
    assert len(tfds_splits[split].labels) == len(mnist[split].labels)
    # TFDS reorders examples: compare the (image, label) pairs as sorted multisets.
    def rows(s):
      flat = np.concatenate([s.images.reshape(len(s.labels), -1),
                             s.labels[:, None].astype(np.uint8)], axis=1)
      return flat[np.lexsort(flat.T[::-1])]
    np.testing.assert_array_equal(rows(tfds_splits[split]), rows(mnist[split]))
