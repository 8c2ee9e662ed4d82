//! The room engine: every application's rooms as one sans-IO state machine.
//!
//! `handle(now, command)` applies a command or refuses it with a `RoomError`
//! that changes nothing; `handle_timeout(now)` fires due timers (disconnect
//! grace, the live-scene linger, all-disconnected close); `poll_event()`
//! drains what happened; `poll_timeout()` says when to call again. No tokio,
//! no sockets, no clock reads: `now` is always an argument, so tests advance
//! a manual clock instead of sleeping.

use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::time::{Duration, Instant};

use super::event::*;
use super::ids::{RoomId, RoomKey, SdkAppId, SessionId, UserId};
use super::timer::TimerTable;
use crate::auth::usersig::{PmkRoom, privilege};
use crate::config::Limits;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum RoomError {
    #[error("SDKAppID {0} is not configured")]
    UnknownApp(SdkAppId),
    #[error("no such room")]
    NoSuchRoom,
    #[error("no such session")]
    NoSuchSession,
    #[error("session id already in use")]
    SessionInUse,
    #[error("user is already in room {0}; leave it first")]
    InAnotherRoom(RoomKey),
    #[error("the application has {0} rooms open, its limit")]
    TooManyRooms(u32),
    #[error("the room has {0} users, its limit")]
    RoomFull(u32),
    #[error("the room has {0} anchors, its limit")]
    TooManyAnchors(u32),
    #[error("only anchors may publish; switch role first")]
    NotAnchor,
    #[error("in a call scene everyone is an anchor; roles cannot be switched")]
    RoleFixedInCallScene,
    #[error("PrivateMapKey: {0}")]
    Grant(GrantError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub(crate) enum GrantError {
    #[error("the ticket is for another room")]
    WrongRoom,
    #[error("the ticket has expired")]
    Expired,
    #[error("the ticket does not allow entering the room")]
    NoEnter,
    #[error("the ticket does not allow creating the room")]
    NoCreate,
    #[error("the ticket does not allow sending {0}")]
    NoSend(&'static str),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Timer {
    // Declared first so that at equal deadlines it fires before the last grace.
    AllDisconnected(RoomKey),
    Grace(RoomKey, UserId),
    AudienceLinger(RoomKey),
}

#[derive(Debug)]
struct Member {
    session: SessionId,
    role: Role,
    hidden: bool,
    connected: bool,
    tracks: BTreeSet<TrackKind>,
    /// Entry order within the room.
    seq: u64,
    /// PrivateMapKey privileges, when the user's sig carried one.
    privileges: Option<u32>,
}

#[derive(Debug)]
struct Room {
    scene: Scene,
    owner: UserId,
    members: HashMap<UserId, Member>,
    next_seq: u64,
}

impl Room {
    fn anchors(&self) -> u32 {
        self.members
            .values()
            .filter(|m| m.role == Role::Anchor)
            .count() as u32
    }

    fn in_entry_order(&self) -> Vec<(&UserId, &Member)> {
        let mut v: Vec<_> = self.members.iter().collect();
        v.sort_by_key(|(_, m)| m.seq);
        v
    }
}

/// A room as the status API shows it.
#[derive(Debug, Clone)]
pub(crate) struct RoomView {
    pub room: RoomKey,
    pub scene: Scene,
    pub owner: UserId,
    pub members: Vec<MemberView>,
}

#[derive(Debug, Clone)]
pub(crate) struct MemberView {
    pub user: UserId,
    pub role: Role,
    pub hidden: bool,
    pub connected: bool,
    pub tracks: Vec<TrackKind>,
}

/// All rooms of all applications.
#[derive(Debug)]
pub(crate) struct Rooms {
    apps: HashSet<SdkAppId>,
    limits: Limits,
    rooms: HashMap<RoomKey, Room>,
    /// One room per user: (app, user) → room.
    user_room: HashMap<(SdkAppId, UserId), RoomId>,
    sessions: HashMap<SessionId, (RoomKey, UserId)>,
    timers: TimerTable<Timer>,
    events: VecDeque<RoomEvent>,
}

impl Rooms {
    pub(crate) fn new(apps: impl IntoIterator<Item = SdkAppId>, limits: Limits) -> Rooms {
        Rooms {
            apps: apps.into_iter().collect(),
            limits,
            rooms: HashMap::new(),
            user_room: HashMap::new(),
            sessions: HashMap::new(),
            timers: TimerTable::default(),
            events: VecDeque::new(),
        }
    }

    pub(crate) fn poll_event(&mut self) -> Option<RoomEvent> {
        self.events.pop_front()
    }

    pub(crate) fn poll_timeout(&self) -> Option<Instant> {
        self.timers.next_deadline()
    }

    /// Whether a connection's session is still in a room (entered, not
    /// replaced, removed or gone): what a subscriber that missed events asks.
    pub(crate) fn has_session(&self, session: SessionId) -> bool {
        self.sessions.contains_key(&session)
    }

    /// Every room with its members in entry order (the status API).
    /// Every open room's key.
    pub(crate) fn room_keys(&self) -> Vec<RoomKey> {
        self.rooms.keys().cloned().collect()
    }

    pub(crate) fn snapshot(&self) -> Vec<RoomView> {
        let mut v: Vec<RoomView> = self
            .rooms
            .iter()
            .map(|(key, room)| RoomView {
                room: key.clone(),
                scene: room.scene,
                owner: room.owner.clone(),
                members: room
                    .in_entry_order()
                    .into_iter()
                    .map(|(user, m)| MemberView {
                        user: user.clone(),
                        role: m.role,
                        hidden: m.hidden,
                        connected: m.connected,
                        tracks: m.tracks.iter().copied().collect(),
                    })
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| {
            (a.room.app, a.room.room.to_string()).cmp(&(b.room.app, b.room.room.to_string()))
        });
        v
    }

    /// Per application: rooms open, anchors and audience in them (hidden
    /// users included: they hold resources too).
    pub(crate) fn stats(&self) -> Vec<(SdkAppId, u64, u64, u64)> {
        let mut by_app: std::collections::BTreeMap<SdkAppId, (u64, u64, u64)> =
            self.apps.iter().map(|a| (*a, (0, 0, 0))).collect();
        for (key, room) in &self.rooms {
            let e = by_app.entry(key.app).or_default();
            e.0 += 1;
            for m in room.members.values() {
                match m.role {
                    Role::Anchor => e.1 += 1,
                    Role::Audience => e.2 += 1,
                }
            }
        }
        by_app
            .into_iter()
            .map(|(app, (r, a, u))| (app, r, a, u))
            .collect()
    }

    /// Every visible user with a published track, by room: what a
    /// subscriber that missed `TrackPublished` events resynchronises from.
    pub(crate) fn visible_publishers(&self) -> Vec<(RoomKey, UserId)> {
        let mut v: Vec<(RoomKey, UserId)> = Vec::new();
        for (key, room) in &self.rooms {
            for (user, m) in room.in_entry_order() {
                if !m.hidden && !m.tracks.is_empty() {
                    v.push((key.clone(), user.clone()));
                }
            }
        }
        v
    }

    #[cfg(test)]
    pub(crate) fn room_exists(&self, key: &RoomKey) -> bool {
        self.rooms.contains_key(key)
    }

    pub(crate) fn room_count(&self) -> usize {
        self.rooms.len()
    }

    pub(crate) fn handle(&mut self, now: Instant, cmd: Command) -> Result<(), RoomError> {
        match cmd {
            Command::Enter(e) => self.enter(now, e),
            Command::Leave { session } => {
                let (key, user) = self.session(session)?;
                let role = self.remove_member(&key, &user, ExitReason::Left);
                self.after_departure(now, &key, role);
                Ok(())
            }
            Command::Disconnect { session } => self.disconnect(now, session),
            Command::SwitchRole { session, role } => self.switch_role(session, role),
            Command::Publish { session, kind } => self.publish(session, kind),
            Command::Unpublish { session, kind } => {
                let (key, user) = self.session(session)?;
                let member = self.member_mut(&key, &user);
                if member.tracks.remove(&kind) {
                    let hidden = member.hidden;
                    self.emit(&key, hidden, EventKind::TrackUnpublished { user, kind });
                }
                Ok(())
            }
            Command::RemoveUser { room, users } => {
                self.check_app(room.app)?;
                if !self.rooms.contains_key(&room) {
                    return Err(RoomError::NoSuchRoom);
                }
                for user in users {
                    if self.rooms[&room].members.contains_key(&user) {
                        self.end_session(&room, &user, ExitReason::Removed);
                        let role = self.remove_member(&room, &user, ExitReason::Removed);
                        self.after_departure(now, &room, role);
                        if !self.rooms.contains_key(&room) {
                            break;
                        }
                    }
                }
                Ok(())
            }
            Command::DismissRoom { room } => {
                self.check_app(room.app)?;
                if !self.rooms.contains_key(&room) {
                    return Err(RoomError::NoSuchRoom);
                }
                self.close(&room, CloseReason::Dismissed);
                Ok(())
            }
        }
    }

    pub(crate) fn handle_timeout(&mut self, now: Instant) {
        while let Some(timer) = self.timers.pop_due(now) {
            match timer {
                Timer::Grace(key, user) => {
                    let dropped = self
                        .rooms
                        .get(&key)
                        .and_then(|r| r.members.get(&user))
                        .is_some_and(|m| !m.connected);
                    if dropped {
                        let role = self.remove_member(&key, &user, ExitReason::DisconnectTimeout);
                        self.after_departure(now, &key, role);
                    }
                }
                Timer::AudienceLinger(key) => {
                    if self.rooms.get(&key).is_some_and(|r| r.members.is_empty()) {
                        self.close(&key, CloseReason::IdleAfterAudience);
                    }
                }
                Timer::AllDisconnected(key) => {
                    let all_gone = self
                        .rooms
                        .get(&key)
                        .is_some_and(|r| r.members.values().all(|m| !m.connected));
                    if all_gone {
                        self.close(&key, CloseReason::AllDisconnected);
                    }
                }
            }
        }
    }

    // -- commands -----------------------------------------------------------

    fn enter(&mut self, now: Instant, e: Enter) -> Result<(), RoomError> {
        self.check_app(e.room.app)?;
        if self.sessions.contains_key(&e.session) {
            return Err(RoomError::SessionInUse);
        }
        let exists = self.rooms.contains_key(&e.room);
        if let Some(g) = &e.grant {
            check_grant(g, &e.room.room, e.unix_now, exists)?;
        }
        let scene = self.rooms.get(&e.room).map_or(e.scene, |r| r.scene);
        let role = if scene.is_call() {
            Role::Anchor
        } else {
            e.role
        };

        let re_entry = self
            .rooms
            .get(&e.room)
            .is_some_and(|r| r.members.contains_key(&e.user));
        if !re_entry {
            // Checked before anything moves, so a refusal changes nothing.
            self.check_admission(&e, role, scene)?;
        }

        // One room per user.
        if let Some(other) = self.user_room.get(&(e.room.app, e.user.clone())).cloned()
            && other != e.room.room
        {
            let other_key = RoomKey {
                app: e.room.app,
                room: other,
            };
            if self.rooms[&other_key].members[&e.user].connected {
                return Err(RoomError::InAnotherRoom(other_key));
            }
            self.end_session(&other_key, &e.user, ExitReason::MovedToAnotherRoom);
            let role = self.remove_member(&other_key, &e.user, ExitReason::MovedToAnotherRoom);
            self.after_departure(now, &other_key, role);
        }

        if re_entry {
            self.replace_session(&e, role)?;
        } else {
            self.admit(&e, role, scene);
        }
        self.timers.cancel(&Timer::AudienceLinger(e.room.clone()));
        self.timers.cancel(&Timer::AllDisconnected(e.room.clone()));
        let state = self.state_for(&e.room, &e.user);
        self.events.push_back(RoomEvent {
            room: e.room.clone(),
            audience: Audience::Session(e.session),
            kind: EventKind::Welcome { state },
        });
        Ok(())
    }

    /// Whether a new member fits: rooms per app, users and anchors per room.
    fn check_admission(&self, e: &Enter, role: Role, scene: Scene) -> Result<(), RoomError> {
        let users_limit = if scene.is_call() {
            self.limits.users_per_call_room
        } else {
            self.limits.users_per_room
        };
        match self.rooms.get(&e.room) {
            None => {
                let open = self.rooms.keys().filter(|k| k.app == e.room.app).count() as u32;
                if open >= self.limits.rooms_per_app {
                    return Err(RoomError::TooManyRooms(self.limits.rooms_per_app));
                }
            }
            Some(r) => {
                if r.members.len() as u32 >= users_limit {
                    return Err(RoomError::RoomFull(users_limit));
                }
                if role == Role::Anchor && r.anchors() >= self.limits.anchors_per_room {
                    return Err(RoomError::TooManyAnchors(self.limits.anchors_per_room));
                }
            }
        }
        Ok(())
    }

    /// A new member; creates the room if needed. Admission was checked.
    fn admit(&mut self, e: &Enter, role: Role, scene: Scene) {
        if !self.rooms.contains_key(&e.room) {
            self.rooms.insert(
                e.room.clone(),
                Room {
                    scene,
                    owner: e.user.clone(),
                    members: HashMap::new(),
                    next_seq: 0,
                },
            );
            self.emit(
                &e.room,
                e.hidden,
                EventKind::RoomCreated {
                    owner: e.user.clone(),
                    scene,
                },
            );
        }
        let room = self.rooms.get_mut(&e.room).expect("just ensured");
        // A lingering empty room: its first new user owns it.
        let takes_ownership = room.members.is_empty() && room.owner != e.user;
        if takes_ownership {
            room.owner = e.user.clone();
        }
        let seq = room.next_seq;
        room.next_seq += 1;
        room.members.insert(
            e.user.clone(),
            Member {
                session: e.session,
                role,
                hidden: e.hidden,
                connected: true,
                tracks: BTreeSet::new(),
                seq,
                privileges: e.grant.as_ref().map(|g| g.privileges),
            },
        );
        self.sessions
            .insert(e.session, (e.room.clone(), e.user.clone()));
        self.user_room
            .insert((e.room.app, e.user.clone()), e.room.room.clone());
        self.emit(
            &e.room,
            e.hidden,
            EventKind::UserEntered {
                user: e.user.clone(),
                role,
            },
        );
        if takes_ownership {
            self.emit(
                &e.room,
                e.hidden,
                EventKind::OwnerChanged {
                    owner: e.user.clone(),
                },
            );
        }
    }

    /// The same user entering the same room again: the newer session wins.
    fn replace_session(&mut self, e: &Enter, role: Role) -> Result<(), RoomError> {
        let room = &self.rooms[&e.room];
        let old = &room.members[&e.user];
        if role == Role::Anchor
            && old.role != Role::Anchor
            && room.anchors() >= self.limits.anchors_per_room
        {
            return Err(RoomError::TooManyAnchors(self.limits.anchors_per_room));
        }
        let old_session = old.session;
        self.events.push_back(RoomEvent {
            room: e.room.clone(),
            audience: Audience::Session(old_session),
            kind: EventKind::SessionReplaced {
                user: e.user.clone(),
            },
        });
        self.sessions.remove(&old_session);
        self.sessions
            .insert(e.session, (e.room.clone(), e.user.clone()));
        self.timers
            .cancel(&Timer::Grace(e.room.clone(), e.user.clone()));
        // The old connection's tracks end with it.
        self.unpublish_all(&e.room, &e.user);
        let member = self.member_mut(&e.room, &e.user);
        let was_hidden = member.hidden;
        let old_role = member.role;
        member.session = e.session;
        member.connected = true;
        member.hidden = e.hidden;
        member.role = role;
        member.privileges = e.grant.as_ref().map(|g| g.privileges);
        match (was_hidden, e.hidden) {
            (true, false) => self.emit(
                &e.room,
                false,
                EventKind::UserEntered {
                    user: e.user.clone(),
                    role,
                },
            ),
            (false, true) => self.events.push_back(RoomEvent {
                room: e.room.clone(),
                audience: Audience::Room,
                kind: EventKind::UserExited {
                    user: e.user.clone(),
                    reason: ExitReason::Left,
                },
            }),
            _ if old_role != role => self.emit(
                &e.room,
                e.hidden,
                EventKind::RoleSwitched {
                    user: e.user.clone(),
                    role,
                },
            ),
            _ => {}
        }
        Ok(())
    }

    fn disconnect(&mut self, now: Instant, session: SessionId) -> Result<(), RoomError> {
        let (key, user) = self.session(session)?;
        let member = self.member_mut(&key, &user);
        if !member.connected {
            return Ok(());
        }
        member.connected = false;
        self.timers
            .set(Timer::Grace(key.clone(), user), now + self.grace());
        self.arm_all_disconnected(now, &key);
        Ok(())
    }

    fn switch_role(&mut self, session: SessionId, role: Role) -> Result<(), RoomError> {
        let (key, user) = self.session(session)?;
        let room = &self.rooms[&key];
        if room.scene.is_call() {
            return Err(RoomError::RoleFixedInCallScene);
        }
        let member = &room.members[&user];
        if member.role == role {
            return Ok(());
        }
        if role == Role::Anchor && room.anchors() >= self.limits.anchors_per_room {
            return Err(RoomError::TooManyAnchors(self.limits.anchors_per_room));
        }
        if role == Role::Audience {
            self.unpublish_all(&key, &user);
        }
        let member = self.member_mut(&key, &user);
        member.role = role;
        let hidden = member.hidden;
        self.emit(&key, hidden, EventKind::RoleSwitched { user, role });
        Ok(())
    }

    fn publish(&mut self, session: SessionId, kind: TrackKind) -> Result<(), RoomError> {
        let (key, user) = self.session(session)?;
        let member = self.member_mut(&key, &user);
        if member.role != Role::Anchor {
            return Err(RoomError::NotAnchor);
        }
        if let Some(p) = member.privileges {
            let bit = match kind {
                TrackKind::Audio => privilege::SEND_AUDIO,
                TrackKind::Video => privilege::SEND_VIDEO,
            };
            if p & bit == 0 {
                return Err(RoomError::Grant(GrantError::NoSend(kind.as_str())));
            }
        }
        if member.tracks.insert(kind) {
            let hidden = member.hidden;
            self.emit(&key, hidden, EventKind::TrackPublished { user, kind });
        }
        Ok(())
    }

    // -- helpers ------------------------------------------------------------

    /// How long a dropped user stays (`limits.disconnect_grace_secs`, TRTC: 90 s).
    fn grace(&self) -> Duration {
        Duration::from_secs(self.limits.disconnect_grace_secs)
    }

    fn check_app(&self, app: SdkAppId) -> Result<(), RoomError> {
        if self.apps.contains(&app) {
            Ok(())
        } else {
            Err(RoomError::UnknownApp(app))
        }
    }

    fn session(&self, session: SessionId) -> Result<(RoomKey, UserId), RoomError> {
        self.sessions
            .get(&session)
            .cloned()
            .ok_or(RoomError::NoSuchSession)
    }

    fn member_mut(&mut self, key: &RoomKey, user: &UserId) -> &mut Member {
        self.rooms
            .get_mut(key)
            .and_then(|r| r.members.get_mut(user))
            .expect("sessions index only live members")
    }

    /// Queues an event about a member: to the room, or internal only for dumb terminals.
    fn emit(&mut self, key: &RoomKey, hidden: bool, kind: EventKind) {
        self.events.push_back(RoomEvent {
            room: key.clone(),
            audience: if hidden {
                Audience::Internal
            } else {
                Audience::Room
            },
            kind,
        });
    }

    fn unpublish_all(&mut self, key: &RoomKey, user: &UserId) {
        let member = self.member_mut(key, user);
        let tracks = std::mem::take(&mut member.tracks);
        let hidden = member.hidden;
        for kind in tracks {
            self.emit(
                key,
                hidden,
                EventKind::TrackUnpublished {
                    user: user.clone(),
                    kind,
                },
            );
        }
    }

    /// Tells the member's current session it is out.
    fn end_session(&mut self, key: &RoomKey, user: &UserId, reason: ExitReason) {
        let session = self.rooms[key].members[user].session;
        self.events.push_back(RoomEvent {
            room: key.clone(),
            audience: Audience::Session(session),
            kind: EventKind::SessionEnded {
                user: user.clone(),
                reason,
            },
        });
    }

    /// Removes a member, its tracks, its timers and its indexes; moves the
    /// ownership on. Leaves the room's fate to `after_departure`.
    fn remove_member(&mut self, key: &RoomKey, user: &UserId, reason: ExitReason) -> Role {
        self.unpublish_all(key, user);
        let room = self.rooms.get_mut(key).expect("member's room exists");
        let member = room.members.remove(user).expect("member exists");
        self.sessions.remove(&member.session);
        self.user_room.remove(&(key.app, user.clone()));
        self.timers.cancel(&Timer::Grace(key.clone(), user.clone()));
        self.emit(
            key,
            member.hidden,
            EventKind::UserExited {
                user: user.clone(),
                reason,
            },
        );
        let room = &self.rooms[key];
        if room.owner == *user
            && let Some((next, m)) = room
                .in_entry_order()
                .into_iter()
                .min_by_key(|(_, m)| (m.hidden, m.seq))
        {
            let (next, hidden) = (next.clone(), m.hidden);
            self.rooms.get_mut(key).expect("exists").owner = next.clone();
            self.emit(key, hidden, EventKind::OwnerChanged { owner: next });
        }
        member.role
    }

    /// Applies the close rules after a member left.
    fn after_departure(&mut self, now: Instant, key: &RoomKey, last_role: Role) {
        let Some(room) = self.rooms.get(key) else {
            return;
        };
        if room.members.is_empty() {
            match (room.scene.is_call(), last_role) {
                (true, _) => self.close(key, CloseReason::Empty),
                (false, Role::Anchor) => self.close(key, CloseReason::LastAnchorLeft),
                (false, Role::Audience) => {
                    self.timers.cancel(&Timer::AllDisconnected(key.clone()));
                    self.timers.set(
                        Timer::AudienceLinger(key.clone()),
                        now + Duration::from_secs(self.limits.audience_linger_secs),
                    );
                }
            }
        } else {
            self.arm_all_disconnected(now, key);
        }
    }

    fn arm_all_disconnected(&mut self, now: Instant, key: &RoomKey) {
        let timer = Timer::AllDisconnected(key.clone());
        let all_gone = self.rooms[key].members.values().all(|m| !m.connected);
        if all_gone && !self.timers.is_set(&timer) {
            self.timers.set(timer, now + self.grace());
        }
    }

    /// Closes a room: everyone still in it is out, its timers are gone.
    fn close(&mut self, key: &RoomKey, reason: CloseReason) {
        let exit = match reason {
            CloseReason::Dismissed => ExitReason::RoomDismissed,
            CloseReason::AllDisconnected => ExitReason::DisconnectTimeout,
            _ => ExitReason::RoomClosed,
        };
        let users: Vec<UserId> = self.rooms[key]
            .in_entry_order()
            .into_iter()
            .map(|(u, _)| u.clone())
            .collect();
        for user in users {
            self.end_session(key, &user, exit);
            self.remove_member(key, &user, exit);
        }
        self.timers.cancel(&Timer::AudienceLinger(key.clone()));
        self.timers.cancel(&Timer::AllDisconnected(key.clone()));
        self.rooms.remove(key);
        self.events.push_back(RoomEvent {
            room: key.clone(),
            audience: Audience::Room,
            kind: EventKind::RoomClosed { reason },
        });
    }

    fn state_for(&self, key: &RoomKey, me: &UserId) -> RoomState {
        let room = &self.rooms[key];
        RoomState {
            scene: room.scene,
            owner: room.owner.clone(),
            members: room
                .in_entry_order()
                .into_iter()
                .filter(|(u, m)| !m.hidden || *u == me)
                .map(|(u, m)| MemberInfo {
                    user: u.clone(),
                    role: m.role,
                    publishing: m.tracks.iter().copied().collect(),
                })
                .collect(),
            role: room.members[me].role,
        }
    }
}

fn check_grant(g: &Grant, room: &RoomId, unix_now: u64, exists: bool) -> Result<(), RoomError> {
    let same_room = match (&g.room, room) {
        (PmkRoom::Numeric(a), RoomId::Num(b)) => a == b,
        (PmkRoom::Str(a), RoomId::Str(b)) => a == b,
        _ => false,
    };
    let err = |e| Err(RoomError::Grant(e));
    if !same_room {
        return err(GrantError::WrongRoom);
    }
    if unix_now > g.expires_at {
        return err(GrantError::Expired);
    }
    if g.privileges & privilege::ENTER_ROOM == 0 {
        return err(GrantError::NoEnter);
    }
    if !exists && g.privileges & privilege::CREATE_ROOM == 0 {
        return err(GrantError::NoCreate);
    }
    Ok(())
}

#[cfg(test)]
#[path = "engine_props.rs"]
mod props;
#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;
