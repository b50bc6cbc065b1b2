"""The bundle's tar reader: what tarfile writes (long names as PAX or GNU headers, short
reads from a pipe) reads back byte for byte; a cut or corrupt stream is refused."""

from __future__ import annotations

import io
import sys
import tarfile
from pathlib import Path

import pytest
from fleet_runtime import bundle
from fleet_runtime.tarstream import TarFormatError, TarStream

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from fixtures_bundle import make_bundle, new_key  # noqa: E402

KEY = new_key()


class Trickle(io.RawIOBase):
    """A pipe that hands over at most `step` bytes a read, as sshd's pipe does."""

    def __init__(self, data: bytes, step: int) -> None:
        self.data, self.pos, self.step = data, 0, step

    def read(self, size: int = -1) -> bytes:
        n = min(self.step, len(self.data) - self.pos, size if size >= 0 else self.step)
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out


def archive(members: dict[str, bytes], fmt: int) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=fmt) as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def read_all(source: object) -> dict[str, bytes]:
    tar, found = TarStream(source), {}
    while (member := tar.next()) is not None:
        parts = []
        while chunk := tar.read(1 << 20):
            parts.append(chunk)
        found[member.name] = b"".join(parts)
    return found


MEMBERS = {"short": b"a" * 700, "dir/" + "long-" * 40 + "name": b"b" * 513, "empty": b"",
           "blocks": bytes(range(256)) * 8}


@pytest.mark.parametrize("fmt", [tarfile.PAX_FORMAT, tarfile.GNU_FORMAT])
@pytest.mark.parametrize("step", [1, 511, 4096, 1 << 20])
def test_every_member_reads_back_whatever_the_reads_return(fmt: int, step: int) -> None:
    assert read_all(Trickle(archive(MEMBERS, fmt), step)) == MEMBERS


@pytest.mark.parametrize("cut", [100, 512 + 300, 3 * 512 + 10])
def test_a_stream_cut_inside_a_header_or_a_member_is_refused(cut: int) -> None:
    with pytest.raises(TarFormatError):
        read_all(io.BytesIO(archive(MEMBERS, tarfile.PAX_FORMAT)[:cut]))


def test_a_header_with_a_bad_checksum_is_refused() -> None:
    data = bytearray(archive({"x": b"1"}, tarfile.USTAR_FORMAT))
    data[0] ^= 1
    with pytest.raises(TarFormatError, match="bad tar header"):
        read_all(io.BytesIO(bytes(data)))


def test_a_global_pax_header_is_refused() -> None:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "x"}) as tar:
        tar.addfile(tarfile.TarInfo("a"), io.BytesIO(b""))
    with pytest.raises(TarFormatError, match="global"):
        read_all(io.BytesIO(out.getvalue()))


def test_a_bundle_with_a_long_path_installs_through_a_trickling_pipe(tmp_path: Path) -> None:
    files = {"manifest-less/" + "deep/" * 30 + "model.bin": b"m" * 70_000, "etc/os-release": b"v"}
    data = make_bundle(KEY, files)
    ring = bundle.Keyring()
    ring.add(KEY.public_key())
    bundle.read_bundle(Trickle(data, 1000), ring, bundle.DirectorySink(tmp_path))  # type: ignore[arg-type]
    for path, content in files.items():
        assert (tmp_path / path).read_bytes() == content
