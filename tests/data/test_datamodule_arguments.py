"""The arguments every reader shares reach SplitDataModule, with each reader's defaults, and
unknown names fail naming the reader (the readers forward them as ``**shared``)."""

from __future__ import annotations

import pytest

from src.data.brats import BraTSDataModule
from src.data.ksdd2 import KSDD2DataModule
from src.data.tcga_lgg import TCGALGGDataModule
from src.data.voc import VOCDataModule

READERS = [
    (BraTSDataModule, 64, True),
    (TCGALGGDataModule, 64, True),
    (KSDD2DataModule, 32, False),
    (VOCDataModule, 32, False),
]


@pytest.mark.parametrize(("reader", "batch_size", "takes_ratios"), READERS)
def test_shared_arguments_defaults_and_values(reader, batch_size, takes_ratios, tmp_path):
    default = reader(tmp_path)
    assert default.batch_size == batch_size
    assert (default.split_seed, default.split_file, default.num_workers) == (42, None, 0)
    assert (default.weighted_sampling, default.on_error, default.output_dir) == (
        False,
        "raise",
        None,
    )
    given = reader(
        tmp_path,
        split_seed=7,
        split_file=str(tmp_path / "split.json"),
        batch_size=5,
        num_workers=1,
        weighted_sampling=True,
        on_error="skip",
        output_dir=str(tmp_path / "run"),
    )
    assert (given.split_seed, given.batch_size, given.num_workers) == (7, 5, 1)
    assert given.split_file == tmp_path / "split.json"
    assert given.output_dir == tmp_path / "run"
    assert given.weighted_sampling and given.on_error == "skip"
    if takes_ratios:
        assert reader(tmp_path, split_ratios=[0.5, 0.5, 0]).split_ratios == (0.5, 0.5, 0.0)


@pytest.mark.parametrize(("reader", "batch_size", "takes_ratios"), READERS)
def test_unknown_and_bad_arguments_fail_naming_the_reader(
    reader, batch_size, takes_ratios, tmp_path
):
    with pytest.raises(TypeError, match=rf"{reader.__name__}\(\).*\['batchsize'\]"):
        reader(tmp_path, batchsize=batch_size)
    with pytest.raises(ValueError, match="on_error must be 'raise' or 'skip'"):
        reader(tmp_path, on_error="ignore")
    if not takes_ratios:  # val_fraction sets their ratios; split_ratios is not theirs
        with pytest.raises(TypeError, match=rf"{reader.__name__}\(\).*\['split_ratios'\]"):
            reader(tmp_path, split_ratios=(1, 0, 0))
