//! TC3-HMAC-SHA256: the request signature of Tencent Cloud API 3.0.
//!
//! Verifies a request (method, query, headers, raw body) against configured
//! SecretId/SecretKey pairs, in the order and with the error codes TRTC's
//! SDKs expect (SPEC §2.3). Tolerates the known SDK differences: the Node SDK
//! signs `host` without the port and derives the credential-scope service
//! from the endpoint's first label, so the service is taken from the
//! credential scope (allowed: `trtc` or the Host header's first label) and
//! the host is tried as sent and with its port stripped.
//!
//! Pure: the current unix time is an argument; no I/O.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
pub const SERVICE: &str = "trtc";
/// Default tolerated clock skew between caller and server, seconds.
pub const DEFAULT_MAX_SKEW_SECS: u64 = 300;

/// A refused signature, each variant one API 3.0 error code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Tc3Error {
    #[error("the Authorization header is missing or malformed: {0}")]
    InvalidAuthorization(&'static str),
    #[error("the SecretId is not found")]
    SecretIdNotFound,
    #[error("signature expired: timestamp and server time differ by more than {max_skew} seconds")]
    SignatureExpire { max_skew: u64 },
    #[error("the provided credentials could not be validated: {0}")]
    SignatureFailure(&'static str),
}

impl Tc3Error {
    /// The API 3.0 error code for this refusal.
    pub fn code(&self) -> &'static str {
        match self {
            Tc3Error::InvalidAuthorization(_) => "AuthFailure.InvalidAuthorization",
            Tc3Error::SecretIdNotFound => "AuthFailure.SecretIdNotFound",
            Tc3Error::SignatureExpire { .. } => "AuthFailure.SignatureExpire",
            Tc3Error::SignatureFailure(_) => "AuthFailure.SignatureFailure",
        }
    }
}

/// The parts of an HTTP request the signature covers.
pub struct SignedRequest<'a> {
    pub method: &'a str,
    /// The request path: the canonical URI (`/` for TRTC's API 3.0).
    pub path: &'a str,
    /// Raw query string as sent (no leading `?`), empty for POST.
    pub query: &'a str,
    /// Header lookup by lower-case name.
    pub header: &'a dyn Fn(&str) -> Option<&'a str>,
    pub body: &'a [u8],
}

/// A verified caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    pub secret_id: String,
    pub timestamp: u64,
}

/// The parsed `Authorization: TC3-HMAC-SHA256 Credential=.., SignedHeaders=.., Signature=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub secret_id: &'a str,
    pub date: &'a str,
    pub service: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

impl<'a> Authorization<'a> {
    pub fn parse(value: &'a str) -> Result<Self, Tc3Error> {
        let rest = value
            .trim()
            .strip_prefix(ALGORITHM)
            .ok_or(Tc3Error::InvalidAuthorization(
                "algorithm must be TC3-HMAC-SHA256",
            ))?;
        let (mut cred, mut signed, mut sig) = (None, None, None);
        for part in rest.split(',') {
            let (k, v) = part
                .trim()
                .split_once('=')
                .ok_or(Tc3Error::InvalidAuthorization("expected key=value parts"))?;
            match k {
                "Credential" => cred = Some(v),
                "SignedHeaders" => signed = Some(v),
                "Signature" => sig = Some(v),
                _ => return Err(Tc3Error::InvalidAuthorization("unknown part")),
            }
        }
        let cred = cred.ok_or(Tc3Error::InvalidAuthorization("missing Credential"))?;
        let signed = signed.ok_or(Tc3Error::InvalidAuthorization("missing SignedHeaders"))?;
        let signature = sig.ok_or(Tc3Error::InvalidAuthorization("missing Signature"))?;
        let mut it = cred.split('/');
        let (Some(secret_id), Some(date), Some(service), Some("tc3_request"), None) =
            (it.next(), it.next(), it.next(), it.next(), it.next())
        else {
            return Err(Tc3Error::InvalidAuthorization(
                "Credential must be SecretId/Date/service/tc3_request",
            ));
        };
        if secret_id.is_empty() {
            return Err(Tc3Error::InvalidAuthorization("empty SecretId"));
        }
        let signed_headers: Vec<&str> = signed.split(';').collect();
        if signed_headers.iter().any(|h| h.is_empty()) {
            return Err(Tc3Error::InvalidAuthorization("empty SignedHeaders entry"));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Tc3Error::InvalidAuthorization(
                "Signature must be 64 hex digits",
            ));
        }
        Ok(Authorization {
            secret_id,
            date,
            service,
            signed_headers,
            signature,
        })
    }
}

