//! Room signalling with a real WebSocket client against `roomcast serve`.
// These tests run outside the gateway, where tokio's timers are fine (the
// crate's own code makes timers through `ticks`: see clippy.toml).
#![allow(clippy::disallowed_methods)]

mod common;

use roomcast::unix_now;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use roomcast::auth::usersig::{self, PmkRoom, PrivateMapKey};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::Gateway;

const APP: u64 = 1_400_000_000;
const KEY: &str = "signalling-test-key";
const CONFIG: &str = r#"
[[apps]]
sdkappid = 1400000000
secret_key = "signalling-test-key"

[[api.credentials]]
secret_id = "AKIDtest"
secret_key = "apitest"
"#;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn url(gw: &Gateway, room: &str, user: &str, sig: &str, extra: &str) -> String {
    format!(
        "ws://127.0.0.1:{}/v1/rooms/{room}/ws?sdkappid={APP}&userid={user}&usersig={sig}{extra}",
        gw.http_port
    )
}

async fn connect(gw: &Gateway, room: &str, user: &str, extra: &str) -> (Ws, Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url(
        gw,
        room,
        user,
        &common::usersig(APP, KEY, user),
        extra,
    ))
    .await
    .unwrap_or_else(|e| panic!("{user}: {e}"));
    let welcome = next(&mut ws).await;
    assert_eq!(welcome["type"], "welcome", "{welcome}");
    (ws, welcome)
}

/// The status and body of a refused upgrade.
async fn refused(url: String) -> (u16, String) {
    match tokio_tungstenite::connect_async(url).await {
        Err(tungstenite::Error::Http(resp)) => (
            resp.status().as_u16(),
            String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned(),
        ),
        Err(e) => panic!("unexpected error {e}"),
        Ok(_) => panic!("upgrade accepted"),
    }
}

async fn next(ws: &mut Ws) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .expect("a message in time")
            .expect("socket open")
            .expect("no socket error");
        match msg {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Close(_) => return json!({"type": "closed"}),
            _ => continue,
        }
    }
}

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::Text(v.to_string().into())).await.unwrap();
}

