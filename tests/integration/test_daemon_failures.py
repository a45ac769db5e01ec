#!/usr/bin/python3
"""Integration: bad input gets a clear error and a counter, never a crash.

  profiles   bad NIC profiles: memmotiond exits 2 with one line naming file and key
  control    malformed/unknown/ill-typed/oversized/endless control requests: QMP
             error classes, each refusal counted (query-stats and metrics);
             memmotionctl exit codes; the daemon keeps serving; the control
             socket is 0660 in the configured group; peer-channel handshake
             failures and failed offers counted
  packets    malformed, foreign-session and unauthenticated MMP frames injected
             on the veth are dropped and counted, and change nothing
  peer       a source whose destination never prepared the session fails it
             after the dead timeout; a cancel reaches the peer
  replay     captured DATA frames replayed after a session: counted as
             duplicates (then as late), nothing reaches QEMU twice
  lying_pages  page records that lie (a page failing its hash, pages on the
             main channel, a PAGE_SAME whose hash is not that of the page's
             last delivery, or one to a destination told the unchanged
             filter is off): the session fails naming it, QEMU gets none
             of it; a true PAGE_SAME passes
  encrypted  a session negotiated over the peer channel (AES-256-GCM, the
             default): no plaintext on the wire; captured frames replayed are
             refused as replays, forged ones and frames in the clear as bad
             tags, all counted, none reaches QEMU; a mismatched --encrypt is
             refused and counted"""

from __future__ import annotations

import argparse
import ctypes
import grp
import json
import os
import stat
import pickle
import re
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mmpacket import SEALED, frame, mmp  # noqa: E402
from mmtest.daemon import ControlClient, ControlError, Daemon  # noqa: E402
from mmtest.fabric import Fabric  # noqa: E402

PROFILES = Path(__file__).resolve().parents[2] / "nic-profiles"
failures: list[str] = []


def check(cond: bool, what: str) -> None:
    print(f"  {'ok  ' if cond else 'FAIL'} {what}")
    if not cond:
        failures.append(what)


def case_profiles(build: Path) -> None:
    print("profiles:")
    good = (PROFILES / "af_packet-veth.toml").read_text()
    cases = {
        "mtu out of range": (good.replace("mtu = 9000", "mtu = 70000"), "port.mtu: 70000 is out of range"),
        "unknown key": (good.replace("rx_queues = 1", "rx_queue = 1"), "port.rx_queue: unknown key"),
        "wrong type": (re.sub(r"(?m)^window = \d+", 'window = "big"', good), "transport.window: must be an integer"),
        "bad idle policy": (good.replace('idle = "backoff"', 'idle = "sleepy"'), "engine.idle: 'sleepy' is not allowed"),
        "bad pmd": (good.replace('pmd = "net_af_packet"', 'pmd = "net_e1000"'), "port.pmd: 'net_e1000' is not allowed"),
        "malformed TOML": (good.replace("[port]", "[port"), "malformed TOML"),
        "window not a power of two": (re.sub(r"(?m)^window = \d+", "window = 1000", good), "not a power of two"),
    }
    for name, (text, _) in cases.items():
        assert text != good, f"case '{name}' did not change the profile (test out of date)"
    with tempfile.TemporaryDirectory() as d:
        for name, (text, expect) in cases.items():
            p = Path(d) / "bad.toml"
            p.write_text(text)
            r = subprocess.run([str(build / "control/memmotiond"), "--profile", str(p), "--ip", "10.0.0.1",
                                "--set", "iface=lo"], capture_output=True, text=True, timeout=30)
            lines = [x for x in r.stderr.splitlines() if x.strip()]
            check(r.returncode == 2 and len(lines) == 1 and expect in lines[0] and str(p) in lines[0],
                  f"{name}: exit {r.returncode}, {lines}")
        r = subprocess.run([str(build / "control/memmotiond"), "--profile", "af_packet-veth", "--ip", "10.0.0.1"],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "vars.iface: no value given" in r.stderr, f"missing variable: {r.stderr.strip()}")
        r = subprocess.run([str(build / "control/memmotiond"), "--profile", "memif", "--ip", "10.0.0.1",
                            "--set", "role=boss"], capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "vars.role: 'boss' is not allowed" in r.stderr, f"var not allowed: {r.stderr.strip()}")
        r = subprocess.run([str(build / "control/memmotiond"), "--profile", "memif", "--ip", "10.0.0.300"],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "not an IPv4 address" in r.stderr, f"bad --ip: {r.stderr.strip()}")
        r = subprocess.run([str(build / "control/memmotiond"), "--profile", "memif", "--ip", "10.0.0.1",
                            "--dedupe-reserve", "65"], capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "--dedupe-reserve" in r.stderr and "0 to 64" in r.stderr,
              f"bad --dedupe-reserve: {r.stderr.strip()}")
        r = subprocess.run([str(build / "control/memmotiond"), "--profile", "memif", "--ip", "10.0.0.1",
                            "--cipher", "aesni"], capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "--cipher must be 'auto', 'openssl' or 'ipsec-mb', not 'aesni'" in r.stderr,
              f"bad --cipher: {r.stderr.strip()}")
        cfg = Path(d) / "reserve.toml"
        cfg.write_text('ip = "10.0.0.1"\nprofile = "memif"\ndedupe_reserve = -1\n')
        r = subprocess.run([str(build / "control/memmotiond"), "--config", str(cfg)],
                           capture_output=True, text=True, timeout=30)
        check(r.returncode == 2 and "dedupe_reserve: must be 0..64" in r.stderr,
              f"bad dedupe_reserve in --config: {r.stderr.strip()}")
        cfg.write_bytes(b'ip = "10.0.0.1"\nname = \'x\xe8y\'\n')  # toml11 3.7.1 read past its buffer on this
        r = subprocess.run([str(build / "control/memmotiond"), "--config", str(cfg)],
                           capture_output=True, text=True, errors="replace", timeout=30)
        check(r.returncode == 2 and "malformed TOML: not UTF-8 at byte" in r.stderr,
              f"--config not UTF-8: {r.stderr.strip()}")
        # A window that cannot hold the largest message would stall a stream
        # on its first big page message: refused once the port's MTU is known.
        small = re.sub(r"(?m)^window = \d+", "window = 64", (PROFILES / "memif.toml").read_text())
        p = Path(d) / "small-window.toml"
        p.write_text(small)
        r = subprocess.run([str(build / "control/memmotiond"), "--profile", str(p), "--ip", "10.0.0.1",
                            "--name", "small-window", "--control", f"{d}/small.ctl", "--set", "role=server",
                            "--set", f"socket={d}/small.sock"], capture_output=True, text=True, timeout=60)
        check(r.returncode != 0 and "transport.window = 64 packets" in r.stderr
              and "cannot hold a 1048576-byte message" in r.stderr and "at least 128" in r.stderr,
              f"window too small for a message: exit {r.returncode}, {r.stderr.strip()[-300:]}")


