"""A stand-in for a daemon of another protocol version (for autostart tests).

    python fake_daemon.py STATE_DIR SOCKET MAJOR

Holds the daemon lock like a real daemon, listens on SOCKET and answers
every hello with a Reject carrying protocol (MAJOR, 0), raw msgpack, the way
a daemon of that version would. Dies on SIGTERM (default action).
"""
import fcntl
import os
import socket
import struct
import sys

import msgpack

state_dir, socket_path, major = sys.argv[1], sys.argv[2], int(sys.argv[3])
os.makedirs(state_dir, exist_ok=True)
lock = os.open(os.path.join(state_dir, "daemon.lock"), os.O_RDWR | os.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
os.write(lock, f"{os.getpid()}\n".encode())
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.bind(socket_path)
server.listen(16)
body = msgpack.packb({"kind": "reject", "reason": f"I speak protocol {major}.0", "protocol": [major, 0]})
while True:
    conn, _ = server.accept()
    try:
        conn.recv(65536)
        conn.sendall(struct.pack(">I", len(body)) + body)
    except OSError:
        pass
    finally:
        conn.close()
