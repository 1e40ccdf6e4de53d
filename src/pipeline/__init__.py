"""The Hydra entry point's machinery: config checks, stages, the evaluation's inputs, the
model store, resumption, older runs' configs, randomness and user errors (``python -m src.run``)."""