def expect_error(ctl: ControlClient, raw: bytes, cls: str, text: str, what: str) -> None:
    reply = ctl.send_raw(raw)
    err = reply.get("error", {})
    check(err.get("class") == cls and text in err.get("desc", ""), f"{what}: {reply}")


def read_until_closed(sock: socket.socket, timeout: float) -> bytes:
    sock.settimeout(timeout)
    data = b""
    try:
        while True:
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    except OSError:
        pass
    return data


def peer_line(port: int, messages: list[dict]) -> list[dict]:
    """Talks to a daemon's peer channel: sends each message, reads one reply
    line after each; stops at the first error reply."""
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    f = s.makefile("rwb")
    replies = []
    for m in messages:
        try:
            f.write((json.dumps(m) + "\n").encode())
            f.flush()
            line = f.readline()
        except (ConnectionResetError, BrokenPipeError):
            break  # the daemon hung up: the conversation is over
        if not line:
            break
        replies.append(json.loads(line))
        if replies[-1].get("type") == "error":
            break
    s.close()
    return replies


def fake_destination(port: int) -> threading.Thread:
    """A peer channel that answers a hello in plain text (no TLS)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(1)

    def serve() -> None:
        c, _ = srv.accept()
        c.makefile("rb").readline()
        c.sendall((json.dumps({"type": "hello", "nonce": "0" * 32, "proof": "f" * 64, "caps": {}}) + "\n").encode())
        time.sleep(0.5)
        c.close()
        srv.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def metrics(port: int) -> dict[str, float]:
    s = socket.create_connection(("127.0.0.1", port), timeout=10)
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    text = read_until_closed(s, 10).decode()
    out = {}
    for line in text.split("\r\n\r\n", 1)[-1].splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def case_control(build: Path) -> None:
    print("control:")
    r = subprocess.run([str(build / "control/memmotiond"), "--profile", "memif", "--ip", "10.0.0.1",
                        "--control-group", "no-such-group-mm"], capture_output=True, text=True, timeout=30)
    check(r.returncode == 2 and "control group 'no-such-group-mm': no such group" in r.stderr,
          f"unknown control group refused: exit {r.returncode}, {r.stderr.strip()}")
    group = "nogroup"
    base = 17000 + os.getpid() % 20000
    peer_port, metrics_port, fake_port = base, base + 1, base + 2
    with tempfile.TemporaryDirectory() as d:
        key = Path(d) / "peer.key"
        key.write_text(os.urandom(32).hex() + "\n")
        key.chmod(0o600)
        dmn = Daemon(build / "control/memmotiond", Path(d), "ctl-test", "memif", "10.77.9.1",
                     {"role": "server", "socket": f"{d}/memif.sock"},
                     extra=["--control-group", group, "--metrics", f"127.0.0.1:{metrics_port}",
                            "--peer-listen", f"127.0.0.1:{peer_port}", "--key-file", str(key)]).start()
        try:
            ctl = dmn.ctl
            st = os.stat(dmn.control_path)
            check(stat.S_ISSOCK(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o660
                  and st.st_gid == grp.getgrnam(group).gr_gid,
                  f"control socket is 0660 in group {group}: {oct(stat.S_IMODE(st.st_mode))}, gid {st.st_gid}")
            expect_error(ctl, b'{"execute": \n', "GenericError", "malformed JSON", "truncated JSON")
            expect_error(ctl, b"[1, 2]\n", "GenericError", "must be a JSON object", "not an object")
            # Found by fuzz_control_request: this ended the daemon.
            expect_error(ctl, b'{"execute": "query-version", "arguments": {"x": 1e400}}\n', "GenericError",
                         "malformed JSON", "number overflow")
            expect_error(ctl, b'{"arguments": {}}\n', "GenericError", "needs 'execute'", "no execute")
            expect_error(ctl, b'{"execute": "frobnicate"}\n', "CommandNotFound", "frobnicate", "unknown command")
            expect_error(ctl, b'{"execute": "query-session"}\n', "InvalidParameter", "missing argument 'session'", "missing argument")
            expect_error(ctl, b'{"execute": "query-session", "arguments": {"session": "7"}}\n', "InvalidParameter", "must be an integer", "wrong type")
            expect_error(ctl, b'{"execute": "query-session", "arguments": {"session": -1}}\n', "InvalidParameter", "must be an integer", "negative id")
            expect_error(ctl, b'{"execute": "query-session", "arguments": {"session": 0}}\n', "InvalidParameter", "1..", "session 0")
            expect_error(ctl, b'{"execute": "query-session", "arguments": {"session": 5}}\n', "SessionNotFound", "no session 5", "unknown session")
            expect_error(ctl, b'{"execute": "query-sessions", "arguments": {"x": 1}}\n', "InvalidParameter", "unknown argument 'x'", "unknown argument")
            expect_error(ctl, b'{"execute": "session-prepare", "arguments": {"session": 3, "qemu-uri": "tcp:1.2.3.4:5"}}\n', "InvalidParameter", "unsupported migration URI", "tcp URI")
            expect_error(ctl, b'{"execute": "session-start", "arguments": {"session": 3, "listen": "unix:/tmp/x.sock", "peer-ip": "1.2.3"}}\n', "InvalidParameter", "not an IPv4", "bad peer-ip")
            expect_error(ctl, b'{"execute": "session-start", "arguments": {"session": 3, "listen": "unix:/tmp/x.sock", "peer-ip": "1.2.3.4", "peer-mac": "zz"}}\n', "InvalidParameter", "not a MAC", "bad peer-mac")
            expect_error(ctl, f'{{"execute": "session-start", "arguments": {{"session": 3, "listen": "unix:{d}/no/such/dir/x.sock", "peer-ip": "1.2.3.4"}}}}\n'.encode(), "GenericError", "cannot listen", "listen path in a missing directory")
            ok = ctl.execute("session-prepare", session=4, **{"qemu-uri": f"unix:{d}/q.sock"})
            check(ok["state"] == "prepared", f"a good prepare: {ok}")
            expect_error(ctl, f'{{"execute": "session-prepare", "arguments": {{"session": 4, "qemu-uri": "unix:{d}/q.sock"}}}}\n'.encode(), "InvalidParameter", "already exists", "duplicate session")
            reply = ctl.send_raw(b'{"execute": "query-version", "id": "abc"}\n')
            check(reply.get("id") == "abc" and "memmotion" in reply.get("return", {}), f"id echoed: {reply}")
            # Oversized: 2 MiB without a newline -> error and disconnect.
            big = socket.socket(socket.AF_UNIX)
            big.connect(dmn.control_path)
            big.recv(4096)
            try:
                big.sendall(b'{"execute": "' + b"x" * (2 << 20))
            except OSError:
                pass
            big.settimeout(10)
            data = b""
            try:
                while True:
                    chunk = big.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except OSError:
                pass
            check(b"larger than" in data, f"oversized request refused: {data[:120]!r}")
            # Endless: a request that never gets its newline is cut off after 5 s.
            slow = socket.socket(socket.AF_UNIX)
            slow.connect(dmn.control_path)
            slow.recv(4096)
            t0 = time.monotonic()
            slow.sendall(b'{"execute": "query-')
            data = read_until_closed(slow, 15)
            took = time.monotonic() - t0
            check(b"not completed within 5000 ms" in data and 4.5 < took < 8,
                  f"endless request cut off after {took:.1f} s: {data[:120]!r}")
            check(ctl.execute("query-version")["memmotion"] != "", "still serving after bad input")
            # Peer channel refusals: the channel is TLS 1.3 (after a plain
            # banner line), so clients speaking plain JSON lines -- a hello
            # without capabilities, one with the wrong MTU, one with a proof --
            # never get a session and each is a failed handshake. (The TLS
            # refusals themselves: tests/unit/peer_channel_test.cpp.)
            mtu = 9000  # nic-profiles/memif.toml
            caps = {"version": "x", "mmp": ctl.execute("query-version")["mmp-version"], "peer": 1, "mtu": mtu,
                    "queues": 1, "ip": "10.77.9.2", "mac": "02:00:00:00:00:09", "udp_port": 7470,
                    "codecs": ["none"]}
            r1 = peer_line(peer_port, [{"type": "hello", "nonce": "a" * 32, "caps": {"mmp": caps["mmp"], "peer": 1, "mtu": mtu}}])
            r2 = peer_line(peer_port, [{"type": "hello", "nonce": "a" * 32, "caps": dict(caps, mtu=1500)}])
            r3 = peer_line(peer_port, [{"type": "hello", "nonce": "a" * 32, "caps": caps},
                                       {"type": "auth", "proof": "0" * 64}])
            for name, r in (("hello without codecs", r1), ("hello with another MTU", r2), ("hello with a proof", r3)):
                check(not any(x.get("type") in ("accept", "session-accept") for x in r),
                      f"plain-text {name} got no session: {r}")
            # Source side: an offer to nobody, and to a peer without our key.
            for peer, fake_it in ((f"127.0.0.1:{fake_port + 1}", False), (f"127.0.0.1:{fake_port}", True)):
                fake = fake_destination(fake_port) if fake_it else None
                try:
                    ctl.execute("migrate", session=60, peer=peer, **{"dst-incoming": "unix:/tmp/none.sock"})
                    check(False, f"migrate to {peer} refused")
                except ControlError as e:
                    check(e.cls in ("PeerError", "AuthError"), f"migrate to {peer}: {e.cls}: {e}")
                if fake:
                    fake.join(5)
            stats = dmn.stats()
            c, peer = stats["control"], stats["peer"]
            check(c["oversized_requests"] == 1 and c["timed_out_requests"] == 1,
                  f"oversized and endless requests counted: {c}")
            check(c["malformed_requests"] == 4 and c["unknown_session"] == 1 and c["errors"] >= 16
                  and c["requests"] > c["errors"] and c["clients"] >= 3, f"control refusals counted: {c}")
            check(peer["handshake_failures"] >= 3 and peer["auth_failures"] >= 3,
                  f"peer handshake failures counted: {peer}")
            check(peer["offers_failed"] == 2, f"failed offers counted: {peer}")
            m = metrics(metrics_port)
            for name, want in (("memmotion_control_oversized_requests_total{}", c["oversized_requests"]),
                               ("memmotion_control_timed_out_requests_total{}", 1),
                               ("memmotion_control_unknown_session_total{}", c["unknown_session"]),
                               ("memmotion_control_malformed_requests_total{}", 4),
                               ("memmotion_peer_handshake_failures_total{}", peer["handshake_failures"]),
                               ("memmotion_peer_offers_failed_total{}", 2)):
                check(m.get(name) == want, f"metric {name} = {m.get(name)} (want {want})")
            check("memmotion_engine_rx_bad_auth_total{worker=\"0\"}" in m
                  and "memmotion_engine_rx_unknown_session_total{worker=\"0\"}" in m,
                  "bad-tag and unknown-session packet counters exported")
            ctl_bin = str(build / "control/memmotionctl")
            r = subprocess.run([ctl_bin, "--socket", dmn.control_path, "status", "--session", "99"], capture_output=True, text=True)
            check(r.returncode == 1 and "SessionNotFound" in r.stderr, f"memmotionctl error reply exit 1: {r.returncode} {r.stderr.strip()}")
            r = subprocess.run([ctl_bin, "--socket", f"{d}/nothing.sock", "sessions"], capture_output=True, text=True)
            check(r.returncode == 3 and "cannot connect" in r.stderr, f"memmotionctl unreachable exit 3: {r.returncode}")
            r = subprocess.run([ctl_bin, "--socket", dmn.control_path, "status"], capture_output=True, text=True)
            check(r.returncode == 2, f"memmotionctl usage exit 2: {r.returncode}")
            r = subprocess.run([ctl_bin, "--socket", dmn.control_path, "--json", "status", "--session", "4"], capture_output=True, text=True)
            check(r.returncode == 0 and json.loads(r.stdout)["state"] == "prepared", f"memmotionctl --json: {r.stdout.strip()}")
            r = subprocess.run([ctl_bin, "--socket", dmn.control_path, "--timeout", "1", "wait", "--session", "4"], capture_output=True, text=True)
            check(r.returncode == 4, f"memmotionctl wait timeout exit 4: {r.returncode}")
            r = subprocess.run([ctl_bin, "--socket", dmn.control_path, "cancel", "--session", "4"], capture_output=True, text=True)
            r2 = subprocess.run([ctl_bin, "--socket", dmn.control_path, "wait", "--session", "4"], capture_output=True, text=True)
            check(r.returncode == 0 and r2.returncode == 5 and "cancelled" in r2.stdout, f"cancel, then wait exits 5: {r.returncode} {r2.returncode}")
        finally:
            code = dmn.stop()
        check(code == 0, f"quit stops the daemon cleanly (exit {code})")


def case_packets(build: Path) -> None:
    print("packets:")
    with Fabric(build, "af_packet-veth") as f:
        f.dst_daemon.ctl.execute("session-prepare", session=99, **{"qemu-uri": f"unix:{f.workdir}/q.sock"})
        before = f.dst_daemon.stats()
        inject = [
            ("too_short", mmp(99)[:20]),
            ("bad_magic", mmp(99, b"x", magic=0x4D4E)),
            ("bad_version", mmp(99, b"x", version=7)),
            ("bad_type", mmp(99, b"x", ptype=9)),
            ("bad_flags", mmp(99, b"x", flags=0x40)),
            ("bad_length", mmp(99, b"xyz", length=2)),
            ("bad_crc", mmp(99, b"payload", good_crc=False)),
        ]
        frames = []
        for name, d in inject:
            frames += [(name, d)] * 3
        frames.append(("unknown_session", mmp(12345, b"x")))
        frames.append(("bad_auth", mmp(99, b"\x01\x00\x00\x00\x01z", auth=7)))
        # A sealed datagram (no CRC) for a session that is not encrypted.
        frames.append(("bad_auth", mmp(99, bytes(40), flags=3 | SEALED)))
        frames.append(("not_mmp", None))
        code = (
            "import socket,sys,pickle\n"
            "s=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
            f"s.bind(('{f.src.iface}',0))\n"
            "for fr in pickle.loads(sys.stdin.buffer.read()): s.send(fr)\n")
        raw = []
        for name, d in frames:
            if d is None:
                raw.append(frame(f.dst.mac, f.src.mac, "10.77.1.1", "10.77.1.2", 9999, b"hello"))
            else:
                raw.append(frame(f.dst.mac, f.src.mac, "10.77.1.1", "10.77.1.2", 7470, d))
        subprocess.run(["ip", "netns", "exec", f.src.netns, sys.executable, "-c", code],
                       input=pickle.dumps(raw), check=True, timeout=30)
        time.sleep(1.0)
        after = f.dst_daemon.stats()
        eb, ea = before["engine"], after["engine"]
        for name, _ in inject:
            delta = ea["rx_invalid"][name] - eb["rx_invalid"][name]
            check(delta == 3, f"{name}: counted {delta} of 3")
        check(ea["rx_unknown_session"] - eb["rx_unknown_session"] >= 1, "unknown session counted")
        check(ea["rx_bad_auth"] - eb["rx_bad_auth"] == 2,
              "non-zero auth without a key, and a sealed datagram for a session in the clear, counted")
        check(after["port"]["rx_not_mmp"] > before["port"]["rx_not_mmp"], "UDP to another port counted as not MMP")
        s = f.dst_daemon.session(99)
        check(s["state"] == "prepared" and s["counters"]["packets_rx"] == 0,
              f"the prepared session acted on nothing: {s['state']}, {s['counters']['packets_rx']} packets")


def case_peer(build: Path) -> None:
    print("peer:")
    with Fabric(build, "af_packet-veth") as f:
        t0 = time.monotonic()
        f.src_daemon.ctl.execute("session-start", session=5, listen=f"unix:{f.workdir}/s5.sock",
                                 **{"peer-ip": f.dst.fabric_ip, "peer-mac": f.dst.mac})
        s = f.src_daemon.wait_session(5, 20)
        took = time.monotonic() - t0
        check(s["state"] == "failed" and "no packet from the peer" in s.get("error", "") and 4.5 < took < 12,
              f"unprepared destination: {s['state']} after {took:.1f} s: {s.get('error')}")
        check(f.dst_daemon.stats()["engine"]["rx_unknown_session"] > 0, "the destination counted the unknown session")
        f.start_session(6, f"unix:{f.workdir}/s6.sock", f"unix:{f.workdir}/d6.sock")
        time.sleep(0.5)
        f.src_daemon.ctl.execute("session-cancel", session=6)
        s_src = f.src_daemon.wait_session(6, 5)
        s_dst = f.dst_daemon.wait_session(6, 5)
        check(s_src["state"] == "cancelled" and s_dst["state"] == "cancelled" and "cancelled by peer" in s_dst.get("error", ""),
              f"cancel reaches the peer: {s_src['state']} / {s_dst['state']} ({s_dst.get('error')})")
        try:
            f.src_daemon.ctl.execute("session-cancel", session=77)
            check(False, "cancel of an unknown session is an error")
        except ControlError as e:
            check(e.cls == "SessionNotFound", f"cancel of an unknown session: {e}")


SNIFFER = """
import pickle, socket, sys, time
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(3))
s.bind((sys.argv[1], 0))
s.settimeout(0.5)
frames, deadline = [], time.monotonic() + 30
while len(frames) < 40 and time.monotonic() < deadline:
    try:
        f = s.recv(16384)
    except OSError:
        continue
    # IPv4/UDP from the source's fabric IP to port 7470 carrying an MMP DATA
    # packet (type 1 at MMP offset 3)
    if (len(f) > 80 and f[12:14] == b"\\x08\\x00" and f[23] == 17 and f[26:30] == bytes([10, 77, 1, 1])
            and f[36:38] == b"\\x1d\\x2e" and f[45] == 1):
        frames.append(f)
