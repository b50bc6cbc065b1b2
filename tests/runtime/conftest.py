"""Fixtures for the vision runtime tests: the RTSP server and test assets."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for rtsp_server

from rtsp_server import rtsp_server  # noqa: E402,F401  (session fixture)
