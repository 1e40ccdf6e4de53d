"""Held-out phantoms: BraTS 2021 and TCGA-LGG ``kaggle_3m`` folders for evaluation only.

The demos train and evaluate on phantoms from the project's own generator
(``src/data/generators``). This package is a second generator, written independently of
that one (without reading it) from general knowledge of how brains, gliomas and MRI
contrasts look, so that a recipe can be checked on data it was not tuned on: does it still
work when the anatomy, tumour shapes, contrasts, noise and intensity handling are someone
else's? Its output is for measuring generalisation ONLY: never use it to choose a recipe's
settings (thresholds, budgets, modalities, CAM parameters, ...), never train on it while
developing, and do not tune this generator to make a recipe look good. Once it has been
used to pick anything, it is no longer held out.

    python -m experiments.heldout brats OUT --cases 24 --normal 8 --seed 1
    python -m experiments.heldout kaggle3m OUT --patients 20 --seed 1
    python -m experiments.heldout preview PNG --brats DIR --kaggle3m DIR

The folders are in the real on-disk formats (docs/data.md), read with ``data.root=OUT
data.demo=null`` like a real download. ``anatomy`` draws the brain, head, tumours and
contrasts; ``brats`` and ``kaggle3m`` write the two layouts; each output folder holds a
hidden ``.heldout.json`` with the parameters and what each case contains.
"""
