"""Build the colour classifier's ONNX model (needs the `onnx` package).

    python runtime/examples/color_classifier/build_model.py

The model averages each colour plane and turns the averages into
probabilities: ``softmax(10 * mean(data, H, W))`` over (red, green, blue).
"""

from __future__ import annotations

import sys
from pathlib import Path

MODEL = Path(__file__).parent / "packages/123456789012-COLOR_MODEL-1.0/model/color.onnx"


def build(path: Path = MODEL) -> Path:
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper, save

    data = helper.make_tensor_value_info("data", TensorProto.FLOAT, ["N", 3, 32, 32])
    probs = helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 3])
    gain = numpy_helper.from_array(np.array([10.0], np.float32), "gain")
    nodes = [
        helper.make_node("GlobalAveragePool", ["data"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"], axis=1),
        helper.make_node("Mul", ["flat", "gain"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    graph = helper.make_graph(nodes, "color_classifier", [data], [probs], initializer=[gain])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="edgefleet"
    )
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    save(model, str(path))
    return path


if __name__ == "__main__":
    print(build(Path(sys.argv[1]) if len(sys.argv) > 1 else MODEL))
