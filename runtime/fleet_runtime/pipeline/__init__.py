"""The vision pipeline: sources, preprocessing, ONNX Runtime inference, decoders, sinks, runner.

Heavy dependencies (numpy, av, cv2, onnxruntime: the ``vision`` extra) are
imported by the modules that need them, so ``fleet_runtime`` itself stays
importable on a base install.
"""
