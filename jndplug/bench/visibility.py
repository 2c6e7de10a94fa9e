"""``jndplug bench visibility``: targets compared at equal visibility, not at equal strength.

A stronger target that people see is not a better one, and the strengths of two bounds are not in
the same units (times the estimator's map, times a local standard deviation, 8-bit levels). So for
each target (``TargetSpec.parse`` form; its strength, if given, is only the first guess) this finds
the strength at which the simulated panel of ``jndplug bench targets`` notices it at ``--level``:

- ``--statistic max`` (default) with ``--level 0.25``: the line of SUR 0.75, no photo noticed by
  more than a quarter of the panel;
- ``--statistic mean``: the panel's mean over the photos;
- ``--match SPEC``: the level is SPEC's own statistic on the same photos (e.g. ``--match directed``,
  the shipped default).

The search works on the logarithm of the strength: from the first guess it doubles or halves until
the level is bracketed, then interpolates (regula falsi) until an evaluated strength is within
``--tolerance`` of the level or ``--evaluations`` are spent; the answer is the evaluated strength
closest to the level, rounded to three significant digits before it is evaluated so that the spec
it names is the spec that was measured. Each evaluation is a ``bench targets`` run on the photos,
kept under ``--out``/evals, so a rerun resumes. Writes ``visibility.json``, ``visibility.md`` and
``visibility.png`` (the statistic against the strength, per target). Calibrate on photos you do not
judge on: the screen and the benchmarks take the calibrated specs (``calibrated`` in the table).
"""

from __future__ import annotations

import math
import sys
from dataclasses import replace
from pathlib import Path

from jndplug.bench.common import BenchError, write_json, write_text
from jndplug.bench.settings import STATISTICS, VisibilitySettings as Settings
from jndplug.spec import TargetSpec, TargetSpecError, number_text

def round3(value: float) -> float:
    """Three significant digits: the strengths the search evaluates, and names."""
    return float(f"{value:.3g}")


def calibrate(statistic_at, level: float, start: float, tolerance: float, evaluations: int,
              factor: float = 2.0) -> tuple[float, list[tuple[float, float]]]:
    """``(strength, history)``: the evaluated strength whose statistic is closest to ``level``
    and every ``(strength, statistic)`` evaluated, in order.

    ``statistic_at`` must grow with the strength (a stronger target is noticed more often); the
    search brackets the level by factors of ``factor`` from ``start``, then interpolates on the
    logarithm of the strength. Strengths are rounded to three significant digits.
    """
    if not start > 0:
        raise BenchError(f"the first guess of the strength must be > 0, got {start}")
    history: list[tuple[float, float]] = []

    def evaluate(s: float) -> float:
        s = round3(s)
        for done, value in history:
            if done == s:
                return value
        value = float(statistic_at(s))
        history.append((s, value))
        return value

    s = round3(start)
    v = evaluate(s)
    below, above = (s, v) if v < level else None, (s, v) if v >= level else None
    while (below is None or above is None) and len(history) < evaluations:
        s = s * factor if above is None else s / factor
        v = evaluate(s)
        if v < level:
            below = (round3(s), v) if below is None or round3(s) > below[0] else below
        else:
            above = (round3(s), v) if above is None or round3(s) < above[0] else above
    # regula falsi on log strength, Illinois variant: an end kept twice in a row has its distance to
    # the level halved, or one side creeps in by small steps (a convex curve: 0.209, 0.214, 0.217 ...)
    weight = {"below": 1.0, "above": 1.0}
    kept = None
    while below and above and len(history) < evaluations and min(abs(v - level) for _, v in history) > tolerance:
        (s0, v0), (s1, v1) = below, above
        d0, d1 = (level - v0) * weight["below"], (v1 - level) * weight["above"]
        if d0 + d1 <= 0:
            break
        s = round3(math.exp(math.log(s0) + d0 / (d0 + d1) * (math.log(s1) - math.log(s0))))
        if s in (s0, s1):  # three digits cannot get closer
            break
        v = evaluate(s)
        side = "below" if v < level else "above"
        if side == "below":
            below = (s, v)
        else:
            above = (s, v)
        other = "above" if side == "below" else "below"
        weight[other] = weight[other] / 2 if kept == other else 1.0
        weight[side] = 1.0
        kept = other
    best = min(history, key=lambda sv: abs(sv[1] - level))
    return best[0], history


