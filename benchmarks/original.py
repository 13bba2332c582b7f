"""The original PyTorch script's recipe, restated: its two models, its transforms,
its DataLoader, Adam, and its training and test loops. The yardstick that
benchmarks/benchmark.py measures mnist-jax against, and the reference models of
tests/torch_parity_test.py.

    python -m benchmarks.original --data-dir ../shared/data/mnist --model tiny --batch-size 256

times one whole training epoch and one pass over the test set, and prints one JSON line. With `--full-run` it instead trains the original's whole recipe
(Adam, StepLR stepped per epoch, the test pass after each epoch) once per seed,
one seed after another, and writes every epoch's numbers to `--out` (JSON, rewritten
after each epoch, so a cut-short run keeps what it finished):

    python -m benchmarks.original --data-dir ../shared/data/mnist --full-run --seeds 8 \
        --batch-size 256 --lr 0.01 --epochs 5 --out benchmarks/out/original-headline.json

`scripts/accuracy_table.py` sets it beside a mnist-jax run. Needs torch and
torchvision (requirements-benchmark.txt); the model classes alone need only torch.
"""

import argparse
import json
import os
import time

import torch
from torch import nn
from torch.nn import functional as F



class TinyNet(nn.Module):

  def __init__(self):
    super().__init__()
    self.conv1, self.bn1 = nn.Conv2d(1, 20, 3, padding=1), nn.BatchNorm2d(20)
    self.conv2, self.bn2 = nn.Conv2d(20, 28, 3, padding=1), nn.BatchNorm2d(28)
    self.conv3, self.bn3 = nn.Conv2d(28, 64, 3, padding=1), nn.BatchNorm2d(64)
    self.fc = nn.Linear(64, 10)

  def forward(self, x):
    x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
    x = F.max_pool2d(F.relu(self.bn2(self.conv2(x))), 2)
    x = F.relu(self.bn3(self.conv3(x)))
    return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Net(nn.Module):

  def __init__(self):
    super().__init__()
    self.conv1, self.conv2 = nn.Conv2d(1, 32, 3), nn.Conv2d(32, 64, 3)
    self.conv3, self.conv4 = nn.Conv2d(64, 128, 3), nn.Conv2d(128, 256, 3)
    self.fc1, self.fc2 = nn.Linear(4096, 50), nn.Linear(50, 10)

  def forward(self, x):
    x = F.relu(self.conv1(x))
    x = F.relu(F.max_pool2d(self.conv2(x), 2))
    x = F.relu(self.conv3(x))
    x = F.relu(F.max_pool2d(self.conv4(x), 2))
    return self.fc2(F.relu(self.fc1(torch.flatten(x, 1))))


MODELS = {"tiny": TinyNet, "net": Net}
# Like the original script, the GPU when PyTorch sees one, else the CPU.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def torchvision_root(data_dir: str, scratch: str) -> str:
  """A root holding MNIST/raw/ as torchvision's MNIST wants it (uncompressed files)."""
  from mnist_jax import data  # pylint: disable=import-outside-toplevel
  raw = os.path.join(scratch, "MNIST", "raw")
  os.makedirs(raw, exist_ok=True)
  for name in (n for pair in data.IDX_FILES.values() for n in pair):
    target = os.path.join(raw, name)
    if not os.path.exists(target):
      with open(target + ".part", "wb") as f:
        f.write(data.read_idx_file(data.find_idx_file(data_dir, name)))
      os.replace(target + ".part", target)
  return scratch


def loaders(root: str, batch_size: int):
  from torchvision import datasets, transforms  # pylint: disable=import-outside-toplevel
  normalize = [transforms.ToTensor(), transforms.Normalize((0.1307,), (0.3081,))]
  train_transform = transforms.Compose([
      transforms.RandomApply([transforms.CenterCrop(22), transforms.Resize((28, 28))], p=0.1),
      transforms.RandomRotation((-15.0, 15.0), fill=0),
      *normalize,
  ])
  train = datasets.MNIST(root, train=True, download=False, transform=train_transform)
  test = datasets.MNIST(root, train=False, download=False,
                        transform=transforms.Compose(normalize))
  kwargs = {"batch_size": batch_size, "num_workers": 2, "pin_memory": DEVICE.type == "cuda"}
  return (torch.utils.data.DataLoader(train, shuffle=True, **kwargs),
          torch.utils.data.DataLoader(test, shuffle=False, **kwargs))


def matmul_gflops(size: int = 2048, repeats: int = 5) -> float:
  """PyTorch's float32 matrix-multiply rate on this machine: a practical peak."""
  a, b = torch.randn(size, size, device=DEVICE), torch.randn(size, size, device=DEVICE)
  a @ b
  synchronize()
  start = time.perf_counter()
  for _ in range(repeats):
    a @ b
  synchronize()
  return 2 * size ** 3 * repeats / (time.perf_counter() - start) / 1e9


def device_description() -> dict:
  """Where PyTorch trains, and whether its float32 products may round to TF32 there."""
  if DEVICE.type != "cuda":
    return {"device": "cpu"}
  return {"device": torch.cuda.get_device_name(),
          "cudnn_allow_tf32": torch.backends.cudnn.allow_tf32,
          "matmul_allow_tf32": torch.backends.cuda.matmul.allow_tf32}


def synchronize() -> None:
  """Waits for the GPU's queued work (CPU kernels are done when their call returns)."""
  if DEVICE.type == "cuda":
    torch.cuda.synchronize()


