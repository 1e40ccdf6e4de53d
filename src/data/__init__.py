"""Data layer: readers of the on-disk dataset formats (docs/data.md), DataModules, splits,
the slice cache and generators of each format. Kept import-light on purpose: import the
submodule you need (``src.data.brats``, ``src.data.generators.brats``, ...)."""
