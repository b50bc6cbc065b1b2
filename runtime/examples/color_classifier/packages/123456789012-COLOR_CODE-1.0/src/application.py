"""Colour classifier: a Panorama sample-style application (SDK calls only, raw tensors).

It preprocesses frames itself, calls the model node with an array exactly as
on the Panorama appliance, reads the output tuple, labels each stream and
counts frames per colour.
"""

import logging

import cv2
import numpy as np
import panoramasdk

LABELS = ["red", "green", "blue"]
log = logging.getLogger("color_classifier")


def preprocess(image):
    small = cv2.resize(image, (32, 32))[:, :, ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(small.transpose(2, 0, 1)[None])


class Application(panoramasdk.node):
    def __init__(self):
        super().__init__()
        self.threshold = self.inputs.threshold.get()
        self.counts = {label: 0 for label in LABELS}

    def process_streams(self):
        streams = self.inputs.video_in.get()
        for stream in streams:
            outputs = self.call({"data": preprocess(stream.image)}, "model_node")
            probs = outputs[0][0]
            best = int(np.argmax(probs))
            label = LABELS[best] if probs[best] >= self.threshold else "unsure"
            if label in self.counts:
                self.counts[label] += 1
            stream.add_label("%s %.2f" % (label, probs[best]), 0.05, 0.1)
            stream.add_label("count %s=%d" % (label, self.counts.get(label, 0)), 0.05, 0.2)
        self.outputs.video_out.put(streams)


def main():
    app = Application()
    while True:
        app.process_streams()


main()
