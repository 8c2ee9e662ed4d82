"""Drives roomcast's web console in Debian's headless Chromium, as a person
would: a wrong key, a login, the room with its anchors, starting a mix from
a profile, the preview playing, a layout change, stopping the mix, removing
a user, dismissing the room and logging out. Screenshots go to SHOTS.

usage: console_browser.py BASE_URL SECRET_ID SECRET_KEY SDKAPPID ROOM SHOTS

Prints one JSON line with what the page saw (task id, preview times) and
exits 0, or prints the failed step and exits 1.
"""

import json
import os
import sys
import tempfile
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

BASE, SECRET_ID, SECRET_KEY, APP, ROOM, SHOTS = sys.argv[1:7]
os.makedirs(SHOTS, exist_ok=True)


def wait(what, f, within=30.0):
    """Polls f until it returns something truthy, against a deadline."""
    deadline = time.monotonic() + within
    last = None
    while time.monotonic() < deadline:
        try:
            v = f()
            if v:
                return v
        except Exception as e:  # the page is re-rendering: look again
            last = e
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what} (last error: {last})")


def shot(d, name):
    d.save_screenshot(os.path.join(SHOTS, name))


def visible_text(d, element_id):
    e = d.find_element(By.ID, element_id)
    return e.text if e.is_displayed() else ""


