"""A split of one's own class folders: class folder names sorted; a seeded train/test split that keeps
each clip group (a regex over the file name) on one side."""

from __future__ import annotations

import random
import re
from collections.abc import Iterable

import pandas as pd

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.splits.tables import entries_table

DEFAULT_GROUP_REGEX = r"_g(\d+)_"  # UCF101's group: clips gNN of one class are cut from one long video


def group_of(video_id: str, pattern: re.Pattern) -> str:
    """The clip group a video belongs to: the regex's first group (or whole match) in the file name;
    a name without a match is a group of its own."""
    name = video_id.rsplit("/", 1)[-1]
    match = pattern.search(name)
    if match is None:
        return name
    return match.group(1) if pattern.groups else match.group(0)


def _assign(groups: dict[str, int], ratio: float, rng: random.Random) -> dict[str, str]:
    """Shuffled groups (name -> clip count) go to train until it holds `ratio` of the clips; with two or
    more groups, at least one stays for test."""
    order = sorted(groups)
    rng.shuffle(order)
    target, taken, side = ratio * sum(groups.values()), 0, {}
    for i, group in enumerate(order):
        keep_one_for_test = len(order) > 1 and i == len(order) - 1
        side[group] = "train" if taken < target and not keep_one_for_test else "test"
        taken += groups[group] if side[group] == "train" else 0
    return side


def folder_entries(video_ids: Iterable[str], number: int = 1, ratio: float = 0.7, seed: int = 0,
                   group_regex: str = DEFAULT_GROUP_REGEX, scope: str = "class") -> tuple[list[str], pd.DataFrame]:
    """Classes (sorted class folders) and a seeded train/test split that keeps each group on one side.

    scope "class": per class, the groups are shuffled (seeded by seed, split number and class) and go to
    train until the train side holds `ratio` of the class's clips; near-duplicate clips share their class
    (UCF101's gNN). scope "all": a group name means the same source in every class (e.g. re-timed or
    re-cropped copies of one clip filed under several classes), so each group goes to one side in all
    classes at once."""
    if not 0.0 < ratio < 1.0:
        raise TsnpipeError(f"--ratio {ratio} is not between 0 and 1; give the train fraction, e.g. 0.7.")
    try:
        pattern = re.compile(group_regex)
    except re.error as error:
        raise TsnpipeError(f"--group-regex {group_regex!r} is not a valid regular expression ({error}); fix it.") from None
    by_class: dict[str, dict[str, list[str]]] = {}
    for video_id in sorted(set(video_ids)):
        if "/" not in video_id:
            raise TsnpipeError(f"Video {video_id!r} is not inside a class folder; put each video under <class>/ in the video folder.")
        by_class.setdefault(video_id.split("/")[0], {}).setdefault(group_of(video_id, pattern), []).append(video_id)
    classes = sorted(by_class)
    if scope == "all":
        sizes: dict[str, int] = {}
        for clips in by_class.values():
            for group, members in clips.items():
                sizes[group] = sizes.get(group, 0) + len(members)
        shared = _assign(sizes, ratio, random.Random(f"{seed}/{number}"))
    rows = []
    for label, class_name in enumerate(classes):
        clips = by_class[class_name]
        side = shared if scope == "all" else _assign({g: len(v) for g, v in clips.items()}, ratio,
                                                     random.Random(f"{seed}/{number}/{class_name}"))
        for group in sorted(clips):
            rows.extend((video_id, side[group], label) for video_id in clips[group])
    return classes, entries_table(rows).sort_values("video_id", kind="stable").reset_index(drop=True)
