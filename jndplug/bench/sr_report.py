"""The report of ``bench sr``: tables per architecture, the screen's agreement, the figures."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from jndplug.bench.common import summarize
from jndplug.bench.recipe import UNTRANSFORMED, run_name
from jndplug.bench.settings import SRSettings as Settings
from jndplug.imageio import read_image
from jndplug.metrics import METRICS
from jndplug.pixels import centre_crop

PD = ("psnr_y", "stlpips")  # the perception-distortion plane: fidelity against a perceptual distance


def report(results: list[dict], screens: dict, curves: dict, names: list[str], tests, s: Settings) -> dict:
    lines = [f"Converged x4 restorers fine-tuned per target ({s.steps} steps each, seeds "
             f"{' '.join(map(str, s.seeds))}); test: central {s.crop}px crops of {' + '.join(s.test_sets)} "
             f"({len(tests)} images), scored against the true ground truth.\n"]
    table = {}
    for arch in s.archs:
        curve = [c["val_psnr_y"] for c in curves[arch]]
        tail = curve[-1] - curve[max(0, int(0.8 * len(curve)) - 1)]
        lines.append(f"### {arch}\n\nPretraining: {curves[arch][-1]['step']} steps, validation PSNR-Y "
                     f"{curve[-1]:.3f} dB; change over the last fifth of the curve {tail:+.3f} dB.\n")
        table[arch] = arch_table([r for r in results if r["arch"] == arch], names, s.targets, lines)
        if screens.get(arch) is not None:
            table[arch]["screen_agreement"] = screen_agreement(screens[arch], table[arch], names, s.targets)
            agreement = table[arch]["screen_agreement"]
            lines.append(f"\nScreen on the pretrained network's outputs: predicted sign agrees with the fine-tunes' "
                         f"mean change in {agreement['agree']} of {agreement['total']} (target, metric) cases.\n")
        versus = against_perceptual_curve(table[arch], s.targets)
        if versus:
            table[arch]["against_perceptual_curve"] = versus
            lines += ["\nAgainst the perceptual-loss curve (gt and the perceptual:weight=W fine-tunes joined in order "
                      "of PSNR-Y): ST-LPIPS of each target minus the curve's at the target's PSNR-Y (negative: "
                      "better than a perceptual loss at the same fidelity; n/a outside the curve's PSNR-Y range).\n",
                      "| target | PSNR-Y | ST-LPIPS | curve's ST-LPIPS there | difference |", "|---|---|---|---|---|"]
            lines += [f"| {t} | {v['psnr_y']:.3f} | {v['stlpips']:.4f} | "
                      + ("n/a | n/a |" if v["curve"] is None else f"{v['curve']:.4f} | {v['stlpips'] - v['curve']:+.4f} |")
                      for t, v in versus.items()]
    return {"table": table, "markdown": "\n".join(lines) + "\n"}


def perceptual_curve(table: dict, targets: list[str]) -> list[tuple[float, float]]:
    """(PSNR-Y, ST-LPIPS) means of gt and the perceptual-loss fine-tunes, in order of PSNR-Y."""
    names = ["gt"] + [t for t in targets if t.startswith("perceptual:")]
    if len(names) < 2 or not all(set(PD) <= set(table.get(t, {})) for t in names):
        return []
    return sorted((table[t][PD[0]]["value"]["mean"], table[t][PD[1]]["value"]["mean"]) for t in names)


def against_perceptual_curve(table: dict, targets: list[str]) -> dict:
    """Per other target: its PSNR-Y and ST-LPIPS and the perceptual-loss curve's ST-LPIPS at that
    PSNR-Y, interpolated linearly (None outside the curve's range: no extrapolation)."""
    curve = perceptual_curve(table, targets)
    if not curve:
        return {}
    xs, ys = [c[0] for c in curve], [c[1] for c in curve]
    out = {}
    for t in targets:
        if t == "gt" or t.startswith("perceptual:") or not set(PD) <= set(table.get(t, {})):
            continue
        x, y = table[t][PD[0]]["value"]["mean"], table[t][PD[1]]["value"]["mean"]
        out[t] = {"psnr_y": x, "stlpips": y, "curve": float(np.interp(x, xs, ys)) if xs[0] <= x <= xs[-1] else None}
    return out


def baseline_of(target: str) -> str:
    """What a target is compared with seed by seed: a GAN arm with the GAN trained on the ground
    truth (``gan:gt``), everything else (``gan:gt`` included) with the ``gt`` fine-tune."""
    return "gan:gt" if target.startswith("gan:") and target != "gan:gt" else "gt"


def arch_table(rs: list[dict], names: list[str], targets: list[str], lines: list[str]) -> dict:
    """Mean over seeds and seed-paired change against the target's baseline (``baseline_of``) per
    target and metric (rows into ``lines``)."""
    means = {(r["target"], r["seed"]): r["mean"] for r in rs}
    gan = any(t.startswith("gan:") for t in targets)
    lines += ["| target | " + " | ".join(names) + " | better than "
              + ("its baseline (gt; gan:gt for gan: targets)" if gan else "gt") + " on every seed |",
              "|" + "---|" * (len(names) + 2)]
    table = {}
    for target in targets:
        sub = [r for r in rs if r["target"] == target]
        base = baseline_of(target)
        cells, wins, entry = [], [], {}
        for m in names:
            change = [r["mean"][m] - means[base, r["seed"]][m] for r in sub]
            value, delta = summarize([r["mean"][m] for r in sub]), summarize(change)
            entry[m] = {"value": value, "delta": delta, "baseline": base}
            cells.append(f"{value['mean']:.4f} ({delta['mean']:+.4f})" if target != "gt" else f"{value['mean']:.4f}")
            sign = 1 if METRICS[m].higher_is_better else -1
            if target != "gt" and all(sign * c > 0 for c in change):
                wins.append(m)
        table[target] = entry
        lines.append(f"| {target} | " + " | ".join(cells) + f" | {', '.join(wins) if target != 'gt' else ''} |")
    return table


def screen_agreement(scr: dict, table: dict, names: list[str], targets: list[str]) -> dict:
    """How often the screen's predicted sign of each (target, metric) change matches the fine-tunes' mean."""
    agree, total, detail = 0, 0, []
    for target in targets:
        pred = next((e for e in scr["summary"] if e["transform"] == target), None)
        if target in UNTRANSFORMED or pred is None:
            continue
        for m in names:
            p, f = pred["delta"].get(m), table[target][m]["delta"]["mean"]
            if p is None or f is None:
                continue
            total += 1
            agree += int(np.sign(p) == np.sign(f))
            detail.append(f"{target} {m}: screen {p:+.4f}, fine-tune {f:+.4f}")
    return {"agree": agree, "total": total, "detail": detail}


def pd_plane(path: Path, results: list[dict], s: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(s.archs), figsize=(5.5 * len(s.archs), 4), squeeze=False)
    for ax, arch in zip(axes[0], s.archs):
        for target in s.targets:
            sub = [r for r in results if r["arch"] == arch and r["target"] == target]
            xs, ys = [r["mean"][PD[0]] for r in sub], [r["mean"][PD[1]] for r in sub]
            ax.scatter(xs, ys, s=14, alpha=0.5)
            ax.scatter([np.mean(xs)], [np.mean(ys)], s=60, marker="x", color=ax.collections[-1].get_facecolor()[0],
                       label=target)
        curve = [(np.mean([r["mean"][PD[0]] for r in results if r["arch"] == arch and r["target"] == t]),
                  np.mean([r["mean"][PD[1]] for r in results if r["arch"] == arch and r["target"] == t]))
                 for t in ["gt"] + [t for t in s.targets if t.startswith("perceptual:")]]
        if len(curve) > 1:  # what a perceptual loss buys at each fidelity, gt being weight 0
            curve.sort()
            ax.plot([c[0] for c in curve], [c[1] for c in curve], color="grey", lw=1, ls="--", label="perceptual-loss curve")
        ax.set_xlabel("PSNR-Y (dB), higher is better")
        ax.set_ylabel("ST-LPIPS, lower is better")
        ax.set_title(f"{arch}: seeds (dots) and means (crosses)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def crops(path: Path, arch: str, tests: list, s: Settings, side: int = 64) -> None:
    """GT and every target's seed-0 output, the same centre crop of the first few test images, at 3x."""
    from PIL import Image

    rows = []
    for name, gt, _ in tests[:3]:
        tiles = [gt]
        for target in s.targets:
            run = Path(s.out) / "runs" / run_name(arch, target=target, seed=s.seeds[0])
            tiles.append(read_image(run / "outputs" / f"{name}.png"))
        rows.append(np.concatenate([centre_crop(t, side) for t in tiles], 1))
    grid = np.concatenate(rows, 0)
    Image.fromarray(grid).resize((grid.shape[1] * 3, grid.shape[0] * 3), Image.NEAREST).save(path)
