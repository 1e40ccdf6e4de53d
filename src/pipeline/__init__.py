"""The Hydra entry point's machinery: config checks, stages, the model store, resumption,
randomness and user errors (``python -m src.run``)."""
