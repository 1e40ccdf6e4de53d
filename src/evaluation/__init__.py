"""Masks, metrics and result files of an evaluation; the pipeline passes everything in."""
