"""The HTML report's parts stay bounded at any number of videos and read the rows' times right."""

import pandas as pd

from tsnpipe.stages.report.collect import StageTable
from tsnpipe.stages.report.sections import MAX_FAILURES, failures, last_session, sample_ids, stage_summary


def frames_table(n: int, failed_every: int = 0) -> pd.DataFrame:
    failed = [failed_every and i % failed_every == 0 for i in range(n)]
    return pd.DataFrame({
        "video_id": [f"c{i % 7}/v{i:07d}" for i in range(n)],
        "status": ["failed" if f else "done" for f in failed],
        "error": [f"/data/c{i % 7}/v{i:07d}.mp4: decode errors (x); re-encode it." if f else None
                  for i, f in enumerate(failed)],
        "seconds": [0.5] * n, "started_at": ["2026-12-07T10:00:00"] * n, "params_hash": ["h"] * n,
        "output": [f"frames/c{i % 7}/v{i:07d}" for i in range(n)],
    })


def test_many_failures_are_counted_by_reason_and_listed_up_to_the_cap():
    table = StageTable("frames", frames_table(20_000, failed_every=4), {}, "h")
    page = failures([table])
    assert "5,000 failed" in page
    assert "decode errors (x); re-encode it.</td><td class=\"n\">5,000" in page  # one reason, its path left out
    assert page.count("<tr><td>c") == MAX_FAILURES and "4,000 more failures" in page


def test_sample_is_six_videos_spread_over_the_ids_and_the_same_each_time():
    table = frames_table(240_000, failed_every=3)
    chosen = sample_ids(table)
    assert len(chosen) == 6 and chosen == sample_ids(table.sample(frac=1, random_state=0))
    assert chosen[0] < chosen[-1] and all(v in set(table.loc[table.status == "done", "video_id"]) for v in chosen)


def test_last_run_is_told_from_start_times_and_durations():
    rows = pd.DataFrame({"started_at": ["2026-12-07T08:00:00", "2026-12-07T08:00:10",  # an earlier run
                                        "2026-12-07T10:00:00", "2026-12-07T10:00:01", "2026-12-07T10:00:30"],
                         "seconds": [5.0, 5.0, 20.0, 40.0, 1.0]})
    assert last_session(rows) == (3, 41.0)  # 10:00:00 to 10:00:41, the second video's end


def test_stage_without_times_shows_counts_only():
    table = frames_table(4).drop(columns=["started_at", "seconds"]).assign(started_at=None, seconds=None)
    row = stage_summary([StageTable("pack-lmdb", table, {}, "h")])
    assert "<td>pack-lmdb</td><td class=\"n\">4</td>" in row and "videos/s" not in row
