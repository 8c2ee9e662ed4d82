#!/usr/bin/env python3
"""Writes fuzz/seeds/<target>/ from real captures: an ffmpeg RTMP publish
into a running roomcast (recorded at a TCP proxy), ffmpeg's RTP packetizers
(H.264, VP8, VP9, Opus, with their RTCP sender reports), an FLV file written
by ffmpeg, aiortc's WHIP and WHEP offers, the TRTC API requests Tencent's
SDK sent (../shared captures, copied into fixtures/trtc), and the repository's
own profiles and configuration. Run by `make fuzz-seeds`; the seeds are
committed, so `make fuzz` and the regression test need none of this.

The authenticated seeds use the fuzz harness's application
(roomcast::fuzzing::SDKAPPID / APP_KEY) and UserSigs valid for ten years.
"""

import asyncio
import json
import os
import select
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
BIN = ROOT / "target" / "debug" / "roomcast"
SDKAPPID = 1400000001
APP_KEY = "fuzz-app-key-0123456789abcdef0123456789abcdef"
TEN_YEARS = 86400 * 3650


def put(target, name, data):
    d = SEEDS / target
    d.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    (d / name).write_bytes(data)
    print(f"  {target}/{name}: {len(data)} bytes")


def usersig(user):
    return subprocess.check_output(
        [BIN, "usersig", "gen", "--sdkappid", str(SDKAPPID), "--key", APP_KEY,
         "--userid", user, "--expire", str(TEN_YEARS)], text=True).strip()


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_port(port, deadline):
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nothing listens on {port}")


FFMPEG_AV = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10",
             "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
             "-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-g", "5",
             "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "32k"]


