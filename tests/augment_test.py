import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from conftest import require
from mnist_jax import augment
from tolerance import U32


@pytest.fixture(scope="module")
def digits(mnist):
  return mnist["train"].images[:300, ..., 0]


def test_angle_zero_is_the_identity(digits):
  image = jnp.asarray(digits[0], jnp.float32)
  np.testing.assert_array_equal(augment.rotate(image, 0.0), image)


def test_no_crop_and_zero_angle_leaves_images_unchanged(digits, monkeypatch):
  monkeypatch.setattr(augment, "CROP_PROBABILITY", 0.0)
  monkeypatch.setattr(augment, "MAX_DEGREES", 0.0)
  images = jnp.asarray(digits[:16, ..., None])
  np.testing.assert_array_equal(augment.random_transform(jax.random.key(0), images), images)


def test_positive_angles_turn_counter_clockwise():
  image = np.zeros((28, 28), np.float32)
  image[2:6, 3:20] = 255  # a bar near the top, off centre: asymmetric
  image[2:20, 3:5] = 128
  rotated = np.asarray(augment.rotate(jnp.asarray(image), 90.0))
  np.testing.assert_array_equal(rotated, np.rot90(image))  # np.rot90 turns counter-clockwise
  np.testing.assert_array_equal(np.asarray(augment.rotate(jnp.asarray(image), -90.0)),
                                np.rot90(image, -1))


def test_rotation_matches_pil(digits):
  """torchvision's RandomRotation on PIL images is PIL's Image.rotate."""
  angles = np.random.default_rng(0).uniform(-15, 15, len(digits))
  rotate = jax.jit(augment.rotate)
  differing = 0
  for image, angle in zip(digits, angles):
    want = np.asarray(Image.fromarray(image).rotate(float(angle), resample=Image.NEAREST,
                                                    fillcolor=0))
    differing += np.sum(np.asarray(rotate(jnp.asarray(image, jnp.float32), angle)) != want)
  # PIL maps coordinates in 16.16 fixed point, we in float32: a source point that
  # falls within ~1e-5 of a pixel edge may land on the neighbouring pixel.
  assert differing <= 1e-4 * digits.size, differing


def test_crop_resize_is_bit_exact_with_pil(digits):
  crop_resize = jax.jit(augment.center_crop_resize)
  for image in digits:
    want = np.asarray(Image.fromarray(image).crop((3, 3, 25, 25)).resize((28, 28),
                                                                       Image.BILINEAR))
    np.testing.assert_array_equal(np.asarray(crop_resize(jnp.asarray(image, jnp.float32))),
                                  want)


def test_matches_torchvision_transforms(digits):
  """When torchvision is there: its own CenterCrop+Resize and rotate, same as above."""
  require("torchvision", required_in_ci=False)  # a 5 GB install: the benchmark's, not CI's
  from torchvision.transforms import functional as TF
  from torchvision.transforms import InterpolationMode
  for image in digits[:50]:
    pil = Image.fromarray(image)
    want = np.asarray(TF.resize(TF.center_crop(pil, 22), 28, InterpolationMode.BILINEAR))
    np.testing.assert_array_equal(
        np.asarray(augment.center_crop_resize(jnp.asarray(image, jnp.float32))), want)
    rotated = np.asarray(TF.rotate(pil, 10.0, InterpolationMode.NEAREST, fill=0))
    assert np.sum(np.asarray(augment.rotate(jnp.asarray(image, jnp.float32), 10.0))
                  != rotated) <= 2


def test_crop_frequency_within_a_binomial_bound():
  n = 100_000
  crop_N, _ = augment.random_params(jax.random.key(42), n)
  bound = 4 * np.sqrt(0.1 * 0.9 / n)  # 4 standard deviations
  assert abs(float(np.mean(crop_N)) - 0.1) < bound


def test_angles_uniform_within_15_degrees():
  n = 100_000
  _, degrees_N = augment.random_params(jax.random.key(43), n)
  angles = np.sort(np.asarray(degrees_N))
  assert angles.min() >= -15 and angles.max() <= 15
  assert angles.min() < -14.9 and angles.max() > 14.9  # the whole range, not a part
  # Kolmogorov-Smirnov against U(-15, 15); 1.95/sqrt(n) is the 0.1% critical value.
  cdf = (angles + 15) / 30
  ks = max(np.max(np.arange(1, n + 1) / n - cdf), np.max(cdf - np.arange(n) / n))
  assert ks < 1.95 / np.sqrt(n), ks


def test_random_transform_applies_its_draws(digits):
  images = jnp.asarray(digits[:64, ..., None])
  key = jax.random.key(5)
  crop_N, degrees_N = augment.random_params(key, 64)
  assert 0 < int(np.sum(crop_N)) < 64
  out = augment.random_transform(key, images)
  for i in range(64):
    image = jnp.asarray(digits[i], jnp.float32)
    if crop_N[i]:
      image = augment.center_crop_resize(image)
    np.testing.assert_array_equal(out[i, ..., 0], augment.rotate(image, degrees_N[i]))


def test_same_key_same_output_and_different_keys_differ(digits):
  images = jnp.asarray(digits[:64, ..., None])
  a = augment.train_transform(jax.random.key(1), images)
  b = augment.train_transform(jax.random.key(1), images)
  c = augment.train_transform(jax.random.key(2), images)
  np.testing.assert_array_equal(a, b)
  assert not np.array_equal(a, c)


def test_normalize():
  images = jnp.array([0, 255], jnp.uint8).reshape(2, 1, 1, 1)
  np.testing.assert_allclose(augment.normalize(images).ravel(),
                             [-0.1307 / 0.3081, (1 - 0.1307) / 0.3081], rtol=5 * U32)
  # Four float32 roundings (/255, the subtraction, the two constants, the division; at
  # pixel 255 the mean's rounding grows by 0.1307 / 0.8693): within 4.2u of exact.
