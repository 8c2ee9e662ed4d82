//! UserSig: TLS-Sig-API v2 tokens and PrivateMapKey (userbuf) tickets.
//!
//! A UserSig is `b64x(zlib(json))` where the JSON carries the identifier,
//! SDKAppID, issue time, relative expiry, an optional userbuf and an
//! HMAC-SHA256 over those fields keyed by the application's secret key.
//! This module generates tokens byte-for-byte like Tencent's PyPI library
//! (Python `json.dumps` layout, zlib level 6) and verifies tokens from any
//! official library with the Go reference's semantics and check order:
//! decode → sdkappid → identifier → expiry → userbuf → HMAC.
//!
//! Pure: no clock reads (`now` is unix seconds passed in), no I/O.

use std::fmt::Write as _;
use std::io::{Read, Write};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Default validity of a generated UserSig: 180 days, as the official libraries.
pub const DEFAULT_EXPIRE_SECS: u64 = 180 * 86_400;

/// Upper bound on the size of a token we are willing to decode (bytes of text).
const MAX_TOKEN_LEN: usize = 8 * 1024;
/// Upper bound on the inflated JSON document (a zip bomb must not cost memory).
const MAX_DOC_LEN: usize = 16 * 1024;

/// Why a UserSig was refused. Names follow the Go reference library.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("malformed usersig: {0}")]
    Decode(&'static str),
    #[error("sdkappid mismatch: the usersig was issued for sdkappid {found}")]
    SdkAppIdNotMatch { found: u64 },
    #[error("identifier mismatch: the usersig was issued for another user")]
    IdentifierNotMatch,
    #[error("expired at unix time {expired_at}")]
    Expired { expired_at: u64 },
    #[error("userbuf type mismatch: one side carries a userbuf, the other does not")]
    UserBufTypeNotMatch,
    #[error("userbuf mismatch")]
    UserBufNotMatch,
    #[error("bad signature: the usersig was not signed with this application's key")]
    SigNotMatch,
}

impl VerifyError {
    /// The Go reference library's name for this outcome (used by the test vectors).
    pub fn name(&self) -> &'static str {
        match self {
            VerifyError::Decode(_) => "DecodeError",
            VerifyError::SdkAppIdNotMatch { .. } => "ErrSdkAppIDNotMatch",
            VerifyError::IdentifierNotMatch => "ErrIdentifierNotMatch",
            VerifyError::Expired { .. } => "ErrExpired",
            VerifyError::UserBufTypeNotMatch => "ErrUserBufTypeNotMatch",
            VerifyError::UserBufNotMatch => "ErrUserBufNotMatch",
            VerifyError::SigNotMatch => "ErrSigNotMatch",
        }
    }
}

/// What the verifier expects of the token's userbuf.
#[derive(Debug, Clone, Copy)]
pub enum UserBufCheck<'a> {
    /// The token must carry no userbuf (Go `VerifyUserSig`).
    Absent,
    /// The token must carry exactly these bytes (Go `VerifyUserSigWithBuf`).
    Exactly(&'a [u8]),
    /// Any userbuf or none; the server then enforces a PrivateMapKey it carries.
    Any,
}

/// The decoded fields of a UserSig.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserSigDoc {
    pub ver: String,
    pub identifier: String,
    pub sdkappid: u64,
    /// Unix seconds at generation.
    pub time: u64,
    /// Validity in seconds, relative to `time`.
    pub expire: u64,
    pub userbuf: Option<Vec<u8>>,
    pub sig: Vec<u8>,
}

impl UserSigDoc {
    /// Unix second after which the token is expired (`now > expires_at()` fails).
    pub fn expires_at(&self) -> u64 {
        self.time.saturating_add(self.expire)
    }
}

