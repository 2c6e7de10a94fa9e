"""Offline JND pseudo-ground-truth for a whole folder tree (``jndplug precompute SRC --out DST``).

``DST`` mirrors ``SRC`` file for file (same relative paths and extensions, so it can replace a
ground-truth folder in any paired dataset). Bookkeeping lives in hidden files inside ``DST``
(dataset loaders such as BasicSR's skip hidden files):

- ``.jndplug-precompute.json``: the settings (estimator fingerprint and architecture, and the
  target's :meth:`~jndplug.spec.TargetSpec.manifest_settings`), written first;
- ``.jndplug-precompute/rank<R>.jsonl``: one line per finished file with the content hash of its
  input and the settings key, appended only after the output file has been renamed into place.

A rerun skips files whose input hash and settings key match a log line and whose output exists,
and redoes everything else; so an interrupted run resumes and edited inputs are redone. A rerun
with other settings into a folder that holds images made with the old ones is refused unless
``overwrite=True`` (``--overwrite``): it would replace them. It also deletes the temporary files a
killed run left (see ``sweep_stale_temps``). Under ``torchrun`` (``RANK``/``WORLD_SIZE`` set) rank R
takes every WORLD_SIZE-th file.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from jndplug.errors import JNDPlugValueError, user_error_message
from jndplug.imageio import (ImageReadError, array_to_tensor, atomic_write, check_output_path, list_images,
                             read_image, sweep_stale_temps, tensor_to_array, write_image)
from jndplug.models.base import estimator_info
from jndplug.spec import TargetSpec, number_text
from jndplug.target import JNDTarget
from jndplug.weights import estimator_fingerprint

MANIFEST = ".jndplug-precompute.json"
LOG_DIR = ".jndplug-precompute"
# another rank's temporary (or the manifest's) older than this was left by a killed process
STALE_TEMP_AGE_S = 600


@dataclass
class PrecomputeReport:
    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def settings_of(target: JNDTarget) -> dict:
    """What determines the output of a JNDTarget, as recorded in the manifest: the estimator's
    identity (its fingerprint; the architecture for people reading it) and the target's settings."""
    return {"estimator_fingerprint": estimator_fingerprint(target.model), "arch": target.arch_name,
            **target.spec.manifest_settings()}


def settings_differences(have: dict, want: dict, default_sur: float | None = None,
                         name=lambda setting: setting) -> list[str]:
    """How manifest settings ``have`` (a folder's) differ from ``want`` (this run's), one line each.

    ``default_sur``: the ratio the estimator runs with when ``sur`` is null, so that the two
    spellings of it are one setting (for the same estimator only). A setting the kind does not use
    (``gain`` of kind ``jnd``) is never named. ``name`` spells a setting as the caller's user
    writes it (``jnd_target.strength``, ``--jnd-strength``).
    """
    out = []
    before, now = TargetSpec.from_manifest(have), TargetSpec.from_manifest(want)
    same_estimator = have.get("estimator_fingerprint") == want.get("estimator_fingerprint")
    if not same_estimator and before.uses_estimator and now.uses_estimator:
        out.append(f"{name('estimator')}: folder {_estimator(have)}, this run {_estimator(want)}")
    # the kind table decides which settings apply (gain is no setting of kind jnd)
    for setting, a, b in before.differences(now, compare_estimator=False):
        if setting == "sur" and same_estimator and _or(a, default_sur) == _or(b, default_sur):
            continue
        out.append(f"{name(setting)}: folder {_show(a)}, this run {_show(b)}")
    return out


def _or(value, default):
    return default if value is None else value


def _estimator(settings: dict) -> str:
    name = settings.get("weights_file") or settings.get("arch")
    return f"{name} ({settings.get('arch')}, fingerprint {str(settings.get('estimator_fingerprint'))[:12]})"


def _show(value) -> str:
    if value is None:
        return "the estimator's default"
    # exact: "folder 2, this run 2" for 2 and 2.0000001 explained nothing
    return number_text(value) if isinstance(value, float) else str(value)


def _identity(target: JNDTarget) -> tuple[dict, float | None]:
    """``target``'s manifest settings with its weights file's name (for messages), and the ratio its
    estimator runs with when no ``sur`` is given."""
    weights = os.path.basename(target.weights_path or "") or None
    return {**settings_of(target), "weights_file": weights}, estimator_info(target.model).default_sur


def settings_key(settings: dict) -> str:
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def read_manifest(dst: str | os.PathLike) -> dict:
    """Settings and finished files of a precomputed folder (used to check it before training)."""
    dst = Path(dst)
    path = dst / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{dst} has no {MANIFEST}: it was not made by `jndplug precompute`")
    manifest = json.loads(path.read_text())
    manifest["files"] = _read_logs(dst)
    return manifest


