//! Scenario tests: one per room rule of CONCEPTS.md, on a manual clock.

use super::*;

const APP: SdkAppId = 1_400_000_000;
const OTHER_APP: SdkAppId = 1_400_000_001;

struct World {
    rooms: Rooms,
    t0: Instant,
    next: u64,
}

impl World {
    fn new() -> World {
        World::with_limits(Limits::default())
    }

    fn with_limits(limits: Limits) -> World {
        World {
            rooms: Rooms::new([APP, OTHER_APP], limits),
            t0: Instant::now(),
            next: 1,
        }
    }

    fn at(&self, secs: u64) -> Instant {
        self.t0 + Duration::from_secs(secs)
    }

    fn entry(&mut self, room: &RoomKey, user: &str, role: Role, scene: Scene) -> Enter {
        let session = SessionId(self.next);
        self.next += 1;
        Enter {
            room: room.clone(),
            user: UserId::new(user).unwrap(),
            session,
            role,
            scene,
            hidden: false,
            grant: None,
            unix_now: 1_700_000_000,
        }
    }

    /// Enters at time `t` and returns the session.
    fn enter(&mut self, t: u64, room: &RoomKey, user: &str, role: Role, scene: Scene) -> SessionId {
        let e = self.entry(room, user, role, scene);
        let s = e.session;
        self.rooms.handle(self.at(t), Command::Enter(e)).unwrap();
        s
    }

    fn do_(&mut self, t: u64, cmd: Command) -> Result<(), RoomError> {
        self.rooms.handle(self.at(t), cmd)
    }

    fn tick(&mut self, t: u64) {
        self.rooms.handle_timeout(self.at(t));
    }

    fn events(&mut self) -> Vec<RoomEvent> {
        std::iter::from_fn(|| self.rooms.poll_event()).collect()
    }

    fn kinds(&mut self) -> Vec<EventKind> {
        self.events().into_iter().map(|e| e.kind).collect()
    }
}

fn num(n: u32) -> RoomKey {
    RoomKey {
        app: APP,
        room: RoomId::Num(n),
    }
}

fn uid(s: &str) -> UserId {
    UserId::new(s).unwrap()
}

fn closed(kinds: &[EventKind]) -> Option<CloseReason> {
    kinds.iter().find_map(|k| match k {
        EventKind::RoomClosed { reason } => Some(*reason),
        _ => None,
    })
}

#[test]
fn default_timings_are_trtcs() {
    let l = Limits::default();
    assert_eq!((l.disconnect_grace_secs, l.audience_linger_secs), (90, 600));
}

#[test]
fn unknown_sdkappid_is_refused() {
    let mut w = World::new();
    let mut e = w.entry(&num(1), "a", Role::Anchor, Scene::Live);
    e.room.app = 42;
    assert_eq!(w.do_(0, Command::Enter(e)), Err(RoomError::UnknownApp(42)));
    assert_eq!(w.rooms.room_count(), 0);
    assert!(w.events().is_empty());
}

