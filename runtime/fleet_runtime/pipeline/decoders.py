"""Model output decoders: classification, CenterFace faces, YOLO boxes; vectorized NMS.

A decoder turns one batch item of raw outputs into a result in *frame*
pixels (the Geometry from preprocessing undoes the resize/letterbox).

>>> import numpy as np
>>> boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], np.float32)
>>> nms(boxes, np.array([0.9, 0.8, 0.7], np.float32), 0.5).tolist()
[0, 2]
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from fleet_runtime.pipeline.preprocess import Geometry


@dataclass
class Detection:
    label: str
    score: float
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in frame pixels


@dataclass
class Detections:
    """Boxes (N, 4) in frame pixels, scores (N,), class indices (N,)."""

    boxes: Any
    scores: Any
    classes: Any
    labels: Sequence[str] = ()
    width: int = 0
    height: int = 0

    def __len__(self) -> int:
        return len(self.scores)

    def __iter__(self) -> Iterator[Detection]:
        for box, score, cls in zip(
            self.boxes.tolist(), self.scores.tolist(), self.classes.tolist(), strict=True
        ):
            yield Detection(self._label(int(cls)), float(score), tuple(box))  # type: ignore[arg-type]

    def _label(self, index: int) -> str:
        return self.labels[index] if index < len(self.labels) else str(index)

    def normalized(self) -> Any:
        """Boxes as fractions of the frame (what ``media.add_rect`` takes)."""
        scale = np.array([self.width, self.height, self.width, self.height], np.float32)
        return self.boxes / scale

    def as_dicts(self) -> list[dict[str, Any]]:
        return [
            {"label": d.label, "score": round(d.score, 4), "box": [round(v, 1) for v in d.box]}
            for d in self
        ]


@dataclass
class Classification:
    label: str
    index: int
    score: float
    top: list[tuple[str, float]] = field(default_factory=list)

    def as_dicts(self) -> list[dict[str, Any]]:
        return [{"label": label, "score": round(score, 4)} for label, score in self.top]


def nms(boxes: Any, scores: Any, iou_threshold: float) -> Any:
    """Greedy non-maximum suppression; indices kept, best first. Each step is one vector op."""
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = (x2 - x1) * (y2 - y1)
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        w = np.maximum(0.0, np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest]))
        h = np.maximum(0.0, np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest]))
        inter = w * h
        iou = inter / np.maximum(areas[i] + areas[rest] - inter, 1e-9)
        order = rest[iou < iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes: Any, scores: Any, classes: Any, iou_threshold: float) -> Any:
    """NMS within each class at once: boxes of different classes are shifted apart."""
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    offset = classes.astype(np.float32)[:, None] * (float(boxes.max()) + 1.0)
    return nms(boxes + offset, scores, iou_threshold)


def _empty(labels: Sequence[str], geometry: Geometry) -> Detections:
    return Detections(
        np.zeros((0, 4), np.float32),
        np.zeros(0, np.float32),
        np.zeros(0, np.int64),
        labels,
        geometry.width,
        geometry.height,
    )


def decode_centerface(
    outputs: Sequence[Any], item: int, geometry: Geometry, config: dict[str, Any]
) -> Detections:
    """CenterFace heatmap/scale/offset maps (stride 4) -> face boxes, as the reference decoder."""
    labels = config.get("labels") or ["face"]
    heat, scale, offset = outputs[0][item, 0], outputs[1][item], outputs[2][item]
    ys, xs = np.nonzero(heat > config.get("scoreThreshold", 0.5))
    if ys.size == 0:
        return _empty(labels, geometry)
    s0, s1 = np.exp(scale[0, ys, xs]) * 4, np.exp(scale[1, ys, xs]) * 4
    in_h, in_w = heat.shape[0] * 4, heat.shape[1] * 4
    x1 = np.clip((xs + offset[1, ys, xs] + 0.5) * 4 - s1 / 2, 0, in_w)
    y1 = np.clip((ys + offset[0, ys, xs] + 0.5) * 4 - s0 / 2, 0, in_h)
    boxes = np.stack([x1, y1, np.minimum(x1 + s1, in_w), np.minimum(y1 + s0, in_h)], axis=1).astype(
        np.float32
    )
    scores = heat[ys, xs].astype(np.float32)
    keep = nms(boxes, scores, config.get("nmsIouThreshold", 0.3))[
        : config.get("maxDetections", 300)
    ]
    return Detections(
        geometry.to_frame(boxes[keep]),
        scores[keep],
        np.zeros(len(keep), np.int64),
        labels,
        geometry.width,
        geometry.height,
    )


def decode_yolo(
    outputs: Sequence[Any], item: int, geometry: Geometry, config: dict[str, Any]
) -> Detections:
    """YOLO boxes: (N, 5 + C) with objectness (v5 style) or (4 + C, N) without (v8 style)."""
    labels = config.get("labels") or []
    pred = outputs[0][item]
    if _channels_first(pred.shape, len(labels)):
        pred = pred.T
    has_objectness = pred.shape[1] == 5 + len(labels) if labels else pred.shape[1] > 5
    cls_scores = pred[:, 5:] * pred[:, 4:5] if has_objectness else pred[:, 4:]
    classes = cls_scores.argmax(axis=1)
    scores = cls_scores[np.arange(len(pred)), classes]
    mask = scores > config.get("scoreThreshold", 0.25)
    if not mask.any():
        return _empty(labels, geometry)
    cx, cy, w, h = (pred[mask, i] for i in range(4))
    boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=1).astype(np.float32)
    scores, classes = scores[mask].astype(np.float32), classes[mask]
    keep = batched_nms(boxes, scores, classes, config.get("nmsIouThreshold", 0.45))[
        : config.get("maxDetections", 300)
    ]
    return Detections(
        geometry.to_frame(boxes[keep]),
        scores[keep],
        classes[keep],
        labels,
        geometry.width,
        geometry.height,
    )


def _channels_first(shape: tuple[int, ...], classes: int) -> bool:
    """True for (4 + C, N) predictions (v8 style) rather than (N, 5 + C)."""
    if classes:
        widths = (4 + classes, 5 + classes)
        return shape[1] not in widths and shape[0] in widths
    return shape[0] < shape[1]


def decode_classification(
    outputs: Sequence[Any], item: int, geometry: Geometry, config: dict[str, Any]
) -> Classification:
    """Scores (or logits when ``softmax``) -> the top-K labels."""
    scores = np.asarray(outputs[0][item], np.float32).reshape(-1)
    if config.get("softmax", False):
        scores = np.exp(scores - scores.max())
        scores /= scores.sum()
    labels = config.get("labels") or [str(i) for i in range(scores.size)]
    order = np.argsort(-scores)[: config.get("topK", 1)]
    top = [(labels[i] if i < len(labels) else str(i), float(scores[i])) for i in order]
    return Classification(top[0][0], int(order[0]), top[0][1], top)


def decode_raw(
    outputs: Sequence[Any], item: int, geometry: Geometry, config: dict[str, Any]
) -> list[Any]:
    return [output[item] for output in outputs]


Decoder = Callable[[Sequence[Any], int, Geometry, dict[str, Any]], Any]
DETECTORS: dict[str, Decoder] = {"centerface": decode_centerface, "yolo": decode_yolo}


def decoder_for(config: dict[str, Any] | None) -> Decoder:
    """The decoder a model descriptor's ``onnx.decoder`` section names (raw outputs if none)."""
    kind = (config or {}).get("type", "raw")
    if kind == "classification":
        return decode_classification
    if kind == "detection":
        return DETECTORS[config["name"]]  # type: ignore[index]
    return decode_raw
