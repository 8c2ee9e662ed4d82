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
use crate::room;
use crate::rtmp::ingest::Ingest;

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("HTTP server: {0}")]
    Http(std::io::Error),
    #[error("tls.ca_file: {0}")]
    Tls(String),
}

pub async fn run(config: Config, profiles: Vec<RelayProfile>) -> Result<(), ServerError> {
    let config = Arc::new(config);
    crate::tls::init(config.tls.ca_file.as_deref()).map_err(ServerError::Tls)?;
    tracing::info!(
        profiles = profiles.len(),
        names = %profiles.iter().map(|p| p.name.as_str()).collect::<Vec<_>>().join(","),
        "relay profiles loaded"
    );
    let (rooms, room_task) = room::spawn(&config);

    let http_addr = SocketAddr::new(config.http.bind, config.http.port);
    let listener = TcpListener::bind(http_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: http_addr,
            source,
        })?;
    let local = listener.local_addr().map_err(ServerError::Http)?;
    tracing::info!(addr = %local, "HTTP listening (API, signalling, health)");

    let hub = MediaHub::default();
    // Uptime and CPU rates count from here.
    let _ = crate::metrics::uptime();
    let rtmp_addr = SocketAddr::new(config.rtmp.bind, config.rtmp.port);
    let rtmp_listener = TcpListener::bind(rtmp_addr)
        .await
        .map_err(|source| ServerError::Bind {
            addr: rtmp_addr,
            source,
        })?;
    tracing::info!(
        addr = %rtmp_listener.local_addr().map_err(ServerError::Http)?,
        "RTMP listening (publish: rtmp://HOST/push/<RoomId>?sdkappid=&userid=&usersig=)"
    );
    let ingest = tokio::spawn(
        Ingest {
            config: config.clone(),
            rooms: rooms.clone(),
            hub: hub.clone(),
        }
        .serve(rtmp_listener),
    );

    let hls_root = config.data_dir.join("hls");
    let relays = RelayManager::new(
        rooms.clone(),
        hub.clone(),
        hls_root.clone(),
        config.limits.cpu_budget(),
    );
    let callbacks = crate::callback::spawn(config.clone(), &rooms, relays.clone());
    let auto = relays.spawn_auto(profiles.clone());
    let app = api::router(AppState {
        config: config.clone(),
        rooms: rooms.clone(),
        relays: relays.clone(),
        profiles: Arc::new(profiles),
        hls_root,
        webrtc: crate::webrtc::WebRtc::new(config.clone(), rooms.clone(), hub.clone()),
        pulls: crate::pull::PullManager::new(rooms.clone(), hub.clone()),
        recordings: crate::record::tasks::Recordings::new(relays.clone(), hub.clone()),
        hub: hub.clone(),
        sessions: Default::default(),
    });
    api::serve::serve(listener, app, &config.http, shutdown_signal()).await;
    ingest.abort();
    if let Some(c) = callbacks {
        c.abort();
    }
    if let Some(a) = auto {
        a.abort();
    }
    relays.shutdown().await;
    rooms.shutdown().await;
    let _ = room_task.await;
    tracing::info!("stopped");
    Ok(())
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
