"""The refilled batch: each pair's flow is exactly what tvl1_flow gives it alone, slots stay full, and
videos stream through in bounded chunks."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from tsnpipe.stages.flow import FlowParams
from tsnpipe.stages.flow.refill import RefillSolver
from tsnpipe.stages.flow.streaming import stream_flow_videos
from tsnpipe.stages.flow.torch_tvl1 import tvl1_flow, tvl1_iteration

CLIP = Path(__file__).resolve().parents[1] / "pipeline" / "samples" / "videos" / "SoccerJuggling" / "v_SoccerJuggling_g23_c01.avi"
# Several warps, outer rounds and stopping checks that do not divide the inner count: every path of the slots.
SMALL = dict(backend="torch", warps=2, inner_iterations=7, outer_iterations=2, check_every=3)


def grey_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(CLIP))
    frames = []
    for _ in range(count):
        ok, frame = capture.read()
        assert ok, "the sample clip is shorter than the test expects"
        frames.append(cv2.cvtColor(cv2.resize(frame, size, interpolation=cv2.INTER_AREA), cv2.COLOR_BGR2GRAY))
    return frames


def alone(first: np.ndarray, second: np.ndarray, params: FlowParams) -> torch.Tensor:
    as_batch = lambda image: torch.from_numpy(image)[None, None].float()  # noqa: E731
    return tvl1_flow(as_batch(first), as_batch(second), params, tvl1_iteration)[0]


@pytest.mark.parametrize("median", [5, 0])
@pytest.mark.parametrize("looks", ["every step", "every check_every steps"])
def test_refilled_batch_gives_each_pair_its_flow_alone(median, looks, monkeypatch):
    if looks != "every step":  # as on a GPU: pairs that met the stopping rule wait frozen for the host's look
        monkeypatch.setattr("tsnpipe.stages.flow.refill.check_interval", lambda params, device: params.check_every)
    big, small = grey_frames(7, (48, 36)), grey_frames(4, (40, 30))
    pairs = [(("big", k), big[k], big[k + 1]) for k in range(6)] + [(("small", k), small[k], small[k + 1]) for k in range(3)]
    params = FlowParams(median_filtering=median, **SMALL)
    solver = RefillSolver(params, torch.device("cpu"), batch=3)
    with torch.inference_mode():
        flows = dict(item for finished in solver.solve(iter(pairs)) for item in finished)
        assert sorted(flows, key=str) == sorted((key for key, _, _ in pairs), key=str)
        for key, first, second in pairs:
            reference = alone(first, second, params)
            assert reference.abs().mean() > 0.01, "no motion: the comparison would prove nothing"
            assert torch.equal(flows[key], reference), key
    assert solver.stats.pairs == len(pairs)
    assert solver.stats.mean_active > 2.0  # 3 slots, refilled: mostly full


def test_how_often_the_host_looks_is_not_part_of_the_flow_params_hash():
    """It changes syncs, not flow (the test above): changing it must not redo a data set's flow."""
    assert FlowParams(check_every=3).hashed() == FlowParams().hashed()


def test_slots_stay_full_while_pairs_keep_coming():
    """16 pairs through 4 slots: every step runs 4 pairs until the source is dry; only the end drains."""
    frames = grey_frames(17, (48, 36))
    pairs = [(k, frames[k], frames[k + 1]) for k in range(16)]
    params = FlowParams(**SMALL)
    computed = {"pairs": 0, "pixels": 0}

    def counting_step(u, *args):
        computed["pairs"] += u.shape[0]
        computed["pixels"] += u.shape[0] * u.shape[2] * u.shape[3]
        return tvl1_iteration(u, *args)

    solver = RefillSolver(params, torch.device("cpu"), batch=4, step=counting_step, in_flight=8)
    with torch.inference_mode():
        finished = [key for round_ in solver.solve(iter(pairs)) for key, _ in round_]
    assert sorted(finished) == list(range(16))
    stats = solver.stats
    assert stats.fed_steps > 0 and stats.mean_active_while_fed >= 3.5
    assert stats.pair_steps / 4 < stats.steps < stats.pair_steps  # the drain runs partly filled levels
    # The counts the benchmark turns into memory traffic are the work the steps did.
    assert (stats.pair_steps, stats.pixel_steps) == (computed["pairs"], computed["pixels"])


def write_video(folder: Path, frames: list[np.ndarray]) -> Path:
    folder.mkdir(parents=True)
    for k, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"img_{k + 1:05d}.jpg"), frame)
    return folder


