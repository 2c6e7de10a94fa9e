"""jndplug.data: the dataset layout and the KIND:PATH names, shared by every stage."""

from pathlib import Path

import numpy as np
import pytest

from jndplug.data.layout import N_LEVELS, JNDDataset, labels_candidates, level_file, original_file
from jndplug.data.specs import parse_spec
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import write_image


def test_one_spec_parser_one_name_per_kind():
    kinds = ("generated", "pairs")
    assert parse_spec("generated:/d,/l.json", kinds) == ("generated", "/d,/l.json")
    with pytest.raises(JNDPlugValueError, match=r"--data 'zip:/d': unknown kind 'zip'; use one of generated, pairs"):
        parse_spec("zip:/d", kinds, "--data")
    with pytest.raises(JNDPlugValueError, match="expected KIND:PATH"):
        parse_spec("/just/a/folder", kinds)
    with pytest.raises(JNDPlugValueError, match="unknown kind 'study'"):  # one name per kind, no aliases
        parse_spec("study:/d", kinds)


def test_the_layout_datagen_writes_is_the_one_readers_look_in(tmp_path):
    img = np.zeros((8, 8, 3), np.uint8)
    write_image(original_file(tmp_path, "a"), img)
    for level in range(1, N_LEVELS + 1):
        write_image(level_file(tmp_path, "a", level), img)
    ds = JNDDataset(tmp_path)
    assert ds.ids == ["a"] and ds.original_path("a") == original_file(tmp_path, "a").resolve()
    assert ds.level_path("a", 3) == level_file(tmp_path.resolve(), "a", 3)
    assert labels_candidates(tmp_path) == [tmp_path / "labels.json", tmp_path / "study" / "labels.json"]
    assert labels_candidates(tmp_path, "x.json") == [Path("x.json")]