sys.stdout.buffer.write(pickle.dumps(frames))
"""


def captured_session(f: Fabric):
    """Runs session 31 (8 MiB, source to destination) while capturing its
    first 40 DATA frames on the source's veth; returns the destination's
    session at the end, the frames and the two stand-in QEMUs."""
    from streampeers import DestinationPeer, connect_source
    sniff = subprocess.Popen(["ip", "netns", "exec", f.src.netns, sys.executable, "-c", SNIFFER,
                              f.src.iface], stdout=subprocess.PIPE)
    time.sleep(0.5)
    dest = DestinationPeer(str(f.workdir / "d.sock"), seed=3, send_bytes=1 << 16)
    f.start_session(31, f"unix:{f.workdir}/s.sock", f"unix:{f.workdir}/d.sock")
    src = connect_source(str(f.workdir / "s.sock"), seed=4, send_bytes=8 << 20)
    s1 = f.dst_daemon.wait_session(31, 60)
    frames = pickle.loads(sniff.communicate(timeout=60)[0])
    src.join(10)
    check(s1["state"] == "completed" and len(frames) == 40, f"a session ran and {len(frames)} DATA frames were captured")
    return s1, frames, src, dest


def inject(f: Fabric, frames: list[bytes]) -> None:
    """Sends raw Ethernet frames from the source host's veth."""
    code = ("import socket,sys,pickle\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
            f"s.bind(('{f.src.iface}',0))\n"
            "for fr in pickle.loads(sys.stdin.buffer.read()): s.send(fr)\n")
    subprocess.run(["ip", "netns", "exec", f.src.netns, sys.executable, "-c", code],
                   input=pickle.dumps(frames), check=True, timeout=30)
    time.sleep(0.5)


