"""Readers that turn a dataset on disk into (original, JND target) records.

``--data KIND:PATH`` selects one; several may be combined. Each reader states its layout
assumptions in its docstring, and the folder names it looks for can be changed through the
``layouts`` section of the training config, because third-party datasets are reorganised by the
people who download them.

KINDS:
- ``generated``: a dataset built by ``jndplug datagen`` and labelled by ``jndplug study``
  (nine levels per image, per-image SUR curves: supports SUR-conditioned training);
- ``cnnjnd``: the public CNN-Oriented JND Dataset (Shen et al., IEEE TMM 2025) as downloaded;
- ``cplset``: ResJND's CPL-Set, pristine images and their critical-perceptual-lossless images;
- ``pairs``: any two folders of matching original/target files, ``pairs:ORIG_DIR,TARGET_DIR``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from jndplug.data.layout import find_labels, level_files, original_file, read_labels
from jndplug.data.specs import parse_spec
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import list_images

KINDS = ("generated", "cnnjnd", "cplset", "pairs")

DEFAULT_LAYOUTS = {
    # folder names searched case-insensitively, first match wins
    "cnnjnd": {"pair_dir": ["Original_JND_Pair", "original_jnd_pair", "."],
               "original": ["original", "originals", "ori", "ref", "reference"],
               "jnd": ["JND", "jnd", "jnd_images", "JND_images"]},
    "cplset": {"original": ["pristine", "original", "originals", "ref", "reference", "src"],
               "jnd": ["CPL", "cpl", "cpl_images", "CPL_images", "target"]},
}


@dataclass
class Record:
    """One image: its original and what the estimator should learn to produce from it."""

    id: str
    original: Path
    target: Path | None = None  # the JND (or CPL) image; None means the original itself
    levels: list[Path] = field(default_factory=list)  # distorted versions, weakest first
    label_level: int | None = None  # 0..len(levels): strongest level people do not notice
    sur: list[float] | None = None  # satisfied-user ratio at each level
    source: str = ""

    def level_for_sur(self, p: float) -> int:
        """Strongest level at which at least a fraction ``p`` of people notice nothing (0: none)."""
        if not self.sur:
            raise JNDPlugValueError(f"{self.id}: no SUR curve (SUR conditioning needs --data generated:...)")
        from jndplug.study.labels import level_for_sur

        return level_for_sur(self.sur, p)

    def image_at(self, level: int) -> Path:
        return self.original if level == 0 else self.levels[level - 1]


def read_source(spec: str, layouts: dict | None = None) -> list[Record]:
    kind, path = parse_spec(spec, KINDS, "--data")
    lay = {**DEFAULT_LAYOUTS.get(kind, {}), **((layouts or {}).get(kind) or {})}
    records = {"generated": read_generated, "cnnjnd": read_cnnjnd, "cplset": read_cplset,
               "pairs": read_pairs}[kind](path, lay)
    if not records:
        raise JNDPlugValueError(f"--data {spec}: no image pairs found")
    for r in records:
        r.source = spec
    return records


def _find_dir(root: Path, names: list[str], what: str, spec: str) -> Path:
    children = {p.name.lower(): p for p in root.iterdir() if p.is_dir()} if root.is_dir() else {}
    for name in names:
        if name == ".":
            return root
        if name.lower() in children:
            return children[name.lower()]
    raise FileNotFoundError(f"{spec}: no {what} folder under {root} (looked for {', '.join(names)}); "
                            f"set layouts in the training config if yours is named differently")


def _match_by_stem(originals: list[Path], targets: list[Path], spec: str) -> list[tuple[str, Path, Path]]:
    by_stem = {}
    for t in targets:
        by_stem.setdefault(t.stem, t)
    pairs, unmatched = [], []
    for o in originals:
        t = by_stem.get(o.stem)
        if t is None:
            unmatched.append(o.name)
        else:
            pairs.append((o.stem, o, t))
    if unmatched:
        raise JNDPlugValueError(f"{spec}: {len(unmatched)} originals have no target with the same name "
                                f"(e.g. {', '.join(unmatched[:3])})")
    return pairs


def read_pairs(path: str, layout: dict) -> list[Record]:
    """``pairs:ORIG_DIR,TARGET_DIR``: files matched by name without extension (recursively)."""
    orig_dir, sep, target_dir = path.partition(",")
    if not sep:
        raise JNDPlugValueError(f"pairs:{path}: expected pairs:ORIG_DIR,TARGET_DIR")
    originals, targets = list_images(orig_dir), list_images(target_dir)
    return [Record(id=i, original=o, target=t) for i, o, t in _match_by_stem(originals, targets, f"pairs:{path}")]


def read_cplset(path: str, layout: dict) -> list[Record]:
    """CPL-Set: ``PATH/<pristine>/<name>`` and ``PATH/<CPL>/<name>``, matched by file stem.

    The released CPL-Set names its folders for pristine and CPL images; the default names tried
    are in ``DEFAULT_LAYOUTS['cplset']``.
    """
    root = Path(path)
    spec = f"cplset:{path}"
    o = _find_dir(root, layout["original"], "pristine-image", spec)
    t = _find_dir(root, layout["jnd"], "CPL-image", spec)
    return [Record(id=i, original=a, target=b) for i, a, b in _match_by_stem(list_images(o), list_images(t), spec)]


def read_cnnjnd(path: str, layout: dict) -> list[Record]:
    """The CNN-Oriented JND Dataset as downloaded from its authors.

    Its README lists four archives ``Session1..4`` ("original & 9 distorted"), one
    ``Original_JND_Pair`` and ``JND_Judgements``. The internal layout is not documented, so this
    reader assumes ``PATH/Original_JND_Pair/<original>/<id>.<ext>`` and
    ``PATH/Original_JND_Pair/<JND>/<id>.<ext>`` (pairs matched by file stem), with the folder names
    tried listed in ``DEFAULT_LAYOUTS['cnnjnd']`` and changeable in the config. The session
    folders and judgements are not needed for training pairs; human judgements can be turned into
    labels with ``jndplug study import`` and ``jndplug study aggregate``.
    """
    root = Path(path)
    spec = f"cnnjnd:{path}"
    pair_dir = _find_dir(root, layout["pair_dir"], "Original_JND_Pair", spec)
    o = _find_dir(pair_dir, layout["original"], "original-image", spec)
    t = _find_dir(pair_dir, layout["jnd"], "JND-image", spec)
    return [Record(id=i, original=a, target=b) for i, a, b in _match_by_stem(list_images(o), list_images(t), spec)]


def read_generated(path: str, layout: dict) -> list[Record]:
    """A ``jndplug datagen`` dataset labelled by ``jndplug study aggregate``.

    ``generated:DATASET`` or ``generated:DATASET,LABELS_JSON``. Reads ``DATASET/originals/<id>.png``,
    ``DATASET/distorted/<id>/<level>.png`` and the labels (by default ``DATASET/labels.json`` or
    ``DATASET/study/labels.json``): per image the JND level and the SUR curve over the levels.
    Images the study could not label (no retained participant) are left out.
    """
    dataset, _, labels_arg = path.partition(",")
    root = Path(dataset)
    spec = f"generated:{path}"
    labels_path = find_labels(root, labels_arg, spec)
    records = []
    for image_id, entry in sorted(read_labels(labels_path)["images"].items()):
        if entry.get("jnd_level") is None:
            continue
        original = original_file(root, image_id)
        levels = level_files(root, image_id)
        if not original.is_file() or not levels:
            raise FileNotFoundError(f"{spec}: image {image_id} is labelled but its files are missing")
        label = int(entry["jnd_level"])
        if label > len(levels):
            raise JNDPlugValueError(f"{labels_path}: image {image_id} is labelled at level {label} but {root} has only "
                                    f"{len(levels)} levels of it; label this dataset with `jndplug study aggregate`")
        records.append(Record(id=image_id, original=original, levels=levels, label_level=label,
                              target=None if label == 0 else levels[label - 1],
                              sur=[float(v) for v in entry["sur"]] if entry.get("sur") else None))
    return records
