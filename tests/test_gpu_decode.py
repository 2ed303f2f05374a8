"""`train --gpu-decode`: JPEG bytes from the workers, decoded a batch at a time on the device (here the CPU),
must give the clips the worker path gives; a PNG flow store and a 3D arch are refused in one sentence."""

import shutil
from pathlib import Path

import cv2
import pytest
import torch

from tsnpipe.stages.errors import TsnpipeError
from tsnpipe.stages.train.batches import prepare_clips
from tsnpipe.stages.train.checkpoint import load_checkpoint
from tsnpipe.stages.train.data import collate_pictures, read_split, read_stack, table_dataset
from tsnpipe.stages.train.decode import EncodedSnippets, collate_encoded, decode_stacks, prepare_encoded
from tsnpipe.stages.train.loop import fit
from tsnpipe.stages.train.recipe import make_params
from tsnpipe.stages.train.transforms import GREY_STD, flip_and_normalise, train_crop
from train_workdir import build_sample_workdir

CPU = torch.device("cpu")
MIDDLEBURY = Path(__file__).resolve().parent / "data" / "middlebury"
FRAMES = ["RubberWhale/frame10.png", "RubberWhale/frame11.png", "Grove2/frame10.png", "Grove2/frame11.png"]
LENGTH = {"rgb": 1, "rgbdiff": 2, "flow": 3}
GREY_LEVEL = 1 / 255 / min(0.224, GREY_STD)  # one grey level, normalised: the largest step of the three modalities


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return build_sample_workdir(tmp_path_factory.getbasetemp() / "train_samples")


@pytest.fixture(scope="module")
def train_table(workdir):
    return read_split(workdir / "splits" / "samples" / "split1")[0]


def encoded(workdir, table, modality, mode):
    return table_dataset(workdir, table, modality, 3, LENGTH[modality], 40, mode, kind=EncodedSnippets)


@pytest.mark.parametrize("modality", ["rgb", "rgbdiff", "flow"])
def test_validation_clips_decoded_on_the_device_equal_the_workers_clips(workdir, train_table, modality):
    videos = [0, 3, 5]
    reference = table_dataset(workdir, train_table, modality, 3, LENGTH[modality], 40, "val")
    ours = encoded(workdir, train_table, modality, "val")
    expected, labels = prepare_clips(collate_pictures([reference[i] for i in videos]), CPU, modality, 3, LENGTH[modality])
    clips, our_labels = prepare_encoded(collate_encoded([ours[i] for i in videos]), CPU, modality, 3, LENGTH[modality], 40, train=False)
    assert clips.shape == expected.shape and torch.equal(our_labels, labels)
    assert (clips - expected).abs().max() <= 1.01 * GREY_LEVEL  # libjpeg through torchvision vs OpenCV
    assert expected.std() > 0.01  # pictures, not a blank: the comparison can fail


@pytest.mark.parametrize("modality", ["rgb", "flow"])
def test_training_crops_and_flips_follow_the_worker_recipe(workdir, train_table, modality):
    """Same random stream: the same multi-scale box and flip per video as `train_crop`, resized in float."""
    videos = [1, 2, 4, 6]
    ours = encoded(workdir, train_table, modality, "train")
    items = [ours[i] for i in videos]
    torch.manual_seed(7)
    clips, _ = prepare_encoded(collate_encoded(items), CPU, modality, 3, LENGTH[modality], 40, train=True)

    torch.manual_seed(7)
    crops, flips = [], []
    for raw in (item[0] for item in items):
        pictures = [cv2.imdecode(data.numpy(), cv2.IMREAD_GRAYSCALE if modality == "flow" else cv2.IMREAD_COLOR) for data in raw]
        if modality == "flow":
            stack = torch.from_numpy(cv2.merge(pictures).transpose(2, 0, 1)).reshape(-1, 2, *pictures[0].shape)
        else:
            stack = torch.stack([torch.from_numpy(cv2.cvtColor(p, cv2.COLOR_BGR2RGB)).permute(2, 0, 1) for p in pictures])
        crop, flip = train_crop(stack.float(), modality, 40)
        crops.append(crop)
        flips.append(flip)
    expected = flip_and_normalise(torch.stack(crops), torch.tensor(flips), modality, 3, LENGTH[modality])
    assert 0 < sum(flips) < len(flips), "the seed should flip some videos and not others"
    assert (clips - expected).abs().max() <= 1.01 * GREY_LEVEL


def test_flow_pictures_pair_x_with_y_at_each_position(workdir, train_table):
    video = train_table["video_id"][0]
    ours = encoded(workdir, train_table, "flow", "val")
    raw = [torch.frombuffer(bytearray(data), dtype=torch.uint8) for data in ours.encoded(video, [0, 4])]
    stack = decode_stacks([raw], CPU, "flow")[0]
    reader_stack = read_stack(ours.reader, video, [0, 4], "flow")
    assert stack.shape == reader_stack.shape == (2, 2, *reader_stack.shape[-2:])
    assert (stack.int() - reader_stack.int()).abs().max() <= 1