/// Verifies a request. `secret_key_of` maps a SecretId to its key.
pub fn verify<'k>(
    req: &SignedRequest<'_>,
    now: u64,
    max_skew: u64,
    secret_key_of: impl Fn(&str) -> Option<&'k str>,
) -> Result<Verified, Tc3Error> {
    let auth_value = (req.header)("authorization").ok_or(Tc3Error::InvalidAuthorization(
        "missing Authorization header",
    ))?;
    let auth = Authorization::parse(auth_value)?;
    let key = secret_key_of(auth.secret_id).ok_or(Tc3Error::SecretIdNotFound)?;

    let timestamp: u64 = (req.header)("x-tc-timestamp")
        .and_then(|t| t.trim().parse().ok())
        .ok_or(Tc3Error::InvalidAuthorization(
            "missing or malformed X-TC-Timestamp",
        ))?;
    if now.abs_diff(timestamp) > max_skew {
        return Err(Tc3Error::SignatureExpire { max_skew });
    }
    if auth.date != utc_date(timestamp) {
        return Err(Tc3Error::SignatureFailure(
            "credential date is not the UTC date of X-TC-Timestamp",
        ));
    }
    let host = (req.header)("host").unwrap_or("");
    let host_label = host.split(['.', ':']).next().unwrap_or("");
    if auth.service != SERVICE && auth.service != host_label {
        return Err(Tc3Error::SignatureFailure(
            "unexpected service in credential scope",
        ));
    }

    let payload_hash = match (req.header)("x-tc-content-sha256") {
        Some(v) if v.trim() == "UNSIGNED-PAYLOAD" => "UNSIGNED-PAYLOAD".to_owned(),
        _ => hex::encode(Sha256::digest(req.body)),
    };
    // The host as sent, then without its port (Node SDK).
    let mut host_variants = vec![host];
    if let Some((h, port)) = host.rsplit_once(':')
        && !port.is_empty()
        && port.bytes().all(|b| b.is_ascii_digit())
        && (h.ends_with(']') || !h.contains(':'))
    {
        host_variants.push(h);
    }
    for host in host_variants {
        let canonical = canonical_request(req, &auth.signed_headers, host, &payload_hash)
            .ok_or(Tc3Error::SignatureFailure("a signed header is missing"))?;
        let expected = signature(key, timestamp, auth.service, &canonical);
        if constant_time_eq(
            expected.as_bytes(),
            auth.signature.to_ascii_lowercase().as_bytes(),
        ) {
            return Ok(Verified {
                secret_id: auth.secret_id.to_owned(),
                timestamp,
            });
        }
    }
    Err(Tc3Error::SignatureFailure("signature mismatch"))
}

/// Builds the canonical request; `None` if a signed header is absent.
pub fn canonical_request(
    req: &SignedRequest<'_>,
    signed_headers: &[&str],
    host: &str,
    payload_hash: &str,
) -> Option<String> {
    let mut names: Vec<String> = signed_headers
        .iter()
        .map(|h| h.to_ascii_lowercase())
        .collect();
    names.sort();
    let mut headers = String::new();
    for name in &names {
        let value = if name == "host" {
            host
        } else {
            (req.header)(name)?
        };
        headers.push_str(name);
        headers.push(':');
        headers.push_str(&value.trim().to_ascii_lowercase());
        headers.push('\n');
    }
    Some(format!(
        "{}\n{}\n{}\n{}\n{}\n{}",
        req.method.to_ascii_uppercase(),
        req.path,
        req.query,
        headers,
        names.join(";"),
        payload_hash
    ))
}

