"""Recipes that reproduce the two papers' tables (see experiments/README.md)."""
