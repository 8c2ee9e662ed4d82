//! `GET /metrics`: the Prometheus exposition. Loopback callers may always
//! read it; others need `Authorization: Bearer <api.metrics_token>`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use super::AppState;
use crate::metrics::{Scrape, TargetLabel, TaskLabel};
use crate::relay::TaskState;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Loopback, or the configured bearer token.
fn allowed(token: Option<&str>, peer: SocketAddr, headers: &HeaderMap) -> bool {
    if peer.ip().is_loopback() {
        return true;
    }
    let Some(token) = token else {
        return false;
    };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    given.is_some_and(|g| crate::auth::tc3::constant_time_eq(g.as_bytes(), token.as_bytes()))
}

pub(crate) async fn get(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Response {
    if !allowed(state.config.api.metrics_token.as_deref(), peer, &headers) {
        tracing::debug!(%peer, "metrics refused: not loopback and no valid token");
        return (
            StatusCode::FORBIDDEN,
            "metrics answer loopback callers, or a bearer token (api.metrics_token)\n",
        )
            .into_response();
    }
    let scrape = collect(&state).await;
    match crate::metrics::encode(scrape) {
        Ok(text) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], text).into_response(),
        Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "metrics could not be encoded\n",
        )
            .into_response(),
    }
}

/// What the state owners say right now.
async fn collect(state: &AppState) -> Scrape {
    let mut scrape = Scrape {
        rooms: state.rooms.stats().await,
        budget: state.relays.budget(),
        cost_scale: state.relays.cost_scale().get().0,
        rtmp_loops: state.relays.loop_loads(),
        cluster: state.rooms.cluster().map(|c| {
            (
                c.node_id().to_string(),
                c.redis_up(),
                c.leases_held() as u64,
            )
        }),
        ..Scrape::default()
    };
    let mut count_task = |app: u64, kind: &'static str, st: &'static str| {
        let label = TaskLabel {
            sdkappid: app,
            kind,
            state: st,
        };
        match scrape.tasks.iter_mut().find(|(l, _)| *l == label) {
            Some((_, n)) => *n += 1,
            None => scrape.tasks.push((label, 1)),
        }
    };
    let relays = state.relays.list();
    for (spec, st) in &relays {
        // Ended tasks stay listed until the next start; they are not counted.
        if matches!(st.state, TaskState::Stopped(_)) {
            continue;
        }
        let kind = if spec.mix().is_some() {
            "mix"
        } else {
            "passthrough"
        };
        count_task(spec.room.app, kind, st.state.as_str());
        for (_, target, _) in &st.targets {
            let label = TargetLabel {
                sdkappid: spec.room.app,
                state: target.as_str(),
            };
            match scrape.targets.iter_mut().find(|(l, _)| *l == label) {
                Some((_, n)) => *n += 1,
                None => scrape.targets.push((label, 1)),
            }
        }
    }
    for app in state.recordings.running_apps() {
        count_task(app, "record", "running");
    }
    for app in state.pulls.running_apps() {
        count_task(app, "ingest", "running");
    }
    scrape
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_or_the_token_and_nothing_else() {
        let lan: SocketAddr = "10.0.0.7:5000".parse().unwrap();
        let lo: SocketAddr = "127.0.0.1:5000".parse().unwrap();
        let lo6: SocketAddr = "[::1]:5000".parse().unwrap();
        let bearer = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, v.parse().unwrap());
            h
        };
        let none = HeaderMap::new();
        let token = Some("0123456789abcdef");
        assert!(allowed(None, lo, &none) && allowed(None, lo6, &none));
        assert!(!allowed(None, lan, &bearer("Bearer 0123456789abcdef")));
        assert!(allowed(token, lan, &bearer("Bearer 0123456789abcdef")));
        assert!(!allowed(token, lan, &none));
        assert!(!allowed(token, lan, &bearer("Bearer 0123456789abcdeF")));
        assert!(!allowed(token, lan, &bearer("Bearer 0123456789abcde")));
        assert!(!allowed(token, lan, &bearer("Basic 0123456789abcdef")));
    }
}
