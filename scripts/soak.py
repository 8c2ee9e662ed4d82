#!/usr/bin/env python3
"""Soak: roomcast (release build) with two mixed rooms of two anchors each, a
bypass relay of a third room, and HLS clients polling every output, for
SOAK_MINUTES (default 30). Prints RSS, CPU and each task's effective frame
rate every minute; fails if RSS grows past the first measured minute by more
than SOAK_RSS_GROWTH_MB (default 64), a task stops, or its rate falls below
80 % of the profile's. `make soak` runs it; CI does not.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / "target" / "release" / "roomcast"
APP = 1400000001
KEY = "soak-test-key-0123456789"
MINUTES = float(os.environ.get("SOAK_MINUTES", "30"))
GROWTH_MB = float(os.environ.get("SOAK_RSS_GROWTH_MB", "64"))


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read())


def rss_mb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_secs(pid):
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def usersig(user):
    return subprocess.check_output(
        [BIN, "usersig", "gen", "--sdkappid", str(APP), "--key", KEY, "--userid", user],
        text=True).strip()


def main():
    if not BIN.exists():
        sys.exit("build first: cargo build --release")
    work = Path(tempfile.mkdtemp(prefix="roomcast-soak-"))
    http, rtmp = free_port(), free_port()
    (work / "roomcast.toml").write_text(
        f'data_dir = "{work}/data"\n[http]\nbind = "127.0.0.1"\nport = {http}\n'
        f'[rtmp]\nbind = "127.0.0.1"\nport = {rtmp}\n'
        f'[[apps]]\nsdkappid = {APP}\nsecret_key = "{KEY}"\n')
    log = open(work / "roomcast.log", "w")
    gw = subprocess.Popen([BIN, "serve", "--config", str(work / "roomcast.toml")],
                          stdout=log, stderr=log)
    procs = []
    stop = threading.Event()
    failures = []
    try:
        deadline = time.time() + 20
        while True:
            try:
                get(f"http://127.0.0.1:{http}/healthz", 1)
                break
            except OSError:
                if time.time() > deadline:
                    sys.exit("roomcast did not start")
                time.sleep(0.2)
        base = f"http://127.0.0.1:{http}"
        streams = {}
        for room, profile in (("mix-a", "grid-720p"), ("mix-b", "pip-720p")):
            r = post(f"{base}/v1/relays", {"sdkappid": APP, "room": room, "profile": profile})
            streams[r["task_id"]] = r["stream"]
        r = post(f"{base}/v1/relays", {"sdkappid": APP, "room": "relay", "userid": "solo"})
        streams[r["task_id"]] = r["stream"]
        anchors = [("mix-a", "a1", "red", 440), ("mix-a", "a2", "blue", 660),
                   ("mix-b", "b1", "green", 550), ("mix-b", "b2", "yellow", 770),
                   ("relay", "solo", "purple", 330)]
        secs = str(int(MINUTES * 60) + 120)
        for room, user, colour, freq in anchors:
            url = (f"rtmp://127.0.0.1:{rtmp}/push/{room}?sdkappid={APP}&userid={user}"
                   f"&usersig={usersig(user)}")
            procs.append(subprocess.Popen(
                ["ffmpeg", "-hide_banner", "-nostdin", "-loglevel", "error", "-re",
                 "-f", "lavfi", "-i", f"testsrc=size=640x360:rate=30,drawbox=c={colour}:t=40",
                 "-re", "-f", "lavfi", "-i", f"sine=frequency={freq}:sample_rate=48000",
                 "-t", secs, "-c:v", "libx264", "-preset", "veryfast", "-tune", "zerolatency",
                 "-g", "30", "-b:v", "800k", "-c:a", "aac", "-b:a", "96k", "-f", "flv", url],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))

        def hls_client(stream):
            while not stop.is_set():
                try:
                    text = get(f"{base}/hls/{stream}/index.m3u8").decode()
                    last = [l for l in text.splitlines() if l and not l.startswith("#")]
                    if last:
                        get(f"{base}/hls/{stream}/{last[-1]}")
                except OSError:
                    pass
                stop.wait(1.0)

        for stream in streams.values():
            for _ in range(3):
                t = threading.Thread(target=hls_client, args=(stream,), daemon=True)
                t.start()

        print(f"soak: {MINUTES:g} min, roomcast pid {gw.pid}, log {work}/roomcast.log")
        print("minute  rss_MB  cpu_%   " + "  ".join(f"{s[:18]:>18}" for s in streams.values()))
        start = time.time()
        first_rss = None
        last_cpu, last_t = cpu_secs(gw.pid), time.time()
        minute = 0
        while time.time() - start < MINUTES * 60:
            time.sleep(max(0.0, start + (minute + 1) * 60 - time.time()))
            minute += 1
            if gw.poll() is not None:
                failures.append(f"roomcast exited with {gw.returncode}")
                break
            rss = rss_mb(gw.pid)
            now_cpu, now_t = cpu_secs(gw.pid), time.time()
            cpu = 100 * (now_cpu - last_cpu) / (now_t - last_t)
            last_cpu, last_t = now_cpu, now_t
            rates = []
            for task in streams:
                st = json.loads(get(f"{base}/v1/relays/{task}"))
                # A mix's distinct pictures; a bypass relay's frames passed on.
                fps = st.get("effective_fps", st.get("fps"))
                shown = "    -" if fps is None else f"{fps:5.1f}"
                rates.append(f"{st.get('state', '?')[:7]:>7} {shown}fps")
                if st.get("state") != "running":
                    failures.append(f"minute {minute}: task {task} is {st.get('state')}")
                elif fps is not None and fps < 0.8 * 30:
                    failures.append(f"minute {minute}: task {task} at {fps:.1f} fps")
            print(f"{minute:6d}  {rss:6.0f}  {cpu:5.0f}   " + "  ".join(f"{r:>18}" for r in rates),
                  flush=True)
            if minute == 1:
                first_rss = rss
            elif first_rss is not None and rss > first_rss + GROWTH_MB:
                failures.append(f"minute {minute}: RSS {rss:.0f} MB, {rss - first_rss:.0f} MB over minute 1")
    finally:
        stop.set()
        for p in procs:
            p.kill()
            p.wait()
        gw.send_signal(signal.SIGTERM)
        try:
            gw.wait(20)
        except subprocess.TimeoutExpired:
            gw.kill()
            gw.wait()
    if failures:
        print("soak FAILED:\n  " + "\n  ".join(dict.fromkeys(failures)))
        sys.exit(1)
    print("soak passed")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
