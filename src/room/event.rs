//! What the room engine is told (commands) and what it tells (events).
//!
//! Commands are imperative (`Enter`, `RemoveUser`), events past tense
//! (`UserEntered`). Every event names its audience, so that the edges
//! deliver it only where the room rules allow: events about dumb terminals
//! never reach other users.

use super::ids::{RoomKey, SessionId, UserId};
use crate::auth::usersig::{PmkRoom, PrivateMapKey};

/// TRTC's application scenes; fixed when a room is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Scene {
    VideoCall,
    AudioCall,
    Live,
    VoiceChatRoom,
}

impl Scene {
    /// Call scenes: everyone is an anchor; the room closes when the last user leaves.
    pub(crate) fn is_call(self) -> bool {
        matches!(self, Scene::VideoCall | Scene::AudioCall)
    }

    pub(crate) fn parse(s: &str) -> Option<Scene> {
        Some(match s {
            "videocall" => Scene::VideoCall,
            "audiocall" => Scene::AudioCall,
            "live" => Scene::Live,
            "voicechatroom" => Scene::VoiceChatRoom,
            _ => return None,
        })
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Scene::VideoCall => "videocall",
            Scene::AudioCall => "audiocall",
            Scene::Live => "live",
            Scene::VoiceChatRoom => "voicechatroom",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Anchor,
    Audience,
}

impl Role {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Anchor => "anchor",
            Role::Audience => "audience",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TrackKind {
    Audio,
    Video,
}

impl TrackKind {
    /// 0 for audio, 1 for video: where a track's entry is in a pair.
    pub fn index(self) -> usize {
        match self {
            TrackKind::Audio => 0,
            TrackKind::Video => 1,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            TrackKind::Audio => "audio",
            TrackKind::Video => "video",
        }
    }
}

/// What a PrivateMapKey grants, after its signature was verified by the edge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Grant {
    pub room: PmkRoom,
    /// Absolute unix expiry of the ticket.
    pub expires_at: u64,
    /// PrivateMapKey privilege bits.
    pub privileges: u32,
}

impl From<PrivateMapKey> for Grant {
    fn from(p: PrivateMapKey) -> Grant {
        Grant {
            room: p.room,
            expires_at: u64::from(p.expires_at),
            privileges: p.privileges,
        }
    }
}

/// A user entering (or re-entering) a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Enter {
    pub room: RoomKey,
    pub user: UserId,
    pub session: SessionId,
    /// Requested role; call scenes make everyone an anchor.
    pub role: Role,
    /// Used when this entry creates the room.
    pub scene: Scene,
    /// A dumb terminal: others are not told about it.
    pub hidden: bool,
    /// The PrivateMapKey carried in the UserSig, if any.
    pub grant: Option<Grant>,
    /// Wall-clock unix seconds, for the ticket's expiry.
    pub unix_now: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Command {
    Enter(Enter),
    /// The user leaves on purpose.
    Leave {
        session: SessionId,
    },
    /// The connection dropped without a leave: 90 s grace.
    Disconnect {
        session: SessionId,
    },
    SwitchRole {
        session: SessionId,
        role: Role,
    },
    Publish {
        session: SessionId,
        kind: TrackKind,
    },
    /// One track stops (the engine's API; no edge unpublishes a single
    /// track yet: RTMP and WHIP publishers leave or drop).
    #[allow(dead_code)]
    Unpublish {
        session: SessionId,
        kind: TrackKind,
    },
    /// REST API RemoveUser: absent users are ignored.
    RemoveUser {
        room: RoomKey,
        users: Vec<UserId>,
    },
    /// REST API DismissRoom.
    DismissRoom {
        room: RoomKey,
    },
}

/// Why a user is no longer in a room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    Left,
    /// Dropped and not back within the grace period.
    DisconnectTimeout,
    /// Removed by the REST API.
    Removed,
    /// The room was dismissed by the REST API.
    RoomDismissed,
    /// The room closed around it (everyone disconnected).
    RoomClosed,
    /// The user entered another room while its old session here was disconnected.
    MovedToAnotherRoom,
}

