#!/usr/bin/env bash
# Profile-guided release build of the gateway: `make pgo`.
#
#   1. builds an instrumented gateway (target/pgo-gen/release/roomcast);
#   2. trains it on this machine with the work it exists for: real RTMP
#      publishers (ffmpeg, stream copy in real time) into three rooms, two
#      bypass relays (one pushing only, one writing HLS too) and a two-anchor
#      grid mix, every task pushing to a local nginx-rtmp origin, HLS read
#      and the status API polled, for PGO_TRAIN_SECS (default 40) seconds;
#      then stops it with SIGTERM, so that it writes its profile;
#   3. merges the profile with llvm-profdata (rustup's llvm-tools, added if
#      missing: it must match rustc's LLVM);
#   4. builds target/pgo/release/roomcast with it.
#
# Both builds use fat LTO and one codegen unit (PGO_LTO=0: not).
#
# The profile is this machine's and this build's: it is not committed, and a
# `make pgo` after a code change trains again. What the training does not
# run (WHIP, WHEP, recordings, the TRTC API) is built as cold code: correct,
# but smaller and possibly slower than in the plain build.
# Needs ffmpeg and nginx with its rtmp module (`make test`'s set-up).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
secs=${PGO_TRAIN_SECS:-40}
data=$repo/target/pgo-data
log() { echo "pgo: $*"; }

# Whole-program optimisation on top of the profile: fat LTO and one codegen
# unit, in both builds so that the profile's functions match the final
# build's. Each build takes about twice as long; a bypass relay costs 6-12 %
# less CPU than with the profile alone (README, "Profile-guided build").
# PGO_LTO=0 keeps the release profile's own settings.
if [ "${PGO_LTO:-1}" != 0 ]; then
    export CARGO_PROFILE_RELEASE_LTO=${CARGO_PROFILE_RELEASE_LTO:-fat}
    export CARGO_PROFILE_RELEASE_CODEGEN_UNITS=${CARGO_PROFILE_RELEASE_CODEGEN_UNITS:-1}
fi

for tool in ffmpeg nginx curl python3; do
    command -v "$tool" >/dev/null || { echo "pgo: $tool is missing (run scripts/setup.sh --test)" >&2; exit 1; }
done
[ -f /usr/lib/nginx/modules/ngx_rtmp_module.so ] || { echo "pgo: nginx's rtmp module is missing (run scripts/setup.sh --test)" >&2; exit 1; }