def peak_rss_mb() -> dict:
  """Peak resident memory of this process and of the largest DataLoader worker, in MB."""
  import resource  # pylint: disable=import-outside-toplevel
  return {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
          "peak_rss_worker_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}


def measure(model_name: str, batch_size: int, root: str, loader_steps: int) -> dict:
  """One whole training epoch (the original's loop, a `loss.item()` per step for its
  progress bar), then one pass over the test set, each timed."""
  torch.manual_seed(0)
  train_loader, test_loader = loaders(root, batch_size)
  model = MODELS[model_name]().to(DEVICE)
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  model.train()
  start = time.perf_counter()
  for i, (images, labels) in enumerate(train_loader):
    images, labels = images.to(DEVICE), labels.to(DEVICE)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    loss.item()
    if i == 0:  # the DataLoader's start-up and the first step
      warmup_s = time.perf_counter() - start
  train_epoch_s = time.perf_counter() - start
  start = time.perf_counter()
  evaluate(model, test_loader)
  eval_s = time.perf_counter() - start
  # The input pipeline alone (decoding, the train transform, batching, two workers), over
  # the first `loader_steps` batches: an estimate of its share, not a timed epoch.
  start = time.perf_counter()
  for i, _ in enumerate(train_loader):
    if i + 1 == loader_steps:
      break
  loader_s = (time.perf_counter() - start) / loader_steps
  return {"warmup_s": warmup_s, "train_epoch_s": train_epoch_s, "eval_s": eval_s,
          "images_per_s": len(train_loader.dataset) / train_epoch_s,
          "loader_epoch_estimate_s": loader_s * len(train_loader),
          "matmul_gflops": matmul_gflops(), **peak_rss_mb(),
          "torch": torch.__version__, "threads": torch.get_num_threads(), **device_description()}


def evaluate(model, test_loader) -> tuple[float, float]:
  """(mean loss, accuracy) over the test set, as the original's test loop computes them."""
  model.eval()
  loss, correct = 0.0, 0
  with torch.no_grad():
    for images, labels in test_loader:
      images, labels = images.to(DEVICE), labels.to(DEVICE)
      logits = model(images)
      loss += F.cross_entropy(logits, labels, reduction="sum").item()
      correct += (logits.argmax(1) == labels).sum().item()
  return loss / len(test_loader.dataset), correct / len(test_loader.dataset)


def full_run(args, root: str, seed: int, record) -> None:
  """The original recipe end to end for one seed; `record(epoch_dict)` after each epoch."""
  torch.manual_seed(seed)
  train_loader, test_loader = loaders(root, args.batch_size)
  model = MODELS[args.model]().to(DEVICE)
  optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
  scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=args.step_size,
                                              gamma=args.gamma)
  for epoch in range(1, args.epochs + 1):
    start = time.perf_counter()
    model.train()
    loss_sum, correct, count = 0.0, 0, 0
    for images, labels in train_loader:
      images, labels = images.to(DEVICE), labels.to(DEVICE)
      optimizer.zero_grad()
      logits = model(images)
      loss = F.cross_entropy(logits, labels)
      loss.backward()
      optimizer.step()
      loss_sum += loss.item() * len(labels)
      correct += (logits.argmax(1) == labels).sum().item()
      count += len(labels)
    scheduler.step()
    epoch_s = time.perf_counter() - start
    test_loss, test_accuracy = evaluate(model, test_loader)
    record({"epoch": epoch, "train_loss": loss_sum / count, "train_accuracy": correct / count,
            "test_loss": test_loss, "test_accuracy": test_accuracy, "epoch_seconds": epoch_s,
            "eval_seconds": time.perf_counter() - start - epoch_s})


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
  parser.add_argument("--batch-size", type=int, default=512)
  parser.add_argument("--loader-steps", type=int, default=40,
                      help="batches the DataLoader is timed over on its own")
  parser.add_argument("--scratch", default="benchmarks/out/torchvision")
  full = parser.add_argument_group("--full-run: the whole recipe, one run per seed")
  full.add_argument("--full-run", action="store_true")
  full.add_argument("--seeds", type=int, default=1, help="seeds SEED, SEED+1, ...")
  full.add_argument("--seed", type=int, default=0)
  full.add_argument("--epochs", type=int, default=20)
  full.add_argument("--lr", type=float, default=1e-3)
  full.add_argument("--step-size", type=int, default=15)
  full.add_argument("--gamma", type=float, default=0.1)
  full.add_argument("--out", default="benchmarks/out/original-full-run.json")
  args = parser.parse_args()
  root = torchvision_root(args.data_dir, args.scratch)
  if not args.full_run:
    print(json.dumps(measure(args.model, args.batch_size, root, args.loader_steps)))
    return
  settings = {k: getattr(args, k) for k in ("model", "batch_size", "epochs", "lr", "step_size",
                                            "gamma")}
  result = {"recipe": settings, "torch": torch.__version__, "runs": []}
  os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
  for seed in range(args.seed, args.seed + args.seeds):
    run = {"seed": seed, "history": []}
    result["runs"].append(run)

    def record(epoch, run=run):
      run["history"].append(epoch)
      with open(args.out + ".tmp", "w") as f:
        json.dump(result, f, indent=1)
      os.replace(args.out + ".tmp", args.out)
      print(f"seed {run['seed']} epoch {epoch['epoch']}: test accuracy "
            f"{100 * epoch['test_accuracy']:.2f}% ({epoch['epoch_seconds']:.1f} s)", flush=True)
    full_run(args, root, seed, record)


if __name__ == "__main__":
  main()
