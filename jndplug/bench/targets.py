"""``jndplug bench targets``: how visible is a training target? A truth report for any target setting.

For each target (``TargetSpec.parse`` form: ``directed``, ``directed:strength=2,gain=4``, ``jnd``)
and each photo of ``--images``, the 8-bit target image is compared with the original: SSIMULACRA 2,
ColorVideoVDP (JOD) and FLIP on the study's display, a CIEDE2000 colour test, the RMS of the change
in 8-bit levels, its luma band gains, and the probability that the conservative simulated observers
of ``jndplug study simulate`` notice it (the panel's mean detection probability, lapses left out:
a lapse is a slip of the answer, not a sighting). The conservative distance is the largest of the
four models' distances; the report says which model decided. Results land in
``targets/LABEL/result.json``; a rerun skips finished targets. See docs/bench.md.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from jndplug.bench import truth as measures
from jndplug.bench.common import BenchError, resume_or_run, spread, write_json, write_text
from jndplug.bench.settings import TargetsSettings as Settings
from jndplug.imageio import array_to_tensor, list_images, tensor_to_array
from jndplug.spec import TargetSpec, TargetSpecError

# the default target must be noticed by 10-25 % of the simulated panel, no image above 25 %
# (SUR 0.75: three in four people must not notice)
LINE = (0.10, 0.25)


def label_of(spec: TargetSpec) -> str:
    return re.sub(r"[^A-Za-z0-9._=,-]", "_", spec.text().replace(":", "_"))


def panel_sensitivities(n: int, seed: int) -> np.ndarray:
    """The sensitivities of the simulated panel ``jndplug study simulate`` would draw."""
    from jndplug.study.observers import make_observers

    return np.array([o.sensitivity for o in make_observers(n, seed, "conservative")])


def noticed(distance: float, sensitivities: np.ndarray) -> float:
    """The panel's mean probability of detecting a difference of ``distance`` JOD."""
    from jndplug.study.visibility import detection_probability

    return float(np.mean([detection_probability(distance, s) for s in sensitivities]))


def scores_of(model, reference: np.ndarray, test: np.ndarray) -> tuple[dict, dict]:
    """Each model's distance and its own score, read back from the distance (the mappings are
    invertible, so no metric is computed twice)."""
    parts = model.components(reference, test)
    by_name = {m.name: m for m in model.models}
    flip, s2 = by_name["flip"], by_name["ssimulacra2"]
    scores = {"cvvdp": 10.0 - parts["cvvdp"], "flip": flip.e50 * parts["flip"] ** (1 / flip.gamma),
              "ssimulacra2": 100.0 - (100.0 - s2.s50) * parts["ssimulacra2"] ** (1 / s2.gamma),
              "colour_distance": parts["colour"]}
    return parts, scores


def image_row(target, original: np.ndarray, model, sensitivities: np.ndarray) -> dict:
    """One photo's truth values for one target."""
    x = array_to_tensor(original)
    out = tensor_to_array(target(x))  # rounded to 8 bits, as a training loader would read it
    xf, yf = original / 255.0, out / 255.0
    parts, scores = scores_of(model, original, out)
    decider = max(parts, key=parts.get)
    return {**scores, "distance": parts[decider], "decided_by": decider, "distances": parts,
            "noticed": noticed(parts[decider], sensitivities),
            "rms_255": float(np.sqrt(np.mean((yf - xf) ** 2)) * 255),
            "band_ratios": measures.band_power_ratios(xf, yf), "chroma_share": measures.chroma_share(xf, yf)}


def summary_of(rows: list[dict]) -> dict:
    noticed_ = [r["noticed"] for r in rows]
    deciders: dict[str, int] = {}
    for r in rows:
        deciders[r["decided_by"]] = deciders.get(r["decided_by"], 0) + 1
    bands = list(zip(*[r["band_ratios"] for r in rows]))
    return {"noticed_mean": float(np.mean(noticed_)), "noticed_max": float(np.max(noticed_)),
            "images_above_line": int(sum(v > LINE[1] for v in noticed_)),
            "ssimulacra2_mean": float(np.mean([r["ssimulacra2"] for r in rows])),
            "ssimulacra2_min": float(np.min([r["ssimulacra2"] for r in rows])),
            "cvvdp_mean": float(np.mean([r["cvvdp"] for r in rows])),
            "flip_mean": float(np.mean([r["flip"] for r in rows])),
            "rms_255_mean": float(np.mean([r["rms_255"] for r in rows])),
            "band_ratios": [None if any(v is None for v in b) else float(np.mean(b)) for b in bands],
            "decided_by": deciders,
            "at_the_line": bool(LINE[0] <= np.mean(noticed_) <= LINE[1] and np.max(noticed_) <= LINE[1])}


def _photos(s: Settings) -> list[tuple[str, Path]]:
    root = Path(s.images)
    if not root.is_dir():
        raise BenchError(f"--images {root}: no such folder")
    if s.limit is not None and s.limit <= 0:
        raise BenchError(f"--limit {s.limit} must be > 0")
    if s.observers < 1:
        raise BenchError(f"--observers {s.observers} must be >= 1")
    files = list_images(root)
    if not files:
        raise BenchError(f"--images {root}: no image files found (searched recursively)")
    return [(p.relative_to(root).as_posix(), p) for p in spread(files, s.limit)]