/// Generates a UserSig exactly as the PyPI `tls-sig-api-v2` library does.
pub fn generate(
    sdkappid: u64,
    key: &str,
    identifier: &str,
    expire: u64,
    now: u64,
    userbuf: Option<&[u8]>,
) -> String {
    let userbuf_b64 = userbuf.map(|b| STANDARD.encode(b));
    let sig = hmac_content_sig(
        key,
        identifier,
        sdkappid,
        now,
        expire,
        userbuf_b64.as_deref(),
    );
    let sig_b64 = STANDARD.encode(sig);

    // Python json.dumps(dict) with default separators and ensure_ascii.
    let mut json = String::with_capacity(256);
    json.push_str("{\"TLS.ver\": \"2.0\", \"TLS.identifier\": ");
    push_python_json_string(&mut json, identifier);
    let _ = write!(
        json,
        ", \"TLS.sdkappid\": {sdkappid}, \"TLS.expire\": {expire}, \"TLS.time\": {now}"
    );
    if let Some(ub) = &userbuf_b64 {
        json.push_str(", \"TLS.userbuf\": ");
        push_python_json_string(&mut json, ub);
    }
    json.push_str(", \"TLS.sig\": ");
    push_python_json_string(&mut json, &sig_b64);
    json.push('}');

    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::new(6));
    // Writing to a Vec cannot fail.
    enc.write_all(json.as_bytes()).expect("write to Vec");
    let compressed = enc.finish().expect("finish to Vec");
    b64x_encode(&compressed)
}

/// Decodes a UserSig without checking anything but its shape.
pub fn decode(usersig: &str) -> Result<UserSigDoc, VerifyError> {
    if usersig.is_empty() {
        return Err(VerifyError::Decode("empty"));
    }
    if usersig.len() > MAX_TOKEN_LEN {
        return Err(VerifyError::Decode("too long"));
    }
    let compressed = b64x_decode(usersig).ok_or(VerifyError::Decode("not base64"))?;
    let mut json = Vec::new();
    flate2::read::ZlibDecoder::new(&compressed[..])
        .take(MAX_DOC_LEN as u64 + 1)
        .read_to_end(&mut json)
        .map_err(|_| VerifyError::Decode("not zlib"))?;
    if json.len() > MAX_DOC_LEN {
        return Err(VerifyError::Decode("document too large"));
    }
    let v: serde_json::Value =
        serde_json::from_slice(&json).map_err(|_| VerifyError::Decode("not JSON"))?;
    let obj = v
        .as_object()
        .ok_or(VerifyError::Decode("not a JSON object"))?;

    let str_field = |k: &str| obj.get(k).and_then(|v| v.as_str());
    let num_field = |k: &str| obj.get(k).and_then(|v| v.as_u64());

    let userbuf = match obj.get("TLS.userbuf") {
        None => None,
        Some(v) => {
            let s = v.as_str().ok_or(VerifyError::Decode("TLS.userbuf"))?;
            Some(
                STANDARD
                    .decode(s)
                    .map_err(|_| VerifyError::Decode("TLS.userbuf is not base64"))?,
            )
        }
    };
    let sig = STANDARD
        .decode(str_field("TLS.sig").ok_or(VerifyError::Decode("missing TLS.sig"))?)
        .map_err(|_| VerifyError::Decode("TLS.sig is not base64"))?;
    Ok(UserSigDoc {
        ver: str_field("TLS.ver").unwrap_or_default().to_owned(),
        identifier: str_field("TLS.identifier")
            .ok_or(VerifyError::Decode("missing TLS.identifier"))?
            .to_owned(),
        sdkappid: num_field("TLS.sdkappid").ok_or(VerifyError::Decode("missing TLS.sdkappid"))?,
        time: num_field("TLS.time").ok_or(VerifyError::Decode("missing TLS.time"))?,
        expire: num_field("TLS.expire").ok_or(VerifyError::Decode("missing TLS.expire"))?,
        userbuf,
        sig,
    })
}

/// Verifies a UserSig for `identifier` in `sdkappid` at unix time `now`.
pub fn verify(
    usersig: &str,
    sdkappid: u64,
    key: &str,
    identifier: &str,
    now: u64,
    userbuf: UserBufCheck<'_>,
) -> Result<UserSigDoc, VerifyError> {
    let doc = decode(usersig)?;
    if doc.sdkappid != sdkappid {
        return Err(VerifyError::SdkAppIdNotMatch {
            found: doc.sdkappid,
        });
    }
    if doc.identifier != identifier {
        return Err(VerifyError::IdentifierNotMatch);
    }
    if now > doc.expires_at() {
        return Err(VerifyError::Expired {
            expired_at: doc.expires_at(),
        });
    }
    match (userbuf, &doc.userbuf) {
        (UserBufCheck::Any, _) | (UserBufCheck::Absent, None) => {}
        (UserBufCheck::Exactly(want), Some(have)) => {
            if want != &have[..] {
                return Err(VerifyError::UserBufNotMatch);
            }
        }
        (UserBufCheck::Exactly(_), None) | (UserBufCheck::Absent, Some(_)) => {
            return Err(VerifyError::UserBufTypeNotMatch);
        }
    }
    let ub_b64 = doc.userbuf.as_ref().map(|b| STANDARD.encode(b));
    // Constant-time comparison through the Mac API.
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(&hmac_content(
        &doc.identifier,
        doc.sdkappid,
        doc.time,
        doc.expire,
        ub_b64.as_deref(),
    ));
    if mac.verify_slice(&doc.sig).is_err() {
        return Err(VerifyError::SigNotMatch);
    }
    Ok(doc)
}

