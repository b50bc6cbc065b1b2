"""The missing blobs of one version onto one device, each verified on arrival.

Small blobs travel together in one ``fleet-agent batch`` of ``blobs put`` calls
(one agent process for all of them: on a loaded or small device the process
start is most of a short call's cost); large ones one after the other, each
its own ``blobs put`` fed by the system's OpenSSH client (``Agent.put_blob``).
Every blob continues from the bytes the device already holds (``partial``) and
is hashed by the device as it arrives: an answer that is not ``ok`` with the
blob's SHA-256 stored fails the send. `Sent.received` is what the device
answered for, the ``verifying`` step's evidence (no second round trip).

>>> sent = send_blobs(agent, session, source, plan.send, on_bytes=print)   # doctest: +SKIP
>>> sent.bytes, sorted(sent.received)                                       # doctest: +SKIP
(4096, ['ab12...'])
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from fleet.agent import SMALL_BLOB, Agent, checked
from fleet.apps.decide import Blob
from fleet.apps.source import BlobSource
from fleet.errors import AgentCallError
from fleet.transport import SSHSession

BATCH_BYTES = 16 << 20  # small blobs per batch call, at most (they travel base64 in its stdin)


@dataclass
class Sent:
    bytes: int = 0
    received: set[str] = field(default_factory=set)  # SHA-256s the device stored and checked


def send_blobs(agent: Agent, session: SSHSession, source: BlobSource,
               send: Sequence[tuple[Blob, int]],
               on_bytes: Callable[[int], None] | None = None) -> Sent:
    """Each (blob, bytes already there) of `send` onto the device; see the module doc."""
    sent = Sent()
    small = [item for item in send if item[0].size - item[1] < SMALL_BLOB]
    for group in _groups(small):
        _put_small(agent, source, group, sent, on_bytes)
    for blob, offset in send:
        if (blob, offset) in small:
            continue
        with source.path(blob.sha256).open("rb") as src:
            src.seek(offset)
            _received(agent, blob, agent.put_blob(session, blob.sha256, blob.size, offset, src),
                      sent)
        sent.bytes += blob.size - offset
        if on_bytes is not None:
            on_bytes(sent.bytes)
    return sent


def _groups(small: list[tuple[Blob, int]]) -> list[list[tuple[Blob, int]]]:
    groups: list[list[tuple[Blob, int]]] = [[]]
    size = 0
    for blob, offset in small:
        if groups[-1] and size + blob.size - offset > BATCH_BYTES:
            groups.append([])
            size = 0
        groups[-1].append((blob, offset))
        size += blob.size - offset
    return [g for g in groups if g]


def _put_small(agent: Agent, source: BlobSource, group: list[tuple[Blob, int]], sent: Sent,
               on_bytes: Callable[[int], None] | None) -> None:
    calls = []
    for blob, offset in group:
        with source.path(blob.sha256).open("rb") as src:
            src.seek(offset)
            data = src.read()
        calls.append((["blobs", "put", blob.sha256, "--size", str(blob.size), "--offset",
                       str(offset)], data))
    answers = agent.batch(calls)
    for (blob, offset), answer in zip(group, answers, strict=False):
        _received(agent, blob, checked(agent.device, answer), sent)
        sent.bytes += blob.size - offset
    if len(answers) < len(group):
        raise AgentCallError(agent.device, "protocol", "the batch of blobs ended early")
    if on_bytes is not None:
        on_bytes(sent.bytes)


def _received(agent: Agent, blob: Blob, answer: dict[str, object], sent: Sent) -> None:
    if answer.get("sha256") != blob.sha256 or not (answer.get("stored") or answer.get("already")):
        raise AgentCallError(agent.device, "protocol", f"blob {blob.sha256[:12]}: the device "
                             "did not confirm it stored and checked it")
    sent.received.add(blob.sha256)
