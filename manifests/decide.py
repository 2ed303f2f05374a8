"""Does an item need work, and why? Fingerprints, params hashes and the one rule that decides.

Like a dvc lock entry, a manifest row remembers the input's fingerprint and a hash of exactly the params
the stage read (plus its hand-bumped STAGE_VERSION). Cheapest checks come first.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

NEW = "new"
PARAMS_CHANGED = "params changed"
INPUT_CHANGED = "input changed"
FAILED_BEFORE = "failed before"
OUTPUT_MISSING = "output missing"
REASONS = (NEW, PARAMS_CHANGED, INPUT_CHANGED, FAILED_BEFORE, OUTPUT_MISSING)


def params_hash(params: dict) -> str:
    """A short, stable hash of a JSON-able params dict (key order does not matter)."""
    text = json.dumps(params, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def stat_fingerprint(path: Path) -> dict:
    """Size and modification time: cheap, and enough unless the mtime moved."""
    st = os.stat(path)
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def content_hash(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def needs_content_hash(old: dict | None, new: dict) -> bool:
    """True when only the mtime moved: then the content hash decides whether the input really changed."""
    return bool(old) and "size" in new and old.get("size") == new["size"] and old.get("mtime_ns") != new["mtime_ns"]


def same_input(old: dict, new: dict) -> bool:
    if old == new:  # the common case, and the cheapest test
        return True
    if old.get("size") != new.get("size"):
        return False
    if "hash" in old and "hash" in new:
        return old["hash"] == new["hash"]
    return {k: v for k, v in old.items() if k != "hash"} == {k: v for k, v in new.items() if k != "hash"}


def needs_work(row: dict | None, fingerprint: dict, params_hash_now: str, output_present: bool,
               old_fingerprint: dict | None = None) -> str | None:
    """The reason this item needs work, or None when its row is up to date. Pure: no I/O. `old_fingerprint`:
    the row's fingerprint when the caller has parsed it already."""
    if row is None:
        return NEW
    if row.get("params_hash") != params_hash_now:
        return PARAMS_CHANGED
    old = json.loads(row.get("fingerprint") or "{}") if old_fingerprint is None else old_fingerprint
    if not same_input(old, fingerprint):
        return INPUT_CHANGED
    if row.get("status") != "done":
        return FAILED_BEFORE
    if not output_present:
        return OUTPUT_MISSING
    return None