find_profdata() {
    local sysroot
    sysroot=$(rustc --print sysroot)
    ls "$sysroot"/lib/rustlib/*/bin/llvm-profdata 2>/dev/null | head -n1
}
profdata=$(find_profdata || true)
if [ -z "$profdata" ]; then
    log "adding rustup's llvm-tools (llvm-profdata)"
    rustup component add llvm-tools >/dev/null
    profdata=$(find_profdata)
fi

rm -rf "$data"
mkdir -p "$data/raw" "$data/gw/profiles" "$data/origin" "$data/media"

log "building the instrumented gateway (target/pgo-gen)"
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-generate=$data/raw" \
    cargo build --release --locked --target-dir target/pgo-gen --bin roomcast
bin=$repo/target/pgo-gen/release/roomcast

# Everything this script starts, stopped by its pid on the way out.
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
wait_port() {
    local deadline=$((SECONDS + 30))
    until python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $1), 1)" 2>/dev/null; do
        [ $SECONDS -lt $deadline ] || { echo "pgo: nothing listens on port $1 after 30 s" >&2; exit 1; }
        sleep 0.2
    done
}

log "making the training media"
ffmpeg -v error -y -f lavfi -i "testsrc2=size=1280x720:rate=30:duration=20" \
    -f lavfi -i "sine=frequency=440:duration=20" -c:v libx264 -preset veryfast \
    -b:v 2M -g 60 -pix_fmt yuv420p -c:a aac -b:a 128k -f flv "$data/media/720p.flv"
for i in 0 1; do
    ffmpeg -v error -y -f lavfi -i "testsrc2=size=640x360:rate=30:duration=20,hue=h=$((i * 120))" \
        -f lavfi -i "sine=frequency=$((440 + i * 220)):duration=20" -c:v libx264 -preset veryfast \
        -b:v 1M -g 60 -pix_fmt yuv420p -c:a aac -b:a 128k -f flv "$data/media/360p-$i.flv"
done

origin_port=$(free_port)
cat > "$data/origin/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
daemon off;
master_process off;
worker_processes 1;
error_log $data/origin/error.log warn;
pid $data/origin/nginx.pid;
events { worker_connections 256; }
rtmp { server { listen 127.0.0.1:$origin_port; application live { live on; } } }
EOF
nginx -c "$data/origin/nginx.conf" -p "$data/origin" >/dev/null 2>&1 &
pids+=($!)
wait_port "$origin_port"

app=1400000001
key=pgo-training-key
http_port=$(free_port)
rtmp_port=$(free_port)
cp profiles/*.toml "$data/gw/profiles/"
cat > "$data/gw/profiles/push-only.toml" <<EOF
name = "push-only"
passthrough = true
[video]
width = 1280
height = 720
fps = 30
bitrate_kbps = 2000
[audio]
bitrate_kbps = 128
[outputs.hls]
enabled = false
EOF
cat > "$data/gw/roomcast.toml" <<EOF
[[apps]]
sdkappid = $app
secret_key = "$key"
[[api.credentials]]
secret_id = "AKIDpgo"
secret_key = "pgo-api-key"
[limits]
cpu_budget = 64
EOF
log "training for $secs s (gateway log: $data/gw/gateway.log)"
(cd "$data/gw" && exec env RUST_LOG=info ROOMCAST_HTTP__BIND=127.0.0.1 ROOMCAST_HTTP__PORT="$http_port" \
    ROOMCAST_RTMP__BIND=127.0.0.1 ROOMCAST_RTMP__PORT="$rtmp_port" "$bin" serve >gateway.log 2>&1) &
gw=$!
pids+=($gw)
wait_port "$http_port"

api() { # METHOD PATH [BODY]: the body of a loopback admin call
    curl -sS --max-time 10 -X "$1" -H 'content-type: application/json' ${3:+--data "$3"} "http://127.0.0.1:$http_port$2"
}
tasks=()
playlists=()
start_relay() { # BODY
    local out
    out=$(api POST /v1/relays "$1")
    tasks+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["task_id"])' "$out")")
    playlists+=("$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["hls"])' "$out")")
}
start_relay "{\"sdkappid\":$app,\"room\":\"relay\",\"userid\":\"anchor\",\"profile\":\"push-only\",\"rtmp\":[\"rtmp://127.0.0.1:$origin_port/live/relay\"]}"
start_relay "{\"sdkappid\":$app,\"room\":\"hls\",\"userid\":\"host\",\"profile\":\"passthrough\",\"rtmp\":[\"rtmp://127.0.0.1:$origin_port/live/hls\"]}"
start_relay "{\"sdkappid\":$app,\"room\":\"mix\",\"profile\":\"grid-720p\",\"rtmp\":[\"rtmp://127.0.0.1:$origin_port/live/mix\"]}"

publishers=()
publish() { # FILE ROOM USER
    local sig
    sig=$("$bin" usersig gen --sdkappid "$app" --key "$key" --userid "$3" --expire 3600)
    ffmpeg -v error -re -stream_loop -1 -i "$1" -c copy -f flv \
        "rtmp://127.0.0.1:$rtmp_port/push/$2?sdkappid=$app&userid=$3&usersig=$sig" </dev/null &
    pids+=($!)
    publishers+=($!)
}
publish "$data/media/720p.flv" relay anchor
publish "$data/media/720p.flv" hls host
publish "$data/media/360p-0.flv" mix guest0
publish "$data/media/360p-1.flv" mix guest1

end=$((SECONDS + secs))
while [ $SECONDS -lt $end ]; do
    sleep 2
    for id in "${tasks[@]}"; do api GET "/v1/relays/$id" >/dev/null; done
    "$bin" status all --http "127.0.0.1:$http_port" --secret-id AKIDpgo --secret-key pgo-api-key >/dev/null || true
    for p in "${playlists[@]}"; do
        curl -s --max-time 5 "http://127.0.0.1:$http_port$p" -o /dev/null || true
    done
done
for id in "${tasks[@]}"; do api GET "/v1/relays/$id"; echo; done > "$data/tasks.json"
# A training that did not relay and mix would optimise the wrong code.
python3 - "$data/tasks.json" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        t = json.loads(line)
        if t.get("state") != "running" or not t.get("frames"):
            sys.exit(f"pgo: task {t.get('task_id')} in room {t.get('room')} did not run: {t.get('state')} {t.get('reason')}")
        print(f"pgo: trained task in room {t['room']}: {t['frames']} frames, {t['kbps']} kbps")
PY
for id in "${tasks[@]}"; do api DELETE "/v1/relays/$id" >/dev/null; done
# The publishers stop first, as a streamer would (SIGTERM: ffmpeg ends its
# stream and exits).
for p in "${publishers[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
for p in "${publishers[@]}"; do wait "$p" 2>/dev/null || true; done

kill -TERM "$gw"
deadline=$((SECONDS + 30))
while kill -0 "$gw" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "pgo: the gateway did not stop within 30 s of SIGTERM" >&2; exit 1; }
    sleep 0.2
done
cleanup
trap - EXIT
ls "$data"/raw/*.profraw >/dev/null 2>&1 || { echo "pgo: the training wrote no profile (see $data/gw/gateway.log)" >&2; exit 1; }

"$profdata" merge -o "$data/roomcast.profdata" "$data"/raw/*.profraw
log "merged $(ls "$data"/raw/*.profraw | wc -l) profile(s) into $data/roomcast.profdata"

log "building the optimised gateway (target/pgo)"
# Functions that generics instantiate differently in the two builds have no
# usable counts; LLVM says so for each, by the hundred: not a fault.
RUSTFLAGS="${RUSTFLAGS:-} -Cprofile-use=$data/roomcast.profdata -Cllvm-args=-no-pgo-warn-mismatch" \
    cargo build --release --locked --target-dir target/pgo --bin roomcast
log "built target/pgo/release/roomcast"
