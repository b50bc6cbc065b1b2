"""The members of an uncompressed tar stream, read without copying their data (bundle reading).

tarfile's stream mode (``"r|"``) passes every byte through its own buffer,
joining and slicing it two or three times: for a 200 MB bundle that cost
several times the CPU of the SHA-256 the device computes over the same bytes,
on the device's small cores, while the upload runs. This reader hands its
caller the chunks the source returns, as they are. Headers are still parsed by
tarfile (``TarInfo.frombuf``: checksum, number formats, the ustar prefix);
what tarfile writes for long names and big sizes (PAX extended headers, GNU
long names) is understood. A global PAX header is refused: bundles have none.

The caller decides what a member may be (the bundle reader accepts only
regular files named by the signed manifest); this module only frames them.
"""

from __future__ import annotations

import tarfile
from typing import Any

BLOCK = 512
MAX_EXTENDED = 1 << 20  # a PAX record set or long name beyond this is not a bundle's


class TarFormatError(Exception):
    """The stream is not a tar archive, or ends inside a header or a member."""


class TarStream:
    """``next()`` gives each member's header (a TarInfo), ``read(n)`` its data."""

    def __init__(self, source: Any) -> None:
        self.source = source
        self.left = 0  # data bytes of the current member not read yet
        self.padding = 0  # zero bytes after them, up to the next block
        self.ended = False

    def next(self) -> tarfile.TarInfo | None:
        """The next member's header (data of the current one skipped); None at the end."""
        self._skip(self.left + self.padding)
        self.left = self.padding = 0
        extended: dict[str, str] = {}
        while not self.ended:
            block = self._exact(BLOCK, allow_eof=True)
            if not block.strip(b"\0"):  # the end-of-archive marker, or the stream ends
                self.ended = True  # between members (the caller sees what is missing)
                return None
            try:
                info = tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as exc:
                raise TarFormatError(f"bad tar header: {exc}") from exc
            if info.type == tarfile.XGLTYPE:
                raise TarFormatError("a global PAX header (a bundle has none)")
            if info.type == tarfile.XHDTYPE:
                extended.update(_pax_records(self._extended(info.size)))
            elif info.type in (tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK):
                key = "path" if info.type == tarfile.GNUTYPE_LONGNAME else "linkpath"
                extended[key] = _text(self._extended(info.size).rstrip(b"\0"))
            else:
                return self._begin(info, extended)
        return None

    def read(self, size: int) -> bytes:
        """Up to `size` bytes of the current member's data, as the source returned them;
        b"" only once the member is read. TarFormatError if the stream ends inside it."""
        want = min(size, self.left)
        if want <= 0:
            return b""
        data = self.source.read(want)
        if not data:
            raise TarFormatError(f"the stream ends {self.left} bytes before the member does")
        if len(data) > want:  # a source that ignores the size asked for
            raise TarFormatError("the source returned more bytes than asked for")
        self.left -= len(data)
        return bytes(data)

    def _begin(self, info: tarfile.TarInfo, extended: dict[str, str]) -> tarfile.TarInfo:
        if "path" in extended:
            info.name = extended["path"]
        if "linkpath" in extended:
            info.linkname = extended["linkpath"]
        if "size" in extended:
            try:
                info.size = int(extended["size"])
            except ValueError:
                raise TarFormatError(f"bad PAX size {extended['size']!r}") from None
        if any(key.startswith("GNU.sparse") for key in extended):
            info.type = tarfile.GNUTYPE_SPARSE
        if info.size < 0:
            raise TarFormatError(f"negative size for {info.name!r}")
        # tarfile skips data only for regular (and unknown) members; so do we.
        has_data = info.isreg() or info.type not in tarfile.SUPPORTED_TYPES
        self.left = info.size if has_data else 0
        self.padding = -self.left % BLOCK
        return info

    def _extended(self, size: int) -> bytes:
        if size > MAX_EXTENDED:
            raise TarFormatError(f"an extended header of {size} bytes")
        data = self._exact(size)
        self._skip(-size % BLOCK)
        return data

    def _exact(self, size: int, allow_eof: bool = False) -> bytes:
        parts, got = [], 0
        while got < size:
            data = self.source.read(size - got)
            if not data:
                if allow_eof and got == 0:
                    return b""
                raise TarFormatError(f"the stream ends {size - got} bytes inside a header")
            parts.append(bytes(data))
            got += len(data)
        return b"".join(parts)

    def _skip(self, size: int) -> None:
        while size > 0:
            data = self.source.read(min(size, 1 << 20))
            if not data:
                raise TarFormatError(f"the stream ends {size} bytes before the next header")
            size -= len(data)


def _pax_records(data: bytes) -> dict[str, str]:
    """``"<length> <key>=<value>\\n"`` records (POSIX pax), as text."""
    fields, pos = {}, 0
    try:
        while pos < len(data) and data[pos] != 0:
            space = data.index(b" ", pos)
            length = int(data[pos:space])
            record = data[space + 1:pos + length]
            if length <= space - pos or not record.endswith(b"\n"):
                raise ValueError("record length")
            key, equals, value = record[:-1].partition(b"=")
            if not equals:
                raise ValueError("no '='")
            fields[_text(key)] = _text(value)
            pos += length
    except ValueError as exc:
        raise TarFormatError(f"bad PAX header: {exc}") from None
    return fields


def _text(raw: bytes) -> str:
    return raw.decode("utf-8", "surrogateescape")
