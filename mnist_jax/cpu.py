"""XLA:CPU settings that make these small convolutions fast. Results are unchanged
beyond float rounding; the settings have no effect on GPU or TPU.

The rounding is larger, though: against float64, TinyNet's float32 gradients are
within ~1e-6 (relative) with the default path and ~1e-5 (one BatchNorm bias 1e-3)
with Eigen's; tests/torch_parity_test.py checks the default path at 1e-4.
"""

import os

# This jaxlib routes CPU convolutions to YNNPACK, whose weight gradients are slow
# for these shapes; the empty fusion type sends them to Eigen instead. On 2 cores
# (benchmarks/benchmark.py with and without --default-convolutions), a training
# epoch: TinyNet b256 63.6 -> 42.8 s, Net b512 962 -> 212 s.
FAST_CONV_FLAG = "--xla_cpu_experimental_ynn_fusion_type="


def use_fast_convolutions() -> None:
  """Adds the flag to XLA_FLAGS unless set; call before JAX initialises its backends."""
  flags = os.environ.get("XLA_FLAGS", "")
  if "xla_cpu_experimental_ynn_fusion_type" not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {FAST_CONV_FLAG}".strip()
