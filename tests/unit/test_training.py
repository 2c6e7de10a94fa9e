"""train_estimator: dataset readers, split, resume, export, SUR conditioning, DDP, config errors."""

import json
import math
import os
import shlex
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import jndplug
from jndplug.bench.common import BenchError
from jndplug.bench.sur import sur_steering
from conftest import free_port, make_image
from jndplug.datagen import distortion_measure
from jndplug.errors import JNDPlugValueError
from jndplug.imageio import read_image
from jndplug.spec import TargetSpec
from jndplug.training.loop import split_records, train
from jndplug.training.config import resolve_config
from jndplug.training.datasets import read_source

TINY = {"patch": 32, "batch": 2, "steps": 6, "val_every": 3, "checkpoint_every": 3, "loss": {"l1": 1.0, "ssim": 0.2},
        "val_crop": 64, "warmup": 2, "model": {"decoder_channels": [8, 8, 8, 8, 8], "head_channels": 8}}


def _shifted(a, amount):
    return np.clip(a.astype(int) + amount, 0, 255).astype(np.uint8)


def _save_pairs(orig_dir, target_dir, n=4, ext="png"):
    orig_dir.mkdir(parents=True)
    target_dir.mkdir(parents=True)
    for i in range(n):
        a = make_image(64, 96, i)
        Image.fromarray(a).save(orig_dir / f"img{i}.{ext}")
        Image.fromarray(_shifted(a, 6)).save(target_dir / f"img{i}.png")


@pytest.fixture
def pairs(tmp_path):
    _save_pairs(tmp_path / "o", tmp_path / "t")
    return f"pairs:{tmp_path / 'o'},{tmp_path / 't'}"


@pytest.fixture
def generated(tmp_path):
    """A miniature datagen dataset labelled in the study's labels.json schema."""
    root = tmp_path / "gen"
    images = {}
    for i in range(5):
        a = make_image(64, 96, 10 + i)
        (root / "originals").mkdir(parents=True, exist_ok=True)
        Image.fromarray(a).save(root / "originals" / f"im{i}.png")
        for level in range(1, 10):
            d = root / "distorted" / f"im{i}"
            d.mkdir(parents=True, exist_ok=True)
            Image.fromarray(_shifted(a, 2 * level)).save(d / f"{level}.png")
        sur = [max(0.0, 1.0 - 0.12 * max(0, k - i)) for k in range(1, 10)]
        images[f"im{i}"] = {"jnd_level": 2 + i % 3, "sur": sur}
    images["unlabelled"] = {"jnd_level": None, "sur": None}
    (root / "study").mkdir()
    (root / "study" / "labels.json").write_text(json.dumps({"schema": "jndplug-labels-v1", "images": images}))
    return f"generated:{root}"


def test_pairs_and_cplset_and_cnnjnd_readers(tmp_path, pairs):
    recs = read_source(pairs)
    assert [r.id for r in recs] == ["img0", "img1", "img2", "img3"]
    assert all(r.target.parent.name == "t" for r in recs)
    _save_pairs(tmp_path / "cpl" / "pristine", tmp_path / "cpl" / "CPL", n=3)
    assert len(read_source(f"cplset:{tmp_path / 'cpl'}")) == 3
    # the public CNN-Oriented JND Dataset as downloaded: Original_JND_Pair/{original,JND}
    _save_pairs(tmp_path / "cnn" / "Original_JND_Pair" / "original", tmp_path / "cnn" / "Original_JND_Pair" / "JND", n=3)
    (tmp_path / "cnn" / "Session1").mkdir()
    assert len(read_source(f"cnnjnd:{tmp_path / 'cnn'}")) == 3
    # layouts are adjustable
    _save_pairs(tmp_path / "mine" / "Original_JND_Pair" / "refs", tmp_path / "mine" / "Original_JND_Pair" / "jnd", n=2)
    with pytest.raises(FileNotFoundError, match="no original-image folder"):
        read_source(f"cnnjnd:{tmp_path / 'mine'}")
    assert len(read_source(f"cnnjnd:{tmp_path / 'mine'}", {"cnnjnd": {"original": ["refs"]}})) == 2


