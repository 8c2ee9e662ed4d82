//! The server: binds the listeners, wires the pieces, owns shutdown.
//!
//! Starts the room engine task, the RTMP ingest and the HTTP listener, logs one line per
//! listener, and on SIGINT/SIGTERM stops accepting, lets in-flight requests
//! finish and returns.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::api::{self, AppState};
use crate::config::Config;
use crate::media::hub::MediaHub;
use crate::profile::RelayProfile;
use crate::relay::RelayManager;
use crate::room::{self, RoomHandle};
use crate::rtmp::ingest::Ingest;
use crate::rtmp::loops::Loops;
use crate::tls::ServerTls;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("cannot start the RTMP event loops (runtime.rtmp_threads): {0}")]
    Loops(std::io::Error),
    #[error("{0}")]
    Tls(String),
    #[error("{0}")]
    Cluster(String),
}

pub async fn run(config: Config, profiles: Vec<RelayProfile>) -> Result<(), ServerError> {
    let config = Arc::new(config);
    crate::rtmp::push::set_stall_timeout(config.rtmp.push_stall_timeout_secs);
    crate::tls::init(config.tls.ca_file.as_deref())
        .map_err(|e| ServerError::Tls(format!("tls.ca_file {e}")))?;
    let server_tls = match (&config.tls.cert, &config.tls.key) {
        (Some(cert), Some(key)) => Some(Arc::new(
            ServerTls::load(cert, key).map_err(ServerError::Tls)?,
        )),
        _ => None,
    };
    tracing::info!(
        profiles = profiles.len(),
        names = %profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
        "relay profiles loaded"
    );
    let (rooms, room_task) = room::spawn(&config);
    let cluster =
        crate::cluster::Cluster::start(&config, rooms.clone()).map_err(ServerError::Cluster)?;

    let http_addr = SocketAddr::new(config.http.bind, config.http.port);
    let listener = listen(http_addr).map_err(|source| ServerError::Bind {
        addr: http_addr,
        source,
    })?;
    let local = listener.local_addr().map_err(ServerError::Http)?;
    tracing::info!(addr = %local, "HTTP listening (API, signalling, health)");

    let hub = MediaHub::with_gop_cache(config.limits.gop_cache_bytes());
    // Uptime and CPU rates count from here.
    let _ = crate::metrics::uptime();
    let rtmp_addr = SocketAddr::new(config.rtmp.bind, config.rtmp.port);
    let rtmp_listener = listen(rtmp_addr).map_err(|source| ServerError::Bind {
        addr: rtmp_addr,
        source,
    })?;
    tracing::info!(
        addr = %rtmp_listener.local_addr().map_err(ServerError::Http)?,
        "RTMP listening (publish: rtmp://HOST/push/<RoomId>?sdkappid=&userid=&usersig=)"
    );
    // Stops the RTMP loops when the server returns.
    let (loops, _stop_loops) =
        Loops::start(config.runtime.rtmp_threads(), config.runtime.rtmp_batch())
            .map_err(ServerError::Loops)?;
    match loops.len() {
        0 => tracing::info!("RTMP connections share the runtime (runtime.rtmp_threads = 0)"),
        n => tracing::info!(
            loops = n,
            "RTMP connections run on {n} event loop(s) of their own"
        ),
    }
    let ingest = Ingest {
        config: config.clone(),
        rooms: rooms.clone(),
        hub: hub.clone(),
        loops: loops.clone(),
    };
    let mut ingests = vec![tokio::spawn(ingest.clone().serve(rtmp_listener, None))];
    if let (Some(port), Some(tls)) = (config.rtmp.tls_port, &server_tls) {
        let addr = SocketAddr::new(config.rtmp.bind, port);
        let l = listen(addr).map_err(|source| ServerError::Bind { addr, source })?;
        tracing::info!(
            addr = %l.local_addr().map_err(ServerError::Http)?,
            "RTMPS listening (publish: rtmps://HOST:PORT/push/<RoomId>?...)"
        );
        ingests.push(tokio::spawn(ingest.serve(l, Some(tls.clone()))));
    }
    let https_listener = match (config.http.tls_port, &server_tls) {
        (Some(port), Some(_)) => {
            let addr = SocketAddr::new(config.http.bind, port);
            let l = listen(addr).map_err(|source| ServerError::Bind { addr, source })?;
            tracing::info!(addr = %l.local_addr().map_err(ServerError::Http)?, "HTTPS listening");
            Some(l)
        }
        _ => None,
    };
    let reloads = server_tls
        .clone()
        .map(|t| tokio::spawn(reload_on_hangup(t)));

    let Parts {
        state,
        recording_events,
        uploads,
    } = assemble(&config, profiles.clone(), &rooms, &hub, &loops);
    let relays = state.relays.clone();
    if config.limits.cpu_calibrate {
        calibrate(relays.cost_scale().clone());
    }
    if let Some(c) = &cluster {
        let relays = relays.clone();
        c.set_load(move || {
            let (budget, budget_in_use) = relays.budget();
            crate::cluster::Load {
                tasks: relays.running() as u64,
                budget,
                budget_in_use,
            }
        });
        let store = state.hls_store.clone();
        c.set_streams(move || store.names());
    }
    let callbacks = crate::callback::spawn(
        config.clone(),
        &rooms,
        relays.clone(),
        recording_events.subscribe(),
    );
    // Before any task could write a recording again.
    crate::record::close_interrupted(&relays.record_root());
    let auto = relays.spawn_auto(profiles);
    uploads.resume_all();
    api::trtc::attach_cluster(&state);
    let app = api::router(state);
    // One shutdown signal for every listener.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    // What the allocator kept after a burst goes back to the kernel; what
    // the steady churn frees and takes again stays.
    let trims = tokio::spawn(async {
        let mut tick = crate::ticks::grid_interval(RELEASE_FREE_MEMORY_EVERY);
        let mut hand_back = crate::media::free_memory::HandBack::default();
        loop {
            tick.tick().await;
            let Some(free) = crate::media::free_memory() else {
                continue;
            };
            if !hand_back.due(free) {
                continue;
            }
            let started = std::time::Instant::now();
            let _ = tokio::task::spawn_blocking(crate::media::release_free_memory).await;
            tracing::debug!(
                free_mib = free >> 20,
                took_us = started.elapsed().as_micros() as u64,
                "free memory handed back"
            );
        }
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let plain = api::serve::serve(
        listener,
        app.clone(),
        &config.http,
        None,
        stopped(stop_rx.clone()),
    );
    match https_listener {
        Some(l) => {
            let tls = api::serve::serve(l, app, &config.http, server_tls, stopped(stop_rx));
            tokio::join!(plain, tls);
        }
        None => plain.await,
    }
    for i in ingests {
        i.abort();
    }
    trims.abort();
    if let Some(r) = reloads {
        r.abort();
    }
    if let Some(c) = callbacks {
        c.abort();
    }
    if let Some(a) = auto {
        a.abort();
    }
    relays.shutdown().await;
    if let Some(c) = &cluster {
        c.leave().await;
    }
    rooms.shutdown().await;
    let _ = room_task.await;
    tracing::info!("stopped");
    Ok(())
}

/// The gateway above its listeners: what `run` serves, and what the fuzz
/// harness drives in memory.
pub(crate) struct Parts {
    pub state: AppState,
    pub recording_events: crate::record::RecordingEvents,
    pub uploads: crate::record::uploader::Uploads,
}

/// Times the codecs on a thread of its own ([`crate::mix::probe`]) and
/// sets what tasks' codec work is charged by; until it is done (about a
/// tenth of a second of CPU), tasks are charged the reference machine's
/// costs.
fn calibrate(scale: Arc<crate::capacity::Scale>) {
    let spawned = std::thread::Builder::new()
        .name(crate::mix::PROBE_THREAD.into())
        .spawn(move || match crate::mix::probe::run() {
            Ok(probe) => {
                let s = crate::capacity::cost_scale(probe.per_picture);
                scale.set(s);
                tracing::info!(
                    picture_us = probe.per_picture.as_micros() as u64,
                    coded_bytes = probe.bytes,
                    "codecs timed: relay tasks' codec work is charged {s:.2}x the reference machine's (limits.cpu_calibrate)"
                );
            }
            Err(e) => tracing::warn!(
                "codec probe failed, relay tasks are charged the reference machine's costs: {e}"
            ),
        });
    if let Err(e) = spawned {
        tracing::warn!(
            "codec probe not started, relay tasks are charged the reference machine's costs: {e}"
        );
    }
}

/// Wires relays, HLS, recordings and the handlers' state around `rooms`
/// and `hub`. Starts nothing that listens.
pub(crate) fn assemble(
    config: &Arc<Config>,
    profiles: Vec<RelayProfile>,
    rooms: &RoomHandle,
    hub: &MediaHub,
    loops: &Loops,
) -> Parts {
    let hls_root = config.data_dir.join("hls");
    let hls_store = crate::hls::store::HlsStore::default();
    let relays = RelayManager::new(
        rooms.clone(),
        hub.clone(),
        hls_root,
        hls_store.clone(),
        config.limits.cpu_budget(),
    )
    .with_tasks_per_app(config.limits.tasks_per_app)
    .with_loops(loops.clone());
    let (recording_events, _) = tokio::sync::broadcast::channel(256);
    let uploads = crate::record::uploader::Uploads::new(
        &config.data_dir,
        config.storage.clone(),
        recording_events.clone(),
    );
    let state = AppState {
        config: config.clone(),
        rooms: rooms.clone(),
        relays: relays.clone(),
        profiles: Arc::new(profiles),
        hls_store,
        webrtc: crate::webrtc::WebRtc::new(config.clone(), rooms.clone(), hub.clone()),
        pulls: crate::pull::PullManager::new(rooms.clone(), hub.clone()),
        recordings: crate::record::tasks::Recordings::new(
            relays,
            hub.clone(),
            uploads.clone(),
            recording_events.clone(),
        ),
        hub: hub.clone(),
        sessions: Default::default(),
        login_throttle: Default::default(),
    };
    Parts {
        state,
        recording_events,
        uploads,
    }
}

/// How often the free memory the allocator keeps is looked at, and handed
/// back to the kernel if a burst left it ([`crate::media::free_memory`]).
const RELEASE_FREE_MEMORY_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Connections waiting to be accepted, per listener (the kernel caps it at
/// `net.core.somaxconn`, 4096 by default). Two thousand players asking for
/// the next LL-HLS part at once overflowed the 1,024 a plain bind asks
/// for; each connection dropped so waits for its SYN to be sent again, 1 s
/// later, then 2 s after that.
const LISTEN_BACKLOG: u32 = 4096;

/// A listener on `addr` (with `SO_REUSEADDR`, as a plain bind sets it).
fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// Re-reads the listeners' certificate on every SIGHUP; a bad one is
/// logged and the one in use kept.
async fn reload_on_hangup(tls: Arc<ServerTls>) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGHUP handler: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        match tls.reload() {
            Ok(()) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Err(e) => {
                tracing::error!("SIGHUP: TLS certificate not reloaded, keeping the old one: {e}")
            }
        }
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install SIGTERM handler: {e}");
            return std::future::pending().await;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
    }
}
