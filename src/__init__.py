"""Weakly-supervised segmentation from class activation maps: data, models, CAMs, pipeline."""
