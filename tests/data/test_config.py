"""edge.data.config: the dataset YAML, its path resolution and its errors."""

from __future__ import annotations

import logging

import pytest

from edge.data import DatasetConfig, load_config, load_dataset
from edge.errors import DataError
from tests.paths import REPO


def _write(tmp_path, text, name="ds.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


VALID = """
name: tiny
root: data/tiny
format: voc
splits:
  train: ImageSets/Main/train.txt
  test: {file: ImageSets/Main/test.txt, images: other_images}
names: [cat, dog]
"""


def test_valid_yaml_resolves_paths_relative_to_the_yaml(tmp_path):
    (tmp_path / "cfgs").mkdir()
    cfg = DatasetConfig.from_yaml(_write(tmp_path / "cfgs", VALID))
    assert cfg.name == "tiny" and cfg.format == "voc" and cfg.names == ["cat", "dog"]
    assert cfg.root == tmp_path / "cfgs" / "data" / "tiny"
    assert cfg.split_file("train") == cfg.root / "ImageSets/Main/train.txt"
    assert cfg.images_dir("train") == cfg.root / "JPEGImages"
    assert cfg.images_dir("test") == cfg.root / "other_images"
    assert cfg.annotations_dir() == cfg.root / "Annotations"
    again = DatasetConfig.from_dict(cfg.to_dict())
    assert again.root == cfg.root and again.splits == cfg.splits and again.names == cfg.names


def test_absolute_root_and_split_paths(tmp_path):
    text = f"name: a\nroot: {tmp_path / 'x'}\nformat: yolo\nsplits: {{train: {tmp_path / 'list.txt'}}}\nnames: [a]\n"
    cfg = load_config(_write(tmp_path, text))
    assert cfg.root == tmp_path / "x"
    assert cfg.split_file("train") == tmp_path / "list.txt"


def test_names_as_index_mapping_and_nc(tmp_path):
    text = "root: .\nformat: yolo\nsplits: {train: images}\nnc: 2\nnames: {1: dog, 0: cat}\n"
    cfg = load_config(_write(tmp_path, text, "pets.yaml"))
    assert cfg.names == ["cat", "dog"]
    assert cfg.name == "pets"  # defaults to the YAML's stem


def test_coco_names_optional(tmp_path):
    cfg = load_config(_write(tmp_path, "root: .\nformat: coco\nsplits: {val: ann.json}\n"))
    assert cfg.names == []


def test_unknown_keys_warn_not_fail(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        load_config(_write(tmp_path, VALID + "colour: blue\n"))
    assert any("colour" in r.getMessage() for r in caplog.records)


def test_shipped_bccd_yaml_points_at_the_shared_dataset():
    cfg = load_config(REPO / "data" / "bccd.yaml")
    assert cfg.root.resolve() == (REPO.parent / "shared" / "datasets" / "bccd").resolve()
    assert cfg.format == "voc" and cfg.names == ["RBC", "WBC", "Platelets"]
    assert sorted(cfg.splits) == ["test", "train", "trainval", "val"]
    assert cfg.split_file("trainval") == cfg.root / "ImageSets" / "Main" / "trainval.txt"


@pytest.mark.parametrize(
    "text,match",
    [
        ("root: .\nformat: voc\nsplits: {train: t.txt}\nnames: [a]\n: [", "not valid YAML"),
        ("- just\n- a list\n", "expected a mapping"),
        ("format: voc\nsplits: {train: t.txt}\nnames: [a]\n", "no 'root'"),
        ("root: [1, 2]\nformat: voc\nsplits: {train: t.txt}\nnames: [a]\n", "'root' is a list"),
        (
            "root: .\nformat: pascal\nsplits: {train: t.txt}\nnames: [a]\n",
            "format is 'pascal', expected one of voc, coco, yolo",
        ),
        ("root: .\nformat: voc\nnames: [a]\n", "'splits' is None"),
        ("root: .\nformat: voc\nsplits: {}\nnames: [a]\n", "'splits' is {}"),
        ("root: .\nformat: voc\nsplits: {train: 3}\nnames: [a]\n", "split 'train' is 3"),
        ("root: .\nformat: voc\nsplits: {train: {images: x}}\nnames: [a]\n", "split 'train'"),
        ("root: .\nformat: voc\nsplits: {train: t.txt}\n", "needs the class names"),
        ("root: .\nformat: yolo\nsplits: {train: t.txt}\nnames: []\n", "needs the class names"),
        (
            "root: .\nformat: voc\nsplits: {train: t.txt}\nnames: [a, b, a]\n",
            r"\['a'\] appear more than once",
        ),
        ("root: .\nformat: voc\nsplits: {train: t.txt}\nnames: ['a ', b]\n", "class name 0 is 'a '"),
        ("root: .\nformat: voc\nsplits: {train: t.txt}\nnames: [a, null]\n", "class name 1 is None"),
        ("root: .\nformat: voc\nsplits: {train: t.txt}\nnames: a\n", "expected a list of class names"),
        ("root: .\nformat: voc\nsplits: {train: t.txt}\nnames: {0: a, 2: b}\n", "expected 0..1"),
        ("root: .\nformat: voc\nsplits: {train: t.txt}\nnames: [a]\nnc: 3\n", "nc is 3 but 1 names"),
    ],
)
def test_config_errors(tmp_path, text, match):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=match) as info:
        DatasetConfig.from_yaml(path)
    assert str(path) in str(info.value)  # the message names the file to fix


def test_missing_yaml(tmp_path):
    with pytest.raises(DataError, match="missing.yaml does not exist"):
        load_dataset(tmp_path / "missing.yaml", "train")


def test_missing_root_is_a_clear_error(tmp_path):
    path = _write(tmp_path, VALID)
    with pytest.raises(DataError, match=r"dataset root .*data/tiny .*does not exist.*fix 'root'"):
        load_dataset(path, "train")


def test_unknown_split_lists_the_splits(tmp_path):
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    with pytest.raises(DataError, match=r"no split 'val'; available: train, test"):
        load_dataset(_write(tmp_path, VALID), "val")


def test_missing_split_file_names_it(tmp_path):
    (tmp_path / "data" / "tiny").mkdir(parents=True)
    with pytest.raises(DataError, match=r"split file .*ImageSets/Main/train.txt does not exist"):
        load_dataset(_write(tmp_path, VALID), "train")


def test_validate_on_a_hand_built_config(tmp_path):
    from edge.data import SplitSpec

    cfg = DatasetConfig(name="x", root=tmp_path, format="coco", splits={"val": SplitSpec("a.json")})
    cfg.validate()
    cfg.format = "kitti"
    with pytest.raises(DataError, match="format is 'kitti'"):
        cfg.validate()