def main():
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    profile = tempfile.mkdtemp(prefix="chromium-", dir=SHOTS)
    for a in [
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
        "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required",
        "--window-size=1280,1400", f"--user-data-dir={profile}",
    ]:
        options.add_argument(a)
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    seen = {}
    try:
        d.get(BASE + "/console/")
        wait("the login form", lambda: d.find_element(By.ID, "login-form").is_displayed())

        # A wrong key: a clear message, nothing shown.
        d.find_element(By.ID, "secret-id").send_keys(SECRET_ID)
        d.find_element(By.ID, "secret-key").send_keys(SECRET_KEY + "-wrong")
        d.find_element(By.ID, "login-button").click()
        msg = wait("the login error", lambda: visible_text(d, "login-error"))
        assert "wrong" in msg.lower(), msg
        assert not d.find_element(By.ID, "app-view").is_displayed()
        assert d.find_elements(By.CSS_SELECTOR, "[data-room]") == []
        seen["wrong_key_message"] = msg
        shot(d, "01-wrong-key.png")

        # The right key: the room with its two publishing anchors.
        d.find_element(By.ID, "secret-id").clear()
        d.find_element(By.ID, "secret-id").send_keys(SECRET_ID)
        d.find_element(By.ID, "secret-key").send_keys(SECRET_KEY)
        d.find_element(By.ID, "login-button").click()
        wait("the console", lambda: d.find_element(By.ID, "app-view").is_displayed())
        room_sel = f'[data-room="{APP}/{ROOM}"]'

        def anchors():
            rows = d.find_elements(By.CSS_SELECTOR, f"{room_sel} tr[data-user]")
            users = {r.get_attribute("data-user"): r.text for r in rows}
            ok = len(users) == 2 and all("anchor" in t and "h264 + aac" in t for t in users.values())
            return users if ok else None

        seen["users"] = sorted(wait("two publishing anchors", anchors))
        wait("the node's load", lambda: "CPU budget" in d.find_element(By.ID, "node").text)
        # What admission charges for codecs, once the start-up probe has timed them.
        seen["codecs"] = wait("the codecs' timing", lambda: next(
            (s.text for s in d.find_elements(By.CSS_SELECTOR, "#node span") if s.text.startswith("codecs cost")), None))
        # A cluster node: this node and Redis, and every node's record.
        wait("the cluster", lambda: "console-node (this node)" in d.find_element(By.ID, "cluster").text
             and "Redis is up" in d.find_element(By.ID, "cluster-summary").text)
        seen["cluster"] = d.find_element(By.ID, "cluster-summary").text
        shot(d, "02-room.png")

        # Watch one anchor as published, over WHEP.
        current = 'return document.getElementById("preview").currentTime'
        d.find_element(By.CSS_SELECTOR, f'{room_sel} tr[data-user="teacher"] button.watch').click()
        w1 = wait("the anchor's picture", lambda: (lambda t: t if t > 0.3 else None)(d.execute_script(current)), within=30)
        w2 = wait("the anchor's picture to advance", lambda: (lambda t: t if t > w1 + 1.5 else None)(d.execute_script(current)), within=20)
        size = d.execute_script('const v = document.getElementById("preview"); return [v.videoWidth, v.videoHeight]')
        assert size == [640, 360], size
        seen["whep"] = [round(w1, 2), round(w2, 2)]
        shot(d, "02b-whep.png")

        # Start a mix from a profile, through the page's form.
        d.find_element(By.CSS_SELECTOR, f"{room_sel} button.use").click()
        Select(d.find_element(By.ID, "start-profile")).select_by_value("grid-720p")
        d.find_element(By.ID, "start-button").click()
        done = wait("the start answer", lambda: visible_text(d, "action-done") or visible_text(d, "action-error"))
        assert done.startswith("Started task "), done
        task = done.removeprefix("Started task ").strip()
        seen["task"] = task
        row = f'tr[data-task="{task}"]'

        def running():
            state = d.find_element(By.CSS_SELECTOR, f"{row} .state").text
            inputs = d.find_element(By.CSS_SELECTOR, f"{row} .inputs").text
            return state == "running" and len(inputs.split(", ")) == 2

        wait("the mix running with both anchors", running, within=40)

        # The preview plays the mix's HLS and advances.
        d.find_element(By.CSS_SELECTOR, f"{row} button.preview").click()
        t1 = wait("the preview to start", lambda: d.execute_script(current) > 0.5, within=40) and d.execute_script(current)
        t2 = wait("the preview to advance", lambda: (lambda t: t if t > t1 + 2.0 else None)(d.execute_script(current)), within=30)
        size = d.execute_script('const v = document.getElementById("preview"); return [v.videoWidth, v.videoHeight]')
        assert size == [1280, 720], size
        seen["preview"] = [round(t1, 2), round(t2, 2)]
        # Let the sparklines collect a few samples before the picture.
        wait("a sparkline", lambda: len(d.find_element(By.CSS_SELECTOR, f"{row} .kbps polyline").get_attribute("points").split()) >= 8)
        shot(d, "03-preview.png")

        # Change the layout to another mix profile of the same canvas.
        Select(d.find_element(By.CSS_SELECTOR, f"{row} select.layout")).select_by_value("pip-720p")
        d.find_element(By.CSS_SELECTOR, f"{row} button.apply-layout").click()
        done = wait("the layout answer", lambda: (lambda t: t if "pip-720p" in t else None)(visible_text(d, "action-done")) or visible_text(d, "action-error"))
        assert "set to pip-720p" in done, done

        # Stop the mix from the page and see it stop.
        d.find_element(By.CSS_SELECTOR, f"{row} button.stop").click()
        wait("the task stopped", lambda: d.find_element(By.CSS_SELECTOR, f"{row} .state").text.startswith("stopped"), within=20)
        seen["stopped_state"] = d.find_element(By.CSS_SELECTOR, f"{row} .state").text
        assert not d.find_element(By.CSS_SELECTOR, f"{row} button.stop").is_displayed()
        shot(d, "04-stopped.png")

        # Remove one anchor, then dismiss the room (the TRTC API, as a script calls it).
        d.find_element(By.CSS_SELECTOR, f'{room_sel} tr[data-user="guest"] button.remove').click()
        wait("the guest gone", lambda: d.find_elements(By.CSS_SELECTOR, f'{room_sel} tr[data-user="guest"]') == [], within=20)
        assert "Removed guest" in visible_text(d, "action-done"), visible_text(d, "action-error")
        d.find_element(By.CSS_SELECTOR, f"{room_sel} button.dismiss").click()
        wait("the room gone", lambda: d.find_elements(By.CSS_SELECTOR, room_sel) == [], within=20)
        shot(d, "05-dismissed.png")

        # Log out: the login form again, and the live view is closed to this browser.
        d.find_element(By.ID, "logout").click()
        wait("the login form again", lambda: d.find_element(By.ID, "login-form").is_displayed())
        status = d.execute_script(
            "const r = await fetch('/console/api/events'); return r.status;")
        assert status == 401, status
        shot(d, "06-logged-out.png")
    except Exception as e:
        try:
            shot(d, "failed.png")
            seen["page"] = d.find_element(By.TAG_NAME, "body").text[:2000]
            seen["browser_log"] = [e2["message"] for e2 in d.get_log("browser")][:20]
        except Exception:
            pass
        print(json.dumps({"failed": f"{type(e).__name__}: {e}", **seen}))
        sys.exit(1)
    finally:
        d.quit()
    print(json.dumps(seen))


main()
