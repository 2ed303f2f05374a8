"""Every default of the training recipe and the test protocol names the reference it follows."""

from __future__ import annotations

import inspect
import re
from dataclasses import fields
from pathlib import Path

import pytest

from tsnpipe.stages.scores import protocol
from tsnpipe.stages.train import recipe
from tsnpipe.stages.train.recipe import TrainParams, modality_defaults

SOURCES = ("tsn-pytorch", "Caffe TSN", "TSN paper", "mmaction2", "tsnpipe")
README = Path(__file__).resolve().parents[1] / "README.md"


def comments(source: str) -> dict[str, str]:
    """name -> trailing comment of each `name: type = value  # comment` or `NAME = value  # comment` line."""
    found = {}
    for line in source.splitlines():
        match = re.match(r"\s*(\w+)\s*(?::[^=]+)?=.*?#\s*(.+)$", line)
        if match:
            found[match[1]] = match[2]
    return found


def test_every_training_default_names_its_source():
    found = comments(inspect.getsource(TrainParams))
    recipe_fields = [f.name for f in fields(TrainParams) if f.name not in ("modality", "split_dir", "store")]
    missing = [name for name in recipe_fields if not any(s in found.get(name, "") for s in SOURCES)]
    assert not missing, f"defaults without a named source: {missing}"


@pytest.mark.parametrize("modality", ["rgb", "rgbdiff", "flow"])
def test_every_modality_recipe_names_its_source(modality):
    source = inspect.getsource(modality_defaults)
    line = next(line for line in source.splitlines() if f'modality == "{modality}"' in line)
    assert "tsn-pytorch README" in line
    assert modality_defaults(modality)["lr"] == 0.001


def test_every_test_protocol_default_names_its_source():
    found = comments(inspect.getsource(protocol))
    assert set(found) == {"TEST_SEGMENTS", "TEST_CROPS", "TEST_AVERAGE", "CLIP_TEST_CLIPS", "CLIP_TEST_CROPS"}
    tsn = [name for name in found if name.startswith("TEST_")]
    assert all("tsn-pytorch" in found[name] and "Caffe TSN" in found[name] for name in tsn)
    assert "R(2+1)D paper" in found["CLIP_TEST_CLIPS"] and "mmaction2" in found["CLIP_TEST_CROPS"]
    assert (protocol.TEST_SEGMENTS, protocol.TEST_CROPS, protocol.TEST_AVERAGE) == (25, "10", "raw")
    assert "tsn-pytorch" in inspect.getsource(recipe).split('"""')[1]


def test_readme_tables_of_the_recipe_and_the_protocol_name_their_reference():
    text = README.read_text()
    for header in ("| | rgb | rgbdiff | flow | reference |", "| test default | value | reference |"):
        assert header in text
        rows = text.split(header)[1].split("\n\n")[0].strip().splitlines()[1:]
        assert rows and all(any(s in row.split("|")[-2] for s in SOURCES) for row in rows), rows
