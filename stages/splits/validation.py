"""A validation list carved out of a split's training list (`build-splits --val-ratio 0.1`).

Training then picks `best.pt` on `val.csv` instead of on the test list, and `tsnpipe test --subset val`
scores it for `tsnpipe fuse --search-weights`, so neither choice looks at the test videos.

The carve keeps clip groups whole, as the folder splits do: clips cut from one long video are
near-duplicates, and one of them in train with its sibling in validation would flatter the
validation score. Groups: UCF101's `_gNN_` (within a class), HMDB51's source film (the part of the
clip name before `_<class>_`), Kinetics' YouTube video (the clip name less `_<start>_<end>`), and for
folders and lists the `--group-regex` groups. Per class, the groups are
shuffled (seeded by seed, split number and class) and go to validation until it holds `ratio` of the
class's training clips; a class keeps at least one group for training, so a class of one group gives
no validation clips.
"""

from __future__ import annotations

import os
import random
import re
from pathlib import Path

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.tables import isin

VAL_FILE = "val.csv"


def source_group(source: str, video_id: str, class_name: str, pattern: re.Pattern) -> str:
    """The group of one clip: HMDB51's source film, else the regex's first group (or whole match) in the name."""
    name = video_id.rsplit("/", 1)[-1]
    if source == "hmdb51":
        marker = f"_{class_name}_"
        return name[: name.index(marker)] if marker in name else name
    match = pattern.search(name)
    if match is None:
        return name
    return match.group(1) if pattern.groups else match.group(0)


def clip_groups(source: str, train: pd.DataFrame, pattern: re.Pattern) -> pd.Series:
    """`source_group` of every training clip, as one column operation where the group comes from the regex."""
    if source == "hmdb51":
        return pd.Series([source_group(source, v, c, pattern) for v, c in zip(train["video_id"], train["class_name"])],
                         index=train.index, dtype=object)
    names = pd.Series(train["video_id"], dtype="str").str.replace(r"^.*/", "", regex=True)
    if source.startswith("kinetics"):  # the YouTube video: the clip's name less its _<start>_<end>
        return names.str.replace(r"_\d{6}_\d{6}$", "", regex=True)
    whole = pattern if pattern.groups else re.compile(f"({pattern.pattern})", pattern.flags)
    return names.str.extract(whole, expand=True)[0].fillna(names)


def carve_validation(
    source: str, train: pd.DataFrame, ratio: float, seed: int = 0, number: int = 1, group_regex: str = r"_g(\d+)_",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(train without validation, validation): whole groups of each class moved to validation."""
    if not 0.0 < ratio < 1.0:
        raise TsnpipeError(f"--val-ratio {ratio} is not between 0 and 1; give the validation share, e.g. 0.1.")
    pattern = re.compile(group_regex)
    frame = pd.DataFrame({"class_name": train["class_name"].to_numpy(), "group": clip_groups(source, train, pattern).to_numpy()})
    sizes = frame.groupby(["class_name", "group"], sort=True).size()
    by_class: dict[str, dict[str, int]] = {}
    for class_name, group, count in zip(sizes.index.get_level_values(0).tolist(), sizes.index.get_level_values(1).tolist(),
                                        sizes.to_numpy().tolist()):
        by_class.setdefault(class_name, {})[group] = count
    chosen = [(class_name, group) for class_name, counts in by_class.items()
              for group in validation_groups(counts, ratio, random.Random(f"{seed}/{number}/{class_name}"))]
    keys = frame["class_name"].astype(str) + "\0" + frame["group"].astype(str)
    to_val = pd.Series(isin(keys, [f"{c}\0{g}" for c, g in chosen]), index=train.index)
    return train[~to_val].reset_index(drop=True), train[to_val].reset_index(drop=True)


def validation_groups(sizes: dict[str, int], ratio: float, rng: random.Random) -> list[str]:
    """Shuffled groups go to validation while it holds less than `ratio` of the clips; one group always stays."""
    order = sorted(sizes)
    rng.shuffle(order)
    target, taken, chosen = ratio * sum(sizes.values()), 0, []
    for group in order[:-1]:
        if taken >= target:
            break
        chosen.append(group)
        taken += sizes[group]
    return chosen


def validation_bytes(val: pd.DataFrame) -> bytes:
    """val.csv, in train.csv's columns and format."""
    return val.to_csv(index=False, lineterminator="\n").encode()


def remove_stale_validation(split_dir: str | os.PathLike) -> bool:
    """Delete a val.csv left by an earlier `--val-ratio` run (its clips are back in train.csv)."""
    path = Path(split_dir) / VAL_FILE
    if path.is_file():
        path.unlink()
        return True
    return False


def validation_table(split_dir: str | os.PathLike, num_classes: int, fallback: pd.DataFrame) -> pd.DataFrame:
    """The split's val.csv when build-splits wrote one, else `fallback` (the test list, as before)."""
    from tsnpipe.stages.train.data import read_split_table

    path = Path(split_dir) / VAL_FILE
    return non_empty(read_split_table(path, num_classes), path) if path.is_file() else fallback


def read_validation(split_dir: str | os.PathLike, num_classes: int) -> pd.DataFrame:
    """The split's val.csv; its absence is a user error naming the fix."""
    from tsnpipe.stages.train.data import read_split_table

    path = Path(split_dir) / VAL_FILE
    if not path.is_file():
        raise TsnpipeError(f"There is no {path}; run `tsnpipe build-splits ... --val-ratio 0.1` to carve a validation list first.")
    return non_empty(read_split_table(path, num_classes), path)


def non_empty(table: pd.DataFrame, path: Path) -> pd.DataFrame:
    if table.empty:
        raise TsnpipeError(f"{path} lists no videos, so there is nothing to validate on; rebuild the split with "
                           "`tsnpipe build-splits ... --val-ratio 0.1`, or delete val.csv to validate on the test list.")
    return table
