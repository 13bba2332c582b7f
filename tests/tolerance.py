"""Float tolerances that follow from what a test compares, so that they hold on every CPU.

Two float32 computations of the same mathematics (other kernels, vector width, fusion,
summation order, a batch split over devices) differ by rounding alone, and rounding has
a scale. Each float32 operation errs by at most u = 2**-24 of its result, so a sum of n
terms, in any order, lies within gamma(n) times the sum of the terms' magnitudes of the
exact sum. The worst case is gamma(n) = n*u/(1 - n*u) (Higham, "Accuracy and Stability
of Numerical Algorithms", sec. 4.2), reached only when every rounding errs the same way;
with rounding errors modelled as independent and zero-mean, the bound
gamma(n) = exp(lam*sqrt(n)*u + n*u^2/(1-u)) - 1 ~ lam*sqrt(n)*u holds with probability at
least 1 - 2n*exp(-lam^2*(1-u)^2/2) (Higham & Mary, "A New Approach to Probabilistic
Rounding Error Analysis", SIAM J. Sci. Comput. 41(5), 2019, Thm 2.8). With lam = 10 that
is 1 - 1e-16 for n = 10^5: no CPU fails it by chance, and unlike n*u it stays small
enough to catch a real bug (a statistic over the wrong examples is off by ~1/sqrt(n)).

Two evaluations in different orders lie at most twice gamma(n) apart: `sum_order_bound`.
A test names its n (the longest chain of additions behind a compared value) and its
magnitude (what those terms add up to, or a bound on it), never a constant that happened
to pass on one machine.
"""

import math

import numpy as np

U32 = 2.0 ** -24  # float32 unit roundoff
EPS32 = 2 * U32  # float32 machine epsilon: the spacing of floats in [1, 2)
FLOAT64_PER_FLOAT32 = 2.0 ** -53 / U32  # float64's unit roundoff in float32's
LAM = 10.0


def gamma(n: int) -> float:
  return math.expm1(LAM * math.sqrt(n) * U32 + n * U32 ** 2 / (1 - U32))


def sum_order_bound(n: int, magnitude: float) -> float:
  """How far apart two float32 evaluations of an n-term sum can lie, whose terms'
  magnitudes add up to at most `magnitude`."""
  return 2 * gamma(n) * float(magnitude)


def max_abs(x) -> float:
  return float(np.max(np.abs(np.asarray(x, np.float64))))


def assert_within(got, want, tolerance: float, what: str = ""):
  """max |got - want| <= tolerance, with the numbers in the message when not."""
  error = float(np.max(np.abs(np.asarray(got, np.float64) - np.asarray(want, np.float64))))
  assert error <= tolerance, f"{what}: {error:.3g} > tolerance {tolerance:.3g}"


# Adam (PyTorch's defaults b1 = 0.9, b2 = 0.999) as optax and PyTorch compute it: its
# float32 rounding is dominated by the bias corrections 1 - b**t, computed in float32
# from b rounded to float32 (relative error <= u), which magnify b's rounding by
# b / (1 - b) (x9 for b1, x999 for b2); the second moment enters through a square root,
# which halves its relative error; the remaining few operations per step add a few u.
ADAM_B1, ADAM_B2 = 0.9, 0.999
ADAM_RTOL = (ADAM_B1 / (1 - ADAM_B1) + ADAM_B2 / (1 - ADAM_B2) / 2 + 16) * U32  # ~3.1e-5


# Where no sum can be named (a network's output, a few training steps), float64 is the
# yardstick: it measures how far float32 rounding takes that very computation, on this
# CPU with its kernels, from exact arithmetic. A float32 result computed another way
# (another device split, batch size, library, jit or not) must land as close: within
# SAME_ROUNDING_FACTOR times a trusted float32 result's distance, since both are one
# rounding process in different orders (ratios 0.9-1.8 measured on an AVX2 EPYC with
# default, Eigen and SSE4.2-only kernels), plus a few ulps of the values, since a single
# number can land near the exact one by luck.
SAME_ROUNDING_FACTOR = 3


def assert_as_accurate(got, reference, exact, what: str = "", unit_ratio: float = 1.0):
  """`got` is no further from the float64 `exact` than float32 `reference` is (see above).

  For a `got` computed in float64 (and `exact` then another float64 computation), pass
  unit_ratio=FLOAT64_PER_FLOAT32: rounding errors scale with the unit roundoff.
  """
  exact = np.asarray(exact, np.float64)
  reference_error = max_abs(np.asarray(reference, np.float64) - exact)
  tolerance = unit_ratio * (SAME_ROUNDING_FACTOR * reference_error + 4 * EPS32 * max_abs(exact))
  assert_within(got, exact, tolerance, f"{what} (reference's error {reference_error:.3g})")


def assert_trees_as_accurate(got, reference, exact, what: str = ""):
  import jax  # pylint: disable=g-import-not-at-top
  for (path, g), r, e in zip(jax.tree_util.tree_leaves_with_path(got), jax.tree.leaves(reference),
                             jax.tree.leaves(exact)):
    assert_as_accurate(g, r, e, f"{what}{jax.tree_util.keystr(path)}")


def to_float64(tree):
  """Floating leaves as float64; call inside `jax.enable_x64(True)`."""
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  return jax.tree.map(
      lambda v: jnp.asarray(v, jnp.float64) if jnp.issubdtype(jnp.asarray(v).dtype, jnp.floating)
      else v, tree)
