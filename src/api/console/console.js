// The roomcast console: logs in with an API credential, follows the live
// status over Server-Sent Events and acts through the same APIs a script
// uses (/v1/tasks and the TRTC API), with the session in place of a
// signature. No framework, no build step, nothing fetched from elsewhere.
'use strict';

const $ = (id) => document.getElementById(id);
const HISTORY = 60; // sparkline samples per task (one a second)
const TRTC_VERSION = '2019-07-22';

let csrf = null;
let source = null;
let hls = null;
let whep = null; // {pc, location} of a WHEP preview
let preview = null; // the stream previewed
let profiles = [];
let lastRooms = '';
const samples = new Map(); // task id -> {kbps: [], fps: []}

function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (k.startsWith('data-')) e.setAttribute(k, v);
    else e[k] = v;
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c);
  return e;
}

function show(id, text) {
  const e = $(id);
  e.textContent = text || '';
  e.hidden = !text;
}

function errorText(v) {
  if (!v) return null;
  if (v.Response && v.Response.Error) return `${v.Response.Error.Code}: ${v.Response.Error.Message}`;
  if (v.error) return typeof v.error === 'string' ? v.error : v.error.message;
  return null;
}

// One call to this server's API; throws with the server's own message.
async function call(method, path, body, headers = {}) {
  const h = { ...headers };
  if (csrf) h['X-Roomcast-Csrf'] = csrf;
  if (body !== undefined) h['Content-Type'] = 'application/json';
  const r = await fetch(path, {
    method, headers: h, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await r.text();
  let v = null;
  try { v = text ? JSON.parse(text) : null; } catch (_) { v = null; }
  if (r.status === 401 && csrf) loggedOut('The session has ended; log in again.');
  const e = errorText(v);
  if (!r.ok || e) throw new Error(e || `${r.status} ${r.statusText}`);
  return v;
}

// A TRTC API action, as the SDKs call it.
function trtc(action, params) {
  return call('POST', '/', params, { 'X-TC-Action': action, 'X-TC-Version': TRTC_VERSION });
}

// Runs a page action and reports how it went.
async function act(what, f) {
  show('action-error', '');
  show('action-done', '');
  try {
    const done = await f();
    show('action-done', typeof done === 'string' ? done : what);
  } catch (e) {
    show('action-error', `${what} failed: ${e.message}`);
  }
}

// ---- login ----

async function login(ev) {
  ev.preventDefault();
  show('login-error', '');
  const secretId = $('secret-id').value.trim();
  const secretKey = $('secret-key').value;
  $('secret-key').value = '';
  let r;
  try {
    r = await fetch('/console/api/login', {
      method: 'POST', credentials: 'same-origin',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ secret_id: secretId, secret_key: secretKey }),
    });
  } catch (e) {
    show('login-error', `The server cannot be reached: ${e.message}`);
    return;
  }
  const v = await r.json().catch(() => null);
  if (!r.ok) {
    show('login-error', errorText(v) || `Login failed (${r.status}).`);
    return;
  }
  loggedIn(v);
}

async function logout() {
  try { await call('POST', '/console/api/logout'); } catch (_) { /* gone already */ }
  loggedOut('');
}

function loggedIn(v) {
  csrf = v.csrf;
  $('who').textContent = `SecretId ${v.secret_id}`;
  $('login-view').hidden = true;
  $('app-view').hidden = false;
  $('logout').hidden = false;
  loadProfiles();
  follow();
}

function loggedOut(message) {
  csrf = null;
  if (source) { source.close(); source = null; }
  stopPreview();
  $('app-view').hidden = true;
  $('logout').hidden = true;
  $('who').textContent = '';
  $('login-view').hidden = false;
  $('rooms').replaceChildren();
  $('tasks').tBodies[0].replaceChildren();
  $('ingests').tBodies[0].replaceChildren();
  delete $('ingests').tBodies[0].dataset.last;
  samples.clear();
  lastRooms = '';
  show('login-error', message);
}

