"""Bring the original's trained weights: a PyTorch `state_dict` to Flax variables.

numpy only: torch need not be installed, values may be tensors or arrays.

    import torch
    variables = torch_interop.from_torch_state_dict(torch.load("tinynet.pt"))
    logits = TinyNet().apply(variables, images_NHWC, train=False)
"""

import jax
import jax.numpy as jnp
import numpy as np

from mnist_jax import models


def _numpy(value, dtype) -> np.ndarray:
  if hasattr(value, "detach"):  # a torch tensor, without importing torch
    value = value.detach().cpu().numpy()
  # A copy: a tensor's numpy view would change under the result as torch trains on.
  return np.array(value, dtype=dtype)


def _conv(weight_OIHW) -> np.ndarray:
  return weight_OIHW.transpose(2, 3, 1, 0)  # Flax convolutions are HWIO


def _dense(weight_OI, in_shape_CHW=None) -> np.ndarray:
  if in_shape_CHW is not None:
    # PyTorch flattened NCHW features, Flax flattens NHWC: reorder the inputs.
    out_features = weight_OI.shape[0]
    weight_OI = weight_OI.reshape(out_features, *in_shape_CHW).transpose(0, 2, 3, 1)
    weight_OI = weight_OI.reshape(out_features, -1)
  return weight_OI.T


def from_torch_state_dict(state_dict, dtype=np.float32) -> dict:
  """`{"params": ..., "batch_stats": ...}` for TinyNet, or `{"params": ...}` for Net.

  The model is told by the keys (BatchNorm layers mean TinyNet). Raises ValueError
  naming any missing, unexpected or mis-shaped weight. `num_batches_tracked` is dropped.
  Values come out as `dtype` (float64 keeps a float64 model's weights exactly).
  """
  sd = {k: _numpy(v, dtype) for k, v in state_dict.items() if not k.endswith("num_batches_tracked")}
  variables = {"params": {}, "batch_stats": {}}
  for key, array in sd.items():
    layer, kind = key.rsplit(".", 1) if "." in key else (key, "")
    if layer.startswith("conv"):
      converted = _conv(array) if kind == "weight" else array
      collection, name = "params", {"weight": "kernel"}.get(kind, kind)
    elif layer.startswith("fc"):
      # Net's fc1 reads conv4's output flattened: (256, 4, 4) in PyTorch's order.
      in_shape = (256, 4, 4) if kind == "weight" and array.shape[-1] == 4096 else None
      converted = _dense(array, in_shape) if kind == "weight" else array
      collection, name = "params", {"weight": "kernel"}.get(kind, kind)
    else:
      converted = array
      collection, name = {"weight": ("params", "scale"), "bias": ("params", "bias"),
                          "running_mean": ("batch_stats", "mean"),
                          "running_var": ("batch_stats", "var")}.get(kind, ("params", kind))
    variables[collection].setdefault(layer, {})[name] = converted
  model = models.TinyNet() if variables["batch_stats"] else models.Net()
  expected = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 28, 28, 1)))
  _check_shapes(variables, expected, type(model).__name__)
  return {k: v for k, v in variables.items() if v}


def _shapes(tree) -> dict[str, tuple]:
  return {"/".join(str(p.key) for p in path): leaf.shape
          for path, leaf in jax.tree_util.tree_leaves_with_path(tree)}


def _check_shapes(variables: dict, expected: dict, model_name: str) -> None:
  got, want = _shapes(variables), _shapes(expected)
  problems = [f"missing {k}" for k in sorted(want.keys() - got.keys())]
  problems += [f"unexpected {k}" for k in sorted(got.keys() - want.keys())]
  problems += [f"{k} has shape {got[k]}, expected {want[k]}"
               for k in sorted(want.keys() & got.keys()) if got[k] != want[k]]
  if problems:
    raise ValueError(f"not a state_dict of the original {model_name}: " + "; ".join(problems))
