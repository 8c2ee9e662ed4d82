//! Validated identifiers: SDKAppID, room ids (numeric and string), UserIDs,
//! sessions. Constructed only through checks that follow TRTC's rules, so
//! the rest of the code never sees an invalid id.

use std::fmt;

/// An application's id. The engine checks it is configured.
pub(crate) type SdkAppId = u64;

/// A room id: TRTC's numeric room (1..=4294967295) or string room (1-64
/// bytes of TRTC's 89 allowed characters). `Num(123)` and `Str("123")` are
/// different rooms.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum RoomId {
    Num(u32),
    Str(String),
}

/// Which kind of room id a client means (`roomtype=int|str`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RoomIdType {
    Int,
    Str,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum IdError {
    #[error("numeric room id must be in 1..=4294967295, got `{0}`")]
    NumericRoom(String),
    #[error("string room id must be 1-64 bytes, got {0} bytes")]
    StrRoomLength(usize),
    #[error(
        "string room id contains `{0}`, allowed: letters, digits, space and !#$%&()+-:;<=.>?@[]^_{{}}|~,"
    )]
    StrRoomChar(char),
    #[error("UserID must be 1-32 bytes, got {0} bytes")]
    UserIdLength(usize),
    #[error("UserID contains `{0}`, allowed: letters, digits, '_', '-', '@', '.'")]
    UserIdChar(char),
}

/// The 27 punctuation characters TRTC allows in string room ids, besides
/// letters and digits (89 characters in all).
const STR_ROOM_PUNCT: &str = " !#$%&()+-:;<=.>?@[]^_{}|~,";

impl RoomId {
    pub(crate) fn numeric(s: &str) -> Result<RoomId, IdError> {
        match s.parse::<u64>() {
            Ok(n) if (1..=u64::from(u32::MAX)).contains(&n) && !s.starts_with('+') => {
                Ok(RoomId::Num(n as u32))
            }
            _ => Err(IdError::NumericRoom(s.chars().take(32).collect())),
        }
    }

    pub(crate) fn string(s: &str) -> Result<RoomId, IdError> {
        if s.is_empty() || s.len() > 64 {
            return Err(IdError::StrRoomLength(s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || STR_ROOM_PUNCT.contains(*c)))
        {
            return Err(IdError::StrRoomChar(c));
        }
        Ok(RoomId::Str(s.to_owned()))
    }

    /// Parses with an explicit type, or by INTERFACES.md's default: `int`
    /// when all digits and in 1..=4294967295, else `str`.
    pub(crate) fn parse(s: &str, ty: Option<RoomIdType>) -> Result<RoomId, IdError> {
        match ty {
            Some(RoomIdType::Int) => RoomId::numeric(s),
            Some(RoomIdType::Str) => RoomId::string(s),
            None => RoomId::numeric(s).or_else(|_| RoomId::string(s)),
        }
    }
}

impl fmt::Display for RoomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RoomId::Num(n) => write!(f, "{n}"),
            RoomId::Str(s) => f.write_str(s),
        }
    }
}

/// A user's id inside one application: 1-32 bytes of letters, digits and
/// `_ - @ .`; case sensitive.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct UserId(String);

impl UserId {
    pub(crate) fn new(s: &str) -> Result<UserId, IdError> {
        if s.is_empty() || s.len() > 32 {
            return Err(IdError::UserIdLength(s.len()));
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '@' | '.')))
        {
            return Err(IdError::UserIdChar(c));
        }
        Ok(UserId(s.to_owned()))
    }

    pub(crate) fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A room across applications.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct RoomKey {
    pub app: SdkAppId,
    pub room: RoomId,
}

