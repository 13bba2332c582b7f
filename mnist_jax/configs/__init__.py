"""Presets: each module's `get_config()` returns a recipe (`mnist_jax.Config`); `train.py
--config NAME` picks one by its module name. A docstring gives the command and its result."""
