"""`tsnpipe run CONFIG.toml`: the whole chain from one config file, each stage doing only what is not done.

A config section is named after a command and its keys are that command's options, so the file reads
like the commands it runs (`[extract-frames] fps = 10` is `tsnpipe extract-frames --fps 10`):

    workdir = "work"
    videos = "UCF-101"

    [extract-frames]
    fps = 10
    [extract-flow]
    bound = 20
    [build-splits]
    ucf101 = "ucfTrainTestlist"
    split = 1
    [pack]
    format = "lmdb"
    [train]
    modalities = ["rgb", "flow"]
    backbone = "resnet50"
    [train.flow]
    epochs = 340
    [test]
    segments = 25
    crops = 10
    [fuse]
    weights = "1:1.5"

Per-video stages skip what their manifests say is up to date. Each modality trains in
`W/runs/<modality>-<hash of its options and of the content of the split and store files>` (no path: a moved
workdir finds its runs): the same recipe on the same data resumes its run, new videos or another recipe
start a new run beside the old one. A run keeps `last.pt` while it trains and only `best.pt` once it
finished, which marks it done. A test is skipped when its score file is newer than the checkpoint.
`[test] validation-split = 2` also scores each checkpoint on that split and lets fuse search its weights there.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Callable

import click

PER_VIDEO_STAGES = ("extract-frames", "extract-flow", "build-splits", "pack")
MODALITIES = ("rgb", "rgbdiff", "flow")  # what `train --modality` accepts


def option_args(command: click.Command, section: dict) -> list[str]:
    """`{"fps": 10, "progress": False}` -> `["--fps", "10", "--no-progress"]`, checked against the command."""
    by_name = {p.name: p for p in command.params if isinstance(p, click.Option)}
    by_flag = {opt.lstrip("-").replace("-", "_"): p for p in command.params if isinstance(p, click.Option)
               for opt in p.opts}
    args = []
    for key, value in section.items():
        option = by_flag.get(key.replace("-", "_")) or by_name.get(key.replace("-", "_"))
        if option is None or isinstance(value, dict):
            raise click.UsageError(f"[{command.name}] has no option {key!r}; see `tsnpipe {command.name} --help`.")
        flag = max(option.opts, key=len)
        if option.is_flag and isinstance(value, bool):
            if value:
                args.append(flag)
            elif option.secondary_opts:
                args.append(option.secondary_opts[0])
        elif option.multiple and isinstance(value, list):
            for item in value:
                args += [flag, str(item)]
        elif isinstance(value, list):
            args += [flag, ",".join(str(v) for v in value)]
        else:
            args += [flag, str(value)]
    return args


def read_config(path: Path) -> dict:
    """The config, checked: workdir and videos are paths, each stage's section is a table, `[train] modalities`
    a list of distinct modalities; anything else is one sentence naming the file and the key."""
    try:
        config = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        line = path.read_bytes().count(b"\n", 0, exc.start) + 1
        raise click.ClickException(f"{path} line {line} is not UTF-8 text; save the config as UTF-8 (TOML files are).") from None
    except OSError as exc:
        raise click.ClickException(f"{path} cannot be read ({exc.strerror}); give a readable config file.") from None
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"{path} is not valid TOML ({exc}); fix the file.") from None
    for key in ("workdir", "videos"):
        if key not in config:
            raise click.ClickException(f"{path} names no {key!r}; add e.g. {key} = \"...\" at the top.")
        if not isinstance(config[key], str) or not config[key].strip():
            raise click.ClickException(f"{path}: {key} = {config[key]!r} is not a path; write it as a quoted string, "
                                       f"e.g. {key} = \"...\".")
    for section in (*PER_VIDEO_STAGES, "train", "test", "fuse"):
        if section in config and not isinstance(config[section], dict):
            raise click.ClickException(f"{path}: {section} = {config[section]!r} is not a table; write its options "
                                       f"under a [{section}] heading.")
    for modality in MODALITIES:
        if modality in config.get("train", {}) and not isinstance(config["train"][modality], dict):
            raise click.ClickException(f"{path}: [train] {modality} = {config['train'][modality]!r} is not a table; write "
                                       f"its options under a [train.{modality}] heading.")
    modalities = config.get("train", {}).get("modalities", [])
    if (not isinstance(modalities, list) or not all(m in MODALITIES for m in modalities)
            or len(set(modalities)) != len(modalities)):
        raise click.ClickException(f"{path}: [train] modalities = {modalities!r} is not a list of distinct modalities "
                                   f"from {', '.join(MODALITIES)}; e.g. modalities = [\"rgb\", \"flow\"].")
    base = path.parent
    config["workdir"] = str((base / config["workdir"]).resolve())
    config["videos"] = str((base / config["videos"]).resolve())
    return config


def stage_commands(config: dict, main: click.Group) -> list[tuple[str, list[str]]]:
    """The per-video stages the config asks for, in order, as (label, argv)."""
    steps = []
    for name in PER_VIDEO_STAGES:
        if name not in config and name != "extract-frames":
            continue
        positional = [config["videos"]] if name == "extract-frames" else []
        steps.append((name, [name, *positional, "--workdir", config["workdir"],
                             *option_args(main.commands[name], dict(config.get(name, {})))]))
    return steps


def store_path(config: dict) -> str | None:
    if "pack" not in config:
        return None
    fmt = config["pack"].get("format", "lmdb")
    return config["pack"].get("store") or str(Path(config["workdir"]) / "stores" / f"frames.{fmt}")


def split_folder(config: dict, number: int | None = None) -> Path:
    """W/splits/<source>/split<N> of the split training will use (`number`, else the first one build-splits
    writes)."""
    section = config.get("build-splits", {})
    source = next((name for name in ("ucf101", "hmdb51", "kinetics", "list", "folders", "sthv2", "sthv1", "diving48", "mit",
                                     "mmit", "hvu") if section.get(name)), "folders")
    if source == "kinetics":  # kinetics400, 600 or 700: given, else the one build-splits found in the CSVs
        found = sorted(p.name for p in (Path(config["workdir"]) / "splits").glob("kinetics*"))
        given = section.get("kinetics-version") or section.get("kinetics_version")
        source = f"kinetics{given}" if given else (found[0] if found else "kinetics400")
    if number is None:
        number = section.get("split", 1)
        number = number[0] if isinstance(number, list) else number
    return Path(config["workdir"]) / "splits" / source / f"split{number}"


def run_name(modality: str, options: list[str], split_dir: Path, store: str | None, workdir: str) -> str:
    """`<modality>-<hash>`: the same recipe on the same data finds its run again (and resumes it); new data or
    another recipe starts a new run beside the old one, which is kept. The hash reads the recipe (not where the
    store is, nor whether bars are shown) and the content of the split and store files, never a path, so a
    workdir moved elsewhere still finds its runs."""
    from tsnpipe.manifests.decide import params_hash
    from tsnpipe.stages.train.checkpoint import data_hashes

    recipe = [arg for i, arg in enumerate(options)
              if arg not in ("--store", "--progress", "--no-progress") and (i == 0 or options[i - 1] != "--store")]
    return f"{modality}-{params_hash({'options': recipe, 'data': data_hashes(split_dir, Path(store or workdir))})[:8]}"


def train_is_finished(run_dir: Path) -> bool:
    """A run the chain trained to its last epoch keeps best.pt only; last.pt lives while training goes on."""
    return (run_dir / "best.pt").exists() and not (run_dir / "last.pt").exists()


def model_commands(config: dict, main: click.Group) -> list[tuple[str, list[str]]]:
    """train and test per modality, then fuse; planned after the data stages ran, since run names hash the data.

    `[test] validation-split = N` also scores each checkpoint on split N (a validation split: videos neither
    trained nor tested on) into W/scores/validation/, and fuse then searches its weights on those scores."""
    workdir, store = config["workdir"], store_path(config)
    train = dict(config.get("train", {}))
    test = dict(config.get("test", {}))
    validation_split = test.pop("validation-split", None)
    modalities = train.pop("modalities", [])
    per_modality = {m: train.pop(m, {}) for m in MODALITIES}
    store_args = ["--store", store] if store else []
    test_args = option_args(main.commands["test"], test) + store_args
    validate_args = (option_args(main.commands["test"], {**test, "split": validation_split}) + store_args
                     if validation_split is not None else [])
    steps, scores, validation = [], [], []
    for modality in modalities:
        options = option_args(main.commands["train"], {**train, **per_modality[modality]}) + store_args
        name = run_name(modality, options, split_folder(config, {**train, **per_modality[modality]}.get("split")),
                        store, workdir)
        run_dir = Path(workdir) / "runs" / name
        resume = ["--resume"] if (run_dir / "last.pt").exists() else []
        steps.append((f"train {modality}", ["train", "--workdir", workdir, "--modality", modality, "--run-name", name,
                                            *options, *resume]))
        for label, folder, args, found in ((f"test {modality}", "scores", test_args, scores),
                                           (f"validate {modality}", "scores/validation", validate_args, validation)):
            if label.startswith("validate") and validation_split is None:
                continue
            out = Path(workdir) / folder / f"{name}.pkl"
            steps.append((label, ["test", "--checkpoint", str(run_dir / "best.pt"), "--workdir", workdir,
                                  "--out", str(out), *args]))
            found.append(str(out))
    if len(scores) > 1:
        fuse = dict(config.get("fuse", {}))
        if validation:
            fuse.pop("weights", None)
        steps.append(("fuse", ["fuse", *scores, *option_args(main.commands["fuse"], fuse),
                               *(["--search-weights", *validation] if validation else []),
                               "--out", str(Path(workdir) / "scores" / "fused.pkl")]))
    return steps


def scores_are_current(args: list[str]) -> bool:
    """A score file newer than its checkpoint needs no new test."""
    checkpoint = Path(args[args.index("--checkpoint") + 1])
    out = Path(args[args.index("--out") + 1])
    return checkpoint.exists() and out.exists() and out.stat().st_mtime > checkpoint.stat().st_mtime


def train_run_dir(args: list[str]) -> Path:
    return Path(args[args.index("--workdir") + 1]) / "runs" / args[args.index("--run-name") + 1]


def up_to_date(label: str, args: list[str]) -> str | None:
    """What makes a train or test step up to date (to print), or None when it has work to do."""
    if label.startswith("train") and train_is_finished(train_run_dir(args)):
        return str(train_run_dir(args) / "best.pt")
    if args[0] == "test" and scores_are_current(args):
        return args[args.index("--out") + 1]
    return None


def run_steps(steps: list[tuple[str, list[str]]], main: click.Group, outcomes: list,
              announce: Callable[[str], None] | None = None) -> bool:
    """Run each command; a stage with failed videos lets the chain go on, a stage error stops it (False).
    A finished training run keeps best.pt only. `announce(label)` is called before each step."""
    for label, args in steps:
        if announce:
            announce(label)
        if (done := up_to_date(label, args)) is not None:
            click.echo(f"== {label}: up to date ({done})")
            outcomes.append((label, "up to date"))
            continue
        click.echo(f"== {label}: tsnpipe {' '.join(args)}")
        try:
            main.main(args, prog_name="tsnpipe", standalone_mode=False)
            outcomes.append((label, "ok"))
        except SystemExit as exc:  # a per-video stage exits 1 when some videos failed; the rest goes on
            outcomes.append((label, "ok" if not exc.code else "some videos failed"))
        except click.ClickException as exc:
            click.echo(f"Error: {exc.format_message()}", err=True)
            outcomes.append((label, "error"))
            return False
        if label.startswith("train"):
            (train_run_dir(args) / "last.pt").unlink(missing_ok=True)
    return True


def run_chain(config: dict, main: click.Group, name: str, after_stages: Callable[[], None] | None = None,
              announce: Callable[[str], None] | None = None) -> None:
    """Run the whole chain, print one line of outcomes, write W/report.html (and print its path), and exit 1 when
    a stage stopped it. `after_stages` runs between the per-video stages and training (the demo writes its
    validation split there)."""
    outcomes: list[tuple[str, str]] = []
    if run_steps(stage_commands(config, main), main, outcomes, announce):
        if after_stages:
            after_stages()
        run_steps(model_commands(config, main), main, outcomes, announce)
    click.echo(f"{name}: " + "; ".join(f"{label} {state}" for label, state in outcomes))
    from tsnpipe.cmd_report import write_workdir_report

    click.echo(f"{name}: report {write_workdir_report(Path(config['workdir']))} (open it in a browser)")
    if any(state == "error" for _, state in outcomes):
        raise SystemExit(1)


@click.command("run")
@click.argument("config_path", metavar="CONFIG.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def run(ctx, config_path):
    """Run the whole chain described by CONFIG.toml: frames, flow, splits, pack, train and test per modality,
    fuse. Sections are named after the commands and hold their options; paths are relative to the file.
    Every stage skips what is up to date, so a rerun after adding videos does only the new work and a rerun
    after a crash picks up where it stopped."""
    config = read_config(config_path)
    run_chain(config, ctx.find_root().command, "run")
