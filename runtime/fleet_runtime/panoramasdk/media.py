"""The media object a code node receives per camera: the image plus annotations to draw."""

from __future__ import annotations

from typing import Any

from fleet_runtime.pipeline.frames import Frame


class media:  # noqa: N801 - Panorama's class name
    """One camera frame. ``image`` is a writable BGR numpy array (H, W, 3).

    ``add_label`` and ``add_rect`` take coordinates as fractions of the frame
    (0..1); they are drawn when the media is put on an output.
    """

    def __init__(self, frame: Frame, is_cached: bool = False) -> None:
        self._frame = frame
        self.image: Any = frame.image
        self.stream_id: str = frame.camera
        self.stream_uri: str = frame.camera
        self.frame_id: int = frame.index
        self.time_stamp: tuple[int, int] = (int(frame.timestamp), int(frame.timestamp % 1 * 1e6))
        self.is_cached = is_cached
        self.labels: list[tuple[str, float, float]] = []
        self.rects: list[tuple[float, float, float, float]] = []

    def add_label(self, text: str, x1: float, y1: float) -> None:
        self.labels.append((str(text), float(x1), float(y1)))

    def add_rect(self, x1: float, y1: float, x2: float, y2: float) -> None:
        self.rects.append((float(x1), float(y1), float(x2), float(y2)))

    # AWS's SDK simulator set w, h, c from ``image.shape`` (so ``w`` is the row count);
    # code written against it reads them, so they mean the same here
    @property
    def w(self) -> int:
        return int(self.image.shape[0])

    @property
    def h(self) -> int:
        return int(self.image.shape[1])

    @property
    def c(self) -> int:
        return int(self.image.shape[2]) if self.image.ndim > 2 else 1

    @property
    def frame(self) -> Frame:
        return self._frame

    def render(self) -> Any:
        """Draw the labels and rectangles onto ``image`` and return it."""
        import cv2

        h, w = self.image.shape[:2]
        for x1, y1, x2, y2 in self.rects:
            cv2.rectangle(
                self.image, (int(x1 * w), int(y1 * h)), (int(x2 * w), int(y2 * h)), (0, 255, 0), 2
            )
        for text, x, y in self.labels:
            org = (int(x * w), max(12, int(y * h)))
            (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.5, 1)
            top_left = (org[0] - 2, org[1] - th - 2)
            cv2.rectangle(self.image, top_left, (org[0] + tw + 2, org[1] + base), (0, 0, 0), -1)
            cv2.putText(
                self.image,
                text,
                org,
                cv2.FONT_HERSHEY_SIMPLEX,
                0.5,
                (255, 255, 255),
                1,
                cv2.LINE_AA,
            )
        return self.image
