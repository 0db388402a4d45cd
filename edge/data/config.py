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

A split may also be a list of such files/folders (voc and yolo: their images in order), or a mapping
``{file: ..., images: ...}`` to give that split its own image folder. ``names`` may be a list or an
``{index: name}`` mapping with indices 0..N-1; ``nc`` (optional) must equal the number of names.

Fractions instead of split files (voc and yolo, for a dataset that has none)::

    root: my-photos
    format: voc
    images: images            # image folder under root (voc default JPEGImages; yolo default images)
    annotations: annotations  # VOC XML folder under root (default Annotations)
    splits: {train: 0.7, val: 0.15, test: 0.15}
    seed: 0                   # the shuffle's seed (default 0)
    names: [bird]

The pool (VOC: the ids of ``<annotations>/*.xml``; YOLO: the images under ``<images>``) is sorted and
shuffled with ``seed`` (``edge.data.splits``); each split takes the next share, in the order written.
Either every split is a fraction or none is; the fractions are each in (0, 1] and sum to at most 1.

The ultralytics/Roboflow form is read as it is: ``path`` (the root; relative to the YAML's folder, or
absolute; default the YAML's folder), top-level ``train``/``val``/``test`` (an image folder, a list
file, or a list of them; empty means absent), ``names``, ``nc``; the format defaults to ``yolo``.
``download`` and ``roboflow`` entries are ignored.

Every problem of a YAML (bad keys, values, names, fractions; with ``check_files``, missing folders and
split files) is reported at once, in one ``DataError``.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from edge.errors import DataError, MissingDependencyError

log = logging.getLogger(__name__)

FORMATS = ("voc", "coco", "yolo")
#: the ultralytics/Roboflow form's top-level split keys
TOP_LEVEL_SPLITS = ("train", "val", "test")
_KNOWN_KEYS = ("name", "root", "path", "format", "splits", "names", "nc", "images", "annotations", "seed",
               *TOP_LEVEL_SPLITS)
#: keys of the ultralytics/Roboflow form that say nothing edge reads (a download URL, Roboflow's project
#: record): accepted without a warning
_IGNORED_KEYS = ("download", "roboflow")
#: the fractions may sum to 1 + this (0.7 + 0.15 + 0.15 in floating point)
FRACTION_EPS = 1e-6

PathLike = Union[str, Path]

_SPLIT_FILE = {"voc": "split file", "yolo": "YOLO split file", "coco": "COCO annotation file"}
_SPLIT_EXPECTED = {"voc": "a text file with one image id per line (VOC ImageSets/Main/<split>.txt)",
                   "yolo": "a text file of image paths or a folder of images",
                   "coco": "an instances JSON"}
_IMAGE_FOLDER = {"voc": "VOC image", "coco": "COCO image", "yolo": "YOLO image"}


@dataclass
class SplitSpec:
    """One split: its split file (or YOLO image folder) and optionally its own image folder.

    Paths are as written in the YAML: relative to the dataset root, or absolute. ``more``: further split
    files/folders (a list in the YAML). ``fraction``: the split is this share of the dataset's images
    (``file`` is then empty; see ``edge.data.splits``).
    """

    file: str = ""
    images: Optional[str] = None
    more: List[str] = field(default_factory=list)
    fraction: Optional[float] = None

    @property
    def files(self) -> List[str]:
        """Every split file/folder of the split, in order ([] for a fraction)."""
        return [f for f in [self.file, *self.more] if f]


@dataclass
class DatasetConfig:
    """A dataset description; see the module docstring for the YAML form.

    Attributes:
        name: a short name used in logs and reports.
        root: the dataset folder (absolute once loaded from a YAML).
        format: "voc", "coco" or "yolo".
        splits: split name -> SplitSpec.
        names: class names; index = class id. Required for voc and yolo, optional for coco.
        images: image folder relative to root (voc default "JPEGImages"; coco default: the root; yolo
            fractions default "images").
        annotations: VOC annotation folder relative to root (default "Annotations").
        seed: the shuffle seed of fraction splits (and of training's validation carve).
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
    seed: int = 0

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
        """Build from a parsed YAML mapping; a relative root resolves against ``base_dir`` (default: cwd).

        Raises one DataError listing every problem found (see ``report_problems``)."""
        where = f"dataset YAML {source}" if source else "dataset config"
        unknown = sorted(str(k) for k in raw if k not in _KNOWN_KEYS and k not in _IGNORED_KEYS)
        problems: List[str] = []
        top_level = "splits" not in raw and any(k in raw for k in TOP_LEVEL_SPLITS)
        root = _parse_root(raw, base_dir, top_level, problems)
        before = len(problems)
        if top_level:
            splits = _parse_top_level_splits(raw, root, problems)
        else:
            splits = _parse_splits(raw.get("splits"), problems)
            both = [k for k in TOP_LEVEL_SPLITS if k in raw]
            if both and "splits" in raw:
                problems.append(f"splits are given twice, under 'splits' and as top-level {both}; keep one form")
        splits_reported = len(problems) > before
        before = len(problems)
        names = _parse_names(raw.get("names"), problems)
        names_reported = len(problems) > before
        nc = raw.get("nc")
        if nc is not None:
            if isinstance(nc, bool) or not isinstance(nc, int):
                problems.append(f"nc is {nc!r}, expected the number of classes (an integer)")
            elif names and nc != len(names):
                problems.append(f"nc is {nc} but {len(names)} names are given; make them agree")
        fmt = raw.get("format", "yolo" if top_level else "")
        config = cls(
            name=str(raw.get("name") or (Path(source).stem if source else (root.name if root else ""))),
            root=root if root is not None else Path("."),
            format=str(fmt or "").lower(),
            splits=splits,
            names=names,
            images=raw.get("images"),
            annotations=raw.get("annotations"),
            source=Path(source) if source else None,
            seed=raw.get("seed", 0),
        )
        problems.extend(p for p in config.problems() if not (splits_reported and p.startswith("no splits"))
                        and not (names_reported and "needs the class names" in p))
        report_problems(where, problems, unknown)
        if unknown:
            log.warning("%s: ignoring unknown keys %s (known: %s)", where, unknown, ", ".join(_KNOWN_KEYS))
        return config

    # ----------------------------------------------------------------- checks
    def problems(self) -> List[str]:
        """What is wrong with the description itself (not the files on disk), one sentence each."""
        out: List[str] = []
        if not isinstance(self.name, str) or not self.name.strip():
            out.append("'name' is empty; give the dataset a short name")
        if self.format not in FORMATS:
            out.append(f"format is {self.format!r}, expected one of {', '.join(FORMATS)}; add e.g. `format: voc`")
        if not self.splits:
            out.append("no splits; add `splits: {train: <split file>}`")
        for split_name, spec in self.splits.items():
            if not isinstance(spec, SplitSpec) or (spec.fraction is None and not all(
                    isinstance(f, str) and f.strip() for f in [spec.file, *spec.more])):
                out.append(f"split {split_name!r} has no split file; give its path")
            elif spec.more and self.format == "coco":
                out.append(f"split {split_name!r} lists {len(spec.files)} files; a coco split is one instances "
                           "JSON (lists work for voc and yolo)")
        out.extend(self._fraction_problems())
        if self.format in ("voc", "yolo") and not self.names:
            out.append(f"format {self.format} needs the class names; add `names: [class0, class1, ...]` "
                       "in class-index order")
        for i, n in enumerate(self.names):
            if not isinstance(n, str) or not n.strip() or n != n.strip():
                out.append(f"class name {i} is {n!r}; expected a non-empty string without leading/trailing spaces")
        dupes = sorted({n for n in self.names if isinstance(n, str) and self.names.count(n) > 1})
        if dupes:
            out.append(f"class names {dupes} appear more than once; names must be unique")
        for key in ("images", "annotations"):
            value = getattr(self, key)
            if value is not None and not isinstance(value, str):
                out.append(f"'{key}' is {value!r}, expected a folder path relative to root")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            out.append(f"seed is {self.seed!r}, expected an integer >= 0 (the split shuffle's seed)")
        return out

    def _fraction_problems(self) -> List[str]:
        fractions = {k: s.fraction for k, s in self.splits.items()
                     if isinstance(s, SplitSpec) and s.fraction is not None}
        if not fractions:
            return []
        out = [f"split {k!r} is {v!r}: a fraction must be in (0, 1]" for k, v in fractions.items()
               if not (isinstance(v, (int, float)) and math.isfinite(v) and 0 < v <= 1)]
        total = sum(v for v in fractions.values() if isinstance(v, (int, float)) and math.isfinite(v))
        if not out and total > 1 + FRACTION_EPS:
            listed = ", ".join(f"{k} {v:g}" for k, v in fractions.items())
            out.append(f"the split fractions sum to {total:g} ({listed}); they must sum to at most 1")
        files = sorted(set(self.splits) - set(fractions))
        if files:
            out.append(f"splits {sorted(fractions)} are fractions but {files} are files; give every split as a "
                       "fraction, or every split as a file")
        if self.format == "coco":
            out.append("fraction splits work for voc and yolo; a coco dataset needs one instances JSON per split")
        return out

    def validate(self) -> None:
        """Check the description itself (not the files on disk); raise one DataError listing every problem."""
        where = f"dataset YAML {self.source}" if self.source else f"dataset config {self.name!r}"
        report_problems(where, self.problems())

    def disk_problems(self) -> List[str]:
        """What the description points at that is not on disk: the root, split files, image and annotation
        folders (of every split, not just the one loaded)."""
        if not self.root.is_dir():
            return [f"dataset root {self.root} (dataset {self.name!r}) does not exist; download the dataset there or "
                    f"fix 'root' in {self.source or 'the dataset config'} (a relative root is resolved against the "
                    "YAML file's folder)"]
        out: List[str] = []
        for split_name, spec in self.splits.items():
            for f in spec.files:
                p = self.resolve(f)
                if self.format in FORMATS and not (p.exists() if self.format == "yolo" else p.is_file()):
                    out.append(f"{_SPLIT_FILE[self.format]} {p} does not exist (split {split_name!r}); expected "
                               f"{_SPLIT_EXPECTED[self.format]}: create it or fix the split's path")
            if spec.images and not self.resolve(spec.images).is_dir():
                out.append(f"{_IMAGE_FOLDER.get(self.format, 'image')} folder {self.resolve(spec.images)} "
                           f"does not exist (split {split_name!r}); fix the split's 'images:'")
        fractions = any(s.fraction is not None for s in self.splits.values())
        folders: List[Tuple[str, Path, str]] = []
        if self.format == "voc":
            folders = [("VOC annotation", self.annotations_dir(), "annotations: (default Annotations)"),
                       ("VOC image", self.images_dir(), "images: (default JPEGImages)")]
            if all(s.images for s in self.splits.values()):  # every split reads its own image folder
                folders = folders[:1]
        elif self.format == "yolo" and fractions:
            folders = [("YOLO image", self.pool_dir(), "images: (default images)")]
        elif self.images and any(not s.images for s in self.splits.values()):  # a folder some split reads
            folders = [(_IMAGE_FOLDER.get(self.format, "image"), self.images_dir(), "images:")]
        for what, folder, key in folders:
            if not folder.is_dir():
                out.append(f"{what} folder {folder} does not exist; fix 'root' or set '{key}' in the dataset YAML")
        return out

    def check_files(self) -> None:
        """Raise one DataError listing every problem of the description and on disk."""
        where = f"dataset YAML {self.source}" if self.source else f"dataset config {self.name!r}"
        report_problems(where, self.problems() + self.disk_problems())

    def check_root(self) -> None:
        """Raise DataError if the dataset root folder does not exist."""
        if not self.root.is_dir():
            raise DataError(self.disk_problems()[0])

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
        """Absolute path of a split's (first) file (or YOLO image folder)."""
        return self.resolve(self.split_spec(split).file)

    def split_files(self, split: str) -> List[Path]:
        """Absolute paths of every file (or YOLO image folder) of a split ([] for a fraction split)."""
        return [self.resolve(f) for f in self.split_spec(split).files]

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

    def pool_dir(self) -> Path:
        """The folder whose images fraction splits share out (YOLO): ``images`` (default ``<root>/images``)."""
        return self.resolve(self.images or "images")

    @property
    def has_fractions(self) -> bool:
        return any(s.fraction is not None for s in self.splits.values())

    def to_dict(self) -> Dict[str, Any]:
        """A plain mapping (absolute root) for sidecars and logs; ``from_dict`` reads it back."""
        out: Dict[str, Any] = {
            "name": self.name,
            "root": str(self.root),
            "format": self.format,
            "splits": {k: _spec_to_yaml(v) for k, v in self.splits.items()},
            "names": list(self.names),
        }
        if self.images is not None:
            out["images"] = self.images
        if self.annotations is not None:
            out["annotations"] = self.annotations
        if self.seed or self.has_fractions:
            out["seed"] = self.seed
        return out


def load_config(path_or_config: Union[PathLike, DatasetConfig]) -> DatasetConfig:
    """A DatasetConfig from a YAML path, or the given config (validated)."""
    if isinstance(path_or_config, DatasetConfig):
        path_or_config.validate()
        return path_or_config
    return DatasetConfig.from_yaml(path_or_config)


def report_problems(where: str, problems: Sequence[str], unknown: Sequence[str] = ()) -> None:
    """Raise one DataError listing every problem (nothing when there is none): one line for a single
    problem, else a count and one line each. Unknown keys (often a misspelt key behind the problems) are
    named beside them."""
    if not problems:
        return
    note = f"unknown keys {list(unknown)} were ignored (known: {', '.join(_KNOWN_KEYS)})" if unknown else ""
    if len(problems) == 1 and not note:
        raise DataError(f"{where}: {problems[0]}")
    lines = [f"{where}: {len(problems)} problem{'s' if len(problems) > 1 else ''}; fix them all:"]
    lines += [f"  - {p}" for p in problems]
    if note:
        lines.append(f"  note: {note}")
    raise DataError("\n".join(lines))


def _spec_to_yaml(spec: SplitSpec) -> Any:
    if spec.fraction is not None:
        return spec.fraction
    files: Any = spec.file if not spec.more else spec.files
    return files if spec.images is None else {"file": files, "images": spec.images}


def _parse_root(raw: Dict[str, Any], base_dir: Optional[PathLike], top_level: bool,
                problems: List[str]) -> Optional[Path]:
    """The root: ``root`` (or ultralytics' ``path``) resolved against ``base_dir``; in the ultralytics form
    without either, ``base_dir`` itself."""
    root_value = raw.get("root", raw.get("path"))
    if root_value is None or (isinstance(root_value, str) and not root_value.strip()):
        if top_level:
            root_value = "."
        else:
            problems.append("no 'root' given; add `root: <dataset folder>` (relative to the YAML)")
            return None
    if not isinstance(root_value, (str, Path)):
        problems.append(f"'root' is a {type(root_value).__name__}, expected a path string")
        return None
    root = Path(root_value).expanduser()
    if not root.is_absolute():
        root = Path(base_dir) / root if base_dir is not None else root.resolve()
    return Path(os.path.normpath(str(root)))


def _parse_split_value(split_name: str, value: Any, problems: List[str]) -> Optional[SplitSpec]:
    def file_list(v: Any) -> Optional[List[str]]:
        if isinstance(v, (str, Path)):
            return [str(v)]
        if isinstance(v, list) and v and all(isinstance(x, (str, Path)) for x in v):
            return [str(x) for x in v]
        return None

    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return SplitSpec(fraction=float(value))
    files = file_list(value)
    if files is not None:
        return SplitSpec(file=files[0], more=files[1:])
    if isinstance(value, dict) and file_list(value.get("file")) is not None:
        files = file_list(value.get("file")) or []
        images = value.get("images")
        if images is not None and not isinstance(images, str):
            problems.append(f"split {split_name!r} has images={images!r}, expected a path")
            return None
        return SplitSpec(file=files[0], images=images, more=files[1:])
    problems.append(
        f"split {split_name!r} is {value!r}, expected a path string, a list of paths, a fraction in (0, 1], or "
        "a mapping {file: <split file>, images: <image folder>}"
    )
    return None


def _parse_splits(splits_raw: Any, problems: List[str]) -> Dict[str, SplitSpec]:
    if not isinstance(splits_raw, dict) or not splits_raw:
        problems.append(
            f"'splits' is {splits_raw!r}, expected a mapping of split name -> split file (or fraction), e.g. "
            "`splits: {train: ImageSets/Main/train.txt}`, or top-level train:/val:/test: keys (ultralytics form)"
        )
        return {}
    splits: Dict[str, SplitSpec] = {}
    for split_name, value in splits_raw.items():
        spec = _parse_split_value(str(split_name), value, problems)
        if spec is not None:
            splits[str(split_name)] = spec
    return splits


def _parse_top_level_splits(raw: Dict[str, Any], root: Optional[Path], problems: List[str]) -> Dict[str, SplitSpec]:
    """The ultralytics form's ``train``/``val``/``test`` (an empty value: no such split). A relative
    ``../x`` that does not exist under the root but ``x`` does is read as ``x``, as ultralytics does for
    Roboflow's exports (``train: ../train/images`` beside ``data.yaml``)."""
    splits: Dict[str, SplitSpec] = {}
    for split_name in TOP_LEVEL_SPLITS:
        value = raw.get(split_name)
        if value is None:
            continue
        if root is not None and isinstance(value, (str, list)):
            value = [_roboflow_path(root, v) for v in value] if isinstance(value, list) else _roboflow_path(root, value)
        spec = _parse_split_value(split_name, value, problems)
        if spec is not None:
            splits[split_name] = spec
    return splits


def _roboflow_path(root: Path, value: Any) -> Any:
    if isinstance(value, str) and value.startswith("../") and not (root / value).exists() \
            and (root / value[3:]).exists():
        return value[3:]
    return value


def _parse_names(value: Any, problems: List[str]) -> List[str]:
    if value is None:
        return []
    if isinstance(value, dict):
        try:
            keys = sorted(int(k) for k in value)
        except (TypeError, ValueError):
            problems.append(f"'names' mapping keys {list(value)} must be class indices 0..N-1")
            return []
        if keys != list(range(len(keys))):
            problems.append(f"'names' mapping has indices {keys}, expected 0..{len(keys) - 1} (each once)")
            return []
        by_index = {int(k): v for k, v in value.items()}
        value = [by_index[i] for i in keys]
    if not isinstance(value, list):
        problems.append(f"'names' is {value!r}, expected a list of class names")
        return []
    return [v if isinstance(v, str) else str(v) if isinstance(v, (int, float)) else v for v in value]
