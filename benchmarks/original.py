"""The original PyTorch script's recipe, restated: its two models, its transforms,
its DataLoader, Adam, and its training and test loops. The yardstick that
benchmarks/benchmark.py measures mnist-jax against, and the reference models of
tests/torch_parity_test.py.

    python benchmarks/original.py --data-dir ../shared/data/mnist --model tiny --batch-size 256

times `--steps` training steps after a warm-up and one pass over the test set, and
prints one JSON line. Needs torch and torchvision (requirements-benchmark.txt); the
model classes alone need only torch.
"""

import argparse
import json
import os
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


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
  kwargs = {"batch_size": batch_size, "num_workers": 2}
  return (torch.utils.data.DataLoader(train, shuffle=True, **kwargs),
          torch.utils.data.DataLoader(test, shuffle=False, **kwargs))


def measure(model_name: str, batch_size: int, root: str, steps: int) -> dict:
  torch.manual_seed(0)
  train_loader, test_loader = loaders(root, batch_size)
  model = MODELS[model_name]()
  optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
  model.train()
  start = time.perf_counter()
  batches = iter(train_loader)
  for i in range(steps + 1):
    if i == 1:  # the first step pays the DataLoader's start-up: the warm-up
      warmup_s = time.perf_counter() - start
      start = time.perf_counter()
    images, labels = next(batches)
    optimizer.zero_grad()
    loss = F.cross_entropy(model(images), labels)
    loss.backward()
    optimizer.step()
    loss.item()  # the original's progress bar shows each step's loss
  step_s = (time.perf_counter() - start) / steps
  del batches

  model.eval()
  start = time.perf_counter()
  correct = 0
  with torch.no_grad():
    for images, labels in test_loader:
      correct += (model(images).argmax(1) == labels).sum().item()
  eval_s = time.perf_counter() - start
  # The input pipeline alone: decoding, the train transform, batching, two workers.
  start = time.perf_counter()
  for i, _ in enumerate(train_loader):
    if i + 1 == steps:
      break
  loader_s = (time.perf_counter() - start) / steps

  steps_per_epoch = len(train_loader)
  return {"loader_epoch_s": loader_s * steps_per_epoch, "warmup_s": warmup_s,
          "step_ms": 1000 * step_s, "train_epoch_s": step_s * steps_per_epoch,
          "images_per_s": batch_size / step_s, "eval_s": eval_s,
          "torch": torch.__version__, "threads": torch.get_num_threads()}


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--data-dir", required=True)
  parser.add_argument("--model", choices=sorted(MODELS), default="tiny")
  parser.add_argument("--batch-size", type=int, default=512)
  parser.add_argument("--steps", type=int, default=40)
  parser.add_argument("--scratch", default="benchmarks/out/torchvision")
  args = parser.parse_args()
  root = torchvision_root(args.data_dir, args.scratch)
  print(json.dumps(measure(args.model, args.batch_size, root, args.steps)))


if __name__ == "__main__":
  main()
