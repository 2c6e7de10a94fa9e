"""The layout of a JND dataset, which ``jndplug datagen`` writes and every later stage reads.

::

    DATASET/originals/<id>.png          the original
    DATASET/distorted/<id>/<level>.png  levels 1..N_LEVELS, distortion increasing
    DATASET/manifest.json               written by datagen (optional for readers)
    DATASET/labels.json                 the study's labels (or DATASET/study/labels.json)

When ``manifest.json`` is present its image ids and order are used, otherwise ids are the stems
of the files in ``originals/``.

The labels file (``jndplug study aggregate`` writes it; :func:`read_labels` checks it)::

    {"schema": "jndplug-labels-v1", "n_levels": 9,
     "images": {"<id>": {"jnd_level": 3, "sur": [1.0, 0.95, ...], ...}, ...}, ...}

``jnd_level`` is null (the study could not label the image) or a level 0..n; ``sur`` is null or
one satisfied-user ratio in [0, 1] per level. Other keys are the study's own and not checked. A
hand-written file may leave out ``schema`` and ``n_levels``.
"""

from __future__ import annotations

import json
from pathlib import Path

from jndplug.errors import JNDPlugValueError
from jndplug.imageio import IMAGE_EXTENSIONS

N_LEVELS = 9
LABELS_SCHEMA = "jndplug-labels-v1"


def original_file(root: str | Path, image: str) -> Path:
    """Where datagen writes the original of ``image``."""
    return Path(root) / "originals" / f"{image}.png"


def level_file(root: str | Path, image: str, level: int) -> Path:
    """Where datagen writes distortion level ``level`` (1-based) of ``image``."""
    return Path(root) / "distorted" / image / f"{level}.png"


def level_files(root: str | Path, image: str) -> list[Path]:
    """The level files of ``image`` on disk, weakest first; any count, but no gap in 1..n."""
    folder = Path(root) / "distorted" / image
    found = sorted(int(p.stem) for p in folder.glob("*.png") if p.stem.isdigit())
    missing = sorted(set(range(1, max(found, default=0) + 1)) - set(found))
    if missing:
        raise JNDPlugValueError(f"{folder}: level files {', '.join(f'{k}.png' for k in missing)} are missing; "
                         "rerun `jndplug datagen` into the same folder to rebuild them")
    return [level_file(root, image, k) for k in found]


def labels_candidates(root: str | Path, labels: str | Path | None = None) -> list[Path]:
    """The labels files a ``generated:DATASET[,LABELS]`` spec means, in the order they are tried."""
    root = Path(root)
    return [Path(labels)] if labels else [root / "labels.json", root / "study" / "labels.json"]