#[test]
fn entering_a_missing_room_creates_it_and_first_user_owns_it() {
    let mut w = World::new();
    let s = w.enter(0, &num(7), "alice", Role::Anchor, Scene::Live);
    let ev = w.events();
    assert!(
        matches!(&ev[0].kind, EventKind::RoomCreated { owner, scene: Scene::Live } if owner.as_str() == "alice")
    );
    assert!(
        matches!(&ev[1].kind, EventKind::UserEntered { user, role: Role::Anchor } if user.as_str() == "alice")
    );
    match &ev[2] {
        RoomEvent {
            audience: Audience::Session(to),
            kind: EventKind::Welcome { state },
            ..
        } => {
            assert_eq!(*to, s);
            assert_eq!(state.owner.as_str(), "alice");
            assert_eq!(state.members.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    w.enter(1, &num(7), "bob", Role::Audience, Scene::Live);
    let ev = w.events();
    match &ev.last().unwrap().kind {
        EventKind::Welcome { state } => {
            assert_eq!(state.owner.as_str(), "alice");
            let names: Vec<_> = state.members.iter().map(|m| m.user.as_str()).collect();
            assert_eq!(names, ["alice", "bob"]);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn numeric_and_string_rooms_with_same_digits_are_different() {
    let mut w = World::new();
    w.enter(0, &num(123), "a", Role::Anchor, Scene::Live);
    let str_room = RoomKey {
        app: APP,
        room: RoomId::Str("123".into()),
    };
    w.enter(0, &str_room, "b", Role::Anchor, Scene::Live);
    assert_eq!(w.rooms.room_count(), 2);
}

#[test]
fn applications_never_share_rooms_or_users() {
    let mut w = World::new();
    w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    let other = RoomKey {
        app: OTHER_APP,
        room: RoomId::Num(1),
    };
    // Same user id and room number in another app: a different user, a different room.
    w.enter(0, &other, "a", Role::Anchor, Scene::Live);
    assert_eq!(w.rooms.room_count(), 2);
}

#[test]
fn a_session_is_known_until_it_leaves_or_is_replaced() {
    let mut w = World::new();
    let a = w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    assert!(w.rooms.has_session(a));
    // The same user entering again replaces the session.
    let b = w.enter(1, &num(1), "a", Role::Anchor, Scene::Live);
    assert!(!w.rooms.has_session(a));
    assert!(w.rooms.has_session(b));
    w.do_(2, Command::Leave { session: b }).unwrap();
    assert!(!w.rooms.has_session(b));
    assert!(!w.rooms.has_session(SessionId(999)));
}

#[test]
fn a_user_is_in_one_room_at_a_time() {
    let mut w = World::new();
    w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    let e = w.entry(&num(2), "a", Role::Anchor, Scene::Live);
    assert_eq!(
        w.do_(1, Command::Enter(e)),
        Err(RoomError::InAnotherRoom(num(1)))
    );
    assert!(!w.rooms.room_exists(&num(2)));
}

#[test]
fn a_dropped_user_entering_another_room_leaves_the_old_one() {
    let mut w = World::new();
    let s1 = w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    w.do_(1, Command::Disconnect { session: s1 }).unwrap();
    w.events();
    w.enter(2, &num(2), "a", Role::Anchor, Scene::Live);
    let kinds = w.kinds();
    assert!(kinds.contains(&EventKind::UserExited {
        user: uid("a"),
        reason: ExitReason::MovedToAnotherRoom
    }));
    assert_eq!(closed(&kinds), Some(CloseReason::LastAnchorLeft));
    assert!(w.rooms.room_exists(&num(2)));
}

#[test]
fn same_user_again_replaces_the_older_session() {
    let mut w = World::new();
    let old = w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    w.enter(0, &num(1), "b", Role::Audience, Scene::Live);
    w.do_(
        0,
        Command::Publish {
            session: old,
            kind: TrackKind::Video,
        },
    )
    .unwrap();
    w.events();
    let new = w.enter(5, &num(1), "a", Role::Anchor, Scene::Live);
    let ev = w.events();
    assert!(ev.iter().any(|e| e.audience == Audience::Session(old)
        && matches!(e.kind, EventKind::SessionReplaced { .. })));
    assert!(ev.iter().any(|e| e.kind
        == EventKind::TrackUnpublished {
            user: uid("a"),
            kind: TrackKind::Video
        }));
    // Others are not told that a left and came back.
    assert!(!ev.iter().any(|e| matches!(
        e.kind,
        EventKind::UserExited { .. } | EventKind::UserEntered { .. }
    )));
    assert_eq!(
        w.do_(6, Command::Leave { session: old }),
        Err(RoomError::NoSuchSession)
    );
    w.do_(
        6,
        Command::Publish {
            session: new,
            kind: TrackKind::Audio,
        },
    )
    .unwrap();
}

#[test]
fn call_scene_closes_when_last_user_leaves_and_everyone_is_anchor() {
    let mut w = World::new();
    let a = w.enter(0, &num(1), "a", Role::Audience, Scene::VideoCall);
    let b = w.enter(0, &num(1), "b", Role::Audience, Scene::VideoCall);
    let kinds = w.kinds();
    assert!(kinds.contains(&EventKind::UserEntered {
        user: uid("b"),
        role: Role::Anchor
    }));
    assert_eq!(
        w.do_(
            1,
            Command::SwitchRole {
                session: a,
                role: Role::Audience
            }
        ),
        Err(RoomError::RoleFixedInCallScene)
    );
    w.do_(2, Command::Leave { session: a }).unwrap();
    assert!(w.rooms.room_exists(&num(1)));
    w.do_(3, Command::Leave { session: b }).unwrap();
    assert_eq!(closed(&w.kinds()), Some(CloseReason::Empty));
    assert!(!w.rooms.room_exists(&num(1)));
}

#[test]
fn live_scene_last_anchor_out_closes_now() {
    let mut w = World::new();
    let v = w.enter(0, &num(1), "viewer", Role::Audience, Scene::Live);
    let a = w.enter(0, &num(1), "host", Role::Anchor, Scene::Live);
    w.do_(1, Command::Leave { session: v }).unwrap();
    w.do_(2, Command::Leave { session: a }).unwrap();
    assert_eq!(closed(&w.kinds()), Some(CloseReason::LastAnchorLeft));
    assert_eq!(w.rooms.poll_timeout(), None);
}

#[test]
fn live_scene_last_audience_out_closes_after_ten_minutes() {
    let mut w = World::new();
    let a = w.enter(0, &num(1), "host", Role::Anchor, Scene::VoiceChatRoom);
    let v = w.enter(0, &num(1), "viewer", Role::Audience, Scene::VoiceChatRoom);
    w.do_(1, Command::Leave { session: a }).unwrap();
    w.do_(2, Command::Leave { session: v }).unwrap();
    assert!(w.rooms.room_exists(&num(1)));
    assert_eq!(w.rooms.poll_timeout(), Some(w.at(602)));
    w.tick(601);
    assert!(w.rooms.room_exists(&num(1)));
    w.tick(602);
    assert_eq!(closed(&w.kinds()), Some(CloseReason::IdleAfterAudience));
}

#[test]
fn live_scene_linger_is_cancelled_by_someone_entering() {
    let mut w = World::new();
    let v = w.enter(0, &num(1), "viewer", Role::Audience, Scene::Live);
    w.do_(1, Command::Leave { session: v }).unwrap();
    w.enter(300, &num(1), "late", Role::Audience, Scene::Live);
    w.tick(10_000);
    assert!(w.rooms.room_exists(&num(1)));
    assert_eq!(closed(&w.kinds()), None);
}

#[test]
fn audience_switches_to_anchor_and_back_and_stops_publishing() {
    let mut w = World::new();
    let s = w.enter(0, &num(1), "a", Role::Audience, Scene::Live);
    assert_eq!(
        w.do_(
            0,
            Command::Publish {
                session: s,
                kind: TrackKind::Audio
            }
        ),
        Err(RoomError::NotAnchor)
    );
    w.do_(
        1,
        Command::SwitchRole {
            session: s,
            role: Role::Anchor,
        },
    )
    .unwrap();
    w.do_(
        1,
        Command::Publish {
            session: s,
            kind: TrackKind::Audio,
        },
    )
    .unwrap();
    w.do_(
        1,
        Command::Publish {
            session: s,
            kind: TrackKind::Video,
        },
    )
    .unwrap();
    w.events();
    w.do_(
        2,
        Command::SwitchRole {
            session: s,
            role: Role::Audience,
        },
    )
    .unwrap();
    assert_eq!(
        w.kinds(),
        vec![
            EventKind::TrackUnpublished {
                user: uid("a"),
                kind: TrackKind::Audio
            },
            EventKind::TrackUnpublished {
                user: uid("a"),
                kind: TrackKind::Video
            },
            EventKind::RoleSwitched {
                user: uid("a"),
                role: Role::Audience
            },
        ]
    );
}

#[test]
fn a_dropped_user_is_removed_after_90_seconds() {
    let mut w = World::new();
    w.enter(0, &num(1), "stay", Role::Anchor, Scene::Live);
    let s = w.enter(0, &num(1), "drop", Role::Anchor, Scene::Live);
    w.do_(10, Command::Disconnect { session: s }).unwrap();
    w.events();
    w.tick(99);
    assert!(w.events().is_empty(), "still present during the grace");
    w.tick(100);
    assert_eq!(
        w.kinds(),
        vec![EventKind::UserExited {
            user: uid("drop"),
            reason: ExitReason::DisconnectTimeout
        }]
    );
}

#[test]
fn a_dropped_user_coming_back_in_time_stays() {
    let mut w = World::new();
    w.enter(0, &num(1), "stay", Role::Anchor, Scene::Live);
    let s = w.enter(0, &num(1), "drop", Role::Anchor, Scene::Live);
    w.do_(10, Command::Disconnect { session: s }).unwrap();
    w.enter(50, &num(1), "drop", Role::Anchor, Scene::Live);
    w.events();
    w.tick(1000);
    assert!(w.events().is_empty());
}

#[test]
fn everyone_disconnected_closes_the_room_90_seconds_later() {
    let mut w = World::new();
    let a = w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    let v = w.enter(0, &num(1), "v", Role::Audience, Scene::Live);
    w.do_(10, Command::Disconnect { session: a }).unwrap();
    w.do_(30, Command::Disconnect { session: v }).unwrap();
    w.tick(100); // a's grace
    assert!(w.rooms.room_exists(&num(1)));
    w.tick(120);
    assert_eq!(closed(&w.kinds()), Some(CloseReason::AllDisconnected));
    assert!(!w.rooms.room_exists(&num(1)));
    assert_eq!(w.rooms.poll_timeout(), None, "no timer outlives its room");
}

#[test]
fn hidden_users_are_never_announced_to_others() {
    let mut w = World::new();
    w.enter(0, &num(1), "host", Role::Anchor, Scene::Live);
    let mut e = w.entry(&num(1), "relay-bot", Role::Audience, Scene::Live);
    e.hidden = true;
    let bot = e.session;
    w.do_(1, Command::Enter(e)).unwrap();
    w.enter(2, &num(1), "viewer", Role::Audience, Scene::Live);
    w.do_(3, Command::Leave { session: bot }).unwrap();
    for ev in w.events() {
        let about_bot = ev.subject().is_some_and(|u| u.as_str() == "relay-bot");
        if about_bot {
            assert_ne!(ev.audience, Audience::Room, "{ev:?}");
        }
        if let EventKind::Welcome { state } = &ev.kind
            && ev.audience != Audience::Session(bot)
        {
            assert!(state.members.iter().all(|m| m.user.as_str() != "relay-bot"));
        }
    }
}

#[test]
fn hidden_anchor_tracks_still_reach_internal_consumers() {
    let mut w = World::new();
    let mut e = w.entry(&num(1), "ingest", Role::Anchor, Scene::Live);
    e.hidden = true;
    let s = e.session;
    w.do_(0, Command::Enter(e)).unwrap();
    w.events();
    w.do_(
        0,
        Command::Publish {
            session: s,
            kind: TrackKind::Video,
        },
    )
    .unwrap();
    let ev = w.events();
    assert_eq!(ev[0].audience, Audience::Internal);
    assert!(matches!(ev[0].kind, EventKind::TrackPublished { .. }));
}

fn grant(room: PmkRoom, privileges: u32, expires_at: u64) -> Option<Grant> {
    Some(Grant {
        room,
        expires_at,
        privileges,
    })
}

#[test]
fn private_map_key_limits_room_privileges_and_time() {
    let mut w = World::new();
    w.enter(0, &num(5), "host", Role::Anchor, Scene::Live);
    let try_enter = |w: &mut World, user: &str, g: Option<Grant>, room: RoomKey| {
        let mut e = w.entry(&room, user, Role::Anchor, Scene::Live);
        e.grant = g;
        let s = e.session;
        w.do_(1, Command::Enter(e)).map(|()| s)
    };
    let now = 1_700_000_000;
    assert_eq!(
        try_enter(
            &mut w,
            "u1",
            grant(PmkRoom::Numeric(6), 255, now + 60),
            num(5)
        ),
        Err(RoomError::Grant(GrantError::WrongRoom))
    );
    assert_eq!(
        try_enter(
            &mut w,
            "u1",
            grant(PmkRoom::Str("5".into()), 255, now + 60),
            num(5)
        ),
        Err(RoomError::Grant(GrantError::WrongRoom))
    );
    assert_eq!(
        try_enter(
            &mut w,
            "u1",
            grant(PmkRoom::Numeric(5), 255, now - 1),
            num(5)
        ),
        Err(RoomError::Grant(GrantError::Expired))
    );
    assert_eq!(
        try_enter(
            &mut w,
            "u1",
            grant(PmkRoom::Numeric(5), 1, now + 60),
            num(5)
        ),
        Err(RoomError::Grant(GrantError::NoEnter))
    );
    // 42 = enter + receive audio + receive video: may watch an existing room...
    let viewer = try_enter(
        &mut w,
        "u1",
        grant(PmkRoom::Numeric(5), 42, now + 60),
        num(5),
    )
    .unwrap();
    assert_eq!(
        w.do_(
            2,
            Command::Publish {
                session: viewer,
                kind: TrackKind::Audio
            }
        ),
        Err(RoomError::Grant(GrantError::NoSend("audio")))
    );
    // ...but not create one.
    assert_eq!(
        try_enter(
            &mut w,
            "u2",
            grant(PmkRoom::Numeric(9), 42, now + 60),
            num(9)
        ),
        Err(RoomError::Grant(GrantError::NoCreate))
    );
    // Audio-only publisher (enter + send audio).
    let talker = try_enter(
        &mut w,
        "u3",
        grant(PmkRoom::Numeric(5), 2 | 4, now + 60),
        num(5),
    )
    .unwrap();
    w.do_(
        2,
        Command::Publish {
            session: talker,
            kind: TrackKind::Audio,
        },
    )
    .unwrap();
    assert_eq!(
        w.do_(
            2,
            Command::Publish {
                session: talker,
                kind: TrackKind::Video
            }
        ),
        Err(RoomError::Grant(GrantError::NoSend("video")))
    );
}

#[test]
fn remove_user_and_dismiss_room() {
    let mut w = World::new();
    let a = w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    let b = w.enter(0, &num(1), "b", Role::Anchor, Scene::Live);
    let c = w.enter(0, &num(1), "c", Role::Audience, Scene::Live);
    w.events();
    w.do_(
        1,
        Command::RemoveUser {
            room: num(1),
            users: vec![uid("b"), uid("nobody")],
        },
    )
    .unwrap();
    let ev = w.events();
    assert!(ev.iter().any(|e| e.audience == Audience::Session(b)
        && e.kind
            == EventKind::SessionEnded {
                user: uid("b"),
                reason: ExitReason::Removed
            }));
    assert!(ev.iter().any(|e| e.kind
        == EventKind::UserExited {
            user: uid("b"),
            reason: ExitReason::Removed
        }));
    assert_eq!(
        w.do_(
            1,
            Command::RemoveUser {
                room: num(99),
                users: vec![uid("a")]
            }
        ),
        Err(RoomError::NoSuchRoom)
    );
    w.do_(2, Command::DismissRoom { room: num(1) }).unwrap();
    let ev = w.events();
    for s in [a, c] {
        assert!(ev.iter().any(|e| e.audience == Audience::Session(s)
            && matches!(
                e.kind,
                EventKind::SessionEnded {
                    reason: ExitReason::RoomDismissed,
                    ..
                }
            )));
    }
    assert_eq!(
        closed(&ev.into_iter().map(|e| e.kind).collect::<Vec<_>>()),
        Some(CloseReason::Dismissed)
    );
    assert_eq!(
        w.do_(3, Command::DismissRoom { room: num(1) }),
        Err(RoomError::NoSuchRoom)
    );
    assert_eq!(
        w.do_(3, Command::Leave { session: a }),
        Err(RoomError::NoSuchSession)
    );
}

#[test]
fn ownership_passes_to_the_earliest_remaining_user() {
    let mut w = World::new();
    let a = w.enter(0, &num(1), "a", Role::Anchor, Scene::Live);
    w.enter(1, &num(1), "b", Role::Audience, Scene::Live);
    w.enter(2, &num(1), "c", Role::Anchor, Scene::Live);
    w.events();
    w.do_(3, Command::Leave { session: a }).unwrap();
    assert!(
        w.kinds()
            .contains(&EventKind::OwnerChanged { owner: uid("b") })
    );
}

#[test]
fn limits_are_enforced() {
    let mut w = World::with_limits(Limits {
        rooms_per_app: 2,
        users_per_room: 3,
        users_per_call_room: 2,
        anchors_per_room: 1,
        ..Limits::default()
    });
    w.enter(0, &num(1), "a1", Role::Anchor, Scene::Live);
    let e = w.entry(&num(1), "a2", Role::Anchor, Scene::Live);
    assert_eq!(
        w.do_(0, Command::Enter(e)),
        Err(RoomError::TooManyAnchors(1))
    );
    let v = w.enter(0, &num(1), "v1", Role::Audience, Scene::Live);
    assert_eq!(
        w.do_(
            0,
            Command::SwitchRole {
                session: v,
                role: Role::Anchor
            }
        ),
        Err(RoomError::TooManyAnchors(1))
    );
    w.enter(0, &num(1), "v2", Role::Audience, Scene::Live);
    let e = w.entry(&num(1), "v3", Role::Audience, Scene::Live);
    assert_eq!(w.do_(0, Command::Enter(e)), Err(RoomError::RoomFull(3)));
    w.enter(0, &num(2), "x", Role::Anchor, Scene::Live);
    let e = w.entry(&num(3), "y", Role::Anchor, Scene::Live);
    assert_eq!(w.do_(0, Command::Enter(e)), Err(RoomError::TooManyRooms(2)));
}

#[test]
fn refused_commands_change_nothing() {
    let mut w = World::new();
    let s = w.enter(0, &num(1), "a", Role::Audience, Scene::Live);
    w.events();
    let timeout = w.rooms.poll_timeout();
    for cmd in [
        Command::Publish {
            session: s,
            kind: TrackKind::Audio,
        },
        Command::Leave {
            session: SessionId(999),
        },
        Command::DismissRoom { room: num(2) },
        Command::RemoveUser {
            room: RoomKey {
                app: 7,
                room: RoomId::Num(1),
            },
            users: vec![],
        },
    ] {
        assert!(w.do_(1, cmd).is_err());
    }
    assert!(w.events().is_empty());
    assert_eq!(w.rooms.poll_timeout(), timeout);
    assert_eq!(w.rooms.room_count(), 1);
}
