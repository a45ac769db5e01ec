"""Crafting MMP frames in tests (to inject malformed and foreign packets):
CRC32C and the header layout of dataplane/wire/MMP.md."""

from __future__ import annotations

import struct


def _table() -> list[int]:
    t = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ (0x82F63B78 if c & 1 else 0)
        t.append(c)
    return t


_T = _table()


def crc32c(data: bytes) -> int:
    c = 0xFFFFFFFF
    for b in data:
        c = _T[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


SEALED = 0x20  # header flag: AES-256-GCM ciphertext and tag, no CRC


def mmp(session: int, payload: bytes = b"", *, ptype: int = 1, stream: int = 0, flags: int = 3,
        seq: int = 0, msg: int = 0, auth: int = 0, magic: int = 0x4D4D, version: int = 6,
        length: int | None = None, good_crc: bool = True) -> bytes:
    """An MMP datagram; every field may be set wrong on purpose. A sealed
    one (flags with SEALED) carries crc 0, as MMP.md "Encryption" says."""
    ln = len(payload) if length is None else length
    hdr = struct.pack(">HBBIHHIIIII", magic, version, ptype, session, stream, flags, seq, msg, ln,
                      auth, 0)
    crc = 0 if flags & SEALED else crc32c(hdr + payload)
    if not good_crc:
        crc ^= 0xDEADBEEF
    return hdr[:28] + struct.pack(">I", crc) + payload


def _csum(data: bytes) -> int:
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def frame(dst_mac: str, src_mac: str, src_ip: str, dst_ip: str, dport: int, udp_payload: bytes,
          sport: int = 50000, proto: int = 17) -> bytes:
    """Ethernet/IPv4/UDP around udp_payload."""
    mac = lambda m: bytes(int(x, 16) for x in m.split(":"))  # noqa: E731
    ip = lambda a: bytes(int(x) for x in a.split("."))  # noqa: E731
    udp = struct.pack(">HHHH", sport, dport, 8 + len(udp_payload), 0) + udp_payload
    iph = struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 1, 0x4000, 64, proto, 0,
                      ip(src_ip), ip(dst_ip))
    iph = iph[:10] + struct.pack(">H", _csum(iph)) + iph[12:]
    return mac(dst_mac) + mac(src_mac) + b"\x08\x00" + iph + udp