def test_generated_reader(generated):
    recs = read_source(generated)
    assert len(recs) == 5  # the unlabelled image is left out
    r = recs[0]
    assert len(r.levels) == 9 and r.levels[0].name == "1.png" and r.label_level == 2
    assert r.target == r.levels[1]
    # im0: SUR 0.88, 0.76, 0.64, 0.52, 0.40, ...
    assert (r.level_for_sur(0.95), r.level_for_sur(0.85), r.level_for_sur(0.5)) == (0, 1, 4)


def test_reader_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown kind 'zip'"):
        read_source("zip:/x")
    with pytest.raises(ValueError, match="expected KIND:PATH"):
        read_source("pairs")
    with pytest.raises(FileNotFoundError, match="no labels file"):
        read_source(f"generated:{tmp_path}")
    (tmp_path / "o").mkdir()
    (tmp_path / "t").mkdir()
    Image.fromarray(make_image(40, 40)).save(tmp_path / "o" / "a.png")
    with pytest.raises(ValueError, match="no target with the same name"):
        read_source(f"pairs:{tmp_path / 'o'},{tmp_path / 't'}")


def test_split_is_by_image_and_seeded(generated):
    recs = read_source(generated)
    tr, va = split_records(recs, 0.4, seed=3)
    assert not {r.id for r in tr} & {r.id for r in va} and len(va) == 2
    tr2, va2 = split_records(recs, 0.4, seed=3)
    assert [r.id for r in va] == [r.id for r in va2]


def _model_tensors(run):
    return torch.load(run / "checkpoint.pt", weights_only=True)["model"]


def test_resume_continues_bit_for_bit(tmp_path, pairs, monkeypatch):
    from jndplug.training import loop

    train([pairs], tmp_path / "straight", TINY, progress=False, measure=None)

    def killed_after_checkpoint(*args):  # the run dies right after writing its step-3 checkpoint
        save_checkpoint(*args)
        raise KeyboardInterrupt

    save_checkpoint = loop.save_checkpoint
    monkeypatch.setattr(loop, "save_checkpoint", killed_after_checkpoint)
    with pytest.raises(KeyboardInterrupt):
        train([pairs], tmp_path / "resumed", TINY, progress=False, measure=None)
    monkeypatch.undo()
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["state"]["step"] == 3
    second = train([pairs], tmp_path / "resumed", TINY, progress=False, measure=None)
    assert second["finished"] and second["step"] == 6
    a, b = _model_tensors(tmp_path / "straight"), _model_tensors(tmp_path / "resumed")
    assert [k for k in a if not torch.equal(a[k], b[k])] == []
    with pytest.raises(JNDPlugValueError, match="other config: lr "):
        train([pairs], tmp_path / "resumed", {**TINY, "lr": 1e-4}, progress=False, measure=None)


def test_training_learns_and_exports(tmp_path, pairs):
    cfg = {**TINY, "steps": 40, "val_every": 20, "checkpoint_every": 20, "lr": 3e-3, "loss": {"l1": 1.0}}
    out = tmp_path / "run"
    export = tmp_path / "model.safetensors"
    result = train([pairs], out, cfg, export=str(export), progress=False, measure=None, command="test")
    for name in ("config.json", "split.json", "log.csv", "log.json", "curves.png", "metrics.json", "best.safetensors"):
        assert (out / name).is_file(), name
    assert [h["step"] for h in result["history"]] == [20, 40]
    # learnt, on fixed data: the label of the validation image is the image 6 levels brighter, so
    # predicting no change scores 20 log10(255/6) = 32.6 dB; the trained estimator scored 65.2 dB
    # (2026-12-07). The mean training losses of two rounds of random batches are not compared.
    assert result["validation"]["psnr"] > 20 * math.log10(255 / 6) + 10
    model = jndplug.load_estimator(export)
    assert model.provenance["data"] == [pairs] and model.provenance["command"] == "test"
    assert model.provenance["validation"]["psnr"] == pytest.approx(result["validation"]["psnr"])
    # the exported estimator's own JND image (kind="jnd"; the default directed image is zero-mean
    # by construction) moves images towards the brighter targets it was trained on, by a margin
    # well above rounding
    x = jndplug.to_tensor(make_image(64, 96, 0))
    out_img = jndplug.JNDTarget(export, kind="jnd")(x)
    assert (out_img - x).mean() > 0.5 / 255


