"""Held-out phantoms: BraTS 2021, TCGA-LGG ``kaggle_3m`` and KolektorSDD2 folders for evaluation
only.

The demos train and evaluate on phantoms from the project's own generator
(``src/data/generators``). This package is a second generator, written independently of
that one (without reading it) from general knowledge of how brains, gliomas and MRI
contrasts look (and, for KSDD2, how metal surfaces, their defects and harmless stains look
to a line-scan camera), so that a recipe can be checked on data it was not tuned on: does
it still work when the anatomy, tumour shapes, contrasts, noise and intensity handling (the
surfaces, defects and distractors) are someone else's? Its output is for measuring generalisation ONLY: never use it to choose a recipe's
settings (thresholds, budgets, modalities, CAM parameters, ...), never train on it while
developing, and do not tune this generator to make a recipe look good. Once it has been
used to pick anything, it is no longer held out.

    python -m experiments.heldout brats OUT --cases 24 --normal 8 --seed 1
    python -m experiments.heldout kaggle3m OUT --patients 20 --seed 1
    python -m experiments.heldout ksdd2 OUT --train 480 --test 160 --seed 1
    python -m experiments.heldout preview PNG --brats DIR --kaggle3m DIR

The folders are in the real on-disk formats (docs/data.md), read with ``data.root=OUT
data.demo=null`` like a real download. ``anatomy`` draws the brain, head, tumours and
contrasts; ``brats`` and ``kaggle3m`` write the two MRI layouts; ``ksdd2`` draws and writes
KSDD2-format surfaces on its own (``{train,test}/NNNNN.png`` and ``NNNNN_GT.png``). Each
output folder holds a hidden ``.heldout.json`` with the parameters and what each case or
image contains.
"""