def case_replay(build: Path) -> None:
    print("replay:")
    with Fabric(build, "af_packet-veth") as f:
        s1, frames, src, dest = captured_session(f)
        inject(f, frames)  # while the session lingers, its transport sees old sequence numbers
        s2 = f.dst_daemon.session(31)
        dup = s2["counters"]["duplicates_rx"] - s1["counters"]["duplicates_rx"]
        check(dup == len(frames), f"replayed DATA counted as duplicates: {dup} of {len(frames)}")
        check(s2["counters"]["qemu_bytes_out"] == s1["counters"]["qemu_bytes_out"] and s2["state"] == "completed",
              "nothing replayed reached QEMU")
        time.sleep(6)  # past the linger: the session's transport is gone
        late0 = f.dst_daemon.stats()["engine"]["rx_late"]
        inject(f, frames)
        late = f.dst_daemon.stats()["engine"]["rx_late"] - late0
        check(late == len(frames), f"replayed after the session ended counted as late: {late}")
        src.close()
        dest.close()


def case_encrypted(build: Path) -> None:
    print("encrypted:")
    from streampeers import QEMU_MAGIC, pattern
    # The source's GCM by OpenSSL, the destination's by intel-ipsec-mb (the
    # default where the CPU has AES-NI): the two engines' records agree.
    with Fabric(build, "af_packet-veth", peer_channel="required",
                daemon_args={"src": ["--cipher", "openssl"]}) as f:
        s1, frames, src, dest = captured_session(f)
        ss = f.src_daemon.session(31)
        check(s1["encrypted"] and ss["encrypted"], f"both sides encrypted: {ss['encrypted']} / {s1['encrypted']}")
        check(ss["cipher"] == "openssl" and s1["cipher"] == "ipsec-mb",
              f"GCM by OpenSSL at the source, ipsec-mb at the destination: {ss['cipher']} / {s1['cipher']}")
        check(dest.pump is not None and dest.pump.received == 8 << 20, "every byte arrived")
        check(ss["counters"]["sealed_in_frame_tx"] > 0, "the source sealed transmissions straight into port frames")
        check(s1["counters"]["bad_tag_rx"] == 0 and ss["counters"]["bad_tag_rx"] == 0, "no tag failed in an honest session")
        # In the clear, 32 bytes at a fixed place of a DATA frame would be a
        # piece of the stream the source sent (its first MiB covers them).
        sent = b"".join(pattern(4, 1 << 20, QEMU_MAGIC))
        long_frames = [fr for fr in frames if len(fr) >= 152]
        clear = [fr for fr in long_frames if fr[120:152] in sent]
        check(len(long_frames) >= 30 and not clear,
              f"no captured frame carries the stream in the clear ({len(clear)} of {len(long_frames)} do)")
        eng0 = f.dst_daemon.stats()["engine"]

        def resealed(fr: bytes, tx: int, flip: int | None) -> bytes:
            """The frame with another transmission number (and a flipped
            ciphertext byte); a sealed datagram has no CRC (crc stays 0), so
            only GCM can tell."""
            b = bytearray(fr)
            check(struct.unpack(">H", b[42 + 10:42 + 12])[0] & SEALED
                  and b[42 + 28:42 + 32] == bytes(4), "a captured frame is sealed, with crc 0")
            b[42 + 24:42 + 28] = struct.pack(">I", tx)
            if flip is not None:
                b[flip] ^= 0x40
            return bytes(b)

        inject(f, frames)  # while the session lingers
        forged = [resealed(long_frames[0], 0x7FFFFF00, None), resealed(long_frames[1], 0x7FFFFF01, 130),
                  frame(f.dst.mac, f.src.mac, "10.77.1.1", "10.77.1.2", 7470,
                        mmp(31, bytes(64), auth=0x7FFFFF02))]
        inject(f, forged)
        eng1 = f.dst_daemon.stats()["engine"]
        s2 = f.dst_daemon.session(31)
        replayed = eng1["rx_replayed"] - eng0["rx_replayed"]
        bad = eng1["rx_bad_tag"] - eng0["rx_bad_tag"]
        check(replayed == len(frames), f"replayed frames refused as replays: {replayed} of {len(frames)}")
        check(bad == len(forged), f"forged and clear frames refused as bad tags: {bad} of {len(forged)}")
        check(s2["counters"]["replayed_rx"] - s1["counters"]["replayed_rx"] == len(frames)
              and s2["counters"]["bad_tag_rx"] == len(forged),
              f"and counted by the session: {s2['counters']['replayed_rx']}, {s2['counters']['bad_tag_rx']}")
        check(s2["counters"]["duplicates_rx"] == s1["counters"]["duplicates_rx"]
              and s2["counters"]["qemu_bytes_out"] == s1["counters"]["qemu_bytes_out"],
              "none of them reached the transport or QEMU")
        src.close()
        dest.close()
        # A migration that asks for the clear from a destination that requires encryption.
        f.peer_channel = "off"
        try:
            f.start_session(33, f"unix:{f.workdir}/s3.sock", f"unix:{f.workdir}/d3.sock")
            check(False, "an offer without encryption is refused by a destination that requires it")
        except ControlError as e:
            check("encrypt" in e.desc and "required" in e.desc, f"mismatched --encrypt refused: {e.desc[:160]}")
        check(f.dst_daemon.stats()["peer"]["encrypt_refusals"] == 1, "the destination counted the refusal")