/// Signature = hex(HMAC(kSigning, StringToSign)) for a canonical request.
pub fn signature(secret_key: &str, timestamp: u64, service: &str, canonical: &str) -> String {
    let date = utc_date(timestamp);
    let string_to_sign = format!(
        "{ALGORITHM}\n{timestamp}\n{date}/{service}/tc3_request\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    );
    let k_date = hmac(format!("TC3{secret_key}").as_bytes(), date.as_bytes());
    let k_service = hmac(&k_date, service.as_bytes());
    let k_signing = hmac(&k_service, b"tc3_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Signs a POST request the way the Python SDK does (for tests and tools).
pub fn authorization_for_post(
    secret_id: &str,
    secret_key: &str,
    timestamp: u64,
    host: &str,
    content_type: &str,
    body: &[u8],
) -> String {
    authorization_for(
        secret_id,
        secret_key,
        timestamp,
        host,
        ("POST", "/", ""),
        content_type,
        body,
    )
}

/// Signs any request (`(method, path, query)`) over `content-type` and
/// `host`, as the SDKs sign their POSTs (for tests, tools and the status API's callers).
pub fn authorization_for(
    secret_id: &str,
    secret_key: &str,
    timestamp: u64,
    host: &str,
    (method, path, query): (&str, &str, &str),
    content_type: &str,
    body: &[u8],
) -> String {
    let header = |name: &str| match name {
        "content-type" => Some(content_type),
        _ => None,
    };
    let req = SignedRequest {
        method,
        path,
        query,
        header: &header,
        body,
    };
    let canonical = canonical_request(
        &req,
        &["content-type", "host"],
        host,
        &hex::encode(Sha256::digest(body)),
    )
    .expect("content-type is given");
    format!(
        "{ALGORITHM} Credential={secret_id}/{}/{SERVICE}/tc3_request, SignedHeaders=content-type;host, Signature={}",
        utc_date(timestamp),
        signature(secret_key, timestamp, SERVICE, &canonical)
    )
}

fn hmac(key: &[u8], msg: &[u8]) -> Vec<u8> {
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes any key");
    mac.update(msg);
    mac.finalize().into_bytes().to_vec()
}

/// Equality that takes the same time wherever the inputs differ (secrets).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `YYYY-MM-DD` of a unix timestamp in UTC (civil-from-days, proleptic Gregorian).
pub fn utc_date(unix: u64) -> String {
    let days = (unix / 86_400) as i64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_dates() {
        assert_eq!(utc_date(0), "1970-01-01");
        assert_eq!(utc_date(1_700_000_000), "2023-11-14");
        assert_eq!(utc_date(951_782_400), "2000-02-29");
        assert_eq!(utc_date(4_107_542_399), "2100-02-28");
    }

    #[test]
    fn parses_authorization() {
        let a = Authorization::parse(
            "TC3-HMAC-SHA256 Credential=AKID/2023-11-14/trtc/tc3_request, SignedHeaders=content-type;host, Signature=606a1090ffa28509daa974b180573213675c591920740ecbde2edbad0261a650",
        )
        .unwrap();
        assert_eq!(a.secret_id, "AKID");
        assert_eq!(a.service, "trtc");
        assert_eq!(a.signed_headers, vec!["content-type", "host"]);
        for bad in [
            "",
            "HMAC-SHA1 Credential=a/b/c/tc3_request",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=host",
            "TC3-HMAC-SHA256 Credential=a/b/tc3_request, SignedHeaders=host, Signature=00",
            "TC3-HMAC-SHA256 Credential=a/b/c/tc3_request, SignedHeaders=host, Signature=zz",
        ] {
            assert!(
                matches!(
                    Authorization::parse(bad),
                    Err(Tc3Error::InvalidAuthorization(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn sign_then_verify_and_refusals() {
        let body = br#"{"SdkAppId": 1}"#;
        let auth = authorization_for_post("id", "key", 1000, "h:1", "application/json", body);
        let headers = |name: &str| match name {
            "authorization" => Some(auth.as_str()),
            "x-tc-timestamp" => Some("1000"),
            "host" => Some("h:1"),
            "content-type" => Some("application/json"),
            _ => None,
        };
        let req = SignedRequest {
            method: "POST",
            path: "/",
            query: "",
            header: &headers,
            body,
        };
        let keys = |id: &str| (id == "id").then_some("key");
        assert!(verify(&req, 1000, 300, keys).is_ok());
        assert!(verify(&req, 1300, 300, keys).is_ok());
        assert_eq!(
            verify(&req, 1301, 300, keys),
            Err(Tc3Error::SignatureExpire { max_skew: 300 })
        );
        assert_eq!(
            verify(&req, 1000, 300, |_| Some("other"))
                .unwrap_err()
                .code(),
            "AuthFailure.SignatureFailure"
        );
        assert_eq!(
            verify(&req, 1000, 300, |_| None),
            Err(Tc3Error::SecretIdNotFound)
        );
        let elsewhere = SignedRequest {
            path: "/v1/status",
            ..req
        };
        assert!(
            matches!(
                verify(&elsewhere, 1000, 300, keys),
                Err(Tc3Error::SignatureFailure(_))
            ),
            "the path is signed"
        );
        let tampered = SignedRequest {
            body: br#"{"SdkAppId": 2}"#,
            ..req
        };
        assert!(matches!(
            verify(&tampered, 1000, 300, keys),
            Err(Tc3Error::SignatureFailure(_))
        ));
    }
}