/// The string the HMAC covers (SPEC §1.3): time before expire.
pub fn hmac_content(
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf_b64: Option<&str>,
) -> Vec<u8> {
    let mut s = format!(
        "TLS.identifier:{identifier}\nTLS.sdkappid:{sdkappid}\nTLS.time:{time}\nTLS.expire:{expire}\n"
    );
    if let Some(ub) = userbuf_b64 {
        let _ = writeln!(s, "TLS.userbuf:{ub}");
    }
    s.into_bytes()
}

fn hmac_content_sig(
    key: &str,
    identifier: &str,
    sdkappid: u64,
    time: u64,
    expire: u64,
    userbuf_b64: Option<&str>,
) -> [u8; 32] {
    let mut mac = HmacSha256::new_from_slice(key.as_bytes()).expect("HMAC takes any key");
    mac.update(&hmac_content(
        identifier,
        sdkappid,
        time,
        expire,
        userbuf_b64,
    ));
    mac.finalize().into_bytes().into()
}

/// Standard base64 with `+/=` replaced by `*-_`.
fn b64x_encode(bytes: &[u8]) -> String {
    STANDARD
        .encode(bytes)
        .chars()
        .map(|c| match c {
            '+' => '*',
            '/' => '-',
            '=' => '_',
            c => c,
        })
        .collect()
}

fn b64x_decode(s: &str) -> Option<Vec<u8>> {
    let std: String = s
        .trim_end()
        .chars()
        .map(|c| match c {
            '*' => '+',
            '-' => '/',
            '_' => '=',
            c => c,
        })
        .collect();
    STANDARD.decode(std).ok()
}

/// Appends `s` as a JSON string the way Python's `json.dumps` writes it with
/// `ensure_ascii=True`: every char outside 0x20..=0x7E escaped, lower-case hex,
/// astral chars as surrogate pairs.
fn push_python_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            ' '..='~' => out.push(c),
            c => {
                let mut units = [0u16; 2];
                for u in c.encode_utf16(&mut units) {
                    let _ = write!(out, "\\u{u:04x}");
                }
            }
        }
    }
    out.push('"');
}

/// The room a PrivateMapKey grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PmkRoom {
    Numeric(u32),
    Str(String),
}

/// Privilege bits of a PrivateMapKey (SPEC §1.5).
pub mod privilege {
    pub const CREATE_ROOM: u32 = 1;
    pub const ENTER_ROOM: u32 = 2;
    pub const SEND_AUDIO: u32 = 4;
    pub const RECV_AUDIO: u32 = 8;
    pub const SEND_VIDEO: u32 = 16;
    pub const RECV_VIDEO: u32 = 32;
    pub const SEND_SUBSTREAM: u32 = 64;
    pub const RECV_SUBSTREAM: u32 = 128;
}

/// A parsed PrivateMapKey userbuf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrivateMapKey {
    pub account: String,
    pub sdkappid: u32,
    pub room: PmkRoom,
    /// Absolute unix expiry.
    pub expires_at: u32,
    pub privileges: u32,
    pub account_type: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed PrivateMapKey userbuf: {0}")]
