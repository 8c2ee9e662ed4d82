"""An independent WebRTC peer (aiortc) for roomcast's WHIP and WHEP tests.

usage:
  webrtc_peer.py whip URL TOKEN INPUT --video h264|vp8 --seconds N
      publishes INPUT (any file libav reads; aiortc re-encodes it) for N s,
      then DELETEs the session.
  webrtc_peer.py whep URL TOKEN --seconds N
      plays for N s and counts the frames it could decode.
  webrtc_peer.py offer (video|audio|both)
      prints a recvonly SDP offer (for tests that only need a valid offer).

Only loopback host candidates are used. Prints one JSON line per event and
a final {"ok": ...} line; exits non-zero on failure.
"""
import argparse
import asyncio
import json
import sys
import time
import urllib.error
import urllib.request

import aioice.ice

# Loopback only: tests never leave this machine.
aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"]

from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription  # noqa: E402
from aiortc import clock as aiortc_clock  # noqa: E402
from aiortc import rtcrtpsender  # noqa: E402
from aiortc.contrib.media import MediaPlayer  # noqa: E402
from aiortc.mediastreams import MediaStreamError  # noqa: E402

# Sender reports that tell capture time, as browsers send them. aiortc pairs
# the last packet's RTP timestamp with the wall clock when it was *sent*, so
# its reports carry each track's encoding delay, which varies with load (a
# busy test machine's video encoder runs behind its audio encoder); a
# receiver that syncs by sender reports, as roomcast does, then shows that
# delay as A/V offset. Here the NTP time of a packet is its frame's media
# time on one clock shared by the tracks: the wall clock when the first
# frame of any track came out of its encoder, minus that frame's media time.
import contextvars  # noqa: E402

_capture_ntp = contextvars.ContextVar("capture_ntp", default=None)
_media_base = {}


class _CaptureClock:
    """aiortc's clock module, but `current_ntp_time` is the frame's media
    time inside a sender's RTP task (a context variable set per frame)."""

    def __getattr__(self, name):
        return getattr(aiortc_clock, name)

    def current_ntp_time(self):
        v = _capture_ntp.get()
        return v if v is not None else aiortc_clock.current_ntp_time()


rtcrtpsender.clock = _CaptureClock()
_next_encoded_frame = RTCRtpSender._next_encoded_frame


async def _stamped_next_encoded_frame(self, codec):
    frame = await _next_encoded_frame(self, codec)
    if frame is not None:
        media = frame.timestamp / codec.clockRate
        if "base" not in _media_base:
            now = aiortc_clock.current_ntp_time() / (1 << 32)
            _media_base["base"] = now - media
        _capture_ntp.set(int((_media_base["base"] + media) * (1 << 32)))
    return frame


RTCRtpSender._next_encoded_frame = _stamped_next_encoded_frame


def say(**kw):
    print(json.dumps(kw), flush=True)


def http(method, url, body=None, headers=None):
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=15) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


async def post_offer(pc, url, token):
    await pc.setLocalDescription(await pc.createOffer())
    status, headers, body = await asyncio.to_thread(
        http,
        "POST",
        url,
        pc.localDescription.sdp.encode(),
        {"Content-Type": "application/sdp", "Authorization": "Bearer " + token},
    )
    if status != 201:
        say(ok=False, status=status, body=body)
        sys.exit(1)
    location = headers.get("Location") or headers.get("location")
    say(event="created", location=location)
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))
    return location


async def wait_connected(pc, within=20):
    deadline = time.monotonic() + within
    while pc.connectionState != "connected":
        if pc.connectionState in ("failed", "closed") or time.monotonic() > deadline:
            say(ok=False, state=pc.connectionState)
            sys.exit(1)
        await asyncio.sleep(0.05)
    say(event="connected")


def base(url):
    return url.split("/v1/")[0]


async def whip(args):
    pc = RTCPeerConnection()
    player = MediaPlayer(args.input)
    if player.video:
        vt = pc.addTransceiver(player.video, direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        vt.setCodecPreferences([c for c in caps if c.mimeType.lower() == "video/" + args.video])
    if player.audio:
        pc.addTransceiver(player.audio, direction="sendonly")
    location = await post_offer(pc, args.url, args.token)
    await wait_connected(pc)
    await asyncio.sleep(args.seconds)
    status, _, _ = await asyncio.to_thread(http, "DELETE", base(args.url) + location)
    say(event="deleted", status=status)
    await pc.close()
    say(ok=status == 200)


async def whep(args):
    pc = RTCPeerConnection()
    pc.addTransceiver("video", direction="recvonly")
    pc.addTransceiver("audio", direction="recvonly")
    counts = {"video": 0, "audio": 0}
    sizes = set()

    async def consume(track):
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return
            counts[track.kind] += 1
            if track.kind == "video":
                sizes.add((frame.width, frame.height))

    tasks = []
    pc.on("track", lambda t: tasks.append(asyncio.ensure_future(consume(t))))
    location = await post_offer(pc, args.url, args.token)
    await wait_connected(pc)
    await asyncio.sleep(args.seconds)
    status, _, _ = await asyncio.to_thread(http, "DELETE", base(args.url) + location)
    await pc.close()
    for t in tasks:
        t.cancel()
    say(ok=True, video_frames=counts["video"], audio_frames=counts["audio"],
        sizes=sorted(sizes), delete_status=status)


async def offer(args):
    pc = RTCPeerConnection()
    if args.kind in ("video", "both"):
        pc.addTransceiver("video", direction="recvonly")
    if args.kind in ("audio", "both"):
        pc.addTransceiver("audio", direction="recvonly")
    await pc.setLocalDescription(await pc.createOffer())
    sys.stdout.write(pc.localDescription.sdp)
    await pc.close()


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="mode", required=True)
    w = sub.add_parser("whip")
    w.add_argument("url")
    w.add_argument("token")
    w.add_argument("input")
    w.add_argument("--video", default="h264", choices=["h264", "vp8"])
    w.add_argument("--seconds", type=float, default=5)
    e = sub.add_parser("whep")
    e.add_argument("url")
    e.add_argument("token")
    e.add_argument("--seconds", type=float, default=4)
    o = sub.add_parser("offer")
    o.add_argument("kind", choices=["video", "audio", "both"])
    args = p.parse_args()
    asyncio.run({"whip": whip, "whep": whep, "offer": offer}[args.mode](args))


if __name__ == "__main__":
    main()
