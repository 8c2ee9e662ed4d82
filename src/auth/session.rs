//! Console sessions: a person logs in once with an API credential and the
//! browser carries a session token instead of the SecretKey.
//!
//! Pure: tokens come from the caller (the shell draws them from the OS
//! RNG), time is an argument, no I/O. A session dies after
//! [`IDLE`] without use or [`LIFETIME`] after login, whichever comes first;
//! at most [`MAX_SESSIONS`] live at once (a login past that evicts the
//! least recently used). Each session has a second secret, the CSRF token,
//! that the page sends in a header on every request that changes
//! something; the cookie alone only reads.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::tc3::constant_time_eq;

/// A session unused this long is gone.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// A session is gone this long after login, used or not.
pub const LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Live sessions at most; the least recently used goes first.
pub const MAX_SESSIONS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Session {
    secret_id: String,
    csrf: String,
    opened: Instant,
    used: Instant,
}

/// What a request carries, and what it wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading (GET, HEAD, the live event stream): the cookie is enough.
    Read,
    /// Changing something: the cookie and the session's CSRF token.
    Write,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SessionError {
    #[error("not logged in, or the session has expired")]
    NoSession,
    #[error("the request lacks the session's CSRF token")]
    Csrf,
}

/// Every live session, by token.
#[derive(Debug, Default)]
pub struct Sessions {
    by_token: HashMap<String, Session>,
}

impl Sessions {
    pub fn new() -> Sessions {
        Sessions::default()
    }

    /// Opens a session for `secret_id` (already checked by the caller).
    /// Returns the token evicted to make room, if any.
    pub fn open(
        &mut self,
        secret_id: &str,
        token: String,
        csrf: String,
        now: Instant,
    ) -> Option<String> {
        self.expire(now);
        let mut evicted = None;
        if self.by_token.len() >= MAX_SESSIONS {
            let oldest = self
                .by_token
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(t, _)| t.clone());
            if let Some(t) = oldest {
                self.by_token.remove(&t);
                evicted = Some(t);
            }
        }
        self.by_token.insert(
            token,
            Session {
                secret_id: secret_id.to_owned(),
                csrf,
                opened: now,
                used: now,
            },
        );
        evicted
    }

    /// The SecretId a request acts as, if its token (and, to write, its
    /// CSRF token) matches a live session. Using a session keeps it alive.
    pub fn check(
        &mut self,
        token: &str,
        csrf: Option<&str>,
        access: Access,
        now: Instant,
    ) -> Result<String, SessionError> {
        let live = self.by_token.get(token).is_some_and(|s| alive(s, now));
        if !live {
            self.by_token.remove(token);
            return Err(SessionError::NoSession);
        }
        let s = self.by_token.get_mut(token).expect("checked above");
        if access == Access::Write
            && !csrf.is_some_and(|c| constant_time_eq(c.as_bytes(), s.csrf.as_bytes()))
        {
            return Err(SessionError::Csrf);
        }
        s.used = now;
        Ok(s.secret_id.clone())
    }

    /// The CSRF token of a live session (for a page reloaded while logged in).
    pub fn csrf(&self, token: &str, now: Instant) -> Option<(&str, &str)> {
        self.by_token
            .get(token)
            .filter(|s| alive(s, now))
            .map(|s| (s.secret_id.as_str(), s.csrf.as_str()))
    }

    /// Logs out. True if there was such a session.
    pub fn close(&mut self, token: &str) -> bool {
        self.by_token.remove(token).is_some()
    }

    /// Forgets every expired session.
    pub fn expire(&mut self, now: Instant) {
        self.by_token.retain(|_, s| alive(s, now));
    }

    pub fn len(&self) -> usize {
        self.by_token.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_token.is_empty()
    }
}

fn alive(s: &Session, now: Instant) -> bool {
    now.saturating_duration_since(s.used) < IDLE
        && now.saturating_duration_since(s.opened) < LIFETIME
}

/// Failed logins an address may make within [`THROTTLE_WINDOW`].
pub const MAX_FAILED_LOGINS: usize = 10;
pub const THROTTLE_WINDOW: Duration = Duration::from_secs(60);
/// Addresses remembered at most (the oldest failure goes first).
const THROTTLE_ADDRESSES: usize = 4096;

/// Failed console logins per address: past [`MAX_FAILED_LOGINS`] within
/// [`THROTTLE_WINDOW`], the address may not try again until the oldest of
/// them leaves the window. Pure: time is an argument.
#[derive(Debug, Default)]
pub struct LoginThrottle {
    failures: HashMap<std::net::IpAddr, Vec<Instant>>,
}