impl RoomKey {
    /// The room as `Display` writes it (`<app>/<n>` or `<app>/str:<s>`),
    /// read back (the cluster stores rooms so).
    pub(crate) fn parse(s: &str) -> Option<RoomKey> {
        let (app, room) = s.split_once('/')?;
        let room = match room.strip_prefix("str:") {
            Some(r) => RoomId::string(r).ok()?,
            None => RoomId::numeric(room).ok()?,
        };
        Some(RoomKey {
            app: app.parse().ok()?,
            room,
        })
    }
}

impl fmt::Display for RoomKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.room {
            RoomId::Num(n) => write!(f, "{}/{n}", self.app),
            RoomId::Str(s) => write!(f, "{}/str:{s}", self.app),
        }
    }
}

/// One connection of a user (a WebSocket, an RTMP publish, a WHIP session).
/// Allocated by the shell; a user re-entering gets a new one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct SessionId(pub u64);

#[cfg(test)]
mod tests {
    #[test]
    fn a_room_key_reads_back_what_it_displays() {
        for room in [
            super::RoomId::numeric("42"),
            super::RoomId::string("class_1"),
        ] {
            let key = super::RoomKey {
                app: 1_400_000_000,
                room: room.unwrap(),
            };
            assert_eq!(super::RoomKey::parse(&key.to_string()), Some(key));
        }
        for bad in ["", "1400000000", "x/42", "1/str:", "1/4x"] {
            assert_eq!(super::RoomKey::parse(bad), None, "{bad}");
        }
    }

    use super::*;

    #[test]
    fn numeric_rooms() {
        assert_eq!(RoomId::numeric("1"), Ok(RoomId::Num(1)));
        assert_eq!(RoomId::numeric("4294967295"), Ok(RoomId::Num(u32::MAX)));
        for bad in [
            "0",
            "4294967296",
            "-1",
            "+5",
            "",
            "12a",
            "99999999999999999999999",
        ] {
            assert!(RoomId::numeric(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn string_rooms() {
        let all89: String = ('a'..='z')
            .chain('A'..='Z')
            .chain('0'..='9')
            .chain(STR_ROOM_PUNCT.chars())
            .collect();
        assert_eq!(all89.len(), 89);
        assert!(RoomId::string(&all89[..64]).is_ok());
        assert!(RoomId::string(&all89[25..89]).is_ok());
        assert_eq!(
            RoomId::string(&"a".repeat(65)),
            Err(IdError::StrRoomLength(65))
        );
        assert_eq!(RoomId::string(""), Err(IdError::StrRoomLength(0)));
        for bad in [
            "a*b", "a/b", "a\\b", "a\"b", "a'b", "a`b", "é", "a\nb", "a\0",
        ] {
            assert!(
                matches!(RoomId::string(bad), Err(IdError::StrRoomChar(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numeric_and_string_rooms_differ() {
        assert_ne!(
            RoomId::parse("123", Some(RoomIdType::Int)),
            RoomId::parse("123", Some(RoomIdType::Str))
        );
        assert_eq!(RoomId::parse("123", None), Ok(RoomId::Num(123)));
        assert_eq!(RoomId::parse("0", None), Ok(RoomId::Str("0".into())));
        assert_eq!(
            RoomId::parse("4294967296", None),
            Ok(RoomId::Str("4294967296".into()))
        );
        assert_eq!(
            RoomId::parse("class-1", None),
            Ok(RoomId::Str("class-1".into()))
        );
    }

    #[test]
    fn user_ids() {
        for ok in ["a", "user_01-ABC", "x@y.z", &"u".repeat(32)] {
            assert!(UserId::new(ok).is_ok(), "{ok}");
        }
        assert_eq!(UserId::new(&"u".repeat(33)), Err(IdError::UserIdLength(33)));
        assert_eq!(UserId::new(""), Err(IdError::UserIdLength(0)));
        for bad in ["a b", "用户", "a/b", "a:b", "a#"] {
            assert!(
                matches!(UserId::new(bad), Err(IdError::UserIdChar(_))),
                "{bad}"
            );
        }
        assert_ne!(UserId::new("Bob"), UserId::new("bob"));
    }
}
