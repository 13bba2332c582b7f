"""mnist_jax.conv: autodiff's numbers, in the layout XLA:CPU runs fast, inside loops too."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from conftest import normal
from tolerance import max_abs, sum_order_bound
from mnist_jax import conv, get_model

# Every convolution of both models: (input size, in channels, out channels, padding).
SHAPES = [(28, 1, 20, "SAME"), (14, 20, 28, "SAME"), (7, 28, 64, "SAME"),
          (28, 1, 32, "VALID"), (26, 32, 64, "VALID"), (12, 64, 128, "VALID"),
          (10, 128, 256, "VALID")]


def autodiff_conv(x, w, padding):
  return lax.conv_general_dilated(x, w, (1, 1), padding,
                                  dimension_numbers=("NHWC", "HWIO", "NHWC"))


@pytest.mark.parametrize("size,c_in,c_out,padding", SHAPES + [(6, 2, 3, ((2, 2), (0, 1)))])
def test_value_and_gradients_are_autodiffs(size, c_in, c_out, padding):
  """With the bias (its gradient from the kernel gradient's convolution; the last shape's
  pads leave no tap that sees every output's position, so a reduction finds it) and without."""
  x = normal(1, (16, size, size, c_in))
  w = normal(2, (3, 3, c_in, c_out))
  b = normal(4, (c_out,))
  pads = (padding if isinstance(padding, tuple) else
          tuple(lax.padtype_to_pads((size, size), (3, 3), (1, 1), padding)))
  reference = lambda x, w, b: autodiff_conv(x, w, pads) + b
  y_ref, vjp_ref = jax.vjp(reference, x, w, b)
  dy = normal(3, y_ref.shape)
  names = ("y", "dx", "dw", "db")
  want = dict(zip(names, (y_ref, *vjp_ref(dy))))
  # The same sums, perhaps in another order: each within the rounding bound of its
  # number of terms and their magnitudes (the same computation on |x|, |w|, |b|, |dy|).
  abs_y, abs_vjp = jax.vjp(reference, jnp.abs(x), jnp.abs(w), jnp.abs(b))
  magnitude = dict(zip(names, (abs_y, *abs_vjp(jnp.abs(dy)))))
  terms = {"y": 9 * c_in + 1, "dx": 9 * c_out, "dw": 16 * y_ref.shape[1] * y_ref.shape[2],
           "db": 16 * y_ref.shape[1] * y_ref.shape[2]}
  y, vjp = jax.vjp(lambda x, w, b: conv.conv2d(x, w, pads, b), x, w, b)
  with_bias = dict(zip(names, (y, *vjp(dy))))
  # Without a bias: the same convolution and gradients, and no gradient for a bias.
  y, vjp = jax.vjp(lambda x, w: conv.conv2d(x, w, pads), x, w)
  without_bias = dict(zip(names, (y + b, *vjp(dy))))
  assert len(vjp(dy)) == 2
  for got in (with_bias, without_bias):
    for name, value in got.items():
      bound = sum_order_bound(terms[name], max_abs(magnitude[name]))
      assert max_abs(np.asarray(value) - np.asarray(want[name])) <= bound, name

@pytest.mark.parametrize("model_name", ["tiny", "net"])
def test_a_scan_of_training_gradients_keeps_every_convolution_in_eigens_layout(model_name):
  """XLA:CPU's fast convolutions take NHWC input, HWIO kernel, NHWC output ("b01f_01io->b01f").
  Inside a loop body XLA leaves autodiff's gradient convolutions in other layouts (and
  runs them as slow loop nests); conv.py's backward pass must keep all of them in it."""
  model = get_model(model_name)
  images_NHWC = jnp.zeros((8, 28, 28, 1))
  variables = model.init(jax.random.key(0), images_NHWC)

  def loss(params, images):
    logits, _ = model.apply({**variables, "params": params}, images, train=True,
                            mutable=["batch_stats"])
    return jnp.sum(logits)

  def steps(params):
    def step(params, _):
      grads = jax.grad(loss)(params, images_NHWC)
      return jax.tree.map(lambda p, g: p - 0.01 * g, params, grads), None
    return lax.scan(step, params, None, length=3)[0]
  hlo = jax.jit(steps).lower(variables["params"]).compile().as_text()
  layouts = re.findall(r"convolution\(.*?dim_labels=(\S+?),", hlo)
  # conv1 has no input gradient, and its forward pass is a matrix product (one channel).
  assert len(layouts) == 3 * (3 if model_name == "tiny" else 4) - 2
  assert set(layouts) == {"b01f_01io->b01f"}, layouts
