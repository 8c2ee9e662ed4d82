//! Property test: random command sequences never break the room invariants.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::*;

const APPS: [SdkAppId; 2] = [1, 2];
const USERS: [&str; 4] = ["ann", "bob", "cat", "bot"];
/// `bot` is always a dumb terminal, like a relay agent.
fn is_hidden(user: usize) -> bool {
    user == 3
}

#[derive(Debug, Clone)]
enum Op {
    Enter {
        app: usize,
        room: u32,
        user: usize,
        anchor: bool,
        scene: usize,
    },
    Leave(usize),
    Disconnect(usize),
    Switch(usize, bool),
    Publish(usize, bool),
    Unpublish(usize, bool),
    Remove {
        app: usize,
        room: u32,
        user: usize,
    },
    Dismiss {
        app: usize,
        room: u32,
    },
    Advance(u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..2usize, 1..4u32, 0..4usize, any::<bool>(), 0..4usize)
            .prop_map(|(app, room, user, anchor, scene)| Op::Enter { app, room, user, anchor, scene }),
        2 => (0..16usize).prop_map(Op::Leave),
        2 => (0..16usize).prop_map(Op::Disconnect),
        2 => (0..16usize, any::<bool>()).prop_map(|(s, a)| Op::Switch(s, a)),
        2 => (0..16usize, any::<bool>()).prop_map(|(s, v)| Op::Publish(s, v)),
        1 => (0..16usize, any::<bool>()).prop_map(|(s, v)| Op::Unpublish(s, v)),
        1 => (0..2usize, 1..4u32, 0..4usize).prop_map(|(app, room, user)| Op::Remove { app, room, user }),
        1 => (0..2usize, 1..4u32).prop_map(|(app, room)| Op::Dismiss { app, room }),
        2 => prop_oneof![Just(1u64), Just(30), Just(89), Just(90), Just(91), Just(600), Just(700)]
            .prop_map(Op::Advance),
    ]
}

const SCENES: [Scene; 4] = [
    Scene::VideoCall,
    Scene::AudioCall,
    Scene::Live,
    Scene::VoiceChatRoom,
];

fn kind(video: bool) -> TrackKind {
    if video {
        TrackKind::Video
    } else {
        TrackKind::Audio
    }
}