def test_sur_conditioning_and_level_metrics(tmp_path, generated):
    cfg = {**TINY, "sur_conditioning": True, "val_fraction": 0.4, "val_sur": [0.5, 0.9]}
    mae = lambda img, ref: float((img - ref).abs().mean())  # noqa: E731
    result = train([generated], tmp_path / "run", cfg, export=str(tmp_path / "c.safetensors"), progress=False,
                   measure=mae)
    v = result["validation"]
    assert {"psnr", "ssim", "level_exact", "level_within1", "psnr@sur0.5", "psnr@sur0.9"} <= set(v)
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["per_image"]
    label = {(r["id"], r["sur"]): r["level_label"] for r in rows}
    # each image is scored against its label at each ratio; a stricter ratio labels a weaker level
    assert len({i for i, _ in label}) == result["val_images"] and len(label) == len(rows)
    assert all(label[(i, 0.9)] < label[(i, 0.5)] for i, _ in label)
    # the summary is the per-image agreement of predicted and labelled level
    assert v["level_exact"] == pytest.approx(np.mean([r["level_pred"] == r["level_label"] for r in rows]))
    assert v["level_within1"] == pytest.approx(np.mean([abs(r["level_pred"] - r["level_label"]) <= 1 for r in rows]))
    # the exported file is a SUR-conditioned estimator a target runs with a SUR (bounded by its map)
    t = jndplug.JNDTarget.from_spec(TargetSpec(estimator=str(tmp_path / "c.safetensors"), bound="estimator", sur=0.9))
    assert t(torch.rand(1, 3, 32, 32)).shape == (1, 3, 32, 32)


def test_final_metrics_with_datagen_measure_and_simulated_observers(tmp_path, generated):
    pytest.importorskip("flip_evaluator")
    cfg = {**TINY, "sur_conditioning": True, "val_fraction": 0.4, "val_sur": [0.5, 0.9]}
    result = train([generated], tmp_path / "run", cfg, progress=False, observer_model="flip")
    v = result["validation"]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    # levels placed by jndplug.datagen.distortion_measure; the summary is the per-image agreement
    levels = metrics["per_image"]
    assert v["level_exact"] == pytest.approx(np.mean([r["level_pred"] == r["level_label"] for r in levels]))
    # each ratio's detection rates are the means over its images
    for p in (0.5, 0.9):
        at_p = [r for r in metrics["detection_per_image"] if r["sur"] == p]
        assert len(at_p) == result["val_images"]
        assert v[f"detect_pred@sur{p}"] == pytest.approx(np.mean([r["detect_pred"] for r in at_p]))
        assert v[f"detect_label@sur{p}"] == pytest.approx(np.mean([r["detect_label"] for r in at_p]))
    # a stricter satisfied-user ratio labels a weaker level, which the panel notices less often
    assert v["detect_label@sur0.9"] < v["detect_label@sur0.5"]
    rows = json.loads((tmp_path / "run" / "metrics.json").read_text())["detection_per_image"]
    assert len(rows) == 2 * result["val_images"] and all(r["jod_distance_label"] > 0 for r in rows)