pub struct PmkError(&'static str);

impl PrivateMapKey {
    /// Parses the big-endian userbuf layout (Go/C++/PHP; ASCII agrees with all).
    pub fn parse(buf: &[u8]) -> Result<Self, PmkError> {
        let mut r = Reader { buf, pos: 0 };
        let ver = r.u8()?;
        if ver > 1 {
            return Err(PmkError("unknown cVer"));
        }
        let alen = r.u16()? as usize;
        let account = String::from_utf8(r.bytes(alen)?.to_vec())
            .map_err(|_| PmkError("account is not UTF-8"))?;
        let sdkappid = r.u32()?;
        let auth_id = r.u32()?;
        let expires_at = r.u32()?;
        let privileges = r.u32()?;
        let account_type = r.u32()?;
        let room = if ver == 1 {
            let rlen = r.u16()? as usize;
            PmkRoom::Str(
                String::from_utf8(r.bytes(rlen)?.to_vec())
                    .map_err(|_| PmkError("room is not UTF-8"))?,
            )
        } else {
            PmkRoom::Numeric(auth_id)
        };
        if r.pos != buf.len() {
            return Err(PmkError("trailing bytes"));
        }
        Ok(PrivateMapKey {
            account,
            sdkappid,
            room,
            expires_at,
            privileges,
            account_type,
        })
    }

    /// Serialises in the same layout (used to issue tickets in tests and the CLI).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(32 + self.account.len());
        out.push(matches!(self.room, PmkRoom::Str(_)) as u8);
        out.extend_from_slice(&(self.account.len() as u16).to_be_bytes());
        out.extend_from_slice(self.account.as_bytes());
        out.extend_from_slice(&self.sdkappid.to_be_bytes());
        let auth_id = match self.room {
            PmkRoom::Numeric(n) => n,
            PmkRoom::Str(_) => 0,
        };
        out.extend_from_slice(&auth_id.to_be_bytes());
        out.extend_from_slice(&self.expires_at.to_be_bytes());
        out.extend_from_slice(&self.privileges.to_be_bytes());
        out.extend_from_slice(&self.account_type.to_be_bytes());
        if let PmkRoom::Str(s) = &self.room {
            out.extend_from_slice(&(s.len() as u16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        out
    }

    pub fn allows(&self, bits: u32) -> bool {
        self.privileges & bits == bits
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], PmkError> {
        let end = self.pos.checked_add(n).ok_or(PmkError("length overflow"))?;
        let s = self.buf.get(self.pos..end).ok_or(PmkError("truncated"))?;
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, PmkError> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, PmkError> {
        let b = self.bytes(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, PmkError> {
        let b = self.bytes(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e";

    #[test]
    fn worked_vector_reproduces_byte_for_byte() {
        let sig = generate(
            1_400_000_000,
            KEY,
            "xiaojun",
            15_552_000,
            1_700_000_000,
            None,
        );
        assert_eq!(
            sig,
            "eJyrVgrxCdYrSy1SslJQMtIzUNJRAItkpqTmlWSmZUIkKjIT87NK82CSxSnZiQUFmSlAKUMTAyiAyqVWFGQWpYJkTE1NjRDiJZm5YFFzNPXFmekgG3zKHM1T9D3LzdODi-OKs8vCqpxcAvydnV2SSv2cy03cPcpDnA2SMgu0nUxslWoBHdYzUg__"
        );
    }

    #[test]
    fn expiry_boundary_is_inclusive() {
        let sig = generate(1, "k", "u", 10, 100, None);
        assert!(verify(&sig, 1, "k", "u", 110, UserBufCheck::Absent).is_ok());
        assert_eq!(
            verify(&sig, 1, "k", "u", 111, UserBufCheck::Absent),
            Err(VerifyError::Expired { expired_at: 110 })
        );
    }

    #[test]
    fn python_string_escapes() {
        let mut s = String::new();
        push_python_json_string(&mut s, "a\"b\\c/d<e>&f 😀\t\u{7f}é");
        assert_eq!(s, r#""a\"b\\c/d<e>&f \ud83d\ude00\t\u007f\u00e9""#);
    }

    #[test]
    fn pmk_round_trips_and_rejects_truncation() {
        let pmk = PrivateMapKey {
            account: "xiaojun".into(),
            sdkappid: 1_400_000_000,
            room: PmkRoom::Str("1000000040".into()),
            expires_at: 1_715_552_000,
            privileges: 255,
            account_type: 0,
        };
        let bytes = pmk.to_bytes();
        assert_eq!(
            hex::encode(&bytes),
            "0100077869616f6a756e53724e000000000066413f00000000ff00000000000a31303030303030303430"
        );
        assert_eq!(PrivateMapKey::parse(&bytes), Ok(pmk));
        for n in 0..bytes.len() {
            assert!(PrivateMapKey::parse(&bytes[..n]).is_err(), "prefix {n}");
        }
    }

    #[test]
    fn oversized_and_bomb_tokens_are_refused() {
        assert_eq!(
            decode(&"A".repeat(MAX_TOKEN_LEN + 1)),
            Err(VerifyError::Decode("too long"))
        );
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![b' '; 1 << 20]).unwrap();
        let bomb = b64x_encode(&enc.finish().unwrap());
        assert_eq!(
            decode(&bomb),
            Err(VerifyError::Decode("document too large"))
        );
    }
}