def test_training_with_gpu_decode_runs_and_records_it(workdir, tmp_path):
    params = make_params(
        "rgb", split_dir=str(workdir / "splits" / "samples" / "split1"), store=str(workdir), backbone="resnet18",
        pretrained="none", segments=2, size=32, epochs=1, lr=0.01, batch=3, workers=1, channels_last=False, gpu_decode=True,
    )
    result = fit(params, tmp_path / "run", device="cpu", progress=False, log=lambda line: None)
    assert result["rows"][0]["train_loss"] > 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["params"]["gpu_decode"] is True


def test_png_flow_is_refused_with_the_fix(workdir, train_table, tmp_path):
    video = train_table["video_id"][0]
    (tmp_path / "flow" / video).mkdir(parents=True)
    shutil.copytree(workdir / "frames" / video, tmp_path / "frames" / video)
    for source in (workdir / "flow" / video).glob("flow_*_0000[1-9].jpg"):
        cv2.imwrite(str(tmp_path / "flow" / video / f"{source.stem}.png"), cv2.imread(str(source), cv2.IMREAD_GRAYSCALE))
    table = train_table.iloc[:1].assign(flow_pairs=9)
    with pytest.raises(TsnpipeError, match=r"not JPEG.*train without --gpu-decode"):
        encoded(tmp_path, table, "flow", "train")


def test_a_3d_arch_refuses_gpu_decode(workdir):
    with pytest.raises(TsnpipeError, match="--gpu-decode is for TSN"):
        make_params("rgb", arch="r3d_18", gpu_decode=True, pretrained="none")


def middlebury_batch(modality: str, chroma: str = "420"):
    """Real pictures (Middlebury frames, no frame workdir needed), JPEG-encoded as the frame and flow stages do
    (colour with 4:2:0 chroma, as ffmpeg writes frames; "444" keeps full-resolution chroma)."""
    grey = modality == "flow"
    pictures = [cv2.imread(str(MIDDLEBURY / name), cv2.IMREAD_GRAYSCALE if grey else cv2.IMREAD_COLOR) for name in FRAMES]
    sampling = cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444 if chroma == "444" else cv2.IMWRITE_JPEG_SAMPLING_FACTOR_420
    options = [cv2.IMWRITE_JPEG_QUALITY, 95, cv2.IMWRITE_JPEG_SAMPLING_FACTOR, sampling]
    raw = [torch.from_numpy(cv2.imencode(".jpg", picture, options)[1].ravel()) for picture in pictures]
    per_video = 2 * 3 * LENGTH[modality] if grey else 3  # 3 segments: x and y of each position, or one frame
    return [[raw[2 * (i % 2) + k % 2] for k in range(per_video)] for i in range(4)], torch.arange(4)  # one sequence a video


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg)")
@pytest.mark.parametrize("modality, chroma", [("rgb", "444"), ("flow", "grey"), ("rgb", "420")])
def test_nvjpeg_clips_equal_the_cpu_decoded_ones_on_cuda(modality, chroma):
    """Without subsampled chroma the two decoders differ by their IDCTs alone: 2 grey levels at most. With 4:2:0
    chroma (ffmpeg's frames) libjpeg-turbo upsamples chroma with a triangle filter ("fancy upsampling") and
    nvJPEG does not, so pixels at sharp colour edges differ by tens of levels, on average about one (H200,
    2026-12-04: mean 0.65, 99th percentile 8.0, largest 29.9 levels on these pictures)."""
    batch = middlebury_batch(modality, chroma)
    on_cpu, _ = prepare_encoded(batch, CPU, modality, 3, LENGTH[modality], 224, train=False)
    on_gpu, _ = prepare_encoded(batch, torch.device("cuda"), modality, 3, LENGTH[modality], 224, train=False)
    levels = ((on_gpu.cpu() - on_cpu).abs() / GREY_LEVEL).flatten()
    seen = {"mean": float(levels.mean()), "p99": float(levels.quantile(0.99)), "max": float(levels.max())}
    if chroma != "420":
        assert seen["max"] <= 2.01, seen
    else:
        assert seen["mean"] <= 1.0 and seen["p99"] <= 12.0, seen


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvjpeg)")
def test_prefetched_nvjpeg_batches_stay_intact_while_the_gpu_is_busy():
    """Each batch is decoded on the side stream while the previous batch's crops may still be queued there, and
    the main stream is busy as with a model: nvJPEG must not write into memory those crops still read."""
    from tsnpipe.stages.train.batches import DeviceBatches

    batch = middlebury_batch("rgb")
    prepare = lambda batch, device: prepare_encoded(batch, device, "rgb", 3, 1, 224, train=False)  # noqa: E731
    expected = prepare(batch, torch.device("cuda"))[0].cpu()  # decoded alone, the device idle
    work = torch.randn(4096, 4096, device="cuda")
    kept = []
    for clips, _ in DeviceBatches([batch] * 24, torch.device("cuda"), prepare):
        kept.append(clips.clone())  # on the main stream, no host sync: the next decode overlaps the work below
        for _ in range(4):  # the model's work on the main stream
            work = torch.tanh(work @ work) * 0.1
    worst = max(float((clips.cpu() - expected).abs().max()) for clips in kept)
    assert worst <= 1e-6, worst / GREY_LEVEL