async function loadProfiles() {
  try {
    profiles = await call('GET', '/console/api/profiles');
  } catch (e) {
    show('action-error', `Profiles: ${e.message}`);
    return;
  }
  const select = $('start-profile');
  select.replaceChildren(...profiles.map((p) => el('option', { value: p.name, textContent: `${p.name} (${p.kind})` })));
}

// ---- live status ----

function follow() {
  if (source) source.close();
  source = new EventSource('/console/api/events');
  source.addEventListener('status', (e) => render(JSON.parse(e.data)));
  source.addEventListener('logout', () => loggedOut('The session has ended; log in again.'));
  source.onerror = async () => {
    // EventSource retries by itself; a lost session does not come back.
    const r = await fetch('/console/api/session', { credentials: 'same-origin' }).catch(() => null);
    if (r && r.status === 401) loggedOut('The session has ended; log in again.');
  };
}

function render(doc) {
  renderNode(doc.node);
  const rooms = JSON.stringify(doc.rooms);
  if (rooms !== lastRooms) { // rebuilt only when something changed
    lastRooms = rooms;
    renderRooms(doc.rooms);
  }
  renderTasks(doc.tasks);
  renderIngests(doc.ingests || []);
  renderCluster(doc.cluster);
}

// A cluster node: this node's id and Redis, and every live node's record.
function renderCluster(c) {
  $('cluster-view').hidden = !c;
  if (!c) return;
  $('cluster-summary').textContent =
    `This is node ${c.node_id}; Redis is ${c.redis}; it holds ${c.leases} room lease(s).`;
  const body = $('cluster').tBodies[0];
  const nodes = Array.isArray(c.nodes) ? c.nodes : [];
  const text = JSON.stringify(nodes.map((n) => [n.node, n.http, n.rtmp, n.rooms, n.tasks, n.budget, n.budget_in_use]));
  if (body.dataset.last === text && nodes.length) return;
  body.dataset.last = text;
  if (!nodes.length) {
    const why = c.nodes && c.nodes.error ? c.nodes.error : 'No node record is in Redis.';
    body.replaceChildren(el('tr', {}, el('td', { class: 'empty', colSpan: 6, textContent: why })));
    return;
  }
  body.replaceChildren(...nodes.map((n) => el('tr', { 'data-node': n.node },
    el('td', { textContent: n.node === c.node_id ? `${n.node} (this node)` : n.node }),
    el('td', { textContent: n.http }),
    el('td', { textContent: n.rtmp }),
    el('td', { textContent: String(n.rooms) }),
    el('td', { textContent: String(n.tasks) }),
    el('td', { textContent: `${Number(n.budget_in_use).toFixed(2)} of ${Number(n.budget).toFixed(2)} cores` }),
  )));
}

function renderIngests(ingests) {
  const body = $('ingests').tBodies[0];
  const text = JSON.stringify(ingests);
  if (body.dataset.last === text) return;
  body.dataset.last = text;
  if (!ingests.length) {
    body.replaceChildren(el('tr', {}, el('td', { class: 'empty', colSpan: 6, textContent: 'No stream is pulled in.' })));
    return;
  }
  body.replaceChildren(...ingests.map((i) => el('tr', { 'data-ingest': i.task_id },
    el('td', { textContent: i.task_id }),
    el('td', { textContent: `${i.sdkappid}/${i.room}` }),
    el('td', { textContent: i.userid }),
    el('td', { textContent: i.source }),
    el('td', { textContent: i.state }),
    el('td', {}, el('button', {
      class: 'stop', type: 'button', textContent: 'Stop',
      onclick: () => act(`Stopped ingest ${i.task_id}`, () => trtc('StopStreamIngest', { SdkAppId: Number(i.sdkappid), TaskId: i.task_id })),
    })))));
}

