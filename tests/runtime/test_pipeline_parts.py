"""Pipeline parts on their own: queues, sources, preprocessing, decoders, NMS."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

np = pytest.importorskip("numpy")
cv2 = pytest.importorskip("cv2")

from fleet_runtime.pipeline.decoders import (  # noqa: E402
    decode_centerface,
    decode_classification,
    decode_yolo,
    nms,
)
from fleet_runtime.pipeline.frames import FrameQueue, QueueClosed  # noqa: E402
from fleet_runtime.pipeline.preprocess import Geometry, Preprocess  # noqa: E402
from fleet_runtime.pipeline.sources import (  # noqa: E402
    Source,
    SourceError,
    SourceSpec,
    parse_source,
    redact,
    with_credentials,
)


def test_queue_drops_oldest_and_counts():
    queue: FrameQueue[int] = FrameQueue(maxsize=3)
    for i in range(10):
        queue.put(i)
    assert queue.dropped == 7
    assert [queue.get(0), queue.get(0), queue.get(0)] == [7, 8, 9]
    assert queue.get(timeout=0.01) is None
    queue.close()
    with pytest.raises(QueueClosed):
        queue.get(0)


def test_queue_without_drop_waits_for_room():
    queue: FrameQueue[int] = FrameQueue(maxsize=1, drop=False)
    queue.put(1)
    done = threading.Event()
    threading.Thread(target=lambda: (queue.put(2), done.set()), daemon=True).start()
    assert not done.wait(0.1)  # blocked: the queue is full
    assert queue.get(1) == 1
    assert done.wait(2)
    assert queue.get(1) == 2 and queue.dropped == 0


def test_an_rtsp_camera_is_opened_on_its_sdp_without_probing_the_stream():
    """FFmpeg's probing read up to 5 s of a stream before the first frame (at 1 fps, a new
    version's health gate waited that long); the RTSP session's SDP describes it."""
    from fleet_runtime.pipeline.sources import _open_options

    options = _open_options(parse_source("cam", "rtsp://10.0.0.7/live"))
    assert options["probesize"] == "32" and options["rtsp_transport"] == "tcp"
    assert "probesize" not in _open_options(parse_source("f", "synthetic:320x240@5"))


def test_parse_source(tmp_path: Path):
    assert parse_source("a", "rtsp://10.0.0.7/live").kind == "rtsp"
    spec = parse_source("b", "synthetic:320x240@5")
    assert (spec.kind, spec.size, spec.fps) == ("synthetic", (320, 240), 5.0)
    assert parse_source("c", str(tmp_path)).kind == "images"
    with pytest.raises(SourceError, match="is not an rtsp:// URL"):
        parse_source("d", "rtsp:/typo:pw@host")


def test_credentials_are_quoted_and_redacted():
    url = with_credentials("rtsp://old@cam.local:554/s1", "ad:min", "p@ss/w")
    assert url == "rtsp://ad%3Amin:p%40ss%2Fw@cam.local:554/s1"
    assert redact(url) == "rtsp://***@cam.local:554/s1"


def test_synthetic_source_fills_queue_and_prepares_frames():
    queue: FrameQueue = FrameQueue(maxsize=100, drop=False)
    spec = SourceSpec("cam", "synthetic", size=(64, 48), realtime=False, max_frames=5, loop=False)
    prepared = []
    source = Source(spec, queue, prepare=lambda frame: prepared.append(frame.index))
    source.start()
    source.join(5)
    frames = [queue.get(0) for _ in range(5)]
    assert [f.index for f in frames] == [0, 1, 2, 3, 4] and prepared == [0, 1, 2, 3, 4]
    assert frames[0].image.shape == (48, 64, 3) and not np.array_equal(
        frames[0].image, frames[1].image
    )
    assert source.status.finished and source.status.frames == 5


def test_image_folder_source(tmp_path: Path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((10, 12, 3), i * 50, np.uint8))
    queue: FrameQueue = FrameQueue(maxsize=10, drop=False)
    source = Source(SourceSpec("imgs", "images", str(tmp_path), realtime=False, loop=False), queue)
    source.run()
    assert [int(queue.get(0).image[0, 0, 0]) for _ in range(3)] == [0, 50, 100]


def test_unreachable_rtsp_is_reported_without_secret():
    spec = SourceSpec(
        "door",
        "rtsp",
        "rtsp://127.0.0.1:9/live",
        username="admin",
        password="hunter2-secret",
        connect_timeout=1,
        read_timeout=1,
    )
    queue: FrameQueue = FrameQueue()
    source = Source(spec, queue)
    source.start()
    deadline = threading.Event()
    for _ in range(50):
        if source.status.last_error:
            break
        deadline.wait(0.1)
    source.stop()
    source.join(5)
    assert source.status.last_error and "rtsp://127.0.0.1:9/live" in source.status.last_error
    assert "hunter2" not in source.status.last_error and "admin" not in source.status.last_error


def test_preprocess_letterbox_round_trip():
    pre = Preprocess(
        (64, 64), letterbox=True, rgb=False, mean=(1.0, 2.0, 3.0), std=(2.0, 2.0, 2.0), scale=1.0
    )
    image = np.full((32, 64, 3), 9, np.uint8)
    tensor, geometry = pre.apply(image)
    assert tensor.shape == (3, 64, 64) and tensor.dtype == np.float32
    assert tensor[0, 32, 32] == pytest.approx((9 - 1) / 2) and tensor[2, 0, 0] == pytest.approx(
        (114 - 3) / 2
    )
    box = np.array([[0, 16, 64, 48]], np.float32)  # the whole picture inside the letterbox
    assert geometry.to_frame(box).tolist() == [[0, 0, 64, 32]]


def test_preprocess_nhwc_rgb():
    pre = Preprocess((4, 2), layout="NHWC", scale=1 / 255)
    image = np.zeros((2, 4, 3), np.uint8)
    image[..., 2] = 255  # red in BGR
    tensor, _ = pre.apply(image)
    assert tensor.shape == (2, 4, 3) and tensor[0, 0].tolist() == [1.0, 0.0, 0.0]


def reference_nms(boxes, scores, threshold):
    """The textbook double loop (as deface writes it)."""
    order = list(np.argsort(-scores, kind="stable"))
    suppressed, keep = set(), []
    for a, i in enumerate(order):
        if i in suppressed:
            continue
        keep.append(i)
        for j in order[a + 1 :]:
            xx1, yy1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            xx2, yy2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0, xx2 - xx1) * max(0, yy2 - yy1)
            area = lambda k: (boxes[k, 2] - boxes[k, 0]) * (boxes[k, 3] - boxes[k, 1])  # noqa: E731
            if inter / (area(i) + area(j) - inter) >= threshold:
                suppressed.add(j)
    return keep


def test_vectorized_nms_matches_reference():
    rng = np.random.default_rng(7)
    for _ in range(20):
        xy = rng.uniform(0, 100, (60, 2)).astype(np.float32)
        boxes = np.hstack([xy, xy + rng.uniform(5, 40, (60, 2)).astype(np.float32)])
        scores = rng.uniform(0, 1, 60).astype(np.float32)
        assert nms(boxes, scores, 0.3).tolist() == reference_nms(boxes, scores, 0.3)


def reference_centerface(heat, scale, offset, threshold, size):
    boxes = []
    for y, x in zip(*np.where(heat[0, 0] > threshold), strict=True):
        s0, s1 = np.exp(scale[0, 0, y, x]) * 4, np.exp(scale[0, 1, y, x]) * 4
        x1 = max(0, (x + offset[0, 1, y, x] + 0.5) * 4 - s1 / 2)
        y1 = max(0, (y + offset[0, 0, y, x] + 0.5) * 4 - s0 / 2)
        x1, y1 = min(x1, size[1]), min(y1, size[0])
        boxes.append([x1, y1, min(x1 + s1, size[1]), min(y1 + s0, size[0]), heat[0, 0, y, x]])
    boxes = np.array(boxes, np.float32)
    return boxes[reference_nms(boxes[:, :4], boxes[:, 4], 0.3)]


def test_centerface_decoder_matches_reference_decoder():
    rng = np.random.default_rng(3)
    heat = rng.uniform(0, 0.6, (1, 1, 24, 40)).astype(np.float32)
    scale = rng.uniform(1, 3, (1, 2, 24, 40)).astype(np.float32)
    offset = rng.uniform(0, 1, (1, 2, 24, 40)).astype(np.float32)
    geometry = Geometry(1.0, 1.0, 0, 0, 160, 96)
    result = decode_centerface(
        [heat, scale, offset], 0, geometry, {"scoreThreshold": 0.5, "nmsIouThreshold": 0.3}
    )
    expected = reference_centerface(heat, scale, offset, 0.5, (96, 160))
    assert len(result) == len(expected) > 5
    assert np.allclose(result.boxes, expected[:, :4], atol=1e-3)
    assert np.allclose(result.scores, expected[:, 4])
    assert {d.label for d in result} == {"face"}


def test_yolo_decoder_v5_and_v8_layouts():
    geometry = Geometry(0.5, 0.5, 0, 0, 200, 200)  # frame was 200x200, model input 100x100
    v5 = np.zeros((1, 3, 7), np.float32)  # cx cy w h obj cls0 cls1
    v5[0, 0] = [50, 50, 20, 20, 0.9, 0.1, 0.9]
    v5[0, 1] = [51, 50, 20, 20, 0.8, 0.1, 0.9]  # duplicate of the first, same class: suppressed
    v5[0, 2] = [51, 50, 20, 20, 0.8, 0.9, 0.1]  # same place, other class: kept
    config = {"labels": ["cat", "dog"], "scoreThreshold": 0.3}
    found = decode_yolo([v5], 0, geometry, config)
    assert [(d.label, round(d.score, 2)) for d in found] == [("dog", 0.81), ("cat", 0.72)]
    assert found.boxes[0].tolist() == [80.0, 80.0, 120.0, 120.0]
    v8 = np.zeros((1, 6, 2), np.float32)  # (4 + C, N)
    v8[0, :, 0] = [50, 50, 20, 20, 0.2, 0.7]
    found = decode_yolo([v8], 0, geometry, config)
    assert [(d.label, round(d.score, 2)) for d in found] == [("dog", 0.7)]


def test_classification_decoder():
    logits = np.array([[1.0, 3.0, 2.0]], np.float32)
    result = decode_classification(
        [logits],
        0,
        Geometry(1, 1, 0, 0, 1, 1),
        {"labels": ["a", "b", "c"], "softmax": True, "topK": 2},
    )
    assert (result.label, result.index) == ("b", 1)
    assert [label for label, _ in result.top] == ["b", "c"]
    assert result.score == pytest.approx(np.exp(3) / np.exp([1, 2, 3]).sum())


def test_a_stopped_source_ends_at_its_next_frame_not_at_the_end_of_its_stream(tmp_path: Path):
    """A live stream never ends: a stopped camera thread must leave at its next frame (the
    runtime's exit used to wait out the 2 s join for it, at every restart)."""
    av = pytest.importorskip("av")
    path = tmp_path / "minute.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((32, 32, 3), np.uint8), format="bgr24")
        for _ in range(300):  # a minute at 5 fps, played in real time
            for packet in stream.encode(black):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    queue: FrameQueue = FrameQueue(2)
    source = Source(SourceSpec("c", "file", str(path), realtime=True, loop=False), queue)
    source.start()
    assert queue.wait(30), "no first frame"
    source.stop()
    source.join(30)  # generous: it ends at the next frame, a fifth of a second away
    assert not source.is_alive() and source.status.frames < 300


@pytest.mark.parametrize("pix_fmt", ["yuv420p", "yuv444p"])
def test_file_source_colours_match_ffmpeg(tmp_path: Path, pix_fmt: str):
    """I420 goes through OpenCV, anything else through swscale: same picture either way."""
    av = pytest.importorskip("av")
    from fleet_runtime.pipeline.sources import frames_of

    ramp = np.linspace(0, 255, 96, dtype=np.uint8)
    picture = np.dstack(
        [np.tile(ramp, (64, 1)), np.tile(ramp[:64, None], (1, 96)), 255 - np.tile(ramp, (64, 1))]
    )
    path = tmp_path / f"{pix_fmt}.mp4"
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=5)
        stream.width, stream.height, stream.pix_fmt = 96, 64, pix_fmt
        for _ in range(3):
            for packet in stream.encode(av.VideoFrame.from_ndarray(picture, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    with av.open(str(path)) as container:
        reference = [f.to_ndarray(format="bgr24") for f in container.decode(video=0)]
    spec = SourceSpec("c", "file", str(path), realtime=False, loop=False)
    ours = list(frames_of(spec, threading.Event()))
    assert len(ours) == len(reference) == 3
    for mine, theirs in zip(ours, reference, strict=True):
        assert mine.shape == theirs.shape == (64, 96, 3) and mine.dtype == np.uint8
        difference = np.abs(mine.astype(int) - theirs.astype(int))
        assert difference.mean() < 2 and difference.max() <= 8
