"""Test videos with real faces, for tests, benchmarks and the demo.

The face is scikit-image's ``astronaut`` sample (a public-domain NASA
portrait shipped in the scikit-image wheel), moved and zoomed across the
frame so detections change from frame to frame.

>>> face_video(Path("/tmp/faces.mp4"), frames=50)  # doctest: +SKIP
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any


def astronaut_bgr() -> Any:
    """The astronaut portrait as a BGR uint8 array (512x512)."""
    from skimage import data

    rgb = data.astronaut()  # type: ignore[no-untyped-call]
    return rgb[:, :, ::-1].copy()


def face_frame(
    index: int, size: tuple[int, int] = (640, 360), portrait: Any = None, moving: bool = True
) -> Any:
    """Frame ``index`` of the moving-portrait sequence (BGR, size = width, height)."""
    index = index if moving else 0
    import cv2
    import numpy as np

    width, height = size
    portrait = astronaut_bgr() if portrait is None else portrait
    frame = np.full((height, width, 3), 60, np.uint8)
    frame[:, :, 1] = np.linspace(40, 120, width, dtype=np.uint8)[None, :]
    side = int(height * (0.75 + 0.15 * math.sin(index / 23.0)))
    tile = cv2.resize(portrait, (side, side), interpolation=cv2.INTER_AREA)
    span = max(1, width - side)
    x = int((math.sin(index / 17.0) * 0.5 + 0.5) * span)
    y = (height - side) // 2
    frame[y : y + side, x : x + side] = tile
    return frame


def face_video(
    path: Path,
    frames: int = 100,
    size: tuple[int, int] = (640, 360),
    fps: int = 25,
    codec: str = "libx264",
    moving: bool = True,
) -> Path:
    """Write ``frames`` frames of the moving portrait as H.264 (yuv420p, GOP of 1 s)."""
    import av

    portrait = astronaut_bgr()
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream: Any = container.add_stream(codec, rate=fps)
        stream.width, stream.height = size
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(fps), "bf": "0"}
        for index in range(frames):
            picture = av.VideoFrame.from_ndarray(
                face_frame(index, size, portrait, moving), format="bgr24"
            )
            for packet in stream.encode(picture):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