function renderNode(n) {
  const mb = (n.resident_bytes / 1048576).toFixed(0);
  $('node').replaceChildren(
    el('span', { textContent: `CPU budget ${n.cpu_budget_in_use} of ${n.cpu_budget} cores` }),
    el('span', {
      textContent: n.cpu_calibrated
        ? `codecs cost ${Number(n.cpu_cost_scale).toFixed(2)}x the reference`
        : 'codecs charged 1x (not timed)',
      title: 'What admission charges for codec work, timed on this machine at start-up (limits.cpu_calibrate)',
    }),
    el('span', { textContent: `busy ${Number(n.cpu_cores_busy).toFixed(2)} of ${n.cores} cores` }),
    el('span', { textContent: `memory ${mb} MB` }),
    el('span', { textContent: `rooms ${n.rooms}` }),
    el('span', { textContent: `anchors ${n.anchors}` }),
    el('span', { textContent: `audience ${n.audience}` }),
    el('span', { textContent: `tasks ${n.relay_tasks}` }),
  );
}

function roomParams(r) {
  const app = Number(r.sdkappid);
  return r.roomtype === 'int'
    ? { SdkAppId: app, RoomId: Number(r.room) }
    : { SdkAppId: app, RoomId: r.room };
}

function renderRooms(rooms) {
  if (!rooms.length) {
    $('rooms').replaceChildren(el('p', { class: 'empty', textContent: 'No room is open.' }));
    return;
  }
  $('rooms').replaceChildren(...rooms.map((r) => {
    const str = r.roomtype === 'str';
    const users = r.users.map((u) => el('tr', { 'data-user': u.userid },
      el('td', { textContent: u.userid }),
      el('td', { textContent: u.role + (u.hidden ? ' (hidden)' : '') }),
      el('td', { textContent: u.publishing ? [u.video_codec, u.audio_codec].filter(Boolean).join(' + ') : '-' }),
      el('td', { textContent: u.tracks.join(', ') || '-' }),
      el('td', { textContent: u.connected ? 'connected' : 'away' }),
      el('td', {},
        u.publishing ? el('button', {
          class: 'watch', type: 'button', textContent: 'Watch',
          onclick: () => watchAnchor(r, u.userid),
        }) : null,
        el('button', {
          class: 'remove', type: 'button', textContent: 'Remove',
          onclick: () => act(`Removed ${u.userid}`, () => trtc(str ? 'RemoveUserByStrRoomId' : 'RemoveUser', { ...roomParams(r), UserIds: [u.userid] })),
        }))));
    return el('div', { class: 'room', 'data-room': `${r.sdkappid}/${r.room}` },
      el('h3', { textContent: `Room ${r.room} · SDKAppID ${r.sdkappid} · ${r.scene} · owner ${r.owner || '-'}` }),
      el('button', {
        class: 'use', type: 'button', textContent: 'Start a task here',
        onclick: () => {
          $('start-app').value = r.sdkappid;
          $('start-room').value = r.room;
          $('start-roomtype').value = r.roomtype;
        },
      }),
      el('button', {
        class: 'dismiss', type: 'button', textContent: 'Dismiss room',
        onclick: () => act(`Dismissed room ${r.room}`, () => trtc(str ? 'DismissRoomByStrRoomId' : 'DismissRoom', roomParams(r))),
      }),
      el('table', {},
        el('thead', {}, el('tr', {}, ...['user', 'role', 'publishing', 'tracks', 'link', ''].map((h) => el('th', { textContent: h })))),
        el('tbody', {}, ...users)));
  }));
}

function sparkline(values) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('class', 'spark');
  svg.setAttribute('viewBox', `0 0 ${HISTORY - 1} 24`);
  svg.setAttribute('preserveAspectRatio', 'none');
  const line = document.createElementNS(ns, 'polyline');
  const max = Math.max(1, ...values);
  // The samples so far span the whole width; the newest is at the right.
  const step = values.length > 1 ? (HISTORY - 1) / (values.length - 1) : 0;
  line.setAttribute('points', values.map((v, i) => `${(i * step).toFixed(1)},${(23 - (v / max) * 22).toFixed(1)}`).join(' '));
  svg.append(line);
  return svg;
}

