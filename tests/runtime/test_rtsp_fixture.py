"""The shared RTSP test server answers like a camera: streams, 401 and 404."""

from __future__ import annotations

import pytest

av = pytest.importorskip("av")

OPTIONS = {"rtsp_transport": "tcp", "timeout": "5000000"}


def first_frame(url: str) -> tuple[str, int, int]:
    with av.open(url, options=OPTIONS, timeout=5) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        return stream.codec_context.name, frame.width, frame.height


def test_h264_stream_decodes(rtsp_server):
    assert first_frame(rtsp_server.h264_url) == ("h264", 320, 240)


def test_h265_stream_decodes(rtsp_server):
    if rtsp_server.h265_url is None:
        pytest.skip("x265enc not installed")
    assert first_frame(rtsp_server.h265_url) == ("hevc", 320, 240)


def test_secure_mount_needs_credentials(rtsp_server):
    with pytest.raises(av.error.HTTPUnauthorizedError):
        first_frame(rtsp_server.url("secure"))
    assert first_frame(rtsp_server.secure_url)[0] == "h264"


def test_unknown_mount_is_404(rtsp_server):
    with pytest.raises(av.error.HTTPNotFoundError):
        first_frame(rtsp_server.url("no-such-camera"))