def _folder(manifest: dict | None) -> dict:
    """A manifest's settings with its weights file's name (for messages)."""
    manifest = manifest or {}
    return {**manifest.get("settings", {}), "weights_file": manifest.get("weights_file")}


class PrecomputedFolderError(JNDPlugValueError):
    """A folder that is not the complete, current ``jndplug precompute`` output a training run needs."""


def check_precomputed(src: str | os.PathLike, dst: str | os.PathLike, target: JNDTarget,
                      files: list[Path] | None = None, name=lambda setting: setting) -> None:
    """Refuse ``dst`` unless it holds the JND image, made with ``target``'s settings, of every image
    of ``src`` (or of ``files``, images under ``src``) as that image is now.

    This is the one check of offline training (BasicSR and CompressAI): the settings are compared
    as a rerun of ``jndplug precompute`` compares them (:func:`settings_differences`, whose
    ``name`` spells a setting as the caller's user writes it), each image needs a log line with
    the folder's settings and the content hash of its source, and the message gives the
    ``jndplug precompute`` command that makes or completes a matching folder.
    """
    src, dst = Path(src), Path(dst)
    spec = target.spec

    def command(overwrite: bool = False) -> str:
        # every setting spelled out: precompute's defaults may differ from what the caller configured
        return f"`jndplug precompute {src} --out {dst} {spec.flags()}{' --overwrite' if overwrite else ''}`"

    try:
        manifest = read_manifest(dst)
    except FileNotFoundError as exc:
        raise PrecomputedFolderError(f"{exc}; make it with {command()}") from None
    mine, sur = _identity(target)
    differ = settings_differences(_folder(manifest), mine, sur, name)
    if differ:
        raise PrecomputedFolderError(f"{dst} was made with other settings ({'; '.join(differ)}); make a matching "
                                     f"folder with {command(overwrite=True)}")
    missing, changed = [], []
    for path in list_images(src) if files is None else files:
        rel = path.relative_to(src).as_posix()
        entry = manifest["files"].get(rel)
        if entry is None or entry["settings_key"] != manifest["settings_key"] or not (dst / rel).is_file():
            missing.append(rel)
        elif entry["input_sha256"] != hashlib.sha256(path.read_bytes()).hexdigest():
            changed.append(rel)
    if missing or changed:
        parts = [f"{what} {len(rels)} image(s) of {src} ({', '.join(rels[:3])}{', ...' if len(rels) > 3 else ''})"
                 for what, rels in (("lacks the JND image of", missing),
                                    ("holds an outdated JND image (the source changed since) of", changed)) if rels]
        raise PrecomputedFolderError(f"{dst} {' and '.join(parts)}; complete it with {command()} (it redoes only "
                                     "those)")


def shard(files: list, rank: int | None = None, world_size: int | None = None) -> list:
    """This process's share of ``files`` under torchrun (every world_size-th, from rank)."""
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    if not 0 <= rank < world_size:
        raise JNDPlugValueError(f"rank {rank} is outside world size {world_size}")
    return files[rank::world_size]