impl ExitReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExitReason::Left => "left",
            ExitReason::DisconnectTimeout => "disconnect_timeout",
            ExitReason::Removed => "removed",
            ExitReason::RoomDismissed => "room_dismissed",
            ExitReason::RoomClosed => "room_closed",
            ExitReason::MovedToAnotherRoom => "moved_to_another_room",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CloseReason {
    /// Call scene: the last user left.
    Empty,
    /// Live scene: the last user out was an anchor.
    LastAnchorLeft,
    /// Live scene: the last user out was audience and nobody came in 10 minutes.
    IdleAfterAudience,
    /// Every user was disconnected for the grace period.
    AllDisconnected,
    /// DismissRoom.
    Dismissed,
}

impl CloseReason {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            CloseReason::Empty => "empty",
            CloseReason::LastAnchorLeft => "last_anchor_left",
            CloseReason::IdleAfterAudience => "idle_after_audience",
            CloseReason::AllDisconnected => "all_disconnected",
            CloseReason::Dismissed => "dismissed",
        }
    }
}

/// A member as others see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MemberInfo {
    pub user: UserId,
    pub role: Role,
    pub publishing: Vec<TrackKind>,
}

/// The room as one user sees it on entering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomState {
    pub scene: Scene,
    pub owner: UserId,
    /// Visible members in entry order (dumb terminals are never listed,
    /// except the receiver itself).
    pub members: Vec<MemberInfo>,
    /// The receiver's role after entering.
    pub role: Role,
}

/// Who may be told an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Audience {
    /// Every user in the room (the subject included).
    Room,
    /// One session only (its own welcome, its removal).
    Session(SessionId),
    /// Internal consumers only (relay tasks, metrics): events about dumb terminals.
    Internal,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EventKind {
    RoomCreated {
        owner: UserId,
        scene: Scene,
    },
    RoomClosed {
        reason: CloseReason,
    },
    /// The entering session's view of the room; always the first event it gets.
    Welcome {
        state: RoomState,
    },
    UserEntered {
        user: UserId,
        role: Role,
    },
    UserExited {
        user: UserId,
        reason: ExitReason,
    },
    RoleSwitched {
        user: UserId,
        role: Role,
    },
    TrackPublished {
        user: UserId,
        kind: TrackKind,
    },
    TrackUnpublished {
        user: UserId,
        kind: TrackKind,
    },
    OwnerChanged {
        owner: UserId,
    },
    /// The same user entered again; this older session is out.
    SessionReplaced {
        user: UserId,
    },
    /// This session's user is out of the room for `reason` (removed, dismissed...).
    SessionEnded {
        user: UserId,
        reason: ExitReason,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RoomEvent {
    pub room: RoomKey,
    pub audience: Audience,
    pub kind: EventKind,
}

impl RoomEvent {
    /// The user this event is about, if any.
    pub(crate) fn subject(&self) -> Option<&UserId> {
        match &self.kind {
            EventKind::RoomCreated { owner, .. } | EventKind::OwnerChanged { owner } => Some(owner),
            EventKind::UserEntered { user, .. }
            | EventKind::UserExited { user, .. }
            | EventKind::RoleSwitched { user, .. }
            | EventKind::TrackPublished { user, .. }
            | EventKind::TrackUnpublished { user, .. }
            | EventKind::SessionReplaced { user }
            | EventKind::SessionEnded { user, .. } => Some(user),
            EventKind::RoomClosed { .. } | EventKind::Welcome { .. } => None,
        }
    }

    /// Whether a session of the room should receive this event.
    pub(crate) fn is_for(&self, room: &RoomKey, session: SessionId) -> bool {
        self.room == *room
            && match self.audience {
                Audience::Room => true,
                Audience::Session(s) => s == session,
                Audience::Internal => false,
            }
    }
}
