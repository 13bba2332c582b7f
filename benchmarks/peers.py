"""The training steps a user would pick instead of mnist-jax's, for `benchmark.py --steps`:
PyTorch with the original's models (benchmarks/original.py) eager, eager in `channels_last`
and under `torch.compile`; and each model written the way the Flax examples write one
(`nn.Conv`, `nn.BatchNorm`, `nn.max_pool`, `optax.adam`, a `TrainState` with batch_stats).

Every `*_steps(model_name, images_NHWC, labels, lr)` returns `run(num_steps)`, which trains
that many Adam steps on the one in-memory batch (already normalised: the peers' input
pipeline is not timed) and returns when the last is done.
"""



TORCH_LAYOUTS = ("eager", "channels_last", "compile")


def torch_steps(model_name: str, images_NHWC, labels, lr: float, layout: str):
  import torch  # pylint: disable=import-outside-toplevel
  from torch.nn import functional as F  # pylint: disable=import-outside-toplevel
  from benchmarks import original  # pylint: disable=import-outside-toplevel
  torch.manual_seed(0)
  model = original.MODELS[model_name]().train().to(original.DEVICE)
  x = torch.from_numpy(images_NHWC).permute(0, 3, 1, 2).contiguous().to(original.DEVICE)
  y = torch.from_numpy(labels).long().to(original.DEVICE)
  if layout == "channels_last":
    model = model.to(memory_format=torch.channels_last)
    x = x.contiguous(memory_format=torch.channels_last)
  forward = torch.compile(model) if layout == "compile" else model
  optimizer = torch.optim.Adam(model.parameters(), lr=lr)

  def run(num_steps: int):
    for _ in range(num_steps):
      optimizer.zero_grad(set_to_none=True)
      F.cross_entropy(forward(x), y).backward()
      optimizer.step()
    original.synchronize()
  return run


def flax_model(model_name: str):
  import flax.linen as nn  # pylint: disable=import-outside-toplevel

  def batch_norm(train):  # PyTorch's momentum 0.1 and epsilon
    return nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)

  def pool(x):
    return nn.max_pool(x, (2, 2), strides=(2, 2))

  class TinyNet(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
      x = pool(nn.relu(batch_norm(train)(nn.Conv(20, (3, 3))(x))))
      x = pool(nn.relu(batch_norm(train)(nn.Conv(28, (3, 3))(x))))
      x = nn.relu(batch_norm(train)(nn.Conv(64, (3, 3))(x)))
      return nn.Dense(10)(x.mean(axis=(1, 2)))

  class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
      del train
      x = nn.relu(nn.Conv(32, (3, 3), padding="VALID")(x))
      x = nn.relu(pool(nn.Conv(64, (3, 3), padding="VALID")(x)))
      x = nn.relu(nn.Conv(128, (3, 3), padding="VALID")(x))
      x = nn.relu(pool(nn.Conv(256, (3, 3), padding="VALID")(x)))
      x = nn.relu(nn.Dense(50)(x.reshape(x.shape[0], -1)))
      return nn.Dense(10)(x)

  return {"tiny": TinyNet, "net": Net}[model_name]()


def flax_steps(model_name: str, images_NHWC, labels, lr: float, mesh=None):
  """The Flax examples' step; with `mesh`, the batch split over its devices like train.py's."""
  import jax  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  from flax.training import train_state  # pylint: disable=import-outside-toplevel

  class TrainState(train_state.TrainState):
    batch_stats: dict

  model = flax_model(model_name)
  variables = jax.jit(model.init, static_argnums=2)(jax.random.key(0), images_NHWC[:1], False)
  state = TrainState.create(apply_fn=model.apply, params=variables["params"], tx=optax.adam(lr),
                            batch_stats=variables.get("batch_stats", {}))

  @jax.jit
  def train_step(state, images, labels):
    def loss_fn(params):
      logits, updates = state.apply_fn({"params": params, "batch_stats": state.batch_stats},
                                       images, train=True, mutable=["batch_stats"])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()
      return loss, updates
    (loss, updates), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    state = state.apply_gradients(grads=grads)
    return state.replace(batch_stats=updates.get("batch_stats", {})), loss

  return jax_steps(train_step, state, (images_NHWC, labels), mesh)


def jax_steps(step, state, inputs: tuple, mesh=None):
  """`run(num_steps)` for a jitted `step(state, *inputs) -> (state, metrics)`; with `mesh`,
  the state replicated and the inputs' leading (batch) axis split over its devices, as
  train.py places them."""
  import jax  # pylint: disable=import-outside-toplevel
  from mnist_jax import parallel  # pylint: disable=import-outside-toplevel
  if mesh is not None:
    state = parallel.replicate(state, mesh)
  # On the device once, as train.py keeps the dataset: numpy inputs would be copied to a GPU
  # at every step (a TinyNet b256 step on an H200 2.1 ms instead of 0.9).
  inputs = jax.device_put(inputs, None if mesh is None else parallel.batch_sharded(mesh))
  holder = [state]

  def run(num_steps: int):
    for _ in range(num_steps):
      holder[0], _ = step(holder[0], *inputs)
    jax.block_until_ready(holder[0])
  return run