function taskRow(t) {
  const mixProfiles = profiles.filter((p) => p.kind === 'mix');
  const layout = el('select', { class: 'layout' },
    ...mixProfiles.map((p) => el('option', { value: p.name, textContent: p.name })));
  return el('tr', { 'data-task': t.task_id },
    el('td', { textContent: t.task_id }),
    el('td', { textContent: t.kind }),
    el('td', { textContent: `${t.sdkappid}/${t.room}` + (t.anchor ? ` · ${t.anchor}` : '') }),
    el('td', { class: 'state' }),
    el('td', { class: 'inputs' }),
    el('td', { class: 'kbps' }),
    el('td', { class: 'fps' }),
    el('td', { class: 'outputs' }),
    el('td', { class: 'actions' },
      el('button', {
        class: 'preview', type: 'button', textContent: 'Preview',
        onclick: () => startPreview(t.stream, t.task_id),
      }),
      t.kind === 'mix' ? layout : null,
      t.kind === 'mix' ? el('button', {
        class: 'apply-layout', type: 'button', textContent: 'Change layout',
        onclick: () => act(`Layout of ${t.task_id} set to ${layout.value}`, () => call('PATCH', `/v1/tasks/${encodeURIComponent(t.task_id)}`, { profile: layout.value })),
      }) : null,
      el('button', {
        class: 'stop', type: 'button', textContent: 'Stop',
        onclick: () => act(`Stopped ${t.task_id}`, () => call('DELETE', `/v1/tasks/${encodeURIComponent(t.task_id)}`)),
      })));
}

function renderTasks(tasks) {
  const body = $('tasks').tBodies[0];
  const seen = new Set();
  for (const t of tasks) {
    seen.add(t.task_id);
    let row = body.querySelector(`tr[data-task="${CSS.escape(t.task_id)}"]`);
    if (!row) { row = taskRow(t); body.append(row); }
    const s = samples.get(t.task_id) || { kbps: [], fps: [] };
    samples.set(t.task_id, s);
    s.kbps.push(t.kbps || 0); s.fps.push(t.fps || 0);
    if (s.kbps.length > HISTORY) { s.kbps.shift(); s.fps.shift(); }
    const state = row.querySelector('.state');
    state.textContent = t.state + (t.reason ? ` (${t.reason})` : '');
    state.className = `state state-${t.state}`;
    row.querySelector('.inputs').textContent = (t.inputs || []).join(', ') || '-';
    row.querySelector('.kbps').replaceChildren(`${t.kbps}`, sparkline(s.kbps));
    let fps = t.effective_fps !== null && t.effective_fps !== undefined ? `${t.fps} (${t.effective_fps} new)` : `${t.fps}`;
    if (t.latency_ms) fps += ` · ${t.latency_ms.p50}/${t.latency_ms.p99} ms`;
    row.querySelector('.fps').replaceChildren(fps, sparkline(s.fps));
    row.querySelector('.outputs').replaceChildren(...(t.outputs || []).map((o) => {
      if (o.kind === 'rtmp') {
        const err = o.last_error ? ` · ${o.last_error}` : '';
        return el('div', { class: `target-${o.state}`, textContent: `rtmp ${o.url}: ${o.state}${err}` + (o.dropped ? ` · ${o.dropped} dropped` : '') });
      }
      if (o.kind === 'hls') return el('div', { textContent: `hls ${o.path}` });
      if (o.kind === 'room') return el('div', { textContent: `room ${o.room} as ${o.userid}` });
      return el('div', { textContent: o.kind });
    }));
    const hasHls = (t.outputs || []).some((o) => o.kind === 'hls');
    row.querySelector('.preview').hidden = !hasHls;
    row.querySelector('.stop').hidden = t.state === 'stopped';
  }
  for (const row of [...body.rows]) {
    if (!seen.has(row.dataset.task)) { row.remove(); samples.delete(row.dataset.task); }
  }
}

// ---- preview ----

function stopPreview() {
  if (hls) { hls.destroy(); hls = null; }
  if (whep) {
    whep.pc.close();
    if (whep.location) fetch(whep.location, { method: 'DELETE' }).catch(() => {});
    whep = null;
  }
  preview = null;
  const v = $('preview');
  v.srcObject = null;
  v.removeAttribute('src');
  v.load();
  $('preview-state').textContent = '';
}

