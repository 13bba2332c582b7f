"""Tools over finished runs; run each from the repository root as a module:
`python -m scripts.NAME --help`."""
