"""Builders shared by the test folders: seeded tiny networks and images (``networks``), fake
datasets (``datasets``), quiet Trainer settings (``trainer``), child processes
(``processes``), finished-run stand-ins (``fake_runs``) and file-tree snapshots (``files``).

Test modules import them as ``from tests.helpers.<module> import ...``; the root
``tests/conftest.py`` puts the checkout on ``sys.path`` so that works in importlib mode.
"""