def run(s: Settings) -> dict:
    from jndplug.bench import targets as truth_of_targets

    if not 0 < s.level < 1:
        raise BenchError(f"--level {s.level}: a detection probability in (0, 1)")
    if s.evaluations < 2:
        raise BenchError(f"--evaluations {s.evaluations}: the search needs at least 2")
    try:
        shapes = [TargetSpec.parse(_with_strength(t)) for t in s.targets]
        match = TargetSpec.parse(s.match) if s.match else None
    except TargetSpecError as exc:
        raise BenchError(f"--targets/--match {exc}") from None
    out = Path(s.out)
    key = STATISTICS[s.statistic]

    def statistic_of(spec: TargetSpec) -> tuple[float, dict]:
        rows = truth_of_targets.run(truth_of_targets.Settings(
            images=s.images, targets=[spec.text()], out=str(out / "evals"), limit=s.limit, max_side=s.max_side,
            observers=s.observers, seed=s.seed, device=s.device), report=False)["rows"]
        return rows[0]["summary"][key], rows[0]["summary"]

    level, reference = s.level, None
    if match is not None:
        level, summary = statistic_of(match)
        reference = {"target": match.text(), "summary": summary}
        print(f"level: {s.statistic} noticed of {match.text()} = {level:.1%}", file=sys.stderr)
    results = []
    for shape in shapes:
        summaries: dict[float, dict] = {}

        def at(strength: float, shape=shape, summaries=summaries) -> float:
            value, summaries[strength] = statistic_of(replace(shape, strength=strength))
            return value

        strength, history = calibrate(at, level, shape.strength, s.tolerance, s.evaluations)
        calibrated = replace(shape, strength=strength)
        results.append({"target": shape.text(), "calibrated": calibrated.text(), "strength": strength,
                        "value": dict(history)[strength], "converged": abs(dict(history)[strength] - level)
                        <= s.tolerance, "history": history, "summary": summaries[strength]})
    result = {"level": level, "statistic": s.statistic, "match": match.text() if match else None, "reference": reference,
              "tolerance": s.tolerance, "images": str(Path(s.images).resolve()), "limit": s.limit,
              "observers": s.observers, "seed": s.seed, "results": results}
    write_json(out / "visibility.json", result)
    write_text(out / "visibility.md", markdown(result))
    _figure(result, out / "visibility.png")
    print(markdown(result))
    print(f"wrote {out / 'visibility.md'}, {out / 'visibility.json'} and {out / 'visibility.png'}", file=sys.stderr)
    return result


def _with_strength(text: str) -> str:
    """The spec with a first guess where its bound has no default strength (1)."""
    try:
        TargetSpec.parse(text)
        return text
    except TargetSpecError as exc:
        if "no calibrated default strength" not in str(exc):
            raise
        return text + ("," if ":" in text else ":") + "strength=1"


def markdown(result: dict) -> str:
    what = f"{result['statistic']} noticed = {result['level']:.1%}" + (
        f" ({result['match']}'s)" if result["match"] else "")
    lines = [f"Equal visibility: each target's strength where the simulated panel's {what}, on "
             f"{result['images']}" + (f" ({result['limit']} photos)" if result["limit"] else "") + ".", "",
             "| target | calibrated | noticed mean (max) | images > 25 % | SSIMULACRA 2 mean (min) | RMS /255 | "
             "evaluations | within tolerance |", "|" + "---|" * 8]
    if result.get("reference"):
        sm = result["reference"]["summary"]
        lines.append(f"| {result['reference']['target']} (the level) | | {sm['noticed_mean']:.1%} "
                     f"({sm['noticed_max']:.1%}) | {sm['images_above_line']} | {sm['ssimulacra2_mean']:.1f} "
                     f"({sm['ssimulacra2_min']:.1f}) | {sm['rms_255_mean']:.2f} | | |")
    for r in result["results"]:
        sm = r["summary"]
        lines.append(f"| {r['target']} | {r['calibrated']} | {sm['noticed_mean']:.1%} ({sm['noticed_max']:.1%}) | "
                     f"{sm['images_above_line']} | {sm['ssimulacra2_mean']:.1f} ({sm['ssimulacra2_min']:.1f}) | "
                     f"{sm['rms_255_mean']:.2f} | "
                     + ", ".join(f"{number_text(st)}: {v:.1%}" for st, v in r["history"])
                     + f" | {'yes' if r['converged'] else 'no'} |")
    return "\n".join(lines) + "\n"


def _figure(result: dict, path: Path) -> None:
    try:
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is the viz extra; the tables do without it
        return
    from jndplug.viz import save_figure

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in result["results"]:
        pts = sorted(r["history"])
        line, = ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=r["calibrated"])
        ax.plot([r["strength"]], [100 * r["value"]], "*", ms=14, color=line.get_color())
    ax.axhline(100 * result["level"], color="tab:green", ls="--", label=f"level ({result['statistic']})")
    ax.set_xscale("log")
    # plain numbers at 1, 2 and 5 of each decade: all minor labels of a log axis overlap
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(plt.FuncFormatter(lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xlabel("strength (each bound in its own units)")
    ax.set_ylabel(f"{result['statistic']} noticed by the simulated panel (%)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.set_title("Each target's strength at equal visibility (star: calibrated)")
    save_figure(fig, path, bbox_inches="tight")
