"""Presets: each module's `get_config()` returns a `mnist_jax.Config`."""
