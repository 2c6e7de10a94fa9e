"""``jndplug study simulate | aggregate | import | serve | export``."""

from __future__ import annotations

from pathlib import Path

from jndplug.cli import add_command
from jndplug.errors import JNDPlugValueError


def register(subparsers) -> None:
    p = add_command(subparsers, "study", description="The JND study: binary-search protocol, screening and labels.")
    sub = p.add_subparsers(dest="study_command", metavar="STUDY_COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])
    for name, (help_line, description, add_arguments, run) in _SUBCOMMANDS.items():
        s = sub.add_parser(name, help=help_line, description=description)
        add_arguments(s)
        s.set_defaults(func=run)


def _add_session_arguments(p) -> None:
    """What a participant's session shows, the same for simulated and web observers."""
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N images")
    p.add_argument("--catch-every", type=int, default=10, metavar="N",
                   help="a catch trial after every N images (0: none; default 10)")


def _simulate_arguments(s) -> None:
    s.add_argument("dataset", type=Path, help="dataset folder (originals/, distorted/)")
    s.add_argument("--observers", type=int, default=20, help="number of simulated participants (default 20)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    s.add_argument("--observer-model", choices=("conservative", "cvvdp", "flip", "ssimulacra2", "colour"),
                   default="conservative",
                   help="visibility model (default conservative: noticed when any of ColorVideoVDP, FLIP, "
                        "SSIMULACRA 2 and a CIEDE2000 colour test says so; the same flag as jndplug train's)")
    s.add_argument("--viewing-distance", type=float, default=0.6, metavar="M",
                   help="viewing distance in metres from the 24-inch 1920x1080 display (default 0.6)")
    s.add_argument("--sensitivity-sd", type=float, default=0.3,
                   help="spread of observer sensitivity, sd of its natural log (default 0.3)")
    s.add_argument("--sensitivity-median", type=float, default=1.0,
                   help="median observer sensitivity, a multiplier on the model's distance (default 1)")
    s.add_argument("--lapse-rate", type=float, default=0.02, help="probability of a random answer (default 0.02)")
    _add_session_arguments(s)
    s.add_argument("--images", type=Path, default=None, metavar="FILE",
                   help="only the image ids listed in FILE, one per line (a labelled subset)")
    s.add_argument("--out", type=Path, default=None,
                   help="judgements file, .csv or .json (default DATASET/study/judgements.csv)")


def _aggregate_arguments(a) -> None:
    a.add_argument("dataset", type=Path, help="dataset folder (originals/, distorted/)")
    a.add_argument("--judgements", type=Path, nargs="+", default=None, metavar="FILE",
                   help="judgement files (default DATASET/study/judgements.csv)")
    a.add_argument("--out", type=Path, default=None, help="output folder (default DATASET/study)")
    a.add_argument("--jnd-rule", default="mean-floor",
                   help="per-image JND level: mean-floor (default), mean-round, median-floor or sur:P")
    a.add_argument("--max-catch-fail", type=float, default=0.2, metavar="RATE",
                   help="reject participants failing more than this fraction of catch trials (default 0.2)")
    a.add_argument("--min-participants", type=int, default=5,
                   help="flag images with fewer retained participants (default 5)")
    a.add_argument("--no-plots", action="store_true", help="skip sur_curves.png and jnd_histogram.png")


def _import_arguments(i) -> None:
    i.add_argument("file", type=Path)
    i.add_argument("--out", type=Path, required=True, help="output judgements file (.csv or .json)")
    i.add_argument("--map", nargs="+", default=[], metavar="FIELD=COLUMN", help="schema field = column in the file")
    i.add_argument("--noticeable-values", default=None, metavar="A,B",
                   help="response texts meaning noticeable (default 1,yes,y,true,noticeable,visible,different)")
    i.add_argument("--not-noticeable-values", default=None, metavar="A,B",
                   help="response texts meaning not noticeable (default 0,no,n,false,not_noticeable,invisible,same)")
    i.add_argument("--level-offset", type=int, default=0, help="added to the file's levels (1 for 0-based levels)")
    i.add_argument("--observer-kind", choices=("human", "simulated"), default="human",
                   help="for rows without an observer_kind (default human)")


def _serve_arguments(w) -> None:
    w.add_argument("dataset", type=Path, help="dataset folder (originals/, distorted/)")
    w.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only; 0.0.0.0 for all)")
    w.add_argument("--port", type=int, default=8000, help="port (default 8000; 0: any free port)")
    w.add_argument("--db", type=Path, default=None, help="study database (default DATASET/study/web.sqlite3)")
    w.add_argument("--export-to", type=Path, default=None, metavar="FILE",
                   help="where the operator page's export writes (default DATASET/study/judgements-human.csv)")
    _add_session_arguments(w)
    w.add_argument("--break-every", type=int, default=60, metavar="N",
                   help="offer a break after every N trials (0: never; default 60)")
    w.add_argument("--training", type=int, default=4, metavar="N",
                   help="training trials with feedback before the study, not recorded (default 4)")
    w.add_argument("--flicker", action="store_true",
                   help="flicker presentation: original and distorted alternate in one place "
                        "(new participants only; default side by side)")
    w.add_argument("--flicker-ms", type=int, default=100, metavar="MS",
                   help="how long each image of a flicker pair stays on screen (default 100)")


