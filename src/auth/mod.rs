//! Authentication: who a client is and whether a request is genuine.
//!
//! `usersig` covers clients (TLS-Sig-API v2 UserSigs and PrivateMapKey
//! tickets); `tc3` covers backends calling the REST API (TC3-HMAC-SHA256).
//! `session` keeps the console's logins, made from an API credential.
//! All are pure: time is an argument, keys come from the caller, no I/O.

pub mod client;
pub mod session;
pub mod tc3;
pub mod usersig;
