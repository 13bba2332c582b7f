"""The original's image transforms as pure, jit-able functions of `(key, images)`.

The original applies, on PIL images:
  RandomApply([CenterCrop(22), Resize(28)], p=0.1)   bilinear
  RandomRotation((-15, 15))                          nearest, fill 0
  ToTensor(); Normalize((0.1307,), (0.3081,))
The test transform is the normalisation alone. The geometry here follows PIL's
(which torchvision calls), so the same angle gives the same pixels.
"""

import jax
import jax.numpy as jnp
import numpy as np

MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CROP_PROBABILITY = 0.1
CROP_SIZE = 22
MAX_DEGREES = 15.0


def normalize(images_NHWC: jax.Array) -> jax.Array:
  """Pixels 0-255 to the original's normalised float32 inputs."""
  return (images_NHWC.astype(jnp.float32) / 255.0 - MNIST_MEAN) / MNIST_STD


def _pil_bilinear_weights_OI(in_size: int, out_size: int) -> np.ndarray:
  """PIL's bilinear resampling matrix, in its 22-bit fixed point.

  PIL centres output pixel i at (i + 0.5) * in/out, weighs its neighbours with a
  triangle, renormalises the weights clipped at the edges, and rounds them to
  fixed point; the integer sums below then reproduce its uint8 output exactly.
  """
  scale = in_size / out_size
  support = max(scale, 1.0)  # the triangle widens when downsampling (antialias)
  weights_OI = np.zeros((out_size, in_size), np.int32)
  for i in range(out_size):
    center = (i + 0.5) * scale
    lo = max(int(center - support + 0.5), 0)
    hi = min(int(center + support + 0.5), in_size)
    taps = np.maximum(0.0, 1.0 - np.abs((np.arange(lo, hi) - center + 0.5) / support))
    weights_OI[i, lo:hi] = np.floor(taps / taps.sum() * (1 << _PIL_BITS) + 0.5)
  return weights_OI


_PIL_BITS = 22
_CROP_RESIZE_WEIGHTS = _pil_bilinear_weights_OI(CROP_SIZE, 28)


def _pil_round(sums: jax.Array) -> jax.Array:
  return jnp.clip((sums + (1 << (_PIL_BITS - 1))) >> _PIL_BITS, 0, 255)


def center_crop_resize(image_HW: jax.Array) -> jax.Array:
  """CenterCrop(22) then bilinear Resize(28), bit-exact with PIL on 28x28 uint8.

  PIL resizes rows, rounds to uint8, then resizes columns and rounds again.
  """
  h, w = image_HW.shape
  top, left = round((h - CROP_SIZE) / 2), round((w - CROP_SIZE) / 2)
  crop_HW = image_HW[top:top + CROP_SIZE, left:left + CROP_SIZE].astype(jnp.int32)
  weights_OI = jnp.asarray(_CROP_RESIZE_WEIGHTS)
  rows_HW = _pil_round(crop_HW @ weights_OI.T)
  return _pil_round(weights_OI @ rows_HW).astype(image_HW.dtype)


def rotate(image_HW: jax.Array, degrees: jax.Array) -> jax.Array:
  """Rotate about the image centre, counter-clockwise for positive angles.

  Nearest neighbour with fill 0, as PIL's `Image.rotate`: each output pixel centre
  is mapped back into the input and the pixel containing that point is taken.
  """
  h, w = image_HW.shape
  theta = jnp.deg2rad(degrees)
  cos, sin = jnp.cos(theta), jnp.sin(theta)
  y_HW, x_HW = jnp.meshgrid(
      jnp.arange(h, dtype=jnp.float32), jnp.arange(w, dtype=jnp.float32),
      indexing="ij")
  dx_HW, dy_HW = x_HW + 0.5 - w / 2, y_HW + 0.5 - h / 2
  src_x_HW = jnp.floor(cos * dx_HW - sin * dy_HW + w / 2).astype(jnp.int32)
  src_y_HW = jnp.floor(sin * dx_HW + cos * dy_HW + h / 2).astype(jnp.int32)
  inside_HW = (src_x_HW >= 0) & (src_x_HW < w) & (src_y_HW >= 0) & (src_y_HW < h)
  pixels_HW = image_HW[jnp.clip(src_y_HW, 0, h - 1), jnp.clip(src_x_HW, 0, w - 1)]
  return jnp.where(inside_HW, pixels_HW, 0).astype(image_HW.dtype)


def random_params(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
  """Per image: whether to crop (probability 0.1) and the angle, U(-15, 15) degrees."""
  crop_key, angle_key = jax.random.split(key)
  # float32 draws whatever the x64 setting (tests run float64 references of a step).
  crop_N = jax.random.bernoulli(crop_key, jnp.float32(CROP_PROBABILITY), (n,))
  degrees_N = jax.random.uniform(angle_key, (n,), jnp.float32, -MAX_DEGREES, MAX_DEGREES)
  return crop_N, degrees_N


def transform(image_HW: jax.Array, crop: jax.Array, degrees: jax.Array) -> jax.Array:
  """One image's geometry, given its draws."""
  return rotate(jnp.where(crop, center_crop_resize(image_HW), image_HW), degrees)


def random_transform(key: jax.Array, images_NHWC: jax.Array) -> jax.Array:
  """The original's random geometry on pixels 0-255; returns float32 pixels."""
  crop_N, degrees_N = random_params(key, images_NHWC.shape[0])
  images_NHW = images_NHWC[..., 0].astype(jnp.float32)
  return jax.vmap(transform)(images_NHW, crop_N, degrees_N)[..., None]


def train_transform(key: jax.Array, images_NHWC: jax.Array) -> jax.Array:
  """Random geometry, then normalisation: the original's train transform."""
  return normalize(random_transform(key, images_NHWC))