def _export_arguments(e) -> None:
    e.add_argument("dataset", type=Path, help="dataset folder (originals/, distorted/)")
    e.add_argument("--db", type=Path, default=None, help="study database (default DATASET/study/web.sqlite3)")
    e.add_argument("--out", type=Path, default=None,
                   help="judgements file, .csv or .json (default DATASET/study/judgements-human.csv)")


def _simulate(args) -> int:
    from jndplug.data.layout import JNDDataset
    from jndplug.study.observers import simulate
    from jndplug.study.visibility import make_model
    from jndplug.study.records import write_judgements

    ds = JNDDataset(args.dataset)
    images = ds.ids
    if args.images:
        wanted = [line.strip() for line in args.images.read_text().splitlines() if line.strip()]
        unknown = sorted(set(wanted) - set(ds.ids))
        if unknown:
            raise JNDPlugValueError(f"{args.images}: {len(unknown)} id(s) not in {ds.root}: {', '.join(unknown[:5])}")
        images = [i for i in ds.ids if i in set(wanted)]
    images = images[: args.limit] if args.limit else images
    model = make_model(args.observer_model, viewing_distance_m=args.viewing_distance)
    judgements = simulate(ds, model, n_observers=args.observers, seed=args.seed,
                          sensitivity_sd=args.sensitivity_sd, lapse_rate=args.lapse_rate,
                          sensitivity_median=args.sensitivity_median,
                          catch_every=args.catch_every, images=images)
    out = args.out or ds.study_dir / "judgements.csv"
    write_judgements(out, judgements)
    print(f"{len(judgements)} simulated judgements ({args.observers} observers x {len(images)} images, "
          f"model {model.key}) -> {out}")
    if model.name == "conservative":
        import json

        from jndplug.imageio import atomic_write
        from jndplug.study.observers import PredictionCache, deciding_models

        deciders = deciding_models(PredictionCache(ds, model))
        with atomic_write(ds.study_dir / "deciding_models.json", "w") as f:
            json.dump(deciders, f, indent=1)
        for part, counts in deciders.items():
            total = sum(counts.values()) or 1
            print(f"deciding model ({part.replace('_', ' ')}): " +
                  ", ".join(f"{k} {v / total:.0%}" for k, v in sorted(counts.items(), key=lambda kv: -kv[1])))
    return 0


def _aggregate(args) -> int:
    from jndplug.data.layout import JNDDataset
    from jndplug.study.labels import aggregate, write_outputs
    from jndplug.study.records import read_judgements

    ds = JNDDataset(args.dataset)
    files = args.judgements or [ds.study_dir / "judgements.csv"]
    judgements = [j for f in files for j in read_judgements(f)]
    missing = sorted({j.image for j in judgements} - set(ds.ids))
    if missing:
        raise JNDPlugValueError(f"judgements name image(s) not in {ds.root}: {', '.join(missing[:5])}")
    labels = aggregate(judgements, jnd_rule=args.jnd_rule, max_catch_fail_rate=args.max_catch_fail,
                       min_participants=args.min_participants)
    out = args.out or ds.study_dir
    write_outputs(labels, ds, out, plots=not args.no_plots)
    scr = labels["screening"]
    print(f"{scr['n_retained']} of {scr['n_participants']} participants retained "
          f"({labels['observer_kind']} observers)")
    for p, reasons in scr["rejected"].items():
        print(f"  rejected {p}: {'; '.join(reasons)}")
    flagged = {img: e["flags"] for img, e in labels["images"].items() if e.get("flags")}
    levels = [e["jnd_level"] for e in labels["images"].values() if e.get("jnd_level") is not None]
    print(f"{len(levels)} images labelled, JND level mean {sum(levels) / max(1, len(levels)):.2f}; "
          f"{len(flagged)} flagged")
    for img, flags in list(flagged.items())[:10]:
        print(f"  {img}: {', '.join(flags)}")
    if len(flagged) > 10:
        print(f"  ... and {len(flagged) - 10} more (see labels.json)")
    print(f"labels and pairs -> {out}")
    return 0