def peak_memory(tmp_path: Path, name: str, frames: list[np.ndarray]) -> int:
    folder = write_video(tmp_path / "frames" / name, frames)
    params = FlowParams(nscales=1, warps=1, inner_iterations=1, outer_iterations=1, backend="torch")
    tracemalloc.start()
    try:
        [(_, facts)] = list(stream_flow_videos([(folder, tmp_path / "flow" / name)], params, [torch.device("cpu")],
                                               batch=2, step=tvl1_iteration, threads=2, chunk=4, lookahead=2,
                                               in_flight=4))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert facts["pairs"] == len(frames) - 1
    assert len(list((tmp_path / "flow" / name).glob("flow_x_*.jpg"))) == len(frames) - 1
    return peak


def test_memory_does_not_grow_with_video_length(tmp_path):
    frames = grey_frames(20, (320, 240))
    short = peak_memory(tmp_path, "short", frames)
    long = peak_memory(tmp_path, "long", frames * 5)  # 100 frames: 7.7 MB of grey frames in one piece
    assert long < short + 2_000_000, f"peak {long / 1e6:.1f} MB for 100 frames, {short / 1e6:.1f} MB for 20"


def test_two_devices_share_the_videos_and_agree_with_one(tmp_path):
    """One solver thread per device drawing from the same feed (two CPU 'devices' here): every video is
    reported once, complete, with the images of a one-device run; a broken video fails alone."""
    frames = grey_frames(9, (48, 36))
    jobs = []
    for name in "abcd":
        jobs.append((write_video(tmp_path / "frames" / name, frames[: 3 + "abcd".index(name) * 2]), None))
    (tmp_path / "frames" / "c" / "img_00004.jpg").write_bytes(b"not a jpeg")
    params = FlowParams(**SMALL)
    results = {}
    for run, devices in (("one", [torch.device("cpu")]), ("two", [torch.device("cpu")] * 2)):
        run_jobs = [(folder, tmp_path / run / folder.name) for folder, _ in jobs]
        results[run] = list(stream_flow_videos(run_jobs, params, devices, batch=2, step=tvl1_iteration, threads=2,
                                               chunk=3, lookahead=2))
    for run in ("one", "two"):
        outcome = dict(results[run])
        assert sorted(index for index, _ in results[run]) == [0, 1, 2, 3]
        assert [outcome[i]["pairs"] for i in (0, 1, 3)] == [2, 4, 8]
        assert "img_00004.jpg" in str(outcome[2])
    for name in ("a", "b", "d"):
        for path in sorted((tmp_path / "one" / name).glob("*.jpg")):
            assert (tmp_path / "two" / name / path.name).read_bytes() == path.read_bytes(), path.name


@pytest.mark.parametrize("fed", ["while videos are still being read", "after every pair was handed out"])
def test_a_device_that_fails_fails_the_videos_instead_of_hanging(tmp_path, fed):
    """A solver that dies mid-run (out of memory on a GPU, say): every video not yet written is reported
    failed with that error, and the call returns; never done with pairs missing."""
    frames = grey_frames(6, (48, 36))
    jobs = [(write_video(tmp_path / "frames" / name, frames), tmp_path / "flow" / name) for name in "ab"]
    calls = []

    def failing_step(*args):
        calls.append(1)
        if len(calls) > 5:
            raise RuntimeError("CUDA out of memory (as a GPU would say)")
        return tvl1_iteration(*args)

    early = fed.startswith("while")
    results = dict(stream_flow_videos(jobs, FlowParams(**SMALL), [torch.device("cpu")], batch=2, step=failing_step,
                                      threads=2, chunk=3 if early else 16, lookahead=2, in_flight=None if early else 16))
    assert sorted(results) == [0, 1]
    assert all("out of memory" in str(outcome) for outcome in results.values()), results


def pool_bytes(solver: RefillSolver) -> int:
    tensors = [t for pool in solver.pools.values() for t in (*pool.state.values(), pool.gradient, pool.base) if t is not None]
    return sum(t.numel() * t.element_size() for t in tensors)