def precompute(src: str | os.PathLike, dst: str | os.PathLike, target: JNDTarget | TargetSpec, *,
               overwrite: bool = False, device: str | torch.device | None = None,
               tile: tuple[int, int] | None | bool = None, rank: int | None = None,
               world_size: int | None = None, progress: bool = True) -> PrecomputeReport:
    """Write the JND image of every image under ``src`` to the same relative path under ``dst``.

    ``target``: a :class:`JNDTarget`, or a :class:`TargetSpec` made into one on ``device`` with
    ``tile`` (both only for a spec). ``overwrite``: replace images that ``dst`` holds from a run with
    other settings (without it, such a run is refused). ``rank``/``world_size``: this process's share
    (default: torchrun's ``RANK``/``WORLD_SIZE``).
    """
    src, dst = Path(src), Path(dst)
    if src.is_file():
        raise JNDPlugValueError(f"{src} is a file: precompute takes a folder; for one file use "
                                f"`jndplug infer {src} --out OUT`")
    if not src.is_dir():
        raise FileNotFoundError(f"source folder not found: {src}")
    check_output_path(src, dst)
    if isinstance(target, TargetSpec):
        target = JNDTarget.from_spec(target, device=device, tile=tile)
    elif device is not None or tile is not None:
        raise TypeError("device and tile are for a TargetSpec; a JNDTarget has its own")
    unreadable: list[OSError] = []
    every = list_images(src, unreadable)
    if not every:
        folders = ""
        if unreadable:
            folders = f" ({len(unreadable)} folder(s) could not be read: {unreadable[0].filename} ...)"
        raise JNDPlugValueError(f"no images found under {src}{folders}; give the folder of the images to "
                                "precompute")
    settings = settings_of(target)
    key = settings_key(settings)
    world = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    manifest_path = dst / MANIFEST
    previous = json.loads(manifest_path.read_text()) if manifest_path.is_file() else None
    changed = previous is not None and previous.get("settings") != settings
    identity, sur = _identity(target)
    differ = settings_differences(_folder(previous), identity, sur) if changed else []
    if changed and not differ:  # the same settings spelt otherwise (sur null, sur = the default): its images stay
        settings, key, changed = previous["settings"], previous["settings_key"], False
    done = _read_logs(dst)
    if differ and not overwrite and done:
        raise JNDPlugValueError(
            f"{dst} holds JND images made with other settings ({'; '.join(differ)}); "
            "add --overwrite (overwrite=True) to replace them, or write to another --out")
    if (rank == 0 or previous is None) and (previous is None or changed):
        # a new setting does not invalidate the logs: each line carries its own settings key
        # the weights file name is for people reading the manifest; the fingerprint is what counts
        with atomic_write(manifest_path, "w") as f:
            json.dump({"settings": settings, "settings_key": key, "weights_file": identity["weights_file"],
                       "source": str(src.resolve())}, f, indent=2)
    files = shard(every, rank, world_size)
    # temporaries of a killed run: this rank's own outputs' are dead for sure; others' once old
    mine = {dst / p.relative_to(src) for p in files}
    sweep_stale_temps(dst, owned=mine.__contains__, min_age_s=STALE_TEMP_AGE_S)
    jpegs = sum(p.suffix.lower() in (".jpg", ".jpeg") for p in files)
    if jpegs:
        warnings.warn(f"{jpegs} JPEG input(s): their JND images are written as JPEG (quality 100, no chroma "
                      "subsampling) under the same names, so that a paired dataset finds them, which adds about 0.5 "
                      "to 0.8 levels of RMS error to a change of about 2.5; convert the source folder to PNG for "
                      "exact targets", stacklevel=2)
    logged = sum(1 for p in files if done.get(p.relative_to(src).as_posix(), {}).get("settings_key") == key)
    if logged and progress:
        # said before the work starts (the final counts come only at the end)
        print(f"resuming {dst}: {logged} of {len(files)} image(s) were done with these settings and are "
              "skipped unless they changed", file=sys.stderr, flush=True)
    report = PrecomputeReport()
    if rank == 0:  # one rank says it, not each
        report.failed.update({f"{Path(exc.filename).relative_to(src).as_posix()}/":
                              f"folder not read: {user_error_message(exc) or exc}" for exc in unreadable})
    log_path = dst / LOG_DIR / f"rank{rank}.jsonl"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with open(log_path, "a") as log:
        # a rank is worth naming only when there are several
        desc = f"precompute (rank {rank}/{world})" if world > 1 else "precompute"
        for path in tqdm(files, desc=desc, unit="img", disable=not progress):
            rel = path.relative_to(src).as_posix()
            out = dst / rel
            try:
                digest = hashlib.sha256(path.read_bytes()).hexdigest()
                entry = done.get(rel)
                if entry and entry["input_sha256"] == digest and entry["settings_key"] == key and out.is_file():
                    report.skipped.append(rel)
                    continue
                array = read_image(path)
                jnd = target(array_to_tensor(array))
                _write_like_input(out, tensor_to_array(jnd, array.dtype))
            except (ImageReadError, ValueError) as exc:
                report.failed[rel] = str(exc)
                continue
            except OSError as exc:  # unreadable input (a denied or vanished file): that file's problem
                if exc.filename is None or Path(exc.filename) != path:
                    raise  # a full disk or a denied output folder stops the run
                report.failed[rel] = user_error_message(exc) or str(exc)
                continue
            log.write(json.dumps({"file": rel, "input_sha256": digest, "settings_key": key}) + "\n")
            log.flush()
            report.written.append(rel)
    return report


def _write_like_input(out: Path, array: np.ndarray) -> None:
    # always under the input's own name, so the folder stays a drop-in replacement and a rerun
    # finds the file (16-bit data has PNG and TIFF only; read_image gives 16 bits for no other)
    if out.suffix.lower() in (".jpg", ".jpeg") and array.dtype == np.uint8:
        # q100 without chroma subsampling adds far less error than the JND distortion itself
        with atomic_write(out) as f:
            Image.fromarray(array).save(f, format="JPEG", quality=100, subsampling=0)
    else:
        write_image(out, array)


def _read_logs(dst: Path) -> dict[str, dict]:
    done: dict[str, dict] = {}
    for log in sorted((dst / LOG_DIR).glob("rank*.jsonl")):
        for line in log.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by a kill; its file is simply redone
            done[rec["file"]] = rec
    return done


def torch_threads_for_rank() -> None:
    """Under torchrun on CPU, split the cores between ranks instead of oversubscribing them."""
    world = int(os.environ.get("LOCAL_WORLD_SIZE", os.environ.get("WORLD_SIZE", 1)))
    if world > 1 and not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
