"""``panoramasdk`` for edgefleet: Panorama application code runs unchanged on ONNX Runtime.

The runtime registers this package as the top-level module ``panoramasdk``
(``install()``), so ``import panoramasdk`` in an application works as it did on
the appliance::

    import panoramasdk

    class Application(panoramasdk.node):
        def process_streams(self):
            streams = self.inputs.video_in.get()
            for stream in streams:
                outputs = self.call({"data": preprocess(stream.image)}, "model_node")
                stream.add_label("hello", 0.1, 0.1)
            self.outputs.video_out.put(streams)

Extension: ``self.call({"input": streams}, "model_node")`` with media
objects instead of arrays lets the runtime preprocess, batch across cameras,
infer and decode as the model descriptor says; it returns one result per
media (Detections or Classification).
"""

from __future__ import annotations

import sys

from fleet_runtime.panoramasdk.media import media
from fleet_runtime.panoramasdk.node import ApplicationStopped, NodeContext, bind, node

__all__ = ["ApplicationStopped", "NodeContext", "bind", "install", "media", "node"]


def install() -> None:
    """Make ``import panoramasdk`` return this module."""
    sys.modules.setdefault("panoramasdk", sys.modules[__name__])
