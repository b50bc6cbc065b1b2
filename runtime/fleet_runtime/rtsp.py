"""A minimal RTSP client that asks a camera for its stream description (``DESCRIBE``).

Shared by both halves: the controller probes cameras directly (`fleet cameras
probe`) and the agent probes them from the device's own network (`fleet-agent
rtsp-probe`). Handles Basic and Digest (RFC 2617, MD5, qop=auth) authentication,
rtsps (TLS, certificate verified), and reads the codecs from the SDP answer.
H.264 is what the runtime requires; anything else is reported as
CODEC_UNSUPPORTED, the way Panorama refused H.265 cameras.

>>> probe("rtsp://127.0.0.1:8554/test", timeout=2.0).status       # doctest: +SKIP
'REACHABLE'

Passwords never appear in a result, a detail string or an exception.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import time
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

REACHABLE, AUTH_FAILED, NOT_FOUND = "REACHABLE", "AUTH_FAILED", "NOT_FOUND"
TIMEOUT, UNREACHABLE, CODEC_UNSUPPORTED, ERROR = (
    "TIMEOUT",
    "UNREACHABLE",
    "CODEC_UNSUPPORTED",
    "ERROR",
)
REQUIRED_CODEC = "H264"
_STATIC_PT = {"26": "JPEG", "32": "MPV", "34": "H263", "0": "PCMU", "8": "PCMA", "14": "MPA"}
_CODEC_ALIASES = {"HEVC": "H265", "MP4V-ES": "MPEG4", "AVC": "H264"}
MAX_RESPONSE = 256 * 1024
BUSY_RETRIES = 3


@dataclass
class ProbeResult:
    """What a DESCRIBE found. `status` is one of the module's status constants."""

    status: str
    detail: str = ""
    codec: str | None = None
    codecs: list[str] = field(default_factory=list)
    rtsp_status: int | None = None
    auth: str | None = None
    elapsed_ms: float = 0.0
    retry_after: float = field(default=0.0, repr=False)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("retry_after")
        return out


@dataclass
class Response:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k.lower() == name.lower()]


