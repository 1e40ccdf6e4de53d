"""The one choice check: each layer keeps its exception type, the wording is shared."""

from __future__ import annotations

import pytest

from src.cams import check_options
from src.cams.base import OptionError
from src.models.backbones import build_backbone
from src.pipeline.config import ConfigError
from src.validation import check_choice


def test_a_valid_choice_is_returned_and_a_wrong_one_named():
    assert check_choice("mode", "b", ("a", "b")) == "b"
    with pytest.raises(ValueError, match=r"^mode='c' is not one of \['a', 'b'\]$"):
        check_choice("mode", "c", ("a", "b"))
    with pytest.raises(ConfigError, match=r"for 'cam\.mask': cam\.mask='x' is not one of") as err:
        check_choice("cam.mask", "x", ("otsu",), ConfigError)
    assert err.value.field == "cam.mask"


def test_callers_keep_their_exception_types():
    with pytest.raises(OptionError, match=r"fusion='median' is not one of") as err:
        check_options("gradcam", fusion="median")
    assert err.value.option == "fusion"
    with pytest.raises(ValueError, match=r"backbone\.arch='vgg11' is not one of"):
        build_backbone("vgg11", 1)
