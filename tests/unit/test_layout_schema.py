"""The labels file and the level files, checked once in jndplug.data.layout for every reader."""

import json

import numpy as np
import pytest

from jndplug.data.layout import N_LEVELS, level_file, level_files, original_file, read_labels
from jndplug.imageio import write_image
from jndplug.patches.collection import read_collection
from jndplug.training.datasets import read_source

GOOD = {"jnd_level": 3, "sur": [1.0, 1.0, 0.9, 0.6, 0.4, 0.2, 0.1, 0.0, 0.0]}


def _dataset(root, levels=range(1, N_LEVELS + 1)):
    img = np.full((8, 8, 3), 100, np.uint8)
    write_image(original_file(root, "a"), img)
    for k in levels:
        write_image(level_file(root, "a", k), img)
    return root


def _labels(root, doc):
    path = root / "labels.json"
    path.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return path


BAD = [
    ("{not json", "not valid JSON"),
    ([GOOD], "a labels file is a JSON object"),
    ({"schema": "jndplug-labels-v0", "images": {"a": GOOD}}, "schema 'jndplug-labels-v0' is not 'jndplug-labels-v1'"),
    ({"schema": "jndplug-labels-v1", "image": {"a": GOOD}}, "no 'images' mapping"),
    ({"images": {"a": 3}}, "image 'a': the label must be an object"),
    ({"images": {"a": {**GOOD, "sur": [1.2] * 9}}}, r"image 'a': sur must be null or a list of ratios in \[0, 1\]"),
    ({"images": {"a": {**GOOD, "sur": "high"}}}, "image 'a': sur must be null or a list"),
    ({"n_levels": 9, "images": {"a": {**GOOD, "sur": [1.0] * 5}}}, "sur has 5 values but the file has n_levels 9"),
    ({"images": {"a": {**GOOD, "jnd_level": 12}}}, r"image 'a': jnd_level must be null or a level 0..9, got 12"),
    ({"images": {"a": {**GOOD, "jnd_level": "3"}}}, "jnd_level must be null or a level"),
    ({"images": {"a": {**GOOD, "jnd_level": True}}}, "jnd_level must be null or a level"),
    ({"n_levels": 0, "images": {}}, "n_levels must be a positive integer"),
]


@pytest.mark.parametrize("doc,problem", BAD, ids=[p for _, p in BAD])
def test_bad_labels_files_are_refused_by_every_reader(tmp_path, doc, problem):
    root = _dataset(tmp_path / "ds")
    path = _labels(root, doc)
    for read in (lambda: read_labels(path), lambda: read_source(f"generated:{root}"),
                 lambda: read_collection(f"generated:{root}")):
        with pytest.raises(ValueError, match=problem) as exc:
            read()
        # the file, the problem and the fix
        assert str(path) in str(exc.value) and "jndplug study aggregate" in str(exc.value)


def test_a_hand_written_file_without_schema_tag_is_read(tmp_path):
    root = _dataset(tmp_path / "ds")
    _labels(root, {"images": {"a": GOOD, "b": {"jnd_level": None, "sur": None}}})
    (rec,) = read_source(f"generated:{root}")  # b is unlabelled, so left out
    assert rec.label_level == 3 and rec.target == level_file(root, "a", 3) and rec.sur == GOOD["sur"]
    assert [i.score for i in read_collection(f"generated:{root}").items] == GOOD["sur"]


def test_level_files_refuse_a_gap_and_training_reads_through_them(tmp_path):
    root = _dataset(tmp_path / "ds", levels=[1, 2, 4, 5])
    with pytest.raises(ValueError, match=r"distorted/a: level files 3.png are missing; rerun `jndplug datagen`"):
        level_files(root, "a")
    _labels(root, {"images": {"a": GOOD}})
    with pytest.raises(ValueError, match="level files 3.png are missing"):
        read_source(f"generated:{root}")
    short = _dataset(tmp_path / "short", levels=[1, 2])
    _labels(short, {"images": {"a": GOOD}})
    with pytest.raises(ValueError, match="labelled at level 3 but .* has only 2 levels"):
        read_source(f"generated:{short}")
    assert level_files(short, "a") == [level_file(short, "a", 1), level_file(short, "a", 2)]
    assert level_files(tmp_path / "none", "a") == []
