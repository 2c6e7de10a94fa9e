"""(reference, distorted, score/category) collections: readers, visibility categories, buckets.

A collection is a list of :class:`PairItem`: one distorted image of one reference, its score
(higher = less visible: a MOS, DMOS-as-quality or satisfied-user ratio) and, when the source
has one, its visibility category. Readers, selected by ``KIND:PATH`` like the training data:

- ``generated:DATASET[,LABELS]``: a ``jndplug datagen`` dataset labelled by ``jndplug study
  aggregate``, the same name as for training. Each level image of ``DATASET/distorted/<id>/``
  is paired with ``DATASET/originals/<id>``; the score is the image's satisfied-user ratio at
  that level and the category follows its JND level (``labels.json``, see
  ``jndplug.study.labels``): levels up to the JND level are ``no_flicker``, the next level is
  ``slight_flicker``, stronger levels are ``obvious_flicker``.
- ``kadid:PATH``: KADID-10k as downloaded: ``PATH/dmos.csv`` with columns ``dist_img``,
  ``ref_img``, ``dmos`` (others ignored) and the images in ``PATH/images/``. Names
  ``I01_03_05.png`` give the distortion type (``03``) and level (``5``). Scores lie in [1, 5].
- ``tid2013:PATH``: TID2013 as downloaded: ``PATH/mos_with_names.txt`` (lines ``MOS NAME``),
  ``PATH/reference_images/I01.BMP``, ``PATH/distorted_images/i01_03_5.bmp``. Scores lie in [0, 9].
- ``csv:FILE``: any collection: columns ``reference``, ``distorted`` (paths relative to the
  file's folder) and ``score`` and/or ``category``; optional ``image_id`` (default: the
  reference's stem), ``distortion_type`` (default ``unknown``) and ``level``.

Sources without categories get them from ``invisible_at``, the score at or above which a
distortion counts as not visible (:func:`assign_categories`).
"""

from __future__ import annotations

import csv
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from jndplug.data.specs import parse_spec
from jndplug.errors import JNDPlugValueError

CATEGORIES = ("no_flicker", "slight_flicker", "obvious_flicker")
BUCKETS = ("no_flicker", "same_score", "slight_flicker")
KINDS = ("generated", "kadid", "tid2013", "csv")

# KADID-10k was rated on the five-point degradation category scale, where 5 is "imperceptible"
# and 4 "perceptible but not annoying": halfway between the two is where visibility starts.
KADID_INVISIBLE_AT = 4.5


@dataclass
class PairItem:
    image_id: str
    reference: Path
    distorted: Path
    distortion_type: str
    level: int | None
    score: float | None  # higher = less visible; None when the source gives only a category
    category: str | None = None  # one of CATEGORIES


@dataclass
class PairCollection:
    items: list[PairItem]
    score_range: tuple[float, float]  # the scale's ends, used to normalise scores to [0, 1]
    source: str


def read_collection(spec: str, invisible_at: float | None = None,
                    score_range: tuple[float, float] | None = None) -> PairCollection:
    """Read ``KIND:PATH`` and give every item a category (see the module docstring)."""
    kind, path = parse_spec(spec, KINDS)
    if kind == "generated":
        items, scale = _read_study(path), (0.0, 1.0)
    elif kind == "kadid":
        items, scale = _read_kadid(Path(path)), (1.0, 5.0)
        invisible_at = KADID_INVISIBLE_AT if invisible_at is None else invisible_at
    elif kind == "tid2013":
        items, scale = _read_tid2013(Path(path)), (0.0, 9.0)
    else:
        items, scale = _read_csv(Path(path)), (0.0, 1.0)
    scale = tuple(score_range) if score_range is not None else scale
    if not scale[0] < scale[1]:
        raise JNDPlugValueError(f"score range must be (low, high) with low < high, got {scale}")
    if not items:
        raise JNDPlugValueError(f"{spec}: no (reference, distorted) pairs found")
    out_of_range = [i for i in items if i.score is not None and not scale[0] <= i.score <= scale[1]]
    if out_of_range:
        raise JNDPlugValueError(f"{spec}: {len(out_of_range)} scores lie outside the score range {scale} "
                                f"(e.g. {out_of_range[0].score}); give the scale's ends as score_range")
    assign_categories(items, invisible_at, spec)
    return PairCollection(items, scale, spec)


def assign_categories(items: list[PairItem], invisible_at: float | None, spec: str = "collection") -> None:
    """Give a category to every item that has none, per (image, distortion) group.

    Scores at or above ``invisible_at`` are ``no_flicker``; of the visible items the weakest one
    (lowest level, or highest score when levels are unknown) is the just noticeable step,
    ``slight_flicker``; the stronger ones are ``obvious_flicker``.
    """
    groups = defaultdict(list)
    for it in items:
        if it.category is None:
            groups[(it.image_id, it.distortion_type)].append(it)
    if not groups:
        return
    if invisible_at is None:
        raise JNDPlugValueError(f"{spec}: items without a category need invisible_at (the score at or above "
                                "which a distortion is not visible; --invisible-at on the command line)")
    for group in groups.values():
        if any(it.score is None for it in group):
            raise JNDPlugValueError(f"{spec}: an item of image {group[0].image_id} has neither score nor category")
        visible = [it for it in group if it.score < invisible_at]
        for it in group:
            it.category = "no_flicker" if it.score >= invisible_at else "obvious_flicker"
        if visible:
            weakest = min(visible, key=lambda it: (it.level if it.level is not None else 0, -it.score))
            weakest.category = "slight_flicker"


