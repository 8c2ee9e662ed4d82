//! Client authentication: a UserSig (and any PrivateMapKey it carries)
//! checked for one user of one application. Used by every edge a client
//! enters through (signalling WebSocket, RTMP publish, WHIP). Pure.

use super::usersig::{self, PrivateMapKey, UserBufCheck, VerifyError};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientAuthError {
    #[error("sdkappid {0} is not configured")]
    UnknownApp(u64),
    #[error("usersig refused: {0}")]
    UserSig(#[from] VerifyError),
    #[error("{0}")]
    PrivateMapKey(#[from] usersig::PmkError),
    #[error("PrivateMapKey was issued for another user or application")]
    PrivateMapKeyMismatch,
}

/// Verifies `usersig` for `userid` in `sdkappid` (whose key is `app_key`, if
/// configured) at unix time `now`. Returns the PrivateMapKey the sig carries.
pub fn authenticate(
    app_key: Option<&str>,
    sdkappid: u64,
    userid: &str,
    usersig: &str,
    now: u64,
) -> Result<Option<PrivateMapKey>, ClientAuthError> {
    let key = app_key.ok_or(ClientAuthError::UnknownApp(sdkappid))?;
    let doc = usersig::verify(usersig, sdkappid, key, userid, now, UserBufCheck::Any)?;
    let Some(buf) = doc.userbuf else {
        return Ok(None);
    };
    let pmk = PrivateMapKey::parse(&buf)?;
    if pmk.account != userid || u64::from(pmk.sdkappid) != sdkappid {
        return Err(ClientAuthError::PrivateMapKeyMismatch);
    }
    Ok(Some(pmk))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::usersig::{PmkRoom, generate};

    #[test]
    fn outcomes() {
        let sig = generate(1, "k", "alice", 60, 100, None);
        assert_eq!(authenticate(Some("k"), 1, "alice", &sig, 100), Ok(None));
        assert_eq!(
            authenticate(None, 1, "alice", &sig, 100),
            Err(ClientAuthError::UnknownApp(1))
        );
        assert!(matches!(
            authenticate(Some("k"), 1, "alice", &sig, 161),
            Err(ClientAuthError::UserSig(VerifyError::Expired { .. }))
        ));
        let pmk = PrivateMapKey {
            account: "bob".into(),
            sdkappid: 1,
            room: PmkRoom::Numeric(5),
            expires_at: 1000,
            privileges: 255,
            account_type: 0,
        };
        let sig = generate(1, "k", "alice", 60, 100, Some(&pmk.to_bytes()));
        assert_eq!(
            authenticate(Some("k"), 1, "alice", &sig, 100),
            Err(ClientAuthError::PrivateMapKeyMismatch)
        );
        let sig = generate(1, "k", "alice", 60, 100, Some(b"abc"));
        assert!(matches!(
            authenticate(Some("k"), 1, "alice", &sig, 100),
            Err(ClientAuthError::PrivateMapKey(_))
        ));
    }
}