function startPreview(stream, taskId) {
  stopPreview();
  preview = stream;
  const url = `/hls/${encodeURIComponent(stream)}/index.m3u8`;
  $('preview-title').textContent = `Task ${taskId}: ${url}`;
  $('preview-title').className = '';
  const video = $('preview');
  if (window.Hls && window.Hls.isSupported()) {
    hls = new window.Hls({ liveSyncDurationCount: 2, manifestLoadingMaxRetry: 10 });
    hls.on(window.Hls.Events.ERROR, (_, data) => {
      if (!data.fatal) return;
      // The first segment may not exist yet: try again shortly.
      $('preview-state').textContent = `waiting for the stream (${data.details})`;
      const again = preview;
      setTimeout(() => { if (preview === again) startPreview(stream, taskId); }, 2000);
    });
    hls.loadSource(url);
    hls.attachMedia(video);
  } else if (video.canPlayType('application/vnd.apple.mpegurl')) {
    video.src = url;
  } else {
    $('preview-state').textContent = 'This browser cannot play HLS.';
    return;
  }
  video.play().catch(() => { /* muted autoplay may still wait for the media */ });
}

// An anchor as it is published, over WHEP (no transcoding of its video).
async function watchAnchor(room, anchor) {
  stopPreview();
  const key = `whep:${room.sdkappid}/${room.room}/${anchor}`;
  preview = key;
  $('preview-title').textContent = `Anchor ${anchor} in room ${room.room} (WHEP)`;
  $('preview-title').className = '';
  $('preview-state').textContent = 'connecting';
  try {
    const viewer = await call('POST', '/console/api/viewer', { sdkappid: Number(room.sdkappid) });
    const pc = new RTCPeerConnection();
    whep = { pc, location: null };
    const stream = new MediaStream();
    pc.ontrack = (e) => {
      stream.addTrack(e.track);
      $('preview').srcObject = stream;
      $('preview').play().catch(() => {});
    };
    pc.addTransceiver('video', { direction: 'recvonly' });
    pc.addTransceiver('audio', { direction: 'recvonly' });
    await pc.setLocalDescription(await pc.createOffer());
    // No trickle ICE: wait (briefly) for the candidates to be in the offer.
    await new Promise((done) => {
      if (pc.iceGatheringState === 'complete') return done();
      pc.addEventListener('icegatheringstatechange', () => { if (pc.iceGatheringState === 'complete') done(); });
      setTimeout(done, 2000);
    });
    const query = new URLSearchParams({ sdkappid: room.sdkappid, userid: viewer.userid, roomtype: room.roomtype });
    const r = await fetch(`/v1/whep/${encodeURIComponent(room.room)}/${encodeURIComponent(anchor)}?${query}`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/sdp', Authorization: `Bearer ${viewer.usersig}` },
      body: pc.localDescription.sdp,
    });
    const answer = await r.text();
    if (r.status !== 201) throw new Error(`WHEP ${r.status}: ${answer.trim()}`);
    if (preview !== key) { pc.close(); return; }
    whep.location = r.headers.get('Location');
    await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  } catch (e) {
    if (preview === key) $('preview-state').textContent = `cannot play: ${e.message}`;
  }
}

$('preview').addEventListener('timeupdate', () => {
  if (preview) $('preview-state').textContent = `playing ${$('preview').currentTime.toFixed(1)} s`;
});

// ---- start form ----

$('start-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const body = {
    sdkappid: Number($('start-app').value),
    room: $('start-room').value.trim(),
    roomtype: $('start-roomtype').value,
    profile: $('start-profile').value,
  };
  const user = $('start-user').value.trim();
  if (user) body.userid = user;
  act(`Started a ${body.profile} task in room ${body.room}`, async () => {
    const v = await call('POST', '/v1/tasks', body);
    return `Started task ${v.task_id}`;
  });
});

$('login-form').addEventListener('submit', login);
$('logout').addEventListener('click', logout);

// A page reloaded while logged in stays logged in.
(async () => {
  const r = await fetch('/console/api/session', { credentials: 'same-origin' }).catch(() => null);
  if (r && r.ok) loggedIn(await r.json());
  else loggedOut('');
})();