def bucket_items(items: list[PairItem], max_levels: int | None = None,
                 score_tolerance: float = 1e-6) -> tuple[dict[str, list[PairItem]], dict[str, int]]:
    """Group by (image, distortion) and sort whole groups into buckets.

    Returns ``(buckets, excluded)``: ``buckets`` maps each name of ``BUCKETS`` to its items,
    ``excluded`` counts the groups left out, by reason. Per group, first match wins:

    1. ``max_levels`` given and the group has more distinct levels: excluded (``too_many_levels``);
    2. every item ``no_flicker``: bucket ``no_flicker`` (the group is stable);
    3. two or more items, all with the same score (within ``score_tolerance``): ``same_score``;
       the ratings do not order them, and their patches are made by ``blend`` fusion;
    4. the group has a ``slight_flicker`` item: ``slight_flicker`` (it holds a just noticeable
       step), with all its items;
    5. otherwise (only obvious distortions): excluded (``obvious_only``).
    """
    groups = defaultdict(list)
    for it in items:
        if it.category not in CATEGORIES:
            raise JNDPlugValueError(f"item {it.distorted}: category {it.category!r} is not one of "
                                    f"{', '.join(CATEGORIES)}")
        groups[(it.image_id, it.distortion_type)].append(it)
    buckets: dict[str, list[PairItem]] = {b: [] for b in BUCKETS}
    excluded: dict[str, int] = {"too_many_levels": 0, "obvious_only": 0}
    for key in sorted(groups):
        group = groups[key]
        scores = [it.score for it in group]
        if max_levels is not None and len({it.level for it in group}) > max_levels:
            excluded["too_many_levels"] += 1
        elif all(it.category == "no_flicker" for it in group):
            buckets["no_flicker"] += group
        elif len(group) > 1 and None not in scores and max(scores) - min(scores) <= score_tolerance:
            buckets["same_score"] += group
        elif any(it.category == "slight_flicker" for it in group):
            buckets["slight_flicker"] += group
        else:
            excluded["obvious_only"] += 1
    return buckets, excluded


def _read_study(path: str) -> list[PairItem]:
    from jndplug.data.layout import JNDDataset, find_labels, read_labels

    dataset, _, labels_arg = path.partition(",")
    ds = JNDDataset(dataset)
    labels = read_labels(find_labels(ds.root, labels_arg, f"generated:{path}"))
    items = []
    for image in ds.ids:
        entry = labels["images"].get(image)
        if not entry or entry.get("jnd_level") is None or not entry.get("sur"):
            continue  # the study could not label it
        jnd = int(entry["jnd_level"])
        for level in range(1, ds.n_levels + 1):
            category = ("no_flicker" if level <= jnd else "slight_flicker" if level == jnd + 1
                        else "obvious_flicker")
            items.append(PairItem(image, ds.original_path(image), ds.level_path(image, level), "study", level,
                                  float(entry["sur"][level - 1]), category))
    return items


def _need(path: Path, what: str) -> Path:
    if not path.exists():
        raise FileNotFoundError(f"{what} not found: {path}")
    return path


def _kadid_name(name: str) -> tuple[str, int | None]:
    m = re.fullmatch(r"[Ii](\d+)_(\d+)_(\d+)\.\w+", name)
    return (m.group(2), int(m.group(3))) if m else ("unknown", None)


def _read_kadid(root: Path) -> list[PairItem]:
    table = _need(root / "dmos.csv", "KADID-10k score file")
    images = _need(root / "images", "KADID-10k image folder")
    items = []
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"dist_img", "ref_img", "dmos"} - set(reader.fieldnames or [])
        if missing:
            raise JNDPlugValueError(f"{table}: missing columns {sorted(missing)} (expected dist_img, ref_img, dmos)")
        for row in reader:
            dtype, level = _kadid_name(row["dist_img"])
            ref = images / row["ref_img"]
            items.append(PairItem(Path(row["ref_img"]).stem, ref, images / row["dist_img"], dtype, level,
                                  float(row["dmos"])))
    return items


def _read_tid2013(root: Path) -> list[PairItem]:
    table = _need(root / "mos_with_names.txt", "TID2013 score file")
    refs = {p.stem.lower(): p for p in _need(root / "reference_images", "TID2013 reference folder").iterdir()}
    dist_dir = _need(root / "distorted_images", "TID2013 distorted-image folder")
    items = []
    for n, line in enumerate(table.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        parts = line.split()
        m = re.fullmatch(r"[Ii](\d+)_(\d+)_(\d+)\.\w+", parts[-1]) if len(parts) == 2 else None
        if m is None:
            raise JNDPlugValueError(f"{table}:{n}: expected 'MOS iXX_TT_L.bmp', got {line!r}")
        ref = refs.get(f"i{m.group(1)}")
        if ref is None:
            raise FileNotFoundError(f"{table}:{n}: no reference image i{m.group(1)} in {root / 'reference_images'}")
        items.append(PairItem(ref.stem, ref, dist_dir / parts[1], m.group(2), int(m.group(3)), float(parts[0])))
    return items


def _read_csv(table: Path) -> list[PairItem]:
    _need(table, "collection file")
    items = []
    with open(table, newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or [])
        if not {"reference", "distorted"} <= cols or not cols & {"score", "category"}:
            raise JNDPlugValueError(f"{table}: needs columns reference, distorted and score and/or category "
                                    f"(found {', '.join(sorted(cols))})")
        for row in reader:
            ref = table.parent / row["reference"]
            category = (row.get("category") or "").strip() or None
            score = (row.get("score") or "").strip()
            level = (row.get("level") or "").strip()
            items.append(PairItem(row.get("image_id") or ref.stem, ref, table.parent / row["distorted"],
                                  row.get("distortion_type") or "unknown", int(level) if level else None,
                                  float(score) if score else None, category))
    return items