def test_sur_part_of_the_estimator_benchmark_on_a_tiny_conditioned_model(tmp_path, generated, capsys):
    from jndplug.cli import main as cli_main

    cfg = {**TINY, "sur_conditioning": True, "val_fraction": 0.4}
    train([generated], tmp_path / "run", cfg, export=str(tmp_path / "c.safetensors"), progress=False, measure=None)
    plain = {**TINY, "val_fraction": 0.4}
    train([generated], tmp_path / "run2", plain, export=str(tmp_path / "u.safetensors"), progress=False, measure=None)
    assert cli_main(["bench", "estimator", "--parts", "sur", "--out", str(tmp_path / "b"), "--device", "cpu",
                     "--weights", str(tmp_path / "c.safetensors"), str(tmp_path / "u.safetensors"),
                     "--data", generated, "--split", str(tmp_path / "run" / "split.json"),
                     "--sur-values", "0.5", "0.9"]) == 0
    out = capsys.readouterr().out
    rows = json.loads((tmp_path / "b" / "estimator_results.json").read_text())["sur"]
    # only the conditioned estimator is measured; the other is named in a note
    assert [row["sur"] for row in rows] == [0.5, 0.9] and all(row["images"] == 2 for row in rows)
    assert "skipped the estimators without SUR conditioning: u.safetensors" in out
    # the fixture's labels: a stricter p never picks a stronger level
    assert rows[1]["label_level_mean"] <= rows[0]["label_level_mean"]
    assert "| c.safetensors | 0.9 | 2 |" in out
    # the rates are those of their definitions: the level whose distortion is nearest the
    # prediction's against the labelled one, and the most common training label as the baseline
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    recs = {rec.id: rec for rec in read_source(generated)}
    val, trained = [recs[i] for i in split["validation"]], [recs[i] for i in split["train"]]
    for row in rows:
        target = jndplug.JNDTarget(str(tmp_path / "c.safetensors"), sur=row["sur"], kind="jnd")
        labels = np.array([rec.level_for_sur(row["sur"]) for rec in val])
        nearest = []
        for rec in val:
            x = jndplug.to_tensor(read_image(rec.original))
            ladder = [0.0] + [distortion_measure(jndplug.to_tensor(read_image(f)), x) for f in rec.levels]
            nearest.append(int(np.argmin(np.abs(np.array(ladder) - distortion_measure(target(x), x)))))
        assert row["level_exact"] == np.mean(np.array(nearest) == labels)
        assert row["level_within1"] == np.mean(np.abs(np.array(nearest) - labels) <= 1)
        train_labels = [rec.level_for_sur(row["sur"]) for rec in trained]
        mode = max(set(train_labels), key=train_labels.count)
        assert row["baseline_level"] == mode and row["baseline_exact"] == np.mean(labels == mode)
        assert row["baseline_within1"] == np.mean(np.abs(labels - mode) <= 1)
    with pytest.raises(BenchError, match="not SUR-conditioned"):
        sur_steering(tmp_path / "u.safetensors", [generated], None, [0.5], "cpu")


def test_a_refused_resume_names_the_differing_keys(tmp_path, pairs):
    cfg = {**TINY, "steps": 3}
    train([pairs], tmp_path / "run", cfg, progress=False, measure=None)
    with pytest.raises(JNDPlugValueError, match=r"other config: lr \(checkpoint 0.002, this run 0.0001\), loss "
                                                r"\(checkpoint \{'l1': 1.0, 'ssim': 0.2\}, this run \{'l1': 1.0\}\); "):
        train([pairs], tmp_path / "run", {**cfg, "lr": 1e-4, "loss": {"l1": 1.0}}, progress=False, measure=None)
    with pytest.raises(JNDPlugValueError, match=r"other data: checkpoint \['pairs:.*'\], this run \['pairs:.*', "
                                                r"'pairs:.*'\]; use another --out"):
        train([pairs, pairs], tmp_path / "run", cfg, progress=False, measure=None)


def test_the_ms_ssim_error_gives_a_set_that_works(tmp_path, pairs):
    from jndplug.cli.train import _parse_set
    from jndplug.training.config import resolve_config

    with pytest.raises(JNDPlugValueError, match=r"loss ms_ssim needs patch >= 161, got 64") as err:
        resolve_config({"patch": 64})
    suggested = shlex.split(str(err.value).split("add ")[1].split(" (")[0])
    assert suggested == ["--set", "loss={l1: 0.16, ssim: 0.84}"]
    # the same loss with ssim in place of ms_ssim, and the patch kept
    assert resolve_config({"patch": 64, **_parse_set(suggested[1:])})["loss"] == {"l1": 0.16, "ssim": 0.84}