class FakeQemu:
    """A destination QEMU's listener that keeps every byte each connection
    brings, in accept order."""

    def __init__(self, path: str):
        self.srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.srv.bind(path)
        self.srv.listen(8)
        self.data: list[bytearray] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            buf = bytearray()
            self.data.append(buf)
            threading.Thread(target=self._read, args=(c, buf), daemon=True).start()

    @staticmethod
    def _read(c: socket.socket, buf: bytearray) -> None:
        while chunk := c.recv(65536):
            buf += chunk

    def close(self) -> None:
        self.srv.close()


def rec_bytes(data: bytes) -> bytes:
    return b"\x01" + struct.pack(">I", len(data)) + data


class _XXH128(ctypes.Structure):
    _fields_ = [("low64", ctypes.c_uint64), ("high64", ctypes.c_uint64)]


_xxh = ctypes.CDLL("libxxhash.so.0")  # the library the daemon hashes pages with
_xxh.XXH3_128bits.restype = _XXH128
_xxh.XXH3_128bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]
_xxh.XXH3_64bits.restype = ctypes.c_uint64
_xxh.XXH3_64bits.argtypes = [ctypes.c_char_p, ctypes.c_size_t]

PAGE = bytes(range(256)) * 16


def record_hash(page: bytes) -> int:
    """MMP.md "Page records": the low 64 bits of the page's XXH3-128."""
    return _xxh.XXH3_128bits(page, len(page)).low64


