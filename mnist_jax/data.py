"""Loading MNIST-format datasets: IDX files from a directory, or TFDS.

`load_mnist(data_dir)` returns `{"train": Split, "test": Split}` with uint8 images
`(N, 28, 28, 1)` and int32 labels. Any dataset in the IDX layout works
(Fashion-MNIST, KMNIST): the structure is validated, MNIST's checksums are not.
"""

import contextlib
import gzip
import io
import os
import socket
import struct
import threading
import urllib.parse
import zlib
from typing import NamedTuple

import numpy as np

IDX_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
IMAGES_MAGIC, LABELS_MAGIC = 2051, 2049
IMAGE_SIZE = 28
NUM_CLASSES = 10
TFDS_HINT = ("pass --data-dir DIR with the four MNIST IDX files "
             "(train-images-idx3-ubyte[.gz], ...) to train offline")


class DataError(Exception):
  """A dataset that cannot be used; the message names the file and the fix."""


class Split(NamedTuple):
  images: np.ndarray  # (N, 28, 28, 1) uint8
  labels: np.ndarray  # (N,) int32


def find_idx_file(data_dir: str, name: str) -> str:
  # torchvision keeps the same files under DIR/MNIST/raw/.
  for folder in (data_dir, os.path.join(data_dir, "MNIST", "raw")):
    for candidate in (name, name + ".gz"):
      path = os.path.join(folder, candidate)
      if os.path.isfile(path):
        return path
  raise DataError(
      f"{os.path.join(data_dir, name)}[.gz]: file not found (also looked in "
      f"{os.path.join(data_dir, 'MNIST', 'raw')}); the directory needs the four "
      f"MNIST IDX files: {', '.join(n for pair in IDX_FILES.values() for n in pair)}")


def check_data_dir(data_dir: str) -> None:
  """DataError unless `data_dir` holds the four IDX files (their contents are not read)."""
  if not os.path.exists(data_dir):
    raise DataError(f"{data_dir}: no such directory; {TFDS_HINT}")
  if not os.path.isdir(data_dir):
    raise DataError(f"{data_dir}: is a file, not a directory; {TFDS_HINT}")
  for names in IDX_FILES.values():
    for name in names:
      find_idx_file(data_dir, name)


def _gunzip(raw: bytes) -> bytes:
  """gzip data, every member, each decompressed in one call that releases the GIL (so that
  a thread reading the files runs beside the main thread's imports: gzip.open's reads take
  the GIL back every few kB)."""
  if raw[:2] != b"\x1f\x8b":
    raise gzip.BadGzipFile
  parts = []
  while raw:
    member = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    parts.append(member.decompress(raw))
    if not member.eof:
      raise EOFError
    raw = member.unused_data
  return parts[0] if len(parts) == 1 else b"".join(parts)


def read_idx_file(path: str) -> bytes:
  try:
    with open(path, "rb") as f:
      raw = f.read()
    return _gunzip(raw) if path.endswith(".gz") else raw
  except gzip.BadGzipFile:
    raise DataError(f"{path}: not a gzip file; re-download it or remove the .gz suffix "
                    "if it is an uncompressed IDX file") from None
  except (EOFError, zlib.error):
    raise DataError(f"{path}: truncated or corrupt gzip data; re-download it") from None
  except OSError as e:
    raise DataError(f"{path}: cannot read ({e.strerror or e}); check its permissions") from None


def parse_idx(path: str, magic: int) -> np.ndarray:
  """An IDX file's payload as uint8, shaped by its header; validated."""
  raw = read_idx_file(path)
  ndim = 3 if magic == IMAGES_MAGIC else 1
  header_size = 4 + 4 * ndim
  if len(raw) < header_size:
    raise DataError(f"{path}: {len(raw)} bytes is shorter than an IDX header; re-download it")
  found_magic = struct.unpack(">i", raw[:4])[0]
  if found_magic != magic:
    kind = "images" if magic == IMAGES_MAGIC else "labels"
    raise DataError(f"{path}: magic number {found_magic}, expected {magic} for IDX "
                    f"{kind}; is this the right file?")
  shape = struct.unpack(f">{ndim}i", raw[4:header_size])
  if ndim == 3 and shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
    raise DataError(f"{path}: images are {shape[1]}x{shape[2]}, expected "
                    f"{IMAGE_SIZE}x{IMAGE_SIZE}; use an MNIST-format dataset")
  expected = int(np.prod(shape))
  if len(raw) - header_size != expected:
    raise DataError(f"{path}: header says {shape[0]} items ({expected} bytes) but the "
                    f"file holds {len(raw) - header_size} bytes; re-download it")
  return np.frombuffer(raw, np.uint8, offset=header_size).reshape(shape)


