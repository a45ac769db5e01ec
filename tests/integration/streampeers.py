"""Stand-ins for the two QEMUs of a migration when the test is about the
fabric, not QEMU: a source that streams seeded bytes into the source daemon
while reading the return path, and a destination that listens where the
destination daemon connects, hashes what arrives and streams bytes back."""

from __future__ import annotations

import hashlib
import random
import socket
import threading

CHUNK = 256 * 1024


# A source daemon tells QEMU's main channel by its first bytes, the "QEVM"
# magic of a migration stream; the stand-in source starts its stream so.
QEMU_MAGIC = b"QEVM"


def pattern(seed: int, nbytes: int, head: bytes = b""):
    """Yields nbytes of seeded pseudo-random data in chunks (reproducible),
    the first bytes replaced by `head`."""
    rng = random.Random(seed)
    left = nbytes
    first = True
    while left > 0:
        n = min(CHUNK, left)
        chunk = rng.randbytes(n)
        if first:
            chunk = (head + chunk[len(head):])[:n]
            first = False
        yield chunk
        left -= n


class Pump:
    """Full-duplex on one connected socket: send `send_bytes` of pattern
    `seed`, shut down writing, and read to EOF; records SHA-256 of both."""

    def __init__(self, sock: socket.socket, seed: int, send_bytes: int, head: bytes = b""):
        self.sock = sock
        self.seed = seed
        self.send_bytes = send_bytes
        self.head = head
        self.sent_hash = hashlib.sha256()
        self.recv_hash = hashlib.sha256()
        self.received = 0
        self.error: Exception | None = None
        self._tx = threading.Thread(target=self._send, daemon=True)
        self._rx = threading.Thread(target=self._recv, daemon=True)

    def start(self) -> "Pump":
        self._tx.start()
        self._rx.start()
        return self

    def _send(self) -> None:
        try:
            for chunk in pattern(self.seed, self.send_bytes, self.head):
                self.sent_hash.update(chunk)
                self.sock.sendall(chunk)
            self.sock.shutdown(socket.SHUT_WR)
        except OSError as e:
            self.error = e

    def _recv(self) -> None:
        try:
            while True:
                data = self.sock.recv(CHUNK)
                if not data:
                    return
                self.received += len(data)
                self.recv_hash.update(data)
        except OSError as e:
            self.error = e

    def join(self, timeout: float) -> bool:
        self._tx.join(timeout)
        self._rx.join(timeout)
        return not (self._tx.is_alive() or self._rx.is_alive())

    def close(self) -> None:
        self.sock.close()


def expected_hash(seed: int, nbytes: int, head: bytes = b"") -> str:
    h = hashlib.sha256()
    for chunk in pattern(seed, nbytes, head):
        h.update(chunk)
    return h.hexdigest()


class DestinationPeer:
    """Listens on a unix socket like `qemu -incoming unix:PATH` would."""

    def __init__(self, path: str, seed: int, send_bytes: int):
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(1)
        self.seed = seed
        self.send_bytes = send_bytes
        self.pump: Pump | None = None
        self._t = threading.Thread(target=self._accept, daemon=True)
        self._t.start()

    def _accept(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        self.pump = Pump(conn, self.seed, self.send_bytes).start()

    def close(self) -> None:
        self.srv.close()
        if self.pump:
            self.pump.close()


def connect_source(path: str, seed: int, send_bytes: int) -> Pump:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    return Pump(s, seed, send_bytes, QEMU_MAGIC).start()
