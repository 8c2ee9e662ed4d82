//! TC3-HMAC-SHA256 verification against the worked vectors and every request
//! Tencent's SDKs sent in the captures, including the Node SDK's quirks.

use roomcast::auth::tc3::{self, SignedRequest, Tc3Error};
use serde_json::Value;

fn captures() -> Value {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/trtc/api_captures.json"
    ))
    .unwrap();
    serde_json::from_str(&text).unwrap()
}

/// Verifies a captured request (headers as received) at `now`.
fn verify_capture(req: &Value, now: u64, keys: &[(&str, &str)]) -> Result<tc3::Verified, Tc3Error> {
    let headers: Vec<(String, String)> = req["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| {
            (
                h[0].as_str().unwrap().to_ascii_lowercase(),
                h[1].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let lookup = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let path = req["path"].as_str().unwrap_or("/");
    let query = path.split_once('?').map(|(_, q)| q).unwrap_or("");
    let body = req.get("body").and_then(Value::as_str).unwrap_or("");
    let sreq = SignedRequest {
        method: req["method"].as_str().unwrap(),
        path: "/",
        query,
        header: &lookup,
        body: body.as_bytes(),
    };
    tc3::verify(&sreq, now, 300, |id| {
        keys.iter().find(|(i, _)| *i == id).map(|(_, k)| *k)
    })
}

#[test]
fn worked_vectors_sign_identically() {
    let c = captures();
    for v in c["worked_tc3_vectors"].as_array().unwrap() {
        let auth = tc3::authorization_for_post(
            v["secret_id"].as_str().unwrap(),
            v["secret_key"].as_str().unwrap(),
            v["timestamp"].as_u64().unwrap(),
            v["host"].as_str().unwrap(),
            v["content_type"].as_str().unwrap(),
            v["body"].as_str().unwrap().as_bytes(),
        );
        assert_eq!(auth, v["authorization"].as_str().unwrap());
        assert_eq!(
            tc3::utc_date(v["timestamp"].as_u64().unwrap()),
            v["date"].as_str().unwrap()
        );
    }
}

#[test]
fn every_python_sdk_capture_verifies() {
    let c = captures();
    let id = c["meta"]["secret_id"].as_str().unwrap();
    let key = c["meta"]["secret_key"].as_str().unwrap();
    let now = c["meta"]["fixed_timestamp"].as_u64().unwrap();
    let actions = c["actions"].as_object().unwrap();
    assert_eq!(actions.len(), 12);
    for (name, a) in actions {
        let ok = verify_capture(&a["request"], now, &[(id, key)]);
        assert!(ok.is_ok(), "{name}: {ok:?}");
        // The same request with another key, later, or unknown id is refused.
        assert_eq!(
            verify_capture(&a["request"], now, &[(id, "wrong")])
                .unwrap_err()
                .code(),
            "AuthFailure.SignatureFailure",
            "{name}"
        );
        assert_eq!(
            verify_capture(&a["request"], now + 3600, &[(id, key)])
                .unwrap_err()
                .code(),
            "AuthFailure.SignatureExpire",
            "{name}"
        );
        assert_eq!(
            verify_capture(&a["request"], now, &[("AKIDother", key)])
                .unwrap_err()
                .code(),
            "AuthFailure.SecretIdNotFound",
            "{name}"
        );
    }
}

#[test]
fn get_variant_verifies_with_its_query() {
    let c = captures();
    let req = &c["error_paths"]["GET_method_variant"]["request"];
    let id = c["meta"]["secret_id"].as_str().unwrap();
    let key = c["meta"]["secret_key"].as_str().unwrap();
    assert!(verify_capture(req, 1_700_000_000, &[(id, key)]).is_ok());
}

#[test]
fn node_sdk_capture_verifies_despite_host_and_service_quirks() {
    let c = captures();
    let (_, cap) = c["other_sdk_captures"]
        .as_object()
        .unwrap()
        .iter()
        .find(|(k, _)| k.starts_with("tencentcloud-sdk-nodejs"))
        .unwrap();
    let id = c["meta"]["secret_id"].as_str().unwrap();
    let key = c["meta"]["secret_key"].as_str().unwrap();
    let got = verify_capture(&cap["request"], 1_700_000_000, &[(id, key)]);
    assert!(got.is_ok(), "{got:?}");
    assert_eq!(
        verify_capture(&cap["request"], 1_700_000_000, &[(id, "nope")])
            .unwrap_err()
            .code(),
        "AuthFailure.SignatureFailure"
    );
}

#[test]
fn tampered_capture_is_refused() {
    let c = captures();
    let id = c["meta"]["secret_id"].as_str().unwrap();
    let key = c["meta"]["secret_key"].as_str().unwrap();
    let mut req = c["actions"]["DismissRoom"]["request"].clone();
    let body = req["body"].as_str().unwrap().replace("1234", "1235");
    req["body"] = Value::String(body);
    assert!(matches!(
        verify_capture(&req, 1_700_000_000, &[(id, key)]),
        Err(Tc3Error::SignatureFailure(_))
    ));
}
