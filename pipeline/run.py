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

Per-video stages skip what their manifests say is up to date. A modality whose run folder already holds
a checkpoint is resumed (a finished one does no work; a changed split or recipe is refused by train), and
its test is skipped when its score file is newer than the checkpoint. Delete `W/runs/<modality>` to retrain.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import click

PER_VIDEO_STAGES = ("extract-frames", "extract-flow", "build-splits", "pack")


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
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise click.ClickException(f"{path} is not valid TOML ({exc}); fix the file.") from None
    for key in ("workdir", "videos"):
        if key not in config:
            raise click.ClickException(f"{path} names no {key!r}; add e.g. {key} = \"...\" at the top.")
    base = path.parent
    config["workdir"] = str((base / config["workdir"]).resolve())
    config["videos"] = str((base / config["videos"]).resolve())
    return config


def plan_commands(config: dict, main: click.Group) -> list[tuple[str, list[str]]]:
    """The commands the config asks for, in order, as (label, argv)."""
    workdir = config["workdir"]
    steps = []
    for name in PER_VIDEO_STAGES:
        if name not in config and name != "extract-frames":
            continue
        section = dict(config.get(name, {}))
        positional = [config["videos"]] if name == "extract-frames" else []
        steps.append((name, [name, *positional, "--workdir", workdir, *option_args(main.commands[name], section)]))
    store = None
    if "pack" in config:
        fmt = config["pack"].get("format", "lmdb")
        store = config["pack"].get("store") or str(Path(workdir) / "stores" / f"frames.{fmt}")
    train = dict(config.get("train", {}))
    modalities = train.pop("modalities", [])
    per_modality = {m: train.pop(m, {}) for m in ("rgb", "rgbdiff", "flow")}
    scores = []
    for modality in modalities:
        run_dir = Path(workdir) / "runs" / modality
        args = ["train", "--workdir", workdir, "--modality", modality, "--run-name", modality,
                *option_args(main.commands["train"], {**train, **per_modality[modality]})]
        if store:
            args += ["--store", store]
        if (run_dir / "last.pt").exists():
            args.append("--resume")
        steps.append((f"train {modality}", args))
        out = Path(workdir) / "scores" / f"{modality}.pkl"
        checkpoint = run_dir / "best.pt"
        test_args = ["test", "--checkpoint", str(checkpoint), "--workdir", workdir, "--out", str(out),
                     *option_args(main.commands["test"], config.get("test", {}))]
        if store:
            test_args += ["--store", store]
        steps.append((f"test {modality}", test_args))
        scores.append(str(out))
    if len(scores) > 1:
        fuse = dict(config.get("fuse", {}))
        steps.append(("fuse", ["fuse", *scores, *option_args(main.commands["fuse"], fuse),
                               "--out", str(Path(workdir) / "scores" / "fused.pkl")]))
    return steps


def scores_are_current(args: list[str]) -> bool:
    """A score file newer than its checkpoint needs no new test."""
    checkpoint = Path(args[args.index("--checkpoint") + 1])
    out = Path(args[args.index("--out") + 1])
    return checkpoint.exists() and out.exists() and out.stat().st_mtime > checkpoint.stat().st_mtime


def run_chain(config: dict, main: click.Group) -> list[tuple[str, str]]:
    """Run each planned command; a stage with failed videos lets the chain go on, a stage error stops it."""
    outcomes = []
    for label, args in plan_commands(config, main):
        if label.startswith("test") and scores_are_current(args):
            click.echo(f"== {label}: up to date ({args[args.index('--out') + 1]})")
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
            break
    return outcomes


@click.command("run")
@click.argument("config_path", metavar="CONFIG.toml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.pass_context
def run(ctx, config_path):
    """Run the whole chain described by CONFIG.toml: frames, flow, splits, pack, train and test per modality,
    fuse. Sections are named after the commands and hold their options; paths are relative to the file.
    Every stage skips what is up to date, so a rerun after adding videos does only the new work and a rerun
    after a crash picks up where it stopped."""
    config = read_config(config_path)
    outcomes = run_chain(config, ctx.find_root().command)
    click.echo("run: " + "; ".join(f"{label} {state}" for label, state in outcomes))
    if any(state == "error" for _, state in outcomes):
        raise SystemExit(1)
