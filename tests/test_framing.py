"""Framing (runtime.protocol): the one-read fast path takes exactly what the buffered path takes,
caps come first on both, and partial, joined and split frames still parse."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from handlerbox.runtime import protocol
from handlerbox.runtime.errors import DeadlineReached, PeerClosed, ProtocolError


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read_end, write_end = os.pipe()
    os.set_blocking(read_end, False)
    try:
        yield read_end, write_end
    finally:
        for fd in (read_end, write_end):
            try:
                os.close(fd)
            except OSError:
                pass


def read(fd: int, reader: protocol.FrameReader) -> bytes:
    return protocol.read_frame(fd, reader, time.monotonic() + 2)


@pytest.mark.parametrize("body", [b"{}", b'{"op":"result"}', b"x" * 70_000, b""])
def test_a_frame_written_is_the_frame_read(pipe: tuple[int, int], body: bytes) -> None:
    read_end, write_end = pipe
    reader = protocol.FrameReader(1 << 20)
    if len(body) > 60_000:  # larger than a pipe holds at once: write from a child
        pid = os.fork()
        if pid == 0:
            protocol.write_frame(write_end, body)
            os._exit(0)
        assert read(read_end, reader) == body
        os.waitpid(pid, 0)
    else:
        protocol.write_frame(write_end, body)
        assert read(read_end, reader) == body
    assert not reader.buffer


def test_two_frames_in_one_read_come_out_one_by_one(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    reader = protocol.FrameReader(1024)
    os.write(write_end, protocol.frame(b'{"op":"ready"}') + protocol.frame(b'{"op":"result"}'))
    assert read(read_end, reader) == b'{"op":"ready"}'
    assert read(read_end, reader) == b'{"op":"result"}'
    assert not reader.buffer


def test_a_frame_split_across_reads_is_joined(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    reader = protocol.FrameReader(1024)
    whole = protocol.frame(b'{"op":"result","logs":""}')
    os.write(write_end, whole[:3])
    with pytest.raises(DeadlineReached):
        protocol.read_frame(read_end, reader, time.monotonic() + 0.05)
    os.write(write_end, whole[3:10])
    with pytest.raises(DeadlineReached):
        protocol.read_frame(read_end, reader, time.monotonic() + 0.05)
    os.write(write_end, whole[10:])
    assert read(read_end, reader) == b'{"op":"result","logs":""}'


@pytest.mark.parametrize("split", [False, True])
def test_an_oversized_frame_is_refused_before_its_body_arrives(pipe: tuple[int, int],
                                                                split: bool) -> None:
    read_end, write_end = pipe
    reader = protocol.FrameReader(16)
    header = protocol.HEADER.pack(1 << 30)
    os.write(write_end, header[:2] if split else header + b"x" * 8)
    if split:
        with pytest.raises(DeadlineReached):
            protocol.read_frame(read_end, reader, time.monotonic() + 0.05)
        os.write(write_end, header[2:])
    with pytest.raises(ProtocolError, match="over the cap of 16"):
        read(read_end, reader)


def test_eof_is_peer_closed(pipe: tuple[int, int]) -> None:
    read_end, write_end = pipe
    os.close(write_end)
    with pytest.raises(PeerClosed):
        read(read_end, protocol.FrameReader(16))


def test_take_matches_feed_for_every_cut_of_a_stream() -> None:
    stream = protocol.frame(b'{"a":1}') + protocol.frame(b"") + protocol.frame(b'{"b":[2]}')
    expected = [b'{"a":1}', b"", b'{"b":[2]}']
    for cut in range(len(stream) + 1):
        reader = protocol.FrameReader(64)
        bodies = []
        for chunk in (stream[:cut], stream[cut:]):
            if not chunk:
                continue
            body = reader.take(chunk)
            while body is not None:
                bodies.append(body)
                body = reader.next_body()
        assert bodies == expected, cut