def rtmp_capture():
    """ffmpeg publishes one second through a proxy into roomcast."""
    http, rtmp, proxy = free_port(), free_port(), free_port()
    work = Path(tempfile.mkdtemp())
    (work / "roomcast.toml").write_text(
        f'data_dir = "{work}/data"\n[http]\nbind = "127.0.0.1"\nport = {http}\n'
        f'[rtmp]\nbind = "127.0.0.1"\nport = {rtmp}\n'
        f'[[apps]]\nsdkappid = {SDKAPPID}\nsecret_key = "{APP_KEY}"\n')
    gw = subprocess.Popen([BIN, "serve", "--config", str(work / "roomcast.toml")],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    captured = bytearray()
    try:
        wait_port(rtmp, time.time() + 20)
        lsock = socket.socket()
        lsock.bind(("127.0.0.1", proxy))
        lsock.listen(1)

        def pipe():
            c, _ = lsock.accept()
            u = socket.create_connection(("127.0.0.1", rtmp))
            socks = [c, u]
            while True:
                r, _, _ = select.select(socks, [], [], 10)
                if not r:
                    break
                for s in r:
                    b = s.recv(65536)
                    if not b:
                        c.close()
                        u.close()
                        return
                    if s is c:
                        captured.extend(b)
                        u.sendall(b)
                    else:
                        c.sendall(b)

        t = threading.Thread(target=pipe)
        t.start()
        key = f"fuzz?sdkappid={SDKAPPID}&userid=rtmp&usersig={usersig('rtmp')}"
        subprocess.run(["ffmpeg", "-v", "error", *FFMPEG_AV, "-f", "flv",
                        f"rtmp://127.0.0.1:{proxy}/push/{key}"], check=True, timeout=60)
        t.join(20)
    finally:
        gw.kill()
        gw.wait()
    return bytes(captured)


def flv_records():
    """An FLV file from ffmpeg, as the flv_media target's records."""
    with tempfile.TemporaryDirectory() as d:
        f = Path(d) / "a.flv"
        subprocess.run(["ffmpeg", "-v", "error", *FFMPEG_AV, "-f", "flv", str(f)], check=True)
        data = f.read_bytes()
    out = bytearray()
    i = 9 + 4
    while i + 11 <= len(data):
        kind = data[i]
        size = int.from_bytes(data[i + 1:i + 4], "big")
        ts = int.from_bytes(data[i + 4:i + 7], "big") | (data[i + 7] << 24)
        body = data[i + 11:i + 11 + size]
        i += 11 + size + 4
        if kind in (8, 9) and len(body) < 65536:
            out += bytes([0 if kind == 8 else 1]) + struct.pack(">IH", ts, len(body)) + body
    return bytes(out)


def rtp_capture(codec_byte, args):
    """ffmpeg's RTP packetizer to a local port; RTP and RTCP in arrival order."""
    rtp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    rtp.bind(("127.0.0.1", 0))
    port = rtp.getsockname()[1]
    rtcp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        rtcp.bind(("127.0.0.1", port + 1))
    except OSError:
        rtcp = None
    p = subprocess.Popen(["ffmpeg", "-v", "error", *args, "-f", "rtp",
                          f"rtp://127.0.0.1:{port}?rtcpport={port + 1}&pkt_size=1200"],
                         stdout=subprocess.DEVNULL)
    out = bytearray([codec_byte])
    count = 0
    deadline = time.time() + 20
    socks = [rtp] + ([rtcp] if rtcp else [])
    while count < 120 and time.time() < deadline:
        r, _, _ = select.select(socks, [], [], 1)
        if not r and p.poll() is not None:
            break
        for s in r:
            b = s.recv(2048)
            if s is rtp:
                out += struct.pack(">H", len(b)) + b
                count += 1
            elif len(b) >= 20 and b[1] == 200:
                # A sender report: the record the target reads as one.
                ntp, rtp_ts = struct.unpack(">QI", b[8:20])
                out += struct.pack(">H", 13) + b"\0" + struct.pack(">QI", ntp, rtp_ts)
    p.kill()
    p.wait()
    return bytes(out)


async def offers():
    sys.path.insert(0, str(ROOT / "tests" / "python"))
    from aiortc import RTCPeerConnection
    out = {}
    for name, direction in (("whip_sendonly", "sendonly"), ("whep_recvonly", "recvonly")):
        pc = RTCPeerConnection()
        pc.addTransceiver("audio", direction=direction)
        pc.addTransceiver("video", direction=direction)
        await pc.setLocalDescription(await pc.createOffer())
        out[name] = pc.localDescription.sdp
        await pc.close()
    return out


def http_request(method, path, headers, body=b""):
    if isinstance(body, str):
        body = body.encode()
    lines = [f"{method} {path} HTTP/1.1"] + [f"{k}: {v}" for k, v in headers]
    if body and not any(k.lower() == "content-length" for k, _ in headers):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


def ws_frame(text):
    payload = text.encode()
    mask = b"\x11\x22\x33\x44"
    head = bytes([0x81, 0x80 | len(payload)]) if len(payload) < 126 else \
        bytes([0x81, 0x80 | 126]) + struct.pack(">H", len(payload))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def main():
    if not BIN.exists():
        raise SystemExit("build first: cargo build")
    caps = json.loads((ROOT / "fixtures" / "trtc" / "api_captures.json").read_text())

    print("rtmp: ffmpeg publishing through a proxy")
    session = rtmp_capture()
    put("rtmp_ingest", "ffmpeg_publish", session)
    # The chunk stream alone, after C0+C1 and C2 (1 + 1536 + 1536 bytes).
    put("rtmp_chunks", "ffmpeg_publish", b"\x40" + session[3073:])
    put("flv_media", "ffmpeg_h264_aac", flv_records())

    print("rtp: ffmpeg's packetizers")
    src = ["-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-t", "2"]
    put("rtp_depacketize", "ffmpeg_h264",
        rtp_capture(0, src + ["-c:v", "libx264", "-preset", "ultrafast", "-g", "5",
                              "-pix_fmt", "yuv420p", "-bsf:v", "dump_extra"]))
    put("rtp_depacketize", "ffmpeg_vp8",
        rtp_capture(1, src + ["-c:v", "libvpx", "-deadline", "realtime", "-g", "5"]))
    put("rtp_depacketize", "ffmpeg_vp9",
        rtp_capture(2, src + ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-g", "5",
                              "-strict", "experimental"]))
    put("rtp_depacketize", "ffmpeg_opus",
        rtp_capture(3, ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "1",
                        "-c:a", "libopus", "-b:a", "32k"]))

    print("sdp: aiortc offers")
    sdps = asyncio.run(offers())
    for name, sdp in sdps.items():
        put("sdp_offer", name, sdp)
        put("whip_offer", name, sdp)

    print("api: the SDK's requests")
    for action, c in caps["actions"].items():
        body = c["request"]["body"].replace("1400188366", str(SDKAPPID))
        put("trtc_api", action, f"{action}\n{body}")
        req = c["request"]
        put("http", f"api_{action}", http_request(req["method"], req["path"], req["headers"], req["body"]))
    for i, v in enumerate(caps["worked_tc3_vectors"]):
        put("tc3_verify", f"sdk_vector_{i}",
            f"{v['authorization']}\n{v['timestamp']}\n{v['host']}\n{v['content_type']}\n{v['body']}")

    print("http, signalling, hls: by hand, from the URLs users call")
    sig = usersig("ws")
    put("http", "healthz", http_request("GET", "/healthz", [("Host", "x")]))
    put("http", "hls_blocking", http_request(
        "GET", "/hls/room_1/index.m3u8?_HLS_msn=12&_HLS_part=3&_HLS_skip=YES", [("Host", "x")]))
    put("http", "whip", http_request(
        "POST", f"/v1/whip/fuzz?sdkappid={SDKAPPID}&userid=whip",
        [("Host", "x"), ("Content-Type", "application/sdp"),
         ("Authorization", f"Bearer {usersig('whip')}")], sdps["whip_sendonly"]))
    put("http", "ws_ping", http_request(
        "GET", f"/v1/rooms/fuzz/ws?sdkappid={SDKAPPID}&userid=ws&usersig={sig}&role=anchor",
        [("Host", "x"), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
         ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")])
        + ws_frame('{"type":"ping","id":1}') + ws_frame('{"type":"switch_role","role":"audience","id":2}'))
    put("http", "console_login", http_request(
        "POST", "/console/api/login", [("Host", "x"), ("Content-Type", "application/json")],
        '{"secret_id":"a","secret_key":"b"}'))
    put("signalling", "anchor_then_audience",
        'role=anchor&scene=live\n{"type":"ping","id":1}\n{"type":"switch_role","role":"audience","id":2}\n'
        '{"type":"switch_role","role":"anchor","id":3}\n{"type":"leave"}')
    for name, q in (("ll_blocking", "index.m3u8?_HLS_msn=5&_HLS_part=2"),
                    ("ll_skip", "index.m3u8?_HLS_msn=4&_HLS_skip=v2"),
                    ("part", "part4.3.m4s"), ("segment", "seg3.m4s"), ("init", "init0.mp4")):
        put("hls_request", name, q)

    print("toml: the repository's own")
    for p in sorted((ROOT / "profiles").glob("*.toml")):
        put("profile_toml", p.name, p.read_bytes())
    for p in [ROOT / "deploy" / "cluster" / "roomcast.toml"]:
        put("config_toml", p.name, p.read_bytes())
    put("config_toml", "apps", f'[[apps]]\nsdkappid = {SDKAPPID}\nsecret_key = "{APP_KEY}"\n'
        '[limits]\ncpu_budget = 1.5\n[http]\nport = 8080\nmax_body_bytes = 65536\n')


if __name__ == "__main__":
    main()
