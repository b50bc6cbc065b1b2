"""Turn a BGR frame into a model input tensor as the model descriptor says, and map boxes back.

>>> import numpy as np
>>> spec = Preprocess.from_descriptor({"size": [64, 32], "colorOrder": "RGB"})
>>> tensor, geometry = spec.apply(np.zeros((90, 160, 3), np.uint8))
>>> tensor.shape, geometry.scale_x
((3, 32, 64), 0.4)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np


@dataclass(frozen=True)
class Geometry:
    """How a frame was resized into the model input: input = frame * scale + pad."""

    scale_x: float
    scale_y: float
    pad_x: float
    pad_y: float
    width: int  # original frame size
    height: int

    def to_frame(self, boxes: Any) -> Any:
        """Boxes (N, 4: x1 y1 x2 y2) in model-input pixels -> frame pixels, clipped."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.width, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.height, out=out[:, 1::2])
        return out


@dataclass(frozen=True)
class Preprocess:
    """Resize (or letterbox), colour order, (x * scale - mean) / std, layout NCHW|NHWC."""

    size: tuple[int, int]  # model input width, height
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    scale: float = 1.0
    rgb: bool = True
    letterbox: bool = False
    layout: str = "NCHW"

    @classmethod
    def from_descriptor(cls, spec: dict[str, Any], layout: str = "NCHW") -> Preprocess:
        return cls(
            size=(int(spec["size"][0]), int(spec["size"][1])),
            mean=tuple(spec.get("mean", (0.0, 0.0, 0.0))),  # type: ignore[arg-type]
            std=tuple(spec.get("std", (1.0, 1.0, 1.0))),  # type: ignore[arg-type]
            scale=float(spec.get("scale", 1.0)),
            rgb=spec.get("colorOrder", "RGB") == "RGB",
            letterbox=bool(spec.get("letterbox", False)),
            layout=layout,
        )

    @property
    def _identity(self) -> bool:
        return self.scale == 1.0 and not any(self.mean) and all(s == 1.0 for s in self.std)

    def apply(self, image: Any) -> tuple[Any, Geometry]:
        """One frame -> (tensor without the batch axis, float32, contiguous; Geometry)."""
        resized, geometry = self._resize(image)
        if self.layout == "NCHW":
            tensor = np.empty((3, resized.shape[0], resized.shape[1]), np.float32)
            # cv2.split makes contiguous uint8 planes (one C pass); each plane is then
            # converted to float32 straight into its slot: layout, colour order and dtype
            # without a strided gather per channel
            planes = cv2.split(np.ascontiguousarray(resized))
            for c in range(3):
                tensor[c] = planes[2 - c if self.rgb else c]
        else:
            tensor = (resized[:, :, ::-1] if self.rgb else resized).astype(np.float32)
        if not self._identity:
            self._normalize(tensor)
        return tensor, geometry

    def _normalize(self, tensor: Any) -> None:
        shape = (3, 1, 1) if self.layout == "NCHW" else (1, 1, 3)
        mean = np.asarray(self.mean, np.float32).reshape(shape)
        std = np.asarray(self.std, np.float32).reshape(shape)
        tensor *= self.scale
        tensor -= mean
        tensor /= std

    def _resize(self, image: Any) -> tuple[Any, Geometry]:
        h, w = image.shape[:2]
        tw, th = self.size
        if not self.letterbox:
            out = (
                image
                if (w, h) == (tw, th)
                else cv2.resize(image, (tw, th), interpolation=cv2.INTER_LINEAR)
            )
            return out, Geometry(tw / w, th / h, 0.0, 0.0, w, h)
        ratio = min(tw / w, th / h)
        nw, nh = round(w * ratio), round(h * ratio)
        px, py = (tw - nw) // 2, (th - nh) // 2
        out = np.full((th, tw, 3), 114, np.uint8)
        out[py : py + nh, px : px + nw] = cv2.resize(
            image, (nw, nh), interpolation=cv2.INTER_LINEAR
        )
        return out, Geometry(nw / w, nh / h, float(px), float(py), w, h)
