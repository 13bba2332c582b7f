"""What the entry points (train.py, predict.py, export.py) share: one error style."""

import argparse


class ArgumentParser(argparse.ArgumentParser):
  """argparse whose errors are one line naming the flag and why, exit status 2."""

  def error(self, message):
    self.exit(2, f"{self.prog}: error: {message} (see --help)\n")