def load_idx_split(data_dir: str, split: str) -> Split:
  images_name, labels_name = IDX_FILES[split]
  images_path = find_idx_file(data_dir, images_name)
  labels_path = find_idx_file(data_dir, labels_name)
  images = parse_idx(images_path, IMAGES_MAGIC)
  labels = parse_idx(labels_path, LABELS_MAGIC)
  if len(images) != len(labels):
    raise DataError(f"{labels_path}: {len(labels)} labels for {len(images)} images in "
                    f"{images_path}; the two files must come from the same dataset")
  if labels.size and labels.max() >= NUM_CLASSES:
    bad = int(np.argmax(labels >= NUM_CLASSES))
    raise DataError(f"{labels_path}: label {labels[bad]} at index {bad} is outside "
                    f"0-{NUM_CLASSES - 1}; this is not a 10-class MNIST-format file")
  return Split(images[..., None], labels.astype(np.int32))


def reachable(url: str, timeout_s: float = 10.0) -> bool:
  """Whether `url`'s host accepts a connection within `timeout_s` (DNS included).

  TFDS retries a failed download with back-off for minutes; offline, we say so at once.
  """
  parsed = urllib.parse.urlparse(url)
  if parsed.scheme not in ("http", "https"):
    return True  # a local path: TFDS copies it
  result = []

  def connect():
    try:
      socket.create_connection(
          (parsed.hostname, parsed.port or (443 if parsed.scheme == "https" else 80)),
          timeout=timeout_s).close()
      result.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(timeout_s)
  return bool(result)


def load_tfds(data_dir: str | None = None, builder_url: str | None = None,
              show_progress: bool = True) -> dict[str, Split]:
  """MNIST through tensorflow-datasets (downloads and prepares on first use).

  `builder_url` replaces the MNIST builder's download location (a local folder
  holding the four `.gz` files works). `show_progress`: TFDS's own progress bars and lines
  while it downloads and prepares. TensorFlow's C++ information lines (oneDNN's, on every import)
  are not shown unless TF_CPP_MIN_LOG_LEVEL or TF_ENABLE_ONEDNN_OPTS ask otherwise.
  """
  # Read when TensorFlow loads. TensorFlow here only decodes MNIST's PNGs (integers): its
  # oneDNN float kernels are unused, and their announcement on every import is not printed.
  os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
  os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
  # Both are in requirements.txt; a partial install names what is really missing.
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    package = {"tensorflow": "tensorflow-cpu", "tensorflow_datasets": "tensorflow-datasets"}.get(
        (e.name or "").split(".")[0], e.name)
    raise DataError(f"downloading MNIST needs {package}, which is not installed ({e}); "
                    f"pip install -r requirements.txt, or {TFDS_HINT}") from None
  tf.config.set_visible_devices([], "GPU")  # TF must not take accelerator memory from JAX
  tfds.display_progress_bar(show_progress)
  builder = tfds.builder("mnist", data_dir=data_dir)
  if builder_url is not None:
    builder.URL = builder_url
  if not builder.is_prepared():
    if not reachable(builder.URL):
      raise DataError(f"MNIST is not in the TFDS cache ({builder.data_dir}) and "
                      f"{builder.URL} cannot be reached; {TFDS_HINT}")
    try:
      # TFDS prints where it downloads to and where it prepared; with its bars, as its own.
      with contextlib.nullcontext() if show_progress else contextlib.redirect_stdout(io.StringIO()):
        builder.download_and_prepare()
    except Exception as e:  # TFDS raises many types for a failed download
      raise DataError(f"tensorflow-datasets could not prepare MNIST ({type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''}); {TFDS_HINT}") from None
  splits = tfds.as_numpy(builder.as_dataset(batch_size=-1))
  return {name: Split(splits[name]["image"].astype(np.uint8),
                      splits[name]["label"].astype(np.int32))
          for name in ("train", "test")}


def load_mnist(data_dir: str | None = None, tfds_url: str | None = None,
               show_progress: bool = True) -> dict[str, Split]:
  """IDX files from `data_dir`, or MNIST from TFDS when `data_dir` is None (downloaded
  from `tfds_url` when given: a mirror, or a `file://` folder with the four .gz files;
  `show_progress`: TFDS's progress bars)."""
  if data_dir is None:
    return load_tfds(builder_url=tfds_url, show_progress=show_progress)
  check_data_dir(data_dir)
  return {split: load_idx_split(data_dir, split) for split in IDX_FILES}