fn names(welcome: &Value) -> Vec<&str> {
    welcome["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["userid"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn users_enter_switch_roles_leave_and_see_each_other() {
    let gw = Gateway::start(Some(CONFIG));

    let (mut alice, w) = connect(&gw, "1234", "alice", "&role=anchor").await;
    assert_eq!(w["owner"], "alice");
    assert_eq!(w["roomtype"], "int");
    assert_eq!(w["scene"], "live");
    assert_eq!(names(&w), ["alice"]);

    let (mut bob, w) = connect(&gw, "1234", "bob", "&role=audience").await;
    assert_eq!(names(&w), ["alice", "bob"]);
    assert_eq!(w["role"], "audience");
    assert_eq!(
        next(&mut alice).await,
        json!({"type": "user_entered", "userid": "bob", "role": "audience"})
    );

    send(
        &mut bob,
        json!({"type": "switch_role", "role": "anchor", "id": 7}),
    )
    .await;
    assert_eq!(next(&mut bob).await, json!({"type": "ok", "id": 7}));
    assert_eq!(
        next(&mut alice).await,
        json!({"type": "role_switched", "userid": "bob", "role": "anchor"})
    );
    assert_eq!(next(&mut bob).await["type"], "role_switched");

    // A dumb terminal: nobody is told, nobody sees it listed.
    let (mut bot, w) = connect(&gw, "1234", "relay-bot", "&role=audience&hidden=1").await;
    assert_eq!(names(&w), ["alice", "bob", "relay-bot"]);
    let (mut carol, w) = connect(&gw, "1234", "carol", "&role=audience").await;
    assert_eq!(names(&w), ["alice", "bob", "carol"]);
    assert_eq!(
        next(&mut alice).await["userid"],
        "carol",
        "no event about the bot before carol's"
    );
    assert_eq!(next(&mut bob).await["userid"], "carol");
    assert_eq!(
        next(&mut bot).await["userid"],
        "carol",
        "the bot itself hears others"
    );

    send(&mut carol, json!({"type": "ping", "id": 1})).await;
    assert_eq!(next(&mut carol).await, json!({"type": "pong", "id": 1}));
    send(&mut carol, json!({"type": "dance"})).await;
    assert_eq!(next(&mut carol).await["type"], "error");
    carol.send(Message::Text("{not json".into())).await.unwrap();
    assert_eq!(next(&mut carol).await["message"], "not JSON");

    send(&mut bot, json!({"type": "leave"})).await;
    assert_eq!(next(&mut bot).await["type"], "left");
    send(&mut bob, json!({"type": "leave"})).await;
    assert_eq!(next(&mut bob).await["type"], "left");
    // Alice hears bob leave, and never hears of the bot.
    let bob_left = json!({"type": "user_exited", "userid": "bob", "reason": "left"});
    assert_eq!(next(&mut alice).await, bob_left);
    assert_eq!(
        next(&mut carol).await,
        bob_left,
        "carol never hears of the bot either"
    );

    // Alice entering again replaces her older session.
    let (_alice2, w) = connect(&gw, "1234", "alice", "&role=anchor").await;
    assert_eq!(w["owner"], "alice");
    assert_eq!(
        next(&mut alice).await,
        json!({"type": "kicked", "reason": "replaced_by_new_session"})
    );

    // A socket dropped without leave is a disconnect (90 s grace): carol is
    // not told anything now; the gateway logs the drop.
    drop(_alice2);
    assert!(
        gw.wait_log("signalling socket dropped", Duration::from_secs(5)),
        "{}",
        gw.log_text()
    );
    send(&mut carol, json!({"type": "ping", "id": 2})).await;
    assert_eq!(next(&mut carol).await, json!({"type": "pong", "id": 2}));
}

#[tokio::test]
async fn refusals_before_upgrade_name_the_reason() {
    let gw = Gateway::start(Some(CONFIG));
    let wrong_key = usersig::generate(APP, "other-key", "alice", 3600, unix_now(), None);
    let cases = [
        (
            url(&gw, "1234", "alice", &wrong_key, ""),
            401,
            "bad signature",
        ),
        (
            url(&gw, "1234", "alice", &common::usersig(APP, KEY, "bob"), ""),
            401,
            "identifier mismatch",
        ),
        (
            url(
                &gw,
                "1234",
                "alice",
                &usersig::generate(APP, KEY, "alice", 10, unix_now() - 100, None),
                "",
            ),
            401,
            "expired",
        ),
        (url(&gw, "1234", "alice", "garbage", ""), 401, "malformed"),
        (
            format!(
                "ws://127.0.0.1:{}/v1/rooms/1/ws?sdkappid={APP}&userid=alice",
                gw.http_port
            ),
            401,
            "missing usersig",
        ),
        (
            format!(
                "ws://127.0.0.1:{}/v1/rooms/1/ws?sdkappid=999&userid=alice&usersig=x",
                gw.http_port
            ),
            401,
            "not configured",
        ),
        (
            url(
                &gw,
                "0",
                "alice",
                &common::usersig(APP, KEY, "alice"),
                "&roomtype=int",
            ),
            400,
            "numeric room id",
        ),
        (
            url(&gw, "a*b", "alice", &common::usersig(APP, KEY, "alice"), ""),
            400,
            "string room id contains",
        ),
        (
            url(
                &gw,
                "1",
                "al%20ice",
                &common::usersig(APP, KEY, "al ice"),
                "",
            ),
            400,
            "UserID contains",
        ),
        (
            url(
                &gw,
                "1",
                "alice",
                &common::usersig(APP, KEY, "alice"),
                "&role=king",
            ),
            400,
            "role must be",
        ),
        (
            url(
                &gw,
                "1",
                "alice",
                &common::usersig(APP, KEY, "alice"),
                "&scene=party",
            ),
            400,
            "scene must be",
        ),
    ];
    for (u, status, reason) in cases {
        let (got, body) = refused(u.clone()).await;
        assert_eq!(got, status, "{u}: {body}");
        assert!(body.contains(reason), "{u}: {body}");
    }
}

#[tokio::test]
async fn one_room_per_user_and_string_rooms_are_separate() {
    let gw = Gateway::start(Some(CONFIG));
    let (_a, w) = connect(&gw, "77", "alice", "").await;
    assert_eq!(w["roomtype"], "int");
    let (status, body) = refused(url(
        &gw,
        "78",
        "alice",
        &common::usersig(APP, KEY, "alice"),
        "",
    ))
    .await;
    assert_eq!(status, 409, "{body}");
    assert!(body.contains("already in room"), "{body}");
    // "77" as a string room is another room: bob is alone there.
    let (_b, w) = connect(&gw, "77", "bob", "&roomtype=str").await;
    assert_eq!(w["roomtype"], "str");
    assert_eq!(names(&w), ["bob"]);
}

#[tokio::test]
async fn private_map_key_limits_rooms_and_privileges() {
    let gw = Gateway::start(Some(CONFIG));
    let (_host, _) = connect(&gw, "555", "host", "").await;
    let ticket = |room: u32, privileges: u32| {
        let pmk = PrivateMapKey {
            account: "viewer".into(),
            sdkappid: APP as u32,
            room: PmkRoom::Numeric(room),
            expires_at: (unix_now() + 3600) as u32,
            privileges,
            account_type: 0,
        };
        usersig::generate(APP, KEY, "viewer", 3600, unix_now(), Some(&pmk.to_bytes()))
    };
    let (status, body) = refused(url(&gw, "556", "viewer", &ticket(556, 42), "")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("does not allow creating"), "{body}");
    let (status, body) = refused(url(&gw, "555", "viewer", &ticket(999, 255), "")).await;
    assert_eq!(status, 403);
    assert!(body.contains("another room"), "{body}");
    let (mut ws, _) = tokio_tungstenite::connect_async(url(
        &gw,
        "555",
        "viewer",
        &ticket(555, 42),
        "&role=audience",
    ))
    .await
    .unwrap();
    assert_eq!(next(&mut ws).await["type"], "welcome");
}

#[tokio::test]
async fn a_dropped_socket_is_removed_after_the_grace_period() {
    // The grace is TRTC's 90 s by default; one second here so the test is quick.
    let config = format!("{CONFIG}\n[limits]\ndisconnect_grace_secs = 1\n");
    let gw = Gateway::start(Some(&config));
    let (mut alice, _) = connect(&gw, "900", "alice", "").await;
    let (bob, _) = connect(&gw, "900", "bob", "").await;
    assert_eq!(next(&mut alice).await["type"], "user_entered");
    drop(bob); // TCP closed, no `leave`
    assert_eq!(
        next(&mut alice).await,
        json!({"type": "user_exited", "userid": "bob", "reason": "disconnect_timeout"})
    );
    // Back after removal: a fresh entry that everyone hears about.
    let (_bob, w) = connect(&gw, "900", "bob", "").await;
    assert_eq!(names(&w), ["alice", "bob"]);
    assert_eq!(next(&mut alice).await["type"], "user_entered");
}

#[tokio::test]
async fn a_socket_flooding_messages_is_closed_and_its_room_goes_on() {
    let config = format!("{CONFIG}\n[http]\nws_messages_per_sec = 5\n");
    let gw = Gateway::start(Some(&config));
    let (mut calm, _) = connect(&gw, "910", "calm", "").await;
    let (mut flood, _) = connect(&gw, "910", "flood", "").await;
    assert_eq!(next(&mut calm).await["type"], "user_entered");
    // Within the burst (twice the rate): every ping answered.
    for id in 0..10 {
        send(&mut flood, json!({"type": "ping", "id": id})).await;
        assert_eq!(next(&mut flood).await["id"], id);
    }
    // Past it, at once: closed with 1008 and the reason.
    let mut close = None;
    for id in 10..200 {
        if flood
            .send(Message::Text(
                json!({"type": "ping", "id": id}).to_string().into(),
            ))
            .await
            .is_err()
        {
            break;
        }
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while let Ok(Some(Ok(msg))) = tokio::time::timeout_at(deadline, flood.next()).await {
        if let Message::Close(frame) = msg {
            close = frame;
            break;
        }
    }
    let close = close.expect("a close frame");
    assert_eq!(u16::from(close.code), 1008);
    assert!(
        close.reason.contains("ws_messages_per_sec"),
        "{}",
        close.reason
    );
    assert!(gw.wait_log(
        "signalling socket closed: more than http.ws_messages_per_sec",
        Duration::from_secs(5)
    ));
    // The calm member hears nothing wrong and is still answered.
    send(&mut calm, json!({"type": "ping", "id": "still"})).await;
    assert_eq!(next(&mut calm).await["id"], "still");
    let (status, metrics) = common::http_get(gw.http_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics.contains(r#"roomcast_limit_refusals_total{edge="ws",limit="message_rate"} 1"#),
        "{}",
        metrics
            .lines()
            .filter(|l| l.contains("limit"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
