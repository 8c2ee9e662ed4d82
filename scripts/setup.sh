#!/usr/bin/env bash
# Installs what roomcast needs to build, run and test on Debian 12.
# Idempotent and quiet when everything is already there.
#   scripts/setup.sh          build + run dependencies (Debian packages)
#   scripts/setup.sh --test   also the test peers: Debian's Chromium and
#                             ChromeDriver (the console's browser test), nginx's
#                             stream module and openssl (a TLS origin), Redis
#                             (the cluster tests start their own servers),
#                             libfaketime (the clock-step test), and a
#                             Python venv (.venv/: aiortc, the TRTC SDK, selenium)
#   scripts/setup.sh --fuzz   the nightly toolchain and cargo-fuzz (`make fuzz`)
set -euo pipefail

cd "$(dirname "$0")/.."

PKGS=(pkg-config clang libclang-dev
      libavcodec-dev libavformat-dev libavutil-dev libavfilter-dev libavdevice-dev
      libswscale-dev libswresample-dev
      ffmpeg nginx libnginx-mod-rtmp zlib1g-dev python3-venv)
if [ "${1:-}" = "--test" ]; then
  PKGS+=(chromium chromium-driver libnginx-mod-stream openssl redis-server libfaketime)
fi

missing=()
# A package registry can answer badly once (a truncated index page, a
# dropped connection): what reaches the network is tried three times.
retry() {
  local attempt
  for attempt in 1 2 3; do
    if "$@"; then return 0; fi
    if [ "$attempt" -lt 3 ]; then
      echo "setup: '$1' failed (attempt $attempt of 3); trying again in $((attempt * 10)) s" >&2
      sleep $((attempt * 10))
    fi
  done
  echo "setup: '$*' failed three times" >&2
  return 1
}

for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  retry $SUDO apt-get update -qq >/dev/null
  # nginx's package starts a service on port 80; we only use its binary.
  retry $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now nginx >/dev/null 2>&1 || true; fi
  # Likewise redis-server's service on 6379: tests start their own.
  if command -v systemctl >/dev/null 2>&1; then $SUDO systemctl disable --now redis-server >/dev/null 2>&1 || true; fi
  $SUDO service redis-server stop >/dev/null 2>&1 || true
  $SUDO service nginx stop >/dev/null 2>&1 || true
fi

if [ "${1:-}" = "--test" ]; then
  VENV=.venv
  REQ=scripts/test-requirements.txt
  stamp="$VENV/.installed-$(sha256sum "$REQ" | cut -c1-16)"
  if [ ! -f "$stamp" ]; then
    echo "setup: creating Python venv $VENV for the test peers"
    python3 -m venv "$VENV"
    retry "$VENV/bin/pip" install -q --disable-pip-version-check --retries 5 -r "$REQ"
    touch "$stamp"
  fi
fi

if [ "${1:-}" = "--fuzz" ]; then
  if ! rustup toolchain list | grep -q '^nightly'; then
    echo "setup: installing the nightly toolchain (cargo-fuzz needs it)"
    rustup toolchain install nightly --profile minimal >/dev/null
  fi
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    echo "setup: installing cargo-fuzz"
    cargo install --locked cargo-fuzz >/dev/null
  fi
fi
