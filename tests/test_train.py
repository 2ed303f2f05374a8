"""Training on real frames of the shipped clips: data, lr policy, overfitting, checkpoints and exact resume."""

import csv
from dataclasses import replace

import pytest
import torch

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.data import read_split, table_dataset
from tsnpipe.stages.train.loop import build_model, fit, optimizer_groups
from tsnpipe.stages.train.recipe import make_params
from train_workdir import build_sample_workdir


@pytest.fixture(scope="session")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


def small_params(workdir, modality="rgb", **overrides):
    values = dict(
        split_dir=str(workdir / "splits" / "samples" / "split1"), store=str(workdir), backbone="resnet18",
        pretrained="none", segments=2, size=32, epochs=2, lr=0.01, lr_steps=[100], batch=3, dropout=0.0,
        workers=0, channels_last=False,
    )
    values.update(overrides)
    return make_params(modality, **values)


@pytest.mark.parametrize(
    "modality, length, channels, mode, shape",
    [
        ("rgb", 1, 3, "train", (3, 3, 40, 40)),
        ("rgbdiff", 5, 15, "train", (3, 15, 40, 40)),
        ("flow", 5, 10, "train", (3, 10, 40, 40)),
        ("flow", 10, 20, "val", (3, 20, 40, 40)),
        ("rgb", 1, 3, "test", (10, 3, 3, 40, 40)),
    ],
)
def test_dataset_reads_snippets_of_real_frames_and_flow(workdir, modality, length, channels, mode, shape):
    train, _, _ = read_split(workdir / "splits" / "samples" / "split1")
    dataset = table_dataset(workdir, train, modality, segments=3, length=length, size=40, mode=mode, crops=10)
    shortest = int(train["frames"].idxmin())  # 17 frames: a 10-pair flow snippet runs past its end and clamps
    clips, label = dataset[shortest]
    assert clips.shape == shape and clips.dtype == torch.float32
    assert label == train["label"][shortest]
    assert clips.abs().sum() > 0


def test_flow_first_conv_learns_faster_and_biases_and_bn_have_no_weight_decay(workdir):
    params = small_params(workdir, "flow", partial_bn=True)
    model = build_model(params, 4, "none")
    groups = {group["name"]: group for group in optimizer_groups(model, params)}
    assert groups["first_conv_weight"]["lr"] == pytest.approx(5 * params.lr)
    assert groups["first_conv_weight"]["weight_decay"] == params.weight_decay
    assert groups["bias"]["lr"] == pytest.approx(2 * params.lr) and groups["bias"]["weight_decay"] == 0
    assert groups["bn"]["weight_decay"] == 0
    assert len(groups["bn"]["params"]) == 2  # partial BN: only the first BN's weight and bias train
    grouped = sum(len(group["params"]) for group in groups.values())
    assert grouped == sum(1 for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_resnet18_overfits_the_sample_clips(workdir, tmp_path):
    params = small_params(workdir, segments=3, size=48, epochs=20, lr=0.02, lr_steps=[14], batch=7, clip=40.0)
    result = fit(params, tmp_path / "run", progress=False, log=lambda line: None)
    rows = result["rows"]
    assert [row["train_top1"] for row in rows[-3:]] == [1.0, 1.0, 1.0]
    assert rows[-1]["train_loss"] < rows[0]["train_loss"] / 10
    with open(tmp_path / "run" / "metrics.csv") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == list(range(1, 21))
    for name in ("last.pt", "best.pt", "curves.png"):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert list((tmp_path / "run" / "tensorboard").glob("events.out.tfevents.*"))
    assert not list((tmp_path / "run").glob(".*.tmp*"))


def test_resume_after_epoch_one_gives_the_weights_of_an_uninterrupted_run(workdir, tmp_path):
    params = small_params(workdir, deterministic=True, dropout=0.5)
    fit(params, tmp_path / "straight", progress=False, log=lambda line: None)
    fit(replace(params, epochs=1), tmp_path / "resumed", progress=False, log=lambda line: None)
    fit(params, tmp_path / "resumed", resume=True, progress=False, log=lambda line: None)
    straight = load_checkpoint(tmp_path / "straight" / "last.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "last.pt")
    assert straight["epoch"] == resumed["epoch"] == 2
    for key, tensor in straight["model"].items():
        assert torch.equal(tensor, resumed["model"][key]), key
    with open(tmp_path / "resumed" / "metrics.csv") as handle:
        assert [row["epoch"] for row in csv.DictReader(handle)] == ["1", "2"]


def test_checkpoint_holds_what_made_it_and_loads_without_code(workdir, tmp_path):
    params = small_params(workdir, epochs=1)
    fit(params, tmp_path / "run", progress=False, log=lambda line: None)
    state = load_checkpoint(tmp_path / "run" / "last.pt")
    assert state["params"] == params.as_dict()
    assert state["class_names"] == ["ApplyEyeMakeup", "SoccerJuggling", "cartwheel", "wave"]
    assert {"split/train.csv", "split/test.csv", "split/classes.txt"} <= state["hashes"].keys()
    assert {"optimizer", "scheduler", "scaler", "rng"} <= state.keys()


def test_resume_with_other_settings_is_refused(workdir, tmp_path):
    fit(small_params(workdir, epochs=1), tmp_path / "run", progress=False, log=lambda line: None)
    with pytest.raises(TsnpipeError, match="other settings.*lr=0.01"):
        fit(small_params(workdir, epochs=2, lr=0.1), tmp_path / "run", resume=True, progress=False)


def test_resume_without_a_checkpoint_says_what_is_missing(workdir, tmp_path):
    with pytest.raises(TsnpipeError, match="There is no checkpoint"):
        fit(small_params(workdir), tmp_path / "empty", resume=True, progress=False)


def test_training_inside_a_process_group_writes_a_plain_checkpoint_on_rank_zero(workdir, tmp_path):
    store = torch.distributed.FileStore(str(tmp_path / "store"), 1)
    torch.distributed.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        result = fit(small_params(workdir, epochs=1), tmp_path / "ddp", progress=False, log=lambda line: None)
    finally:
        torch.distributed.destroy_process_group()
    state = load_checkpoint(result["last"])
    assert not any(key.startswith("module.") for key in state["model"])  # loadable without DDP
    assert len(result["rows"]) == 1


@pytest.mark.parametrize("format, name", [("lmdb", "frames.lmdb"), ("hdf5", "frames.hdf5")])
def test_packed_store_read_by_loader_workers_gives_the_snippets_of_the_folders(workdir, tmp_path, format, name):
    from tsnpipe.stages.pack import pack_videos
    from tsnpipe.stages.train.data import make_loader

    train, _, _ = read_split(workdir / "splits" / "samples" / "split1")
    store = tmp_path / name
    facts = pack_videos(workdir, store, format, train["video_id"].tolist())
    assert {fact["status"] for fact in facts} == {"done"}
    shape = dict(segments=3, length=5, size=40, mode="val")
    from_folders = table_dataset(workdir, train, "flow", **shape)
    from_store = table_dataset(store, train, "flow", **shape)
    batches = list(make_loader(from_store, batch=4, shuffle=False, workers=2))
    clips = torch.cat([clips for clips, _ in batches])
    assert clips.shape == (7, 3, 10, 40, 40)
    for index in range(7):
        assert torch.equal(clips[index], from_folders[index][0])
