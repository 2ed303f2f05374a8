"""The horizontal flip, as the data set allows it: `on` (flip half the training clips; the 10-crop test
averages each view with its mirror), `off` (never flip in training; the 10-crop test drops the five
mirrored views and averages the other five), or `swap-labels` (a flipped training clip of class a trains
as its mirror class b; a mirrored test view's scores are read with a and b swapped before averaging).

The split decides the default: its params.json carries `flip` and `flip_pairs` (Something-Something:
`swap-labels` with the classes whose names differ by left <-> right, mmaction2's `flip_label_map`);
other splits flip (`on`), as TSN does. A run under mmaction2's Something-Something protocol (`--protocol`,
the default on those splits: `scores.protocol`) never flips unless `--flip` says otherwise, and its V1 test
averages the mirrored views as they are (`FlipRule.for_test`). `tsnpipe train --flip` overrides the default
and the run records it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.transforms import view_boxes

FLIP_MODES = ("on", "off", "swap-labels")


def split_flip(split_dir: str | Path) -> tuple[str, list[list[int]]]:
    """(default flip mode, label pairs) a split's params.json gives: ("on", []) when it says nothing."""
    path = Path(split_dir) / "params.json"
    try:
        params = json.loads(path.read_text())
    except (OSError, ValueError):
        return "on", []
    if not isinstance(params, dict):
        return "on", []
    return str(params.get("flip", "on")), check_pairs(params.get("flip_pairs", []), path, class_count(split_dir))


def class_count(split_dir: str | Path) -> int | None:
    """How many classes the split's classes.txt names (None when it cannot be read: read_split says why)."""
    try:
        return sum(1 for line in (Path(split_dir) / "classes.txt").read_text(encoding="utf-8").splitlines() if line.strip())
    except (OSError, UnicodeDecodeError):
        return None


def check_pairs(pairs, path: Path, num_classes: int | None) -> list[list[int]]:
    """Left/right class pairs as params.json gives them: a list of [a, b] class ids, a != b, inside the class
    list, each class in one pair at most; anything else names the file and the fix."""
    def fail(what: str):
        raise TsnpipeError(f"{path}: flip_pairs {what}; rebuild the split with `tsnpipe build-splits` (it writes "
                           "the left/right pairs) or give --flip on / --flip off.")
    if not isinstance(pairs, list):
        fail(f"is {json.dumps(pairs)[:40]}, not a list of [a, b] class id pairs")
    seen: set[int] = set()
    for pair in pairs:
        if (not isinstance(pair, list) or len(pair) != 2
                or not all(isinstance(c, int) and not isinstance(c, bool) for c in pair) or pair[0] == pair[1]):
            fail(f"holds {json.dumps(pair)[:40]}, not a pair of two class ids")
        for c in pair:
            if c < 0 or (num_classes is not None and c >= num_classes):
                fail(f"names class {c}, outside the {num_classes} classes of classes.txt")
            if c in seen:
                fail(f"names class {c} in two pairs")
            seen.add(c)
    return [list(pair) for pair in pairs]


def resolve_flip(requested: str | None, split_dir: str | Path) -> tuple[str, list[list[int]]]:
    """(mode, pairs) a run uses: the mode asked for, else the split's; swap-labels needs the split's pairs."""
    default, pairs = split_flip(split_dir)
    mode = requested or default
    if mode not in FLIP_MODES:
        raise TsnpipeError(f"{Path(split_dir) / 'params.json'} asks for flip {mode!r}; use one of {', '.join(FLIP_MODES)}.")
    if mode == "swap-labels" and not pairs:
        raise TsnpipeError(f"{Path(split_dir) / 'params.json'} names no left/right class pairs to swap; "
                           "use --flip on or --flip off for this split.")
    return mode, (pairs if mode == "swap-labels" else [])


def label_permutation(num_classes: int, pairs: list[list[int]]) -> list[int]:
    """perm[c]: the class a mirrored clip of class c shows (c itself unless c is in a pair)."""
    perm = list(range(num_classes))
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def mirrored_views(crops: int) -> list[bool]:
    """Which of a test's `crops` views are mirror images (the last five of 10)."""
    return [flip for _, _, flip in view_boxes(512, 512, 224, crops)]


class FlipRule:
    """What a flip does to a training clip's label, and to the mirrored views of a test."""

    def __init__(self, mode: str = "on", perm: list[int] | None = None):
        self.mode, self.perm = mode, perm

    @classmethod
    def for_run(cls, params, num_classes: int) -> "FlipRule":
        """The rule a run's TrainParams record (flip, flip_pairs)."""
        mode = getattr(params, "flip", "on")
        return cls(mode, label_permutation(num_classes, params.flip_pairs) if mode == "swap-labels" else None)

    @classmethod
    def for_test(cls, params, num_classes: int) -> "FlipRule":
        """What a test's mirrored views count for: the run's rule, but averaged as they are under mmaction2's
        Something-Something V1 protocol (its TenCrop test of a run that never flipped)."""
        if getattr(params, "protocol", "tsn") == "mmaction2-sthv1":
            return cls("on")
        return cls.for_run(params, num_classes)

    def train(self, flip: bool, label: int) -> tuple[bool, int]:
        """(flip, label) of a training clip whose crop drew `flip`."""
        if self.mode == "off":
            return False, label
        if flip and self.mode == "swap-labels":
            return True, self.perm[label]
        return flip, label

    def train_batch(self, flips: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The same for a batch: flips bool [B], labels int64 [B] (on any device)."""
        if self.mode == "off":
            return torch.zeros_like(flips), labels
        if self.mode == "swap-labels":
            perm = torch.tensor(self.perm, device=labels.device)
            return flips, torch.where(flips.to(labels.device), perm[labels], labels)
        return flips, labels

    def test_views(self, scores: torch.Tensor, mirrored: list[bool]) -> torch.Tensor:
        """Per-view scores [B, views, N, classes] made comparable before the mean over views: mirrored views
        dropped (off) or their classes swapped back (swap-labels)."""
        if self.mode == "on" or not any(mirrored):
            return scores
        index = torch.tensor([i for i, m in enumerate(mirrored) if m], device=scores.device)
        if self.mode == "off":
            keep = torch.tensor([i for i, m in enumerate(mirrored) if not m], device=scores.device)
            return scores.index_select(1, keep)
        perm = torch.tensor(self.perm, device=scores.device)
        swapped = scores.index_select(1, index).index_select(-1, perm)
        return scores.index_copy(1, index, swapped)

    def describe(self) -> str:
        return {"on": "flipped views averaged with the others", "off": "mirrored views dropped",
                "swap-labels": "mirrored views read with left/right classes swapped"}[self.mode]
