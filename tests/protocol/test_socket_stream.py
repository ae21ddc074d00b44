"""Frames across a real Unix socket, written by another process in awkward pieces."""
from __future__ import annotations

import socket
import subprocess
import sys
import textwrap

from protocol import FrameDecoder
from protocol import messages as m

WRITER = textwrap.dedent("""
    import random, socket, sys, time
    from protocol import encode_message, summarize, messages as m

    sock = socket.socket(fileno=int(sys.argv[1]))
    rng = random.Random(5)
    stream = b"".join(
        encode_message(m.EventBatch(episode=n, events=[("v", n, summarize("x" * (n % 250))), ("ret", n, n, n)]))
        for n in range(300)
    ) + encode_message(m.EpisodeClosed(episode=299))
    position = 0
    while position < len(stream):
        size = rng.choice([1, 3, 4, 5, 100, 4096, 70000])
        sock.sendall(stream[position:position + size])
        position += size
        if rng.random() < 0.01:
            time.sleep(0.001)
    sock.close()
""")


def test_messages_written_in_random_pieces_by_another_process_arrive_intact():
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    with ours:
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(theirs.fileno())], pass_fds=[theirs.fileno()])
        theirs.close()
        decoder = FrameDecoder()
        received = []
        ours.settimeout(30)
        while chunk := ours.recv(1500):
            received.extend(decoder.feed(chunk))
        assert writer.wait(timeout=30) == 0
    assert [type(x) for x in received] == [m.EventBatch] * 300 + [m.EpisodeClosed]
    assert [batch.events[0][2]["v"] for batch in received[:-1]] == ["x" * (n % 250) for n in range(300)]
    assert decoder.buffered == 0