fn check_invariants(rooms: &Rooms, batch: &[RoomEvent], hidden: &HashSet<String>) {
    // A user is in at most one room of its application.
    let mut seen: HashMap<(SdkAppId, &UserId), &RoomKey> = HashMap::new();
    for (key, room) in &rooms.rooms {
        for user in room.members.keys() {
            if let Some(other) = seen.insert((key.app, user), key) {
                panic!("{user} is in {key} and {other}");
            }
            assert_eq!(
                rooms.user_room.get(&(key.app, user.clone())),
                Some(&key.room)
            );
        }
        // Every room has an owner while it has users.
        if !room.members.is_empty() {
            assert!(
                room.members.contains_key(&room.owner),
                "owner {} not in {key}",
                room.owner
            );
        } else {
            // An empty room exists only while a live-scene linger runs.
            assert!(
                rooms.timers.is_set(&Timer::AudienceLinger(key.clone())),
                "empty {key} without linger"
            );
        }
    }
    assert_eq!(rooms.user_room.len(), seen.len());
    assert_eq!(rooms.sessions.len(), seen.len());
    for (s, (key, user)) in &rooms.sessions {
        assert_eq!(rooms.rooms[key].members[user].session, *s);
    }
    // Closed rooms hold no users (and are gone) unless re-created later in the batch.
    for (i, ev) in batch.iter().enumerate() {
        if matches!(ev.kind, EventKind::RoomClosed { .. }) {
            let recreated = batch[i + 1..]
                .iter()
                .any(|e| e.room == ev.room && matches!(e.kind, EventKind::RoomCreated { .. }));
            if !recreated {
                assert!(
                    !rooms.rooms.contains_key(&ev.room),
                    "closed {} still exists",
                    ev.room
                );
            }
        }
        // No event mentions a hidden user to others.
        if ev.audience == Audience::Room
            && let Some(subject) = ev.subject()
        {
            assert!(
                !hidden.contains(subject.as_str()),
                "{ev:?} announces a hidden user"
            );
        }
        if let EventKind::Welcome { state } = &ev.kind {
            for m in &state.members {
                if hidden.contains(m.user.as_str()) {
                    let Audience::Session(to) = ev.audience else {
                        panic!()
                    };
                    let (_, me) = &rooms
                        .sessions
                        .get(&to)
                        .cloned()
                        .unwrap_or((ev.room.clone(), m.user.clone()));
                    assert_eq!(me, &m.user, "a hidden user listed to another");
                }
            }
        }
    }
    // No timer outlives every room.
    if rooms.rooms.is_empty() {
        assert_eq!(rooms.poll_timeout(), None);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]
    #[test]
    fn random_command_sequences_keep_invariants(ops in proptest::collection::vec(op(), 1..80)) {
        let mut rooms = Rooms::new(APPS, Limits { rooms_per_app: 3, users_per_room: 4, users_per_call_room: 3, anchors_per_room: 2, ..Limits::default() });
        let t0 = Instant::now();
        let mut t = 0u64;
        let mut sessions: Vec<SessionId> = Vec::new();
        let hidden: HashSet<String> = USERS.iter().enumerate().filter(|(i, _)| is_hidden(*i)).map(|(_, u)| u.to_string()).collect();
        let pick = |sessions: &Vec<SessionId>, i: usize| sessions.get(i % sessions.len().max(1)).copied().unwrap_or(SessionId(0));
        for op in ops {
            let now = t0 + Duration::from_secs(t);
            let cmd = match op {
                Op::Enter { app, room, user, anchor, scene } => {
                    let session = SessionId(sessions.len() as u64 + 1);
                    sessions.push(session);
                    Some(Command::Enter(Enter {
                        room: RoomKey { app: APPS[app], room: RoomId::Num(room) },
                        user: UserId::new(USERS[user]).unwrap(),
                        session,
                        role: if anchor { Role::Anchor } else { Role::Audience },
                        scene: SCENES[scene],
                        hidden: is_hidden(user),
                        grant: None,
                        unix_now: 0,
                    }))
                }
                Op::Leave(s) => Some(Command::Leave { session: pick(&sessions, s) }),
                Op::Disconnect(s) => Some(Command::Disconnect { session: pick(&sessions, s) }),
                Op::Switch(s, a) => Some(Command::SwitchRole { session: pick(&sessions, s), role: if a { Role::Anchor } else { Role::Audience } }),
                Op::Publish(s, v) => Some(Command::Publish { session: pick(&sessions, s), kind: kind(v) }),
                Op::Unpublish(s, v) => Some(Command::Unpublish { session: pick(&sessions, s), kind: kind(v) }),
                Op::Remove { app, room, user } => Some(Command::RemoveUser {
                    room: RoomKey { app: APPS[app], room: RoomId::Num(room) },
                    users: vec![UserId::new(USERS[user]).unwrap()],
                }),
                Op::Dismiss { app, room } => Some(Command::DismissRoom { room: RoomKey { app: APPS[app], room: RoomId::Num(room) } }),
                Op::Advance(d) => {
                    t += d;
                    rooms.handle_timeout(t0 + Duration::from_secs(t));
                    None
                }
            };
            if let Some(cmd) = cmd {
                let before = rooms.events.len();
                if rooms.handle(now, cmd).is_err() {
                    prop_assert_eq!(rooms.events.len(), before, "a refused command emitted events");
                }
            }
            let batch: Vec<RoomEvent> = std::iter::from_fn(|| rooms.poll_event()).collect();
            check_invariants(&rooms, &batch, &hidden);
        }
    }
}
