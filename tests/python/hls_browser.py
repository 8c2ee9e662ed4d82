"""Plays an HLS stream with hls.js in Debian's headless Chromium, as a
low-latency viewer would, and reports how the playback went.

usage: hls_browser.py HLS_JS_URL PLAYLIST_URL SECONDS [--level N]

The page is built here: the browser opens HLS_JS_URL itself (the gateway
serves hls.js 1.6 at /console/hls.light.min.js), so the page has that http
origin -- about:blank's opaque origin may not fetch from loopback (Chromium's
private/local network access rules) -- and its body is replaced by a muted
autoplaying <video> and a <script> loading HLS_JS_URL. A playlist on another
origin must allow CORS. hls.js
runs with {lowLatencyMode: true, backBufferLength: 30}. Once the video plays,
the script watches it for SECONDS, sampling hls.js's own latency estimate
(hls.latency) every second; with --level N it then sets hls.currentLevel = N
and waits for LEVEL_SWITCHED to N.

Prints ONE JSON line:
  {"played_seconds", "window_seconds", "waiting", "waiting_before_start",
   "latency_median", "latency_samples", "target_latency", "levels",
   "current_level", "switched_to", "video_size", "errors", "error_count",
   "fatal", "startup_seconds", "media_error", "media_recoveries",
   "first_level", "first_frags"} (plus "switch_seconds", from setting the
level to LEVEL_SWITCHED, with --level). "first_level" is the first level
playlist hls.js read (its edge, first and last sequence numbers, parts),
"first_frags" the first fragments and parts it buffered (level/sn.part and
their playlist time): where playback started. Each error also carries the
media element's own error, the playhead, the buffered ranges and the
playlist edge at that moment.
A fatal media error is recovered from once, as hls.js asks of players
(hls.recoverMediaError()): it is listed in "errors" with "recovered": true,
the browser's reason and the fragment, and counted in "media_recoveries";
a second one is fatal. (One CI run saw a bufferAppendError right after a
level switch on a loaded box; hls.js 1.6 users report the like with LL-HLS
on very fast networks, video-dev/hls.js#7321.)
and exits 0; on a fatal hls.js error, no playback within 20 s, or no switch
to level N, prints the same with what is known plus "failed": "<why>" and
exits 1.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service

START_WITHIN = 20.0  # seconds for hls.js to load, and again for playback to start
SWITCH_WITHIN = 20.0  # seconds past the window for LEVEL_SWITCHED
MAX_ERRORS = 50  # error entries kept in the report (all are counted)

BUILD_PAGE = """
const [hlsJsUrl] = arguments;
document.title = 'hls_browser';
document.body.innerHTML = '';
document.body.style.margin = '0';
const v = document.createElement('video');
v.id = 'v';
v.muted = true;
v.autoplay = true;
v.playsInline = true;
v.width = 640;
document.body.appendChild(v);
const s = document.createElement('script');
s.src = hlsJsUrl;
s.onerror = () => { window.__hlsScriptError = 'could not load ' + hlsJsUrl; };
document.head.appendChild(s);
"""

START = """
const [url] = arguments;
const v = document.getElementById('v');
const st = window.__st = {
  waiting: 0, waitingBeforeStart: 0, started: false, errors: [], errorCount: 0, recoveries: 0,
  switches: [], manifest: false, playError: null, supported: Hls.isSupported(),
  firstLevel: null, frags: [],
};
if (!st.supported) return st;
const hls = window.__hls = new Hls({lowLatencyMode: true, backBufferLength: 30});
v.addEventListener('waiting', () => { if (st.started) st.waiting++; else st.waitingBeforeStart++; });
hls.on(Hls.Events.ERROR, (_, d) => {
  st.errorCount++;
  // As hls.js tells players to: a fatal media error is recovered from once
  // (hls.recoverMediaError); it is reported with what the browser said.
  const recover = d.fatal && d.type === Hls.ErrorTypes.MEDIA_ERROR && st.recoveries < 1;
  if (st.errors.length < %d || d.fatal) {
    const why = d.reason || d.error || d.err;
    st.errors.push({type: d.type, details: d.details, fatal: !!d.fatal && !recover,
                    recovered: recover, at: Math.round(performance.now()) / 1000,
                    reason: why ? String(why.message || why) : null,
                    media: v.error ? (v.error.code + ': ' + v.error.message) : null,
                    t: v.currentTime,
                    buffered: Array.from({length: v.buffered.length},
                                         (_, i) => [v.buffered.start(i), v.buffered.end(i)]),
                    edge: hls.latestLevelDetails ? hls.latestLevelDetails.edge : null,
                    level: hls.currentLevel, loadLevel: hls.loadLevel,
                    frag: d.frag ? d.frag.level + '/' + d.frag.sn + (d.part ? '.' + d.part.index : '') : null});
  }
  if (recover) {
    st.recoveries++;
    hls.recoverMediaError();
  }
});
// Where playback started: the first level playlist hls.js read, and the
// first fragments and parts it buffered (level/sn.part at playlist time).
hls.on(Hls.Events.LEVEL_LOADED, (_, d) => {
  if (st.firstLevel) return;
  const x = d.details;
  st.firstLevel = {level: d.level, edge: x.edge, start_sn: x.startSN, end_sn: x.endSN,
                   parts: x.partList ? x.partList.length : 0, can_block: !!x.canBlockReload,
                   at: Math.round(performance.now()) / 1000};
});
hls.on(Hls.Events.FRAG_BUFFERED, (_, d) => {
  if (st.frags.length >= 8) return;
  st.frags.push({frag: d.frag.level + '/' + d.frag.sn + (d.part ? '.' + d.part.index : ''),
                 start: Math.round(1000 * (d.part ? d.part.start : d.frag.start)) / 1000,
                 at: Math.round(performance.now()) / 1000});
});
hls.on(Hls.Events.LEVEL_SWITCHED, (_, d) => st.switches.push({level: d.level, at: performance.now() / 1000}));
hls.on(Hls.Events.MANIFEST_PARSED, () => {
  st.manifest = true;
  v.play().catch(e => { st.playError = String(e); });
});
hls.attachMedia(v);
hls.loadSource(url);
return st;
""" % MAX_ERRORS

SNAPSHOT = """
const v = document.getElementById('v'), h = window.__hls, st = window.__st;
const num = x => (typeof x === 'number' && isFinite(x)) ? x : null;
return {
  t: v.currentTime, paused: v.paused, ready: v.readyState,
  latency: h ? num(h.latency) : null,
  target: h ? num(h.targetLatency) : null,
  levels: h && h.levels ? h.levels.length : 0,
  level: h ? h.currentLevel : null,
  size: [v.videoWidth, v.videoHeight],
  waiting: st.waiting, waitingBeforeStart: st.waitingBeforeStart,
  errors: st.errors, errorCount: st.errorCount, recoveries: st.recoveries, switches: st.switches,
  manifest: st.manifest, playError: st.playError, firstLevel: st.firstLevel, frags: st.frags,
  mediaError: v.error ? (v.error.code + ': ' + v.error.message) : null,
};
"""


class Failed(Exception):
    pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("hls_js_url")
    ap.add_argument("playlist_url")
    ap.add_argument("seconds", type=float)
    ap.add_argument("--level", type=int, default=None)
    args = ap.parse_args()

    report = {
        "played_seconds": 0.0, "window_seconds": 0.0, "waiting": 0,
        "waiting_before_start": 0, "latency_median": None, "latency_samples": [],
        "target_latency": None, "levels": 0, "current_level": None,
        "switched_to": None, "video_size": None, "errors": [], "error_count": 0,
        "fatal": False, "startup_seconds": None, "media_recoveries": 0,
    }

    asked_at = [float("inf")]  # page clock when currentLevel was set

    def absorb(s):
        report["waiting"] = s["waiting"]
        report["waiting_before_start"] = s["waitingBeforeStart"]
        report["errors"] = s["errors"]
        report["error_count"] = s["errorCount"]
        report["fatal"] = any(e["fatal"] for e in s["errors"])
        report["levels"] = s["levels"]
        report["current_level"] = s["level"]
        report["video_size"] = s["size"]
        report["media_error"] = s["mediaError"]
        report["media_recoveries"] = s["recoveries"]
        report["first_level"] = s["firstLevel"]
        report["first_frags"] = s["frags"]
        if s["target"] is not None:
            report["target_latency"] = round(s["target"], 3)
        if args.level is not None and report["switched_to"] is None:
            hit = [w for w in s["switches"] if w["level"] == args.level and w["at"] >= asked_at[0]]
            if hit:
                report["switched_to"] = args.level
                report["switch_seconds"] = round(hit[0]["at"] - asked_at[0], 3)
        if report["fatal"]:
            e = next(e for e in s["errors"] if e["fatal"])
            raise Failed(f"fatal hls.js error: {e['type']} / {e['details']}")

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="chromium-hls-")
    for a in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,800", f"--user-data-dir={profile}",
    ]:
        options.add_argument(a)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = None
    try:
        d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
        d.set_script_timeout(30)
        d.get(args.hls_js_url)  # an http origin for the page (see above)
        d.execute_script(BUILD_PAGE, args.hls_js_url)
        deadline = time.monotonic() + START_WITHIN
        while not d.execute_script("return typeof window.Hls === 'function'"):
            err = d.execute_script("return window.__hlsScriptError || null")
            if err or time.monotonic() > deadline:
                raise Failed(err or f"window.Hls not defined within {START_WITHIN:.0f} s")
            time.sleep(0.1)
        if not d.execute_script(START, args.playlist_url)["supported"]:
            raise Failed("Hls.isSupported() is false (no MediaSource)")

        # Playback starts: the clock moves and the element is not paused.
        loaded_at = time.monotonic()
        deadline = loaded_at + START_WITHIN
        while True:
            s = d.execute_script(SNAPSHOT)
            absorb(s)
            if s["t"] > 0 and not s["paused"]:
                break
            if time.monotonic() > deadline:
                why = s["mediaError"] or s["playError"] or (
                    "manifest parsed" if s["manifest"] else "manifest not parsed")
                raise Failed(f"no playback within {START_WITHIN:.0f} s ({why})")
            time.sleep(0.1)
        started_at = time.monotonic()
        report["startup_seconds"] = round(started_at - loaded_at, 3)
        d.execute_script("window.__st.started = true")
        t0 = s["t"]

        if args.level is not None:
            if not 0 <= args.level < s["levels"]:
                raise Failed(f"no level {args.level}: the stream has {s['levels']}")
            if s["level"] == args.level:  # no switch to wait for
                report["switched_to"] = args.level
                report["switch_seconds"] = 0.0
                report["already_on_level"] = True
            asked_at[0] = d.execute_script(
                "window.__hls.currentLevel = arguments[0]; return performance.now() / 1000",
                args.level)

        # The window: one sample a second.
        samples = []
        end = started_at + args.seconds
        next_sample = started_at + 1.0
        while True:
            now = time.monotonic()
            if now >= end:
                break
            time.sleep(max(0.0, min(next_sample, end) - now))
            s = d.execute_script(SNAPSHOT)
            report["played_seconds"] = round(s["t"] - t0, 3)
            report["window_seconds"] = round(time.monotonic() - started_at, 3)
            absorb(s)
            if time.monotonic() >= next_sample - 0.05:
                if s["latency"] is not None and s["latency"] > 0:
                    samples.append(round(s["latency"], 3))
                    report["latency_samples"] = samples
                    report["latency_median"] = round(statistics.median(samples), 3)
                next_sample += 1.0

        # Playing the asked level is what counts: hls.js may have gone there
        # on its own while being asked (then no LEVEL_SWITCHED follows).
        if args.level is not None and report["switched_to"] is None and s["level"] == args.level:
            report["switched_to"] = args.level
            report["on_level_without_event"] = True
        if args.level is not None and report["switched_to"] is None:
            deadline = time.monotonic() + SWITCH_WITHIN
            while report["switched_to"] is None:
                if time.monotonic() > deadline:
                    raise Failed(
                        f"no LEVEL_SWITCHED to {args.level} within {args.seconds:g} + "
                        f"{SWITCH_WITHIN:.0f} s (switches seen: {[w['level'] for w in s['switches']]})")
                time.sleep(0.2)
                s = d.execute_script(SNAPSHOT)
                absorb(s)
    except Exception as e:  # Failed, or the browser/driver gave up
        report["failed"] = str(e) if isinstance(e, Failed) else f"{type(e).__name__}: {e}"
        try:
            report["browser_log"] = [
                x["message"] for x in d.get_log("browser") if "favicon.ico" not in x["message"]][-20:]
        except Exception:
            pass
        print(json.dumps(report))
        sys.exit(1)
    finally:
        if d is not None:
            d.quit()
        shutil.rmtree(profile, ignore_errors=True)
    print(json.dumps(report))


main()
