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


@pytest.mark.parametrize("size,c_in,c_out,padding", SHAPES)
def test_value_and_gradients_are_autodiffs(size, c_in, c_out, padding):
  x = normal(1, (16, size, size, c_in))
  w = normal(2, (3, 3, c_in, c_out))
  ours = lambda x, w: conv.conv_general_dilated(x, w, (1, 1), padding)
  y, vjp = jax.vjp(ours, x, w)
  y_ref, vjp_ref = jax.vjp(lambda x, w: autodiff_conv(x, w, padding), x, w)
  dy = normal(3, y.shape)
  # The same sums, perhaps in another order: each within the rounding bound of its
  # number of terms and their magnitudes (the same convolutions of |x|, |w|, |dy|).
  _, abs_vjp = jax.vjp(lambda x, w: autodiff_conv(x, w, padding), jnp.abs(x), jnp.abs(w))
  abs_y = autodiff_conv(jnp.abs(x), jnp.abs(w), padding)
  abs_dx, abs_dw = abs_vjp(jnp.abs(dy))
  terms = {"y": 9 * c_in, "dx": 9 * c_out, "dw": 16 * y.shape[1] * y.shape[2]}
  for name, got, want, magnitude in zip(("y", "dx", "dw"), (y, *vjp(dy)), (y_ref, *vjp_ref(dy)),
                                        (abs_y, abs_dx, abs_dw)):
    bound = sum_order_bound(terms[name], max_abs(magnitude))
    assert max_abs(np.asarray(got) - np.asarray(want)) <= bound, name


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


def test_other_convolutions_are_refused():
  x, w = jnp.zeros((1, 8, 8, 2)), jnp.zeros((3, 3, 2, 4))
  with pytest.raises(ValueError, match="stride 1"):
    conv.conv_general_dilated(x, w, (2, 2), "SAME")
  with pytest.raises(ValueError, match="dilation"):
    conv.conv_general_dilated(x, w, (1, 1), "SAME", rhs_dilation=(2, 2))