def find_labels(root: str | Path, labels: str | Path | None = None, spec: str = "") -> Path:
    """The labels file of ``generated:DATASET[,LABELS]``: the first of :func:`labels_candidates` that exists."""
    candidates = labels_candidates(root, labels)
    found = next((p for p in candidates if p.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"{spec or root}: no labels file at {', '.join(map(str, candidates))} (run "
                                "`jndplug study simulate` and `jndplug study aggregate` on the dataset first)")
    return found


def read_labels(path: str | Path) -> dict:
    """The labels document at ``path``, its schema checked (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such labels file: {path}")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise JNDPlugValueError(f"{path}: not valid JSON ({exc}); rewrite it with `jndplug study aggregate`") from None
    _check_labels(doc, path)
    return doc


def _check_labels(doc, path: Path) -> None:
    rewrite = "; fix it or rewrite the file with `jndplug study aggregate`"
    if not isinstance(doc, dict):
        raise JNDPlugValueError(f"{path}: a labels file is a JSON object with an 'images' mapping, "
                         f"got a JSON {type(doc).__name__}{rewrite}")
    if doc.get("schema", LABELS_SCHEMA) != LABELS_SCHEMA:
        raise JNDPlugValueError(f"{path}: schema {doc['schema']!r} is not {LABELS_SCHEMA!r}, the one this jndplug "
                         f"reads{rewrite}")
    n = doc.get("n_levels")
    if n is not None and not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise JNDPlugValueError(f"{path}: n_levels must be a positive integer, got {n!r}{rewrite}")
    images = doc.get("images")
    if not isinstance(images, dict):
        raise JNDPlugValueError(f"{path}: not a jndplug labels file (no 'images' mapping of image id to label)"
                         f"{rewrite}")
    for image, entry in images.items():
        where = f"{path}: image {image!r}"
        if not isinstance(entry, dict):
            raise JNDPlugValueError(f"{where}: the label must be an object with jnd_level and sur, got {entry!r:.60}"
                             f"{rewrite}")
        sur = entry.get("sur")
        if sur is not None:
            if not (isinstance(sur, list) and sur and all(_is_ratio(v) for v in sur)):
                raise JNDPlugValueError(f"{where}: sur must be null or a list of ratios in [0, 1], one per level, "
                                 f"got {sur!r:.60}{rewrite}")
            if n is not None and len(sur) != n:
                raise JNDPlugValueError(f"{where}: sur has {len(sur)} values but the file has n_levels {n}{rewrite}")
        top = n if n is not None else len(sur) if sur else None
        level = entry.get("jnd_level")
        if level is not None and not (isinstance(level, int) and not isinstance(level, bool) and level >= 0
                                      and (top is None or level <= top)):
            raise JNDPlugValueError(f"{where}: jnd_level must be null or a level 0..{top if top is not None else 'n'}, "
                             f"got {level!r:.60}{rewrite}")


def _is_ratio(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v <= 1


class JNDDataset:
    def __init__(self, root: str | Path, n_levels: int = N_LEVELS):
        # absolute from the start: the web study hands these paths to Flask, which would resolve a
        # relative one against the package folder, not the folder the command was started in
        self.root = Path(root).resolve()
        self.n_levels = n_levels
        if not self.root.is_dir():
            raise FileNotFoundError(f"no such dataset folder: {self.root}")
        if not (self.root / "originals").is_dir():
            raise FileNotFoundError(f"{self.root} is not a JND dataset: it has no originals/ folder")
        self.ids = self._ids()
        if not self.ids:
            raise JNDPlugValueError(f"{self.root}: no images in originals/")
        problems = []
        for i in self.ids:
            missing = [lvl for lvl in range(1, n_levels + 1) if not self.level_path(i, lvl).is_file()]
            if missing:
                problems.append(f"{i} (levels {', '.join(map(str, missing))})")
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise JNDPlugValueError(f"{self.root}: distorted images missing for {shown}")

    def _ids(self) -> list[str]:
        manifest = self.root / "manifest.json"
        if manifest.is_file():
            try:
                doc = json.loads(manifest.read_text())
            except json.JSONDecodeError as exc:
                raise JNDPlugValueError(f"{manifest}: not valid JSON ({exc})") from None
            entries = doc.get("images", doc) if isinstance(doc, dict) else doc
            if isinstance(entries, dict):  # {id: entry}
                ids = [str(k) for k in entries]
            elif isinstance(entries, list):
                ids = [str(e["id"]) for e in entries if isinstance(e, dict) and "id" in e]
            else:
                ids = []
            if ids:
                return ids
        return sorted(p.stem for p in (self.root / "originals").iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))

    def original_path(self, image: str) -> Path:
        for ext in (".png",) + IMAGE_EXTENSIONS:
            p = self.root / "originals" / f"{image}{ext}"
            if p.is_file():
                return p
        raise FileNotFoundError(f"{self.root}: no original for image {image!r} in originals/")

    def level_path(self, image: str, level: int) -> Path:
        """Path of the image shown at ``level`` (0 is the original itself)."""
        if level == 0:
            return self.original_path(image)
        if not 1 <= level <= self.n_levels:
            raise JNDPlugValueError(f"level must be 0..{self.n_levels}, got {level}")
        return level_file(self.root, image, level)

    @property
    def study_dir(self) -> Path:
        return self.root / "study"