def test_config_errors(tmp_path, pairs):
    with pytest.raises(ValueError, match="unknown training config keys: epochs"):
        train([pairs], tmp_path / "r", {"epochs": 3}, progress=False)
    with pytest.raises(ValueError, match="config lr must be a number, got '5e-4'"):
        train([pairs], tmp_path / "r", {"lr": "5e-4"}, progress=False)
    with pytest.raises(ValueError, match="ms_ssim needs patch >= 161"):
        train([pairs], tmp_path / "r", {"patch": 64}, progress=False)
    with pytest.raises(ValueError, match=r"patch must be a multiple of 32 \(the size divisor of architecture unet\)"):
        train([pairs], tmp_path / "r", {"patch": 40, "loss": {"l1": 1}}, progress=False)
    # the divisor is the chosen architecture's: resjnd has none
    assert resolve_config({"arch": "resjnd", "patch": 40, "loss": {"l1": 1}})["patch"] == 40
    with pytest.raises(ValueError, match="smaller than patch 256"):
        train([pairs], tmp_path / "r", {"loss": {"l1": 1}}, progress=False)
    with pytest.raises(ValueError, match="needs SUR curves"):
        train([pairs], tmp_path / "r", {**TINY, "sur_conditioning": True}, progress=False)


def test_cli_and_ddp_two_cpu_processes(tmp_path, pairs):
    cfg = tmp_path / "cfg.json"
    cfg.write_text(json.dumps({**TINY, "steps": 4}))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    args = ["--data", pairs, "--config", str(cfg), "--no-level-metrics"]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
                        "-m", "jndplug.train_estimator", *args, "--out", str(tmp_path / "ddp"),
                        "--export", str(tmp_path / "ddp.safetensors")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "ddp.safetensors").is_file()
    assert len(json.loads((tmp_path / "ddp" / "log.json").read_text())) >= 1
    bad = subprocess.run([sys.executable, "-m", "jndplug.train_estimator", "--data", "nope:x", "--out", str(tmp_path / "x")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "unknown kind 'nope'" in bad.stderr


def test_energy_loss_scores_the_size_of_the_distortion_not_its_pattern():
    from jndplug.training.loop import compute_loss

    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 32, 32, generator=g) * 0.8 + 0.1
    d = torch.randn(2, 3, 32, 32, generator=g) * 0.02
    target = x + d
    w = {"energy": 1.0}
    # the same distortion with its sign flipped has the same local energy: no penalty
    assert compute_loss(x - d, target, w, source=x).item() < 1e-6
    # the conditional mean an L1 loss drifts to (no distortion) is penalised by the label's size
    shrunk = compute_loss(x, target, w, source=x).item()
    assert shrunk > 0.015
    # while L1 prefers it to the flipped pattern, which is why L1 alone shrinks the JND
    assert compute_loss(x, target, {"l1": 1.0}).item() < compute_loss(x - d, target, {"l1": 1.0}).item()
    with pytest.raises(ValueError, match="source"):
        compute_loss(x, target, w)


def test_init_from_an_estimator_file_and_select_by_level(tmp_path, generated):
    cfg = {**TINY, "sur_conditioning": True, "val_fraction": 0.4, "val_sur": [0.5, 0.9]}
    mae = lambda img, ref: float((img - ref).abs().mean())  # noqa: E731
    first = tmp_path / "a.safetensors"
    train([generated], tmp_path / "a", cfg, export=str(first), progress=False, measure=mae)
    # no steps' worth of change (lr 0, no decay): the fine-tune exports exactly the weights it started from
    again = tmp_path / "b.safetensors"
    result = train([generated], tmp_path / "b", {**cfg, "init": str(first), "lr": 0.0, "weight_decay": 0.0,
                                                 "select": "level", "loss": {"l1": 1.0, "energy": 1.0}},
                   export=str(again), progress=False, measure=mae)
    assert "level_error" in result["validation"]
    # (batch-norm running statistics do move in train mode; the learnt parameters must not)
    a, b = (dict(jndplug.load_estimator(f).named_parameters()) for f in (first, again))
    assert a.keys() == b.keys() and [k for k in a if not torch.equal(a[k], b[k])] == []
    # a file of another configuration is refused with the mismatch named
    with pytest.raises(ValueError, match="set arch and model"):
        train([generated], tmp_path / "c", {**cfg, "init": str(first), "model": {"decoder_channels": [8] * 5}},
              progress=False, measure=mae)
    with pytest.raises(ValueError, match="select must be one of"):
        train([generated], tmp_path / "d", {**cfg, "select": "ssim"}, progress=False, measure=mae)