def test_pools_follow_the_sizes_in_flight_not_every_size_seen():
    """Videos of 12 frame sizes (as Kinetics' many aspect ratios): a level size's pool goes as soon as no pair
    is left in it or waiting for it, so the solver holds pools only for the pairs in flight, and none at the end."""
    frames = grey_frames(2, (64, 48))
    sizes = [(40 + 2 * k, 30 + k) for k in range(12)]
    pairs = [(size, cv2.resize(frames[0], size), cv2.resize(frames[1], size)) for size in sizes]
    params = FlowParams(**SMALL)
    solver = RefillSolver(params, torch.device("cpu"), batch=2, in_flight=2)
    largest = 2 * 10 * 4 * max(w * h for w, h in sizes)  # 2 slots x 10 floats a pixel (u, p, ...) per pool
    seen_pools, seen_bytes, finished = 0, 0, []
    with torch.inference_mode():
        for round_ in solver.solve(iter(pairs)):
            finished += [key for key, _ in round_]
            assert all(pool.load() > 0 for pool in solver.pools.values()), "an empty pool was kept"
            seen_pools, seen_bytes = max(seen_pools, len(solver.pools)), max(seen_bytes, pool_bytes(solver))
    assert sorted(finished) == sorted(sizes)
    assert seen_pools <= 2 and seen_bytes <= 2 * largest * 1.4  # 2 pairs in flight: a pool each (and its buffer)
    assert solver.pools == {}


def one_step_changes(batch: list[tuple[np.ndarray, np.ndarray]]) -> torch.Tensor:
    """The stopping sums of a first primal-dual step from zero flow, for a batch of pairs."""
    from tsnpipe.stages.flow.torch_tvl1 import GRAD_EPSILON, centred_gradient

    i0 = torch.stack([torch.from_numpy(first)[None].float() for first, _ in batch])
    i1 = torch.stack([torch.from_numpy(second)[None].float() for _, second in batch])
    grad = torch.cat(centred_gradient(i1), dim=1)
    u, p = torch.zeros_like(grad), torch.zeros(len(batch), 2, 2, *i0.shape[-2:])
    inv_grad = grad.square().sum(dim=1, keepdim=True).clamp_(min=GRAD_EPSILON).reciprocal_()
    _, change = tvl1_iteration(u, p, torch.zeros_like(p), grad, i1 - i0, inv_grad, 0.045, 0.3, 0.83, True)
    return change


def test_a_pair_alone_and_in_a_batch_of_8_stop_and_flow_bit_for_bit_alike():
    """The stopping sum adds each pair's values in the same order whatever the batch, so a pair near the
    threshold stops at the same step alone or with 7 others (a batched matrix product rounds per batch)."""
    frames = grey_frames(9, (80, 60))
    pairs = [(frames[k], frames[k + 1]) for k in range(8)]
    with torch.inference_mode():
        together = one_step_changes(pairs)
        for k, pair in enumerate(pairs):
            assert torch.equal(one_step_changes([pair])[0], together[k]), k
        params = FlowParams(**SMALL)
        as_batch = lambda images: torch.stack([torch.from_numpy(image)[None].float() for image in images])  # noqa: E731
        flows = tvl1_flow(as_batch(frames[:8]), as_batch(frames[1:9]), params, tvl1_iteration)
        for k, (first, second) in enumerate(pairs):
            assert torch.equal(flows[k], alone(first, second, params)), k


def test_on_a_gpu_the_host_waits_for_the_device_only_at_its_looks_once_per_30_steps(monkeypatch):
    """With the GPU's looks, the stopping rule, the outer rounds' medians and the frozen slots are decided on the
    device: the host reads a device value once per look (its flags), and looks once per `look_steps` steps of a
    pool, not at every stopping check (3 steps here)."""
    monkeypatch.setattr("tsnpipe.stages.flow.refill.check_interval", lambda params, device: params.check_every)
    reads = []
    for name in ("tolist", "item", "__bool__", "nonzero"):
        original = getattr(torch.Tensor, name)
        monkeypatch.setattr(torch.Tensor, name, lambda *args, _original=original, **kwargs: (reads.append(1),
                                                                                             _original(*args, **kwargs))[1])
    frames = grey_frames(13, (48, 36))
    pairs = [(k, frames[k], frames[k + 1]) for k in range(12)]
    params = FlowParams(median_filtering=5, **SMALL)
    solver = RefillSolver(params, torch.device("cpu"), batch=4, look_steps=30)
    with torch.inference_mode():
        finished = [key for round_ in solver.solve(iter(pairs)) for key, _ in round_]
    monkeypatch.undo()
    assert sorted(finished) == list(range(12))
    stats = solver.stats
    assert len(reads) == stats.looks
    assert stats.looks * 14 <= stats.steps, (stats.looks, stats.steps)  # 7-step rounds, 5 of them a look at most