class _Failure(Exception):
    def __init__(self, status: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


# ---- SDP ------------------------------------------------------------------------------------


def sdp_codecs(sdp: str) -> list[tuple[str, str]]:
    """``[(media, codec), ...]`` per m= line: ``[("video", "H264"), ("audio", "PCMA")]``."""
    out: list[tuple[str, str]] = []
    media: list[tuple[str, list[str]]] = []
    rtpmap: dict[tuple[int, str], str] = {}
    for line in sdp.splitlines():
        line = line.strip()
        if line.startswith("m="):
            parts = line[2:].split()
            media.append((parts[0] if parts else "", parts[3:]))
        elif line.startswith("a=rtpmap:") and media:
            pt, _, enc = line[len("a=rtpmap:") :].partition(" ")
            rtpmap[(len(media) - 1, pt.strip())] = enc.split("/")[0].strip().upper()
    for index, (kind, pts) in enumerate(media):
        for pt in pts[:1]:  # the first format is the one the stream uses by default
            codec = rtpmap.get((index, pt)) or _STATIC_PT.get(pt, f"PT{pt}")
            out.append((kind, _CODEC_ALIASES.get(codec, codec)))
    return out


# ---- authentication -----------------------------------------------------------------------------


def _params(challenge: str) -> dict[str, str]:
    return {
        k.lower(): v1 or v2
        for k, v1, v2 in re.findall(r'(\w+)\s*=\s*(?:"([^"]*)"|([^\s,]+))', challenge)
    }


def authorization(
    challenges: list[str],
    method: str,
    uri: str,
    user: str,
    password: str,
    cnonce: str | None = None,
) -> tuple[str, str] | None:
    """``(scheme, header value)`` answering the strongest challenge offered, or None."""
    digest = [c for c in challenges if c.lower().startswith("digest")]
    if digest:
        return "digest", _digest(_params(digest[0][6:]), method, uri, user, password, cnonce)
    if any(c.lower().startswith("basic") for c in challenges):
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return "basic", f"Basic {token}"
    return None


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _digest(
    p: dict[str, str], method: str, uri: str, user: str, password: str, cnonce: str | None
) -> str:
    realm, nonce = p.get("realm", ""), p.get("nonce", "")
    ha1, ha2 = _md5(f"{user}:{realm}:{password}"), _md5(f"{method}:{uri}")
    fields = [f'username="{user}"', f'realm="{realm}"', f'nonce="{nonce}"', f'uri="{uri}"']
    qops = [q.strip() for q in p.get("qop", "").split(",") if q.strip()]
    if "auth" in qops:
        cnonce = cnonce or os.urandom(8).hex()
        response = _md5(f"{ha1}:{nonce}:00000001:{cnonce}:auth:{ha2}")
        fields += ["qop=auth", "nc=00000001", f'cnonce="{cnonce}"']
    else:
        response = _md5(f"{ha1}:{nonce}:{ha2}")
    fields.append(f'response="{response}"')
    if "opaque" in p:
        fields.append(f'opaque="{p["opaque"]}"')
    if p.get("algorithm"):
        fields.append(f"algorithm={p['algorithm']}")
    return "Digest " + ", ".join(fields)


# ---- the wire ----------------------------------------------------------------------------------


class _Connection:
    def __init__(self, host: str, port: int, tls: bool, deadline: float) -> None:
        self.deadline = deadline
        sock = socket.create_connection((host, port), timeout=self._left())
        if tls:
            sock = ssl.create_default_context().wrap_socket(sock, server_hostname=host)
        self.sock, self.buffer, self.cseq = sock, b"", 0

    def _left(self) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        return left

    def request(self, method: str, uri: str, headers: dict[str, str]) -> Response:
        self.cseq += 1
        lines = [f"{method} {uri} RTSP/1.0", f"CSeq: {self.cseq}", "User-Agent: edgefleet-probe"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        self.sock.settimeout(self._left())
        self.sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("utf-8"))
        return self._response()

    def _read_until(self, marker: bytes) -> bytes:
        while marker not in self.buffer:
            self._fill()
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _fill(self) -> None:
        self.sock.settimeout(self._left())
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionResetError("server closed the connection")
        self.buffer += chunk
        if len(self.buffer) > MAX_RESPONSE:
            raise _Failure(ERROR, "response larger than 256 KiB")

    def _response(self) -> Response:
        head = self._read_until(b"\r\n\r\n").decode("utf-8", "replace").split("\r\n")
        match = re.match(r"RTSP/\d\.\d\s+(\d{3})\s*(.*)", head[0])
        if not match:
            raise _Failure(ERROR, "the server did not answer with RTSP")
        headers = [(k.strip(), v.strip()) for k, _, v in (h.partition(":") for h in head[1:])]
        length = int(next((v for k, v in headers if k.lower() == "content-length"), "0") or 0)
        while len(self.buffer) < length:
            self._fill()
        body, self.buffer = self.buffer[:length], self.buffer[length:]
        return Response(int(match.group(1)), match.group(2), headers, body)

    def close(self) -> None:
        self.sock.close()


# Cheap cameras take their password as a URL parameter (``/user=admin&password=X&...``,
# ``?pwd=X``). The controller stores such a URL with this placeholder and seals the value;
# the device puts the real password back only when it opens the stream.
PASSWORD_PLACEHOLDER = "{password}"  # noqa: S105 -- a marker, not a secret
_PARAM_SAFE = "!$'()*,;:@~"  # kept as typed; & = / ? # + and the rest are %-encoded


def fill_password(url: str, password: str | None) -> str:
    """``url`` with the camera's password in place of :data:`PASSWORD_PLACEHOLDER`."""
    if PASSWORD_PLACEHOLDER not in url:
        return url
    return url.replace(PASSWORD_PLACEHOLDER, quote(password or "", safe=_PARAM_SAFE))


def split_credentials(url: str) -> tuple[str, str, str]:
    """``(url without user:password@, user, password)``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    host = f"[{host}]" if ":" in host else host
    netloc = f"{host}:{parts.port}" if parts.port else host
    clean = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return clean, unquote(parts.username or ""), unquote(parts.password or "")


def probe(url: str, username: str = "", password: str = "", *, timeout: float = 5.0) -> ProbeResult:
    """DESCRIBE `url` (credentials in the URL or given separately) and classify the answer.
    A camera that answers 503 (busy, or still setting up its stream) is asked again, up to
    BUSY_RETRIES times within the timeout, after its Retry-After (at most 1 s)."""
    started = time.monotonic()
    result = _probe_once(url, username, password, started + timeout)
    for _ in range(BUSY_RETRIES):
        pause = min(result.retry_after, started + timeout - time.monotonic() - 0.1)
        if result.rtsp_status != 503 or pause < 0:
            break
        time.sleep(pause)
        result = _probe_once(url, username, password, started + timeout)
    result.elapsed_ms = round((time.monotonic() - started) * 1000, 1)
    return result


def _probe_once(url: str, username: str, password: str, deadline: float) -> ProbeResult:
    clean, url_user, url_pass = split_credentials(url)
    username, password = username or url_user, password or url_pass
    clean = fill_password(clean, password)
    try:
        result = _describe(clean, username, password, deadline)
    except _Failure as exc:
        result = ProbeResult(exc.status, exc.detail)
    except TimeoutError:
        result = ProbeResult(TIMEOUT, "Connection to server failed: Connection timed out")
    except socket.gaierror:
        result = ProbeResult(UNREACHABLE, f"cannot resolve host '{urlsplit(clean).hostname}'")
    except ssl.SSLError as exc:
        result = ProbeResult(ERROR, f"TLS failed: {exc.reason or type(exc).__name__}")
    except ConnectionRefusedError:
        result = ProbeResult(UNREACHABLE, "Connection to server failed: Connection refused")
    except OSError as exc:
        result = ProbeResult(
            UNREACHABLE, f"Connection to server failed: {exc.strerror or type(exc).__name__}"
        )
    return result


def _describe(url: str, user: str, password: str, deadline: float) -> ProbeResult:
    parts = urlsplit(url)
    tls = parts.scheme.lower() == "rtsps"
    port = parts.port or (322 if tls else 554)
    conn = _Connection(parts.hostname or "", port, tls, deadline)
    try:
        headers = {"Accept": "application/sdp"}
        answer, scheme = conn.request("DESCRIBE", url, headers), None
        if answer.status == 401 and user:
            offered = authorization(
                answer.header("WWW-Authenticate"), "DESCRIBE", url, user, password
            )
            if offered:
                scheme, auth_headers = offered[0], {**headers, "Authorization": offered[1]}
                try:
                    answer = conn.request("DESCRIBE", url, auth_headers)
                except (ConnectionError, _Failure):  # some cameras hang up after a 401
                    conn.close()
                    conn = _Connection(parts.hostname or "", port, tls, deadline)
                    answer = conn.request("DESCRIBE", url, auth_headers)
        return _classify(answer, scheme, bool(user))
    finally:
        conn.close()


def _classify(answer: Response, scheme: str | None, had_credentials: bool) -> ProbeResult:
    code = answer.status
    if code == 401:
        why = "credentials were refused" if had_credentials else "the camera requires credentials"
        return ProbeResult(AUTH_FAILED, f"401 Unauthorized: {why}", rtsp_status=code, auth=scheme)
    if code == 404:
        return ProbeResult(
            NOT_FOUND, "Failed to get SDP description: 404 Not Found", rtsp_status=code, auth=scheme
        )
    if code != 200:
        retry = next(iter(answer.header("Retry-After")), "")
        return ProbeResult(
            ERROR,
            f"DESCRIBE answered {code} {answer.reason[:80]}",
            rtsp_status=code,
            auth=scheme,
            # ASCII digits only: str.isdigit() also takes "²", which float() refuses.
            retry_after=min(1.0, float(retry)) if retry.isascii() and retry.isdigit() else 0.25,
        )
    found = sdp_codecs(answer.body.decode("utf-8", "replace"))
    video = [codec for kind, codec in found if kind == "video"]
    codecs = [codec for _, codec in found]
    if REQUIRED_CODEC not in video:
        got = ", ".join(video) or "no video"
        return ProbeResult(
            CODEC_UNSUPPORTED,
            f"Camera did not provide an H264 encoded stream (found {got})",
            codec=video[0] if video else None,
            codecs=codecs,
            rtsp_status=code,
            auth=scheme,
        )
    return ProbeResult(
        REACHABLE, "", codec=REQUIRED_CODEC, codecs=codecs, rtsp_status=code, auth=scheme
    )
