"""`tsnpipe build-splits`: train/test lists from the official UCF101, HMDB51 or Kinetics splits, from lists in
mmaction2's formats, or from class folders."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import click

from tsnpipe.manifests.files import WorkdirLock
from tsnpipe.manifests.columns import load_columns
from tsnpipe.manifests.table import journal_path, manifest_path
from tsnpipe.options import workdir_option
from tsnpipe.published_options import published_options
from tsnpipe.runner import run_info_path
from tsnpipe.stages.errors import TsnpipeError

UCF101_GROUP = r"_g(\d+)_"  # the stage's DEFAULT_GROUP_REGEX, spelled here so --help does not import pandas
KINETICS_CSV = "label, youtube_id, time_start, time_end, split (and is_cc)"


def check_frames_extracted(workdir: Path) -> None:
    """Splits list extracted videos: without a frames manifest there is nothing to split (and no workdir is made)."""
    if not (manifest_path(workdir, "frames").exists() or journal_path(workdir, "frames").exists()):
        where = f"{workdir} has no frames yet" if workdir.is_dir() else f"There is no workdir {workdir}"
        raise TsnpipeError(f"{where}: splits list extracted videos; run `tsnpipe extract-frames VIDEO_DIR -w {workdir}` "
                           "first, then build-splits.")


@click.command("build-splits")
@workdir_option
@click.option("--ucf101", "ucf101_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with classInd.txt, trainlist0N.txt and testlist0N.txt (the official UCF101 splits).")
@click.option("--hmdb51", "hmdb51_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="Folder with <class>_test_splitN.txt (the official HMDB51 testTrainMulti_7030_splits).")
@click.option("--kinetics", "kinetics_dir", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help=f"Folder with the official Kinetics-400/600/700 CSVs train.csv, validate.csv (and test.csv), columns "
                   f"{KINETICS_CSV}: train from train.csv, test from validate.csv. A clip is the video named "
                   "<youtube_id>_<start>_<end>.<any extension> (times in seconds, 6 digits: abc_000010_000020.mp4) "
                   "anywhere under the video folder.")
@click.option("--kinetics-version", type=click.Choice(["400", "600", "700"]), default=None,
              help="--kinetics: which release (W/splits/kinetics<V>/); default: from the number of classes.")
@click.option("--list", "train_list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Training list in mmaction2's formats: `<video path> <label>` or `<frame dir> <count> <label>` a line, "
                   "0-based labels, paths relative to the video folder; with --list-test (W/splits/list/).")
@click.option("--list-test", "test_list", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="--list: the test list, in the same formats.")
@click.option("--classes", "classes_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="--list: class names, one a line, line i naming label i (e.g. mmaction2's label_map_k400.txt); "
                   "default: the label ids.")
@published_options
@click.option("--folders", is_flag=True, help="Split the extracted videos by class folder, keeping clip groups together.")
@click.option("--split", "numbers", type=click.IntRange(1, 3), multiple=True,
              help="Split number(s) to write. Default: 1, 2 and 3 for UCF101/HMDB51; 1 for --kinetics, --list and --folders.")
@click.option("--ratio", type=float, default=0.7, show_default=True, help="--folders: share of each class's clips for training.")
@click.option("--seed", type=int, default=0, show_default=True, help="--folders: seed of the group shuffle.")
@click.option("--group-regex", default=UCF101_GROUP, show_default=True,
              help="--folders: regex on the file name whose first group (or match) names a clip's group; "
                   "clips of one group stay on one side. Default: UCF101's _gNN_.")
@click.option("--group-scope", type=click.Choice(["class", "all"]), default="class", show_default=True,
              help="--folders: a group lives within one class (UCF101), or names one source across all classes "
                   "(copies of a clip filed under several classes) and goes to one side everywhere.")
@click.option("--class-list", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="--hmdb51: class order from this file (one name a line) instead of sorted names.")
@click.option("--val-ratio", type=click.FloatRange(0, 1, min_open=True, max_open=True), default=None,
              help="Carve this share of each class's training clips, whole clip groups at a time, into val.csv: "
                   "training picks best.pt on it and `tsnpipe test --subset val` scores it for `fuse --search-weights`. "
                   "Without it there is no val.csv and training validates on the test list.")
@click.option("--list-root", default=None,
              help="Prefix for the paths in the *_rgb.txt / *_flow.txt lists (e.g. the absolute workdir). "
                   "Default: paths relative to the workdir.")
def build_splits(workdir, ucf101_dir, hmdb51_dir, kinetics_dir, kinetics_version, train_list, test_list, classes_file, folders,
                 numbers, ratio, seed, group_regex, group_scope, class_list, val_ratio, list_root, **published):
    """Write W/splits/<source>/split<N>/: train.csv, test.csv (video_id, label, class_name, frames, flow_pairs),
    classes.txt, the `<frame dir> <count> <label>` lists read by mmaction2 and tsn-pytorch (train_rgb.txt,
    test_rgb.txt, train_flow.txt, test_flow.txt, 0-based labels) and missing.txt: videos a split names
    that were not extracted or failed; with --val-ratio also val.csv, whose clips leave train.csv and its lists.
    The same inputs always give byte-identical files.
    """
    from tsnpipe.stages.splits.folders import folder_entries
    from tsnpipe.stages.splits.hmdb51 import read_hmdb51
    from tsnpipe.stages.splits.published import read_published
    from tsnpipe.stages.splits.tables import SPLIT_NUMBERS, build_split, split_dir, split_files, unlisted, write_split_files
    from tsnpipe.stages.splits.ucf101 import read_ucf101
    from tsnpipe.stages.splits.text import check_class_names
    from tsnpipe.stages.splits.validation import VAL_FILE, carve_validation, validation_bytes

    chosen = [name for name, given in (("ucf101", ucf101_dir), ("hmdb51", hmdb51_dir), ("kinetics", kinetics_dir),
                                       ("list", train_list), ("folders", folders)) if given]
    hvu_category = published.pop("hvu_category", "action")
    chosen += [key.removesuffix("_dir") for key, given in published.items() if given]
    if len(chosen) != 1:
        raise click.UsageError("Give exactly one source: --ucf101 DIR, --hmdb51 DIR, --kinetics DIR, --list TRAIN "
                               "--list-test TEST, --folders, --sthv2 DIR, --sthv1 DIR, --diving48 DIR, --mit DIR, "
                               "--mmit DIR or --hvu DIR.")
    source = chosen[0]
    if (source == "list") != bool(test_list):
        raise click.UsageError("--list TRAIN and --list-test TEST go together; give both.")
    if published.get(f"{source}_dir") and set(numbers) - {1}:
        raise click.UsageError(f"--{source} has one published split; drop --split or give --split 1.")
    workdir = Path(workdir)
    check_frames_extracted(workdir)
    with WorkdirLock(workdir, "tsnpipe build-splits"):
        frames = load_columns(workdir, "frames", ["video_id", "status", "frames"])
        if frames.empty:
            raise TsnpipeError(f"{manifest_path(workdir, 'frames')} lists no videos; run `tsnpipe extract-frames "
                               f"VIDEO_DIR -w {workdir}` on a folder of videos first.")
        flow = load_columns(workdir, "flow", ["video_id", "status", "pairs"])
        if source in ("kinetics", "list"):  # one set of lists, read and checked before anything is written
            source, classes, entries, params, unnamed = read_listed_source(
                workdir, frames, kinetics_dir, kinetics_version, train_list, test_list, classes_file)
        for number in numbers or (SPLIT_NUMBERS if source in ("ucf101", "hmdb51") else (1,)):
            if source == "ucf101":
                classes, entries = read_ucf101(ucf101_dir, number)
                params = {"split_dir": str(ucf101_dir)}
            elif source == "hmdb51":
                classes, entries = read_hmdb51(hmdb51_dir, number, class_list)
                params = {"split_dir": str(hmdb51_dir), "class_list": str(class_list) if class_list else "sorted"}
            elif published.get(f"{source}_dir"):
                classes, entries, params = read_published(source, published[f"{source}_dir"], frames["video_id"], hvu_category)
            elif source == "folders":
                classes, entries = folder_entries(frames["video_id"], number, ratio, seed, group_regex, group_scope)
                params = {"ratio": ratio, "seed": seed, "group_regex": group_regex, "group_scope": group_scope}
            split = build_split(source, number, classes, entries, frames, flow if not flow.empty else None, params)
            val = None
            if val_ratio:
                regex = group_regex if source in ("folders", "list") else UCF101_GROUP  # Kinetics: by YouTube video
                train, val = carve_validation(source, split.train, val_ratio, seed, number, regex)
                split = replace(split, train=train, params={**split.params, "val_ratio": val_ratio, "val_seed": seed})
            check_both_sides(split, entries, split_dir(workdir, source, number))
            if source == "folders":
                check_class_names(classes, manifest_path(workdir, "frames"))
            files = split_files(split, list_root)
            if val is not None:
                files[VAL_FILE] = validation_bytes(val)
            out = write_split_files(split_dir(workdir, source, number), files, remove=() if val is not None else (VAL_FILE,))
            if names := list(unlisted(split)["video_id"]):
                click.echo(f"warning: {len(names)} video(s) have whitespace in their names ({', '.join(map(repr, names[:3]))}"
                           f"{', ...' if len(names) > 3 else ''}), which the *_rgb.txt/*_flow.txt lists cannot hold: "
                           f"they are in train.csv/test.csv and listed in {out / 'missing.txt'}", err=True)
            held = f"{len(val):,} validation, " if val is not None else ""
            unnamed_clause = f"; {unnamed:,} extracted but in no list" if source.startswith("kinetics") or source == "list" else ""
            click.echo(f"{source} split {number}: {len(split.train):,} train, {held}{len(split.test):,} test videos over "
                       f"{len(classes)} classes; {len(split.missing):,} listed but not extracted "
                       f"(see missing.txt){unnamed_clause} -> {out}")


def check_both_sides(split, entries, out: Path) -> None:
    """A split without training or without test videos is refused before anything is written (the previous split
    stays): it would train nothing, or score nothing, and say it succeeded."""
    for subset, table in (("train", split.train), ("test", split.test)):
        if table.empty:
            listed = int((entries["subset"] == subset).sum())
            why = (f"its {subset} list names no videos" if not listed else
                   f"none of the {listed:,} {subset} videos its lists name was extracted")
            raise TsnpipeError(f"{split.source} split {split.number} would have no {subset} videos ({why}), so {out} is "
                               f"left as it was; check the {subset} annotation file, or extract the videos it names first.")


def recorded_video_dir(workdir: Path) -> Path | None:
    """The video folder extract-frames read, as W/manifests/frames.run.json records it (resolved)."""
    try:
        return Path(json.loads(run_info_path(workdir, "frames").read_text())["inputs"]["video_dir"]).resolve()
    except (OSError, ValueError, KeyError, TypeError):
        return None


def read_listed_source(workdir: Path, frames, kinetics_dir, kinetics_version, train_list, test_list, classes_file):
    """(source, classes, entries, params, extracted videos no list names) of --kinetics or --list."""
    if kinetics_dir is not None:
        from tsnpipe.stages.splits.kinetics import match_extracted, read_kinetics

        version, classes, listed = read_kinetics(kinetics_dir, int(kinetics_version) if kinetics_version else None)
        entries, unnamed = match_extracted(listed, frames)
        return f"kinetics{version}", classes, entries, {"csv_dir": str(kinetics_dir), "version": version}, unnamed
    from tsnpipe.stages.splits.lists import match_listed, read_lists

    classes, listed = read_lists(train_list, test_list, classes_file, recorded_video_dir(workdir))
    entries, unnamed = match_listed(listed, frames)
    params = {"train_list": str(train_list), "test_list": str(test_list), "classes": str(classes_file) if classes_file else "ids"}
    return "list", classes, entries, params, unnamed
