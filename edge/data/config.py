"""The dataset YAML: where a dataset lives, its format, its splits and its class names.

Example (``data/bccd.yaml``)::

    name: bccd
    root: ../../shared/datasets/bccd      # relative to this YAML file's folder (or absolute)
    format: voc                           # voc | coco | yolo
    splits:                               # split name -> split file, relative to root (or absolute)
      train: ImageSets/Main/train.txt
      test: ImageSets/Main/test.txt
    names: [RBC, WBC, Platelets]          # class index = position in this list

Split files by format:

- ``voc``: an ImageSets text file of image ids (one per line; a second column, as in VOC's per-class
  files, is ignored). Annotations are ``<root>/<annotations>/<id>.xml`` (default ``Annotations``), images
  ``<root>/<images>/<filename>`` (default ``JPEGImages``).
- ``coco``: an instances JSON. Images are ``<images>/<file_name>``, where ``images`` is the split's own
  ``images`` entry, else the top-level ``images``, else the root. ``names`` is optional: when absent the
  classes are the JSON's categories sorted by id; when given, it picks and orders them by name.
- ``yolo``: a text file listing image paths (relative lines resolve against the list file's folder, then
  against the root), or a folder of images. Labels follow the usual convention: ``.../images/x.jpg`` ->
  ``.../labels/x.txt``, else ``x.txt`` beside the image.

A split may also be a mapping ``{file: ..., images: ...}`` to give that split its own image folder.
``names`` may be a list or an ``{index: name}`` mapping with indices 0..N-1.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

from edge.errors import DataError, MissingDependencyError

log = logging.getLogger(__name__)

FORMATS = ("voc", "coco", "yolo")
_KNOWN_KEYS = ("name", "root", "path", "format", "splits", "names", "nc", "images", "annotations")

PathLike = Union[str, Path]


@dataclass
class SplitSpec:
    """One split: its split file (or YOLO image folder) and optionally its own image folder.

    Paths are as written in the YAML: relative to the dataset root, or absolute.
    """

    file: str
    images: Optional[str] = None


@dataclass
class DatasetConfig:
    """A dataset description; see the module docstring for the YAML form.

    Attributes:
        name: a short name used in logs and reports.
        root: the dataset folder (absolute once loaded from a YAML).
        format: "voc", "coco" or "yolo".
        splits: split name -> SplitSpec.
        names: class names; index = class id. Required for voc and yolo, optional for coco.
        images: image folder relative to root (voc default "JPEGImages"; coco default: the root).
        annotations: VOC annotation folder relative to root (default "Annotations").
        source: the YAML file this came from, if any (for error messages).
    """

    name: str
    root: Path
    format: str
    splits: Dict[str, SplitSpec]
    names: List[str] = field(default_factory=list)
    images: Optional[str] = None
    annotations: Optional[str] = None
    source: Optional[Path] = None

    # ----------------------------------------------------------------- building
    @classmethod
    def from_yaml(cls, path: PathLike) -> DatasetConfig:
        """Read and validate a dataset YAML. A relative ``root`` resolves against the YAML's folder."""
        p = Path(path)
        if not p.is_file():
            raise DataError(
                f"dataset YAML {p} does not exist; pass the path of a dataset description such as "
                "data/bccd.yaml (see edge/data/config.py for the format)"
            )
        try:
            import yaml
        except ImportError as exc:  # pragma: no cover - pyyaml is a core dependency
            raise MissingDependencyError("pyyaml", "dataset YAML files", "pip install pyyaml") from exc
        try:
            with open(p, encoding="utf-8") as f:
                raw = yaml.safe_load(f)
        except yaml.YAMLError as exc:
            raise DataError(f"dataset YAML {p} is not valid YAML: {exc}; fix the syntax") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise DataError(f"dataset YAML {p} cannot be read: {exc}") from None
        if not isinstance(raw, dict):
            raise DataError(
                f"dataset YAML {p} holds a {type(raw).__name__}, expected a mapping with keys "
                "name, root, format, splits, names"
            )
        return cls.from_dict(raw, base_dir=p.resolve().parent, source=p)

    @classmethod
    def from_dict(
        cls, raw: Dict[str, Any], base_dir: Optional[PathLike] = None, source: Optional[PathLike] = None
    ) -> DatasetConfig:
        """Build from a parsed YAML mapping; a relative root resolves against ``base_dir`` (default: cwd)."""
        where = f"dataset YAML {source}" if source else "dataset config"
        unknown = sorted(str(k) for k in raw if k not in _KNOWN_KEYS)
        if unknown:
            log.warning("%s: ignoring unknown keys %s (known: %s)", where, unknown, ", ".join(_KNOWN_KEYS))
        root_value = raw.get("root", raw.get("path"))
        if root_value is None or (isinstance(root_value, str) and not root_value.strip()):
            raise DataError(f"{where}: no 'root' given; add `root: <dataset folder>` (relative to the YAML)")
        if not isinstance(root_value, (str, Path)):
            raise DataError(f"{where}: 'root' is a {type(root_value).__name__}, expected a path string")
        root = Path(root_value).expanduser()
        if not root.is_absolute():
            root = Path(base_dir) / root if base_dir is not None else root.resolve()
        root = Path(os.path.normpath(str(root)))

        splits_raw = raw.get("splits")
        if not isinstance(splits_raw, dict) or not splits_raw:
            raise DataError(
                f"{where}: 'splits' is {splits_raw!r}, expected a mapping of split name -> split file, "
                "e.g. `splits: {train: ImageSets/Main/train.txt}`"
            )
        splits: Dict[str, SplitSpec] = {}
        for split_name, value in splits_raw.items():
            if isinstance(value, str):
                splits[str(split_name)] = SplitSpec(file=value)
            elif isinstance(value, dict) and isinstance(value.get("file"), str):
                images = value.get("images")
                if images is not None and not isinstance(images, str):
                    raise DataError(f"{where}: split {split_name!r} has images={images!r}, expected a path")
                splits[str(split_name)] = SplitSpec(file=value["file"], images=images)
            else:
                raise DataError(
                    f"{where}: split {split_name!r} is {value!r}, expected a path string or "
                    "a mapping {file: <split file>, images: <image folder>}"
                )

        names = _parse_names(raw.get("names"), where)
        nc = raw.get("nc")
        if nc is not None and names and nc != len(names):
            raise DataError(f"{where}: nc is {nc} but {len(names)} names are given; make them agree")

        config = cls(
            name=str(raw.get("name") or (Path(source).stem if source else root.name)),
            root=root,
            format=str(raw.get("format", "")).lower(),
            splits=splits,
            names=names,
            images=raw.get("images"),
            annotations=raw.get("annotations"),
            source=Path(source) if source else None,
        )
        config.validate()
        return config

    # ----------------------------------------------------------------- checks
    def validate(self) -> None:
        """Check the description itself (not the files on disk); raise DataError saying what to fix."""
        where = f"dataset YAML {self.source}" if self.source else f"dataset config {self.name!r}"
        if not isinstance(self.name, str) or not self.name.strip():
            raise DataError(f"{where}: 'name' is empty; give the dataset a short name")
        if self.format not in FORMATS:
            raise DataError(
                f"{where}: format is {self.format!r}, expected one of {', '.join(FORMATS)}; "
                "add e.g. `format: voc`"
            )
        if not self.splits:
            raise DataError(f"{where}: no splits; add `splits: {{train: <split file>}}`")
        for split_name, spec in self.splits.items():
            if not isinstance(spec, SplitSpec) or not isinstance(spec.file, str) or not spec.file.strip():
                raise DataError(f"{where}: split {split_name!r} has no split file; give its path")
        if self.format in ("voc", "yolo") and not self.names:
            raise DataError(
                f"{where}: format {self.format} needs the class names; add `names: [class0, class1, ...]` "
                "in class-index order"
            )
        for i, n in enumerate(self.names):
            if not isinstance(n, str) or not n.strip() or n != n.strip():
                raise DataError(
                    f"{where}: class name {i} is {n!r}; expected a non-empty string without "
                    "leading/trailing spaces"
                )
        dupes = sorted({n for n in self.names if self.names.count(n) > 1})
        if dupes:
            raise DataError(f"{where}: class names {dupes} appear more than once; names must be unique")
        for key in ("images", "annotations"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                raise DataError(f"{where}: '{key}' is {value!r}, expected a folder path relative to root")

    def check_root(self) -> None:
        """Raise DataError if the dataset root folder does not exist."""
        if not self.root.is_dir():
            raise DataError(
                f"dataset root {self.root} (dataset {self.name!r}) does not exist; download the dataset "
                f"there or fix 'root' in {self.source or 'the dataset config'} (a relative root is "
                "resolved against the YAML file's folder)"
            )

    # ----------------------------------------------------------------- paths
    def resolve(self, path: PathLike) -> Path:
        """A path from the YAML resolved against the root (absolute paths stay as they are)."""
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.root / p

    def split_spec(self, split: str) -> SplitSpec:
        if split not in self.splits:
            raise DataError(
                f"dataset {self.name!r} has no split {split!r}; available: {', '.join(self.splits)} "
                f"(defined in {self.source or 'the dataset config'})"
            )
        return self.splits[split]

    def split_file(self, split: str) -> Path:
        """Absolute path of a split's file (or YOLO image folder)."""
        return self.resolve(self.split_spec(split).file)

    def images_dir(self, split: Optional[str] = None) -> Path:
        """The image folder for a split (VOC and COCO)."""
        if split is not None and self.split_spec(split).images:
            return self.resolve(self.split_spec(split).images)
        if self.images:
            return self.resolve(self.images)
        return self.root / "JPEGImages" if self.format == "voc" else self.root

    def annotations_dir(self) -> Path:
        """The VOC annotation folder."""
        return self.resolve(self.annotations or "Annotations")

    def to_dict(self) -> Dict[str, Any]:
        """A plain mapping (absolute root) for sidecars and logs; ``from_dict`` reads it back."""
        out: Dict[str, Any] = {
            "name": self.name,
            "root": str(self.root),
            "format": self.format,
            "splits": {
                k: (v.file if v.images is None else {"file": v.file, "images": v.images})
                for k, v in self.splits.items()
            },
            "names": list(self.names),
        }
        if self.images is not None:
            out["images"] = self.images
        if self.annotations is not None:
            out["annotations"] = self.annotations
        return out


def load_config(path_or_config: Union[PathLike, DatasetConfig]) -> DatasetConfig:
    """A DatasetConfig from a YAML path, or the given config (validated)."""
    if isinstance(path_or_config, DatasetConfig):
        path_or_config.validate()
        return path_or_config
    return DatasetConfig.from_yaml(path_or_config)


def _parse_names(value: Any, where: str) -> List[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        try:
            keys = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            raise DataError(f"{where}: 'names' mapping keys must be class indices 0..N-1") from None
        if keys != list(range(len(keys))):
            raise DataError(f"{where}: 'names' mapping has indices {keys}, expected 0..{len(keys) - 1}")
        by_index = {int(k): v for k, v in value.items()}
        value = [by_index[i] for i in keys]
    if not isinstance(value, list):
        raise DataError(f"{where}: 'names' is {value!r}, expected a list of class names")
    return [v if isinstance(v, str) else str(v) if isinstance(v, (int, float)) else v for v in value]