def _import(args) -> int:
    from jndplug.study.records import import_judgements, write_judgements

    columns = {}
    for m in args.map:
        field, sep, col = m.partition("=")
        if not sep or not field or not col:
            raise JNDPlugValueError(f"--map takes FIELD=COLUMN, got {m!r}")
        columns[field] = col
    kw = {}
    if args.noticeable_values is not None:
        kw["noticeable_values"] = tuple(v.strip() for v in args.noticeable_values.split(","))
    if args.not_noticeable_values is not None:
        kw["not_noticeable_values"] = tuple(v.strip() for v in args.not_noticeable_values.split(","))
    judgements = import_judgements(args.file, columns, level_offset=args.level_offset,
                                   defaults={"observer_kind": args.observer_kind}, **kw)
    write_judgements(args.out, judgements)
    print(f"{len(judgements)} judgements from {args.file} -> {args.out}")
    return 0


def _serve(args) -> int:
    import importlib.util

    if importlib.util.find_spec("flask") is None:
        raise JNDPlugValueError("the web study needs Flask: pip install 'jndplug[study]'")
    from jndplug.study.web import StudySettings, serve

    settings = StudySettings(catch_every=args.catch_every, break_every=args.break_every, training=args.training,
                             limit=args.limit, flicker=args.flicker, flicker_ms=args.flicker_ms)
    if not 0 <= args.port <= 65535:
        raise JNDPlugValueError(f"--port must be 0..65535, got {args.port}")
    return serve(args.dataset, host=args.host, port=args.port, db_path=args.db, settings=settings,
                 export_path=args.export_to)


def _export(args) -> int:
    from jndplug.data.layout import JNDDataset
    from jndplug.study.records import write_judgements
    from jndplug.study.web.app import default_db_path, default_export_path, open_study

    ds = JNDDataset(args.dataset)
    db = args.db or default_db_path(ds)
    if not db.is_file():  # opening would create an empty study database
        raise FileNotFoundError(f"no study database {db} (start one with 'jndplug study serve {args.dataset}')")
    ds, store = open_study(ds, db)
    judgements = store.judgements()
    if not judgements:
        raise JNDPlugValueError(f"{db} holds no answers yet; nothing to export")
    out = args.out or default_export_path(ds)
    write_judgements(out, judgements)
    print(f"{len(judgements)} judgements of {len(store.participants())} participants -> {out}")
    return 0


# name: (help line, description, its flags, what runs it)
_SUBCOMMANDS = {
    "simulate": ("answer the study with simulated observers (visibility model)",
                 "Run simulated participants through the binary-search protocol. Model "
                 "predictions are cached in DATASET/study/cache/, so a rerun resumes.",
                 _simulate_arguments, _simulate),
    "aggregate": ("screen participants and write labels.json + pairs/",
                  "Screen participants (catch trials, ITU-R BT.500) and write labels.json, "
                  "pairs/original/<id>.png, pairs/jnd/<id>.png and plots.",
                  _aggregate_arguments, _aggregate),
    "import": ("convert a third-party judgement table into the jndplug schema",
               "Map a CSV (or JSON list) of trial-level judgements into the jndplug "
               "judgement schema. Example: --map participant=subject image=src "
               "level=qp response=answer --noticeable-values 1 --not-noticeable-values 0",
               _import_arguments, _import),
    "serve": ("run the study with people in a browser (local web server)",
              "Serve the participant page (registration, instructions, training, the "
              "binary search image by image) and an operator page (participants, "
              "completion, screening, export). Every answer is stored in SQLite as it "
              "is given; restarting the server resumes every participant.",
              _serve_arguments, _serve),
    "export": ("write the web study's judgements to a file (server running or not)",
               "Export every answer stored by 'jndplug study serve' as judgement records, "
               "for 'jndplug study aggregate DATASET --judgements FILE'.",
               _export_arguments, _export),
}