impl LoginThrottle {
    /// Whether `ip` may try a login now.
    pub fn allows(&mut self, ip: std::net::IpAddr, now: Instant) -> bool {
        match self.failures.get_mut(&ip) {
            None => true,
            Some(list) => {
                list.retain(|t| now.saturating_duration_since(*t) < THROTTLE_WINDOW);
                let ok = list.len() < MAX_FAILED_LOGINS;
                if list.is_empty() {
                    self.failures.remove(&ip);
                }
                ok
            }
        }
    }

    /// A login from `ip` failed.
    pub fn failed(&mut self, ip: std::net::IpAddr, now: Instant) {
        if self.failures.len() >= THROTTLE_ADDRESSES && !self.failures.contains_key(&ip) {
            let oldest = self
                .failures
                .iter()
                .min_by_key(|(_, l)| l.last().copied())
                .map(|(ip, _)| *ip);
            if let Some(o) = oldest {
                self.failures.remove(&o);
            }
        }
        self.failures.entry(ip).or_default().push(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(s: &mut Sessions, token: &str, now: Instant) -> Option<String> {
        s.open("AKIDtest", token.into(), format!("csrf-{token}"), now)
    }

    #[test]
    fn an_address_that_keeps_failing_waits_out_the_window() {
        let t0 = Instant::now();
        let (a, b) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        let mut t = LoginThrottle::default();
        for i in 0..MAX_FAILED_LOGINS {
            assert!(t.allows(a, t0), "try {i}");
            t.failed(a, t0 + Duration::from_secs(i as u64));
        }
        assert!(!t.allows(a, t0 + Duration::from_secs(30)));
        assert!(t.allows(b, t0), "another address is not affected");
        // The first failure leaves the window: one more try.
        assert!(t.allows(a, t0 + THROTTLE_WINDOW));
    }

    #[test]
    fn reads_need_the_token_writes_also_the_csrf_token() {
        let t0 = Instant::now();
        let mut s = Sessions::new();
        open(&mut s, "a", t0);
        assert_eq!(s.check("a", None, Access::Read, t0).unwrap(), "AKIDtest");
        assert_eq!(
            s.check("a", None, Access::Write, t0),
            Err(SessionError::Csrf)
        );
        assert_eq!(
            s.check("a", Some("csrf-b"), Access::Write, t0),
            Err(SessionError::Csrf)
        );
        assert!(s.check("a", Some("csrf-a"), Access::Write, t0).is_ok());
        assert_eq!(
            s.check("b", Some("csrf-a"), Access::Read, t0),
            Err(SessionError::NoSession)
        );
    }

    #[test]
    fn idle_sessions_expire_and_use_keeps_them_alive_up_to_the_lifetime() {
        let t0 = Instant::now();
        let mut s = Sessions::new();
        open(&mut s, "a", t0);
        open(&mut s, "b", t0);
        // "a" is used every 20 minutes; "b" is left alone.
        let step = Duration::from_secs(20 * 60);
        let mut now = t0;
        while now + step < t0 + LIFETIME {
            now += step;
            assert!(s.check("a", None, Access::Read, now).is_ok(), "{now:?}");
        }
        assert_eq!(
            s.check("b", None, Access::Read, now),
            Err(SessionError::NoSession)
        );
        assert_eq!(
            s.check("a", None, Access::Read, t0 + LIFETIME),
            Err(SessionError::NoSession),
            "a used session still ends at its lifetime"
        );
        assert!(s.is_empty());
    }

    #[test]
    fn logout_closes_and_the_least_recently_used_is_evicted_past_the_cap() {
        let t0 = Instant::now();
        let mut s = Sessions::new();
        for i in 0..MAX_SESSIONS {
            assert_eq!(
                open(&mut s, &i.to_string(), t0 + Duration::from_secs(i as u64)),
                None
            );
        }
        let later = t0 + Duration::from_secs(MAX_SESSIONS as u64);
        // Session 0 is used, so session 1 is now the least recently used.
        assert!(s.check("0", None, Access::Read, later).is_ok());
        assert_eq!(open(&mut s, "new", later), Some("1".into()));
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(s.close("new"));
        assert!(!s.close("new"));
        assert_eq!(
            s.check("new", None, Access::Read, later),
            Err(SessionError::NoSession)
        );
        assert_eq!(s.csrf("0", later), Some(("AKIDtest", "csrf-0")));
    }
}
