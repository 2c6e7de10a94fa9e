"""The layout of a JND dataset, which ``jndplug datagen`` writes and every later stage reads.

::

    DATASET/originals/<id>.png          the original
    DATASET/distorted/<id>/<level>.png  levels 1..N_LEVELS, distortion increasing
    DATASET/manifest.json               written by datagen (optional for readers)
    DATASET/labels.json                 the study's labels (or DATASET/study/labels.json)

When ``manifest.json`` is present its image ids and order are used, otherwise ids are the stems
of the files in ``originals/``.
"""

from __future__ import annotations

import json
from pathlib import Path

from jndplug.imageio import IMAGE_EXTENSIONS

N_LEVELS = 9


def original_file(root: str | Path, image: str) -> Path:
    """Where datagen writes the original of ``image``."""
    return Path(root) / "originals" / f"{image}.png"


def level_file(root: str | Path, image: str, level: int) -> Path:
    """Where datagen writes distortion level ``level`` (1-based) of ``image``."""
    return Path(root) / "distorted" / image / f"{level}.png"


def labels_candidates(root: str | Path, labels: str | Path | None = None) -> list[Path]:
    """The labels files a ``generated:DATASET[,LABELS]`` spec means, in the order they are tried."""
    root = Path(root)
    return [Path(labels)] if labels else [root / "labels.json", root / "study" / "labels.json"]


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
            raise ValueError(f"{self.root}: no images in originals/")
        problems = []
        for i in self.ids:
            missing = [lvl for lvl in range(1, n_levels + 1) if not self.level_path(i, lvl).is_file()]
            if missing:
                problems.append(f"{i} (levels {', '.join(map(str, missing))})")
        if problems:
            shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
            raise ValueError(f"{self.root}: distorted images missing for {shown}")

    def _ids(self) -> list[str]:
        manifest = self.root / "manifest.json"
        if manifest.is_file():
            try:
                doc = json.loads(manifest.read_text())
            except json.JSONDecodeError as exc:
                raise ValueError(f"{manifest}: not valid JSON ({exc})") from None
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
            raise ValueError(f"level must be 0..{self.n_levels}, got {level}")
        return level_file(self.root, image, level)

    @property
    def study_dir(self) -> Path:
        return self.root / "study"