def multifd_message(records: list[tuple[int, bytes]], flags: int = 0, pages_alloc: int = 128,
                    channels: int = 0, digest: bool = True) -> bytes:
    """One multifd packet as page records: BEGIN, the (page offset, record)
    pairs, END with their count and (unless digest is False) offset digest."""
    name = b"pc.ram"
    begin = b"\x02" + struct.pack(">IIQIBB", flags, pages_alloc, 1, 0, channels, len(name)) + name
    be = b"".join(struct.pack(">Q", off) for off, _ in records)
    end = b"\x0a" + struct.pack(">IQ", len(records), _xxh.XXH3_64bits(be, len(be)) if digest else 0)
    return begin + b"".join(r for _, r in records) + end


def page_message(page_hash: int, pages_alloc: int = 128) -> bytes:
    """BEGIN, a RAW page at offset 0 whose hash is the given one, END
    (digest 0)."""
    return multifd_message([(0, b"\x03" + struct.pack(">QQ", 0, page_hash) + PAGE)], pages_alloc=pages_alloc,
                           digest=False)


def same_record(offset: int, page_hash: int) -> bytes:
    return b"\x09" + struct.pack(">QQ", offset, page_hash)


def case_lying_pages(build: Path) -> None:
    """A peer that lies in page records: a page whose bytes do not match its
    hash, and page records on the main channel. The destination session
    must fail naming it, and its QEMU must get nothing of the lie."""
    print("lying pages:")
    multifd_init = struct.pack(">II", 0x11223344, 1) + bytes(16) + b"\x00" + bytes(7) + bytes(32)
    # After its failure the destination ends each multifd channel with an
    # empty SYNC packet (flags 1, pages_alloc 128, no pages, packet 1), so
    # that a real QEMU waiting at a sync point reads on to the main
    # channel's end (dataplane/qemu/QEMU-7.2-STREAM.md): no page in it.
    release = struct.pack(">IIIIIIQ", 0x11223344, 1, 1, 128, 0, 0, 1) + bytes(1344 - 32)
    qevm = b"QEVM\x00\x00\x00\x03"
    cases = [
        (41, [(0, 0, rec_bytes(qevm)), (1, 0, rec_bytes(multifd_init)), (1, 1, page_message(0x1234))],
         "fails its hash check", [qevm, multifd_init + release]),
        (42, [(0, 0, rec_bytes(qevm)), (0, 1, page_message(0x1234))],
         "page records on a stream that carries none", [qevm]),
        # A pages_alloc no QEMU packet has: its rebuilt bound would never fit
        # the buffer toward QEMU; refused, not waited on forever.
        (43, [(0, 0, rec_bytes(qevm)), (1, 0, rec_bytes(multifd_init)), (1, 1, page_message(0x1234, 5000))],
         "MULTIFD_BEGIN pages_alloc 5000 that no packet of QEMU 7.2 has", [qevm, multifd_init + release]),
    ]
    # PAGE_SAME (MMP.md "Unchanged pages"): page 0 delivered in full in
    # epoch 0, QEMU's SYNC, then the page said to be unchanged in epoch 1.
    raw0 = multifd_message([(0, b"\x03" + struct.pack(">QQ", 0, record_hash(PAGE)) + PAGE)])
    sync = multifd_message([], flags=1)
    # A rebuilt QEMU 7.2 packet of 128 page slots: its header, then its pages.
    got_raw0, got_sync = struct.pack(">IIIIIIQ", 0x11223344, 1, 0, 128, 1, 4096, 1), \
        struct.pack(">IIIIIIQ", 0x11223344, 1, 1, 128, 0, 0, 1)
    got_release = struct.pack(">IIIIIIQ", 0x11223344, 1, 1, 128, 0, 0, 2)  # after packet 1
    same_lies = [(0, 0, rec_bytes(qevm)), (1, 0, rec_bytes(multifd_init)), (1, 1, raw0), (1, 2, sync),
                 (1, 3, multifd_message([(0, same_record(0, record_hash(PAGE) ^ 1))]))]
    same_true = same_lies[:-1] + [(1, 3, multifd_message([(0, same_record(0, record_hash(PAGE)))]))]
    # (the rebuilt packets' lengths, what QEMU gets of them checked below)
    cases += [
        (44, same_true, None, None, {"unchanged": True}),
        (45, same_lies, "PAGE_SAME for page at offset 0 of pc.ram in epoch 1 refused: the page was last delivered "
                        "with other bytes", None, {"unchanged": True}),
        # (the filter is on by default: this destination is told it is off)
        (46, same_true, "destination was not told that the source's unchanged filter is on", None, {"unchanged": False}),
    ]
    with Fabric(build, "af_packet-veth") as f:
        for sid, packets, expect, qemu_gets, *policy in cases:
            qemu = FakeQemu(str(f.workdir / f"q{sid}.sock"))
            prep = {"qemu-uri": f"unix:{f.workdir}/q{sid}.sock"}
            if policy and policy[0] is not None:
                prep["pages"] = policy[0]
            f.dst_daemon.ctl.execute("session-prepare", session=sid, **prep)
            raw = [frame(f.dst.mac, f.src.mac, "10.77.1.1", "10.77.1.2", 7470,
                         mmp(sid, payload, stream=stream, seq=seq, msg=seq)) for stream, seq, payload in packets]
            code = ("import socket,sys,pickle,time\ns=socket.socket(socket.AF_PACKET,socket.SOCK_RAW)\n"
                    f"s.bind(('{f.src.iface}',0))\n"
                    "for fr in pickle.loads(sys.stdin.buffer.read()):\n s.send(fr)\n time.sleep(0.2)\n")
            subprocess.run(["ip", "netns", "exec", f.src.netns, sys.executable, "-c", code],
                           input=pickle.dumps(raw), check=True, timeout=30)
            if expect is None:
                # A true PAGE_SAME: checked, counted, nothing fails.
                time.sleep(1.0)
                s = f.dst_daemon.session(sid)
                c = s["counters"]
                check(s["state"] not in ("failed", "cancelled") and c["pages_unchanged"] == 1
                      and c["pages_unchanged_refused"] == 0,
                      f"session {sid}: a true PAGE_SAME passes its check: {s['state']}, unchanged "
                      f"{c['pages_unchanged']}, refused {c['pages_unchanged_refused']} {s.get('error', '')}")
                f.dst_daemon.ctl.execute("session-cancel", session=sid)
                qemu.close()
                continue
            s = f.dst_daemon.wait_session(sid, 15)
            time.sleep(0.3)
            got = [bytes(b) for b in qemu.data]
            if qemu_gets is None:
                # The page and the SYNC were delivered before the lie; the
                # lying message (all pages unchanged: an empty packet) adds
                # nothing, then the release.
                pkt_len = len(release)
                check(len(got) == 2 and got[0] == qevm and got[1].startswith(multifd_init)
                      and len(got[1]) == len(multifd_init) + 2 * pkt_len + 4096 + pkt_len
                      and got[1][len(multifd_init):len(multifd_init) + 32] == got_raw0
                      and got[1][len(multifd_init) + pkt_len + 4096:][:32] == got_sync
                      and got[1][-pkt_len:][:32] == got_release,
                      f"session {sid}: QEMU got the page, the SYNC and the release, nothing else: "
                      f"{[len(b) for b in got]} bytes per channel")
                check(s["counters"]["pages_unchanged_refused"] == 1,
                      f"session {sid}: the refusal is counted ({s['counters']['pages_unchanged_refused']})")

            check(s["state"] == "failed" and expect in s.get("error", ""),
                  f"session {sid}: {s['state']}: {s.get('error')}")
            if qemu_gets is not None:
                check(got == qemu_gets, f"session {sid}: QEMU got {[len(b) for b in got]} bytes per channel, "
                                       f"expected {[len(b) for b in qemu_gets]} (nothing of the lie)")
            released = s["counters"].get("released_channels")
            check(released == len(got) - 1, f"session {sid}: {released} multifd channel(s) ended with "
                                                  f"an empty SYNC, expected {len(got) - 1}")
            qemu.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", required=True, type=Path)
    ap.add_argument("cases", nargs="*", default=["profiles", "control", "packets", "peer", "replay", "lying_pages",
                                                 "encrypted"])
    a = ap.parse_args()
    for c in a.cases:
        {"profiles": case_profiles, "control": case_control, "packets": case_packets, "peer": case_peer,
         "replay": case_replay, "lying_pages": case_lying_pages, "encrypted": case_encrypted}[c](a.build)
    print(f"{'FAIL' if failures else 'PASS'}: {len(failures)} check(s) failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