def run(s: Settings, report: bool = True) -> dict:
    """Score every target on every photo; returns ``{"rows": [...]}`` and writes targets.{json,md,png}
    (``report=False``: only each target's ``targets/LABEL/result.json``)."""
    from tqdm import tqdm

    from jndplug.bench.truth_report import load_photo
    from jndplug.study.visibility import make_model
    from jndplug.target import JNDTarget
    from jndplug.weights import estimator_fingerprint

    try:
        specs = [TargetSpec.parse(t) for t in s.targets]
    except TargetSpecError as exc:
        raise BenchError(f"--targets {exc}") from None
    photos = _photos(s)
    out = Path(s.out)
    sensitivities = panel_sensitivities(s.observers, s.seed)
    models: list = []  # the conservative model, made once and only if some target needs scoring

    def score(spec: TargetSpec, target, label: str, settings: dict) -> dict:
        if not models:
            models.append(make_model("conservative"))
        per_image = [{"file": name, **image_row(target, load_photo(path, s.max_side), models[0], sensitivities)}
                     for name, path in tqdm(photos, desc=f"targets {label}", unit="img")]
        return {"label": label, "target": spec.text(), "describe": target.describe(), "settings": settings,
                "summary": summary_of(per_image), "per_image": per_image}

    rows = []
    for spec in specs:
        target = JNDTarget.from_spec(spec, device=s.device)
        label = label_of(spec)
        settings = {"target": spec.text(), "estimator": estimator_fingerprint(target.model),
                    "images": str(Path(s.images).resolve()), "files": [n for n, _ in photos],
                    "max_side": s.max_side, "observers": s.observers, "seed": s.seed}
        rows.append(resume_or_run(out / "targets" / label, settings, f"targets {label}",
                                  lambda: score(spec, target, label, settings)))
    if not report:
        return {"rows": rows}
    write_json(out / "targets.json", {"line": LINE, "rows": rows})
    write_text(out / "targets.md", "\n".join(markdown(rows)) + "\n")
    _figure(rows, out / "targets.png")
    print(f"wrote {out / 'targets.md'}, {out / 'targets.json'} and {out / 'targets.png'}", file=sys.stderr)
    return {"rows": rows}


def markdown(rows: list[dict]) -> list[str]:
    bands = " | ".join(f"P {b}" for b in measures.BAND_NAMES)
    lines = [f"Targets against the originals (8-bit). noticed: mean detection probability of the simulated panel "
             f"(conservative observers); the line is {LINE[0]:.0%}-{LINE[1]:.0%} with no image above {LINE[1]:.0%}.",
             "", "| target | noticed mean (max) | images > 25 % | SSIMULACRA 2 mean (min) | CVVDP JOD | FLIP | "
                 f"RMS /255 | {bands} | decided by | at the line |", "|" + "---|" * (9 + len(measures.BAND_NAMES))]
    for r in rows:
        s = r["summary"]
        decided = ", ".join(f"{k} {v}" for k, v in sorted(s["decided_by"].items(), key=lambda kv: -kv[1]))
        lines.append(f"| {r['target']} | {s['noticed_mean']:.1%} ({s['noticed_max']:.1%}) | {s['images_above_line']} | "
                     f"{s['ssimulacra2_mean']:.1f} ({s['ssimulacra2_min']:.1f}) | {s['cvvdp_mean']:.3f} | "
                     f"{s['flip_mean']:.4f} | {s['rms_255_mean']:.2f} | "
                     + " | ".join("n/a" if v is None else f"{v:.3f}" for v in s["band_ratios"])
                     + f" | {decided} | {'yes' if s['at_the_line'] else 'no'} |")
    lines.append("")
    for r in rows:
        lines += [f"{r['target']} ({r['describe']}), per image:", "",
                  "| image | noticed | decided by | SSIMULACRA 2 | CVVDP JOD | FLIP | colour d | RMS /255 |",
                  "|" + "---|" * 8]
        for i in r["per_image"]:
            lines.append(f"| {i['file']} | {i['noticed']:.1%} | {i['decided_by']} | {i['ssimulacra2']:.1f} | "
                         f"{i['cvvdp']:.3f} | {i['flip']:.4f} | {i['colour_distance']:.3f} | {i['rms_255']:.2f} |")
        lines.append("")
    return lines


def _figure(rows: list[dict], path: Path) -> None:
    try:
        fig = figure(rows)
    except ImportError:  # matplotlib is the viz extra; the tables do without it
        return
    from jndplug.viz import save_figure

    save_figure(fig, path, bbox_inches="tight")


def figure(rows: list[dict]):
    """Per target, each photo's detection probability and SSIMULACRA 2 against the lines."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 0.5 * len(rows) + 2.5), sharey=True)
    for k, r in enumerate(rows):
        ys = np.full(len(r["per_image"]), k) + np.linspace(-0.2, 0.2, len(r["per_image"]))
        axes[0].scatter([100 * i["noticed"] for i in r["per_image"]], ys, s=12)
        axes[1].scatter([i["ssimulacra2"] for i in r["per_image"]], ys, s=12)
    axes[0].axvspan(100 * LINE[0], 100 * LINE[1], color="tab:green", alpha=0.15, label="the line (SUR 0.75)")
    axes[0].set_xlabel("noticed by the simulated panel (%)")
    axes[1].axvline(80, color="tab:red", ls="--", label="80: same side by side at 1:1")
    axes[1].set_xlabel("SSIMULACRA 2 against the original")
    # below the axes: inside, a legend hides the photos that lie in its corner
    for ax in axes:
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), fontsize=8, frameon=False)
    axes[0].set_yticks(range(len(rows)), [r["target"] for r in rows], fontsize=8)
    fig.suptitle("How visible is each training target? (one dot per photo)")
    return fig
