//! Reading API 3.0 parameters with TRTC's error codes.
//!
//! POST bodies are JSON; GET requests flatten them into the query string
//! (`UserIds.0=a&UserIds.1=b`, `AgentParams.UserId=x`), which `from_query`
//! folds back into JSON. Getters answer `MissingParameter.<Name>` or
//! `InvalidParameter.<Name>` (falling back to the generic codes for names
//! TRTC has no specific code for).

use serde_json::{Map, Value};

use super::ApiError;

pub(super) struct Params<'a> {
    obj: &'a Map<String, Value>,
}

/// The specific codes TRTC defines; other names use the generic ones.
fn missing_code(name: &str) -> &'static str {
    match name {
        "SdkAppId" => "MissingParameter.SdkAppId",
        "RoomId" => "MissingParameter.RoomId",
        "UserIds" => "MissingParameter.UserIds",
        "TaskId" => "MissingParameter.TaskId",
        "UserId" => "MissingParameter.UserId",
        "UserSig" => "MissingParameter.UserSig",
        "RecordParams" => "MissingParameter.RecordParams",
        "RecordMode" => "MissingParameter.RecordMode",
        "StorageParams" => "MissingParameter.StorageParams",
        "CloudStorage" => "MissingParameter.CloudStorage",
        _ => "MissingParameter",
    }
}

fn invalid_code(name: &str) -> &'static str {
    match name {
        "SdkAppId" => "InvalidParameter.SdkAppId",
        "RoomId" => "InvalidParameter.RoomId",
        "UserIds" => "InvalidParameter.UserIds",
        "TaskId" => "InvalidParameter.TaskId",
        "StreamUrl" => "InvalidParameter.StreamUrl",
        "UserSig" => "InvalidParameter.UserSig",
        _ => "InvalidParameter",
    }
}

pub(super) fn missing(name: &str) -> ApiError {
    ApiError::new(
        missing_code(name),
        format!("The parameter `{name}` is missing."),
    )
}

pub(super) fn invalid(name: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        invalid_code(name),
        format!("The parameter `{name}` is invalid: {why}."),
    )
}

/// What roomcast does not do, said rather than ignored.
pub(super) fn unsupported(what: &str) -> ApiError {
    ApiError::new(
        "UnsupportedOperation",
        format!("{what} is not available in this build of roomcast."),
    )
}

/// A relay profile built from request parameters, validated by the same
/// code as a profile file; errors name the profile field and carry `code`.
pub(super) fn validated(
    file: crate::profile::ProfileFile,
    name: &str,
    code: &'static str,
) -> Result<crate::profile::RelayProfile, ApiError> {
    crate::profile::validate(file, name, std::path::Path::new("request")).map_err(|e| {
        ApiError::new(
            code,
            format!("The mix parameters are invalid: {}: {}.", e.field, e.reason),
        )
    })
}

impl<'a> Params<'a> {
    pub(super) fn new(obj: &'a Map<String, Value>) -> Params<'a> {
        Params { obj }
    }

    pub(super) fn get(&self, name: &str) -> Option<&'a Value> {
        self.obj.get(name).filter(|v| !v.is_null())
    }

    pub(super) fn u64(&self, name: &str) -> Result<Option<u64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_u64()
                .map(Some)
                .ok_or_else(|| invalid(name, "not an unsigned integer")),
            // GET-flattened values arrive as strings.
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| invalid(name, "not an unsigned integer")),
            Some(_) => Err(invalid(name, "not an unsigned integer")),
        }
    }

    pub(super) fn i64(&self, name: &str) -> Result<Option<i64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_i64()
                .map(Some)
                .ok_or_else(|| invalid(name, "not an integer")),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| invalid(name, "not an integer")),
            Some(_) => Err(invalid(name, "not an integer")),
        }
    }

    pub(super) fn f64(&self, name: &str) -> Result<Option<f64>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Number(n)) => n
                .as_f64()
                .map(Some)
                .ok_or_else(|| invalid(name, "not a number")),
            Some(Value::String(s)) => s
                .parse()
                .map(Some)
                .map_err(|_| invalid(name, "not a number")),
            Some(_) => Err(invalid(name, "not a number")),
        }
    }

    pub(super) fn bool(&self, name: &str) -> Result<Option<bool>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(Value::String(s)) if s == "true" || s == "false" => Ok(Some(s == "true")),
            Some(_) => Err(invalid(name, "not a boolean")),
        }
    }

    pub(super) fn req_u64(&self, name: &str) -> Result<u64, ApiError> {
        self.u64(name)?.ok_or_else(|| missing(name))
    }

    pub(super) fn str(&self, name: &str) -> Result<Option<&'a str>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(_) => Err(invalid(name, "not a string")),
        }
    }

    pub(super) fn req_str(&self, name: &str) -> Result<&'a str, ApiError> {
        self.str(name)?.ok_or_else(|| missing(name))
    }

    pub(super) fn object(&self, name: &str) -> Result<Option<Params<'a>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Object(o)) => Ok(Some(Params::new(o))),
            Some(_) => Err(invalid(name, "not an object")),
        }
    }

    pub(super) fn array(&self, name: &str) -> Result<Option<&'a Vec<Value>>, ApiError> {
        match self.get(name) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(invalid(name, "not an array")),
        }
    }
}

/// Parts in one query key (TRTC's deepest parameter has five).
const MAX_QUERY_DEPTH: usize = 8;
/// Largest list index in a query key (TRTC's longest lists hold 50).
const MAX_QUERY_INDEX: usize = 255;
/// Keys in one query string.
const MAX_QUERY_KEYS: usize = 1024;

/// Folds `A.0=x&A.1=y&B.C=z` back into `{"A": ["x","y"], "B": {"C": "z"}}`.
/// Keys deeper than [`MAX_QUERY_DEPTH`], indexes past [`MAX_QUERY_INDEX`] and
/// more than [`MAX_QUERY_KEYS`] keys are refused: what is built is bounded.
pub(super) fn from_query(query: &str) -> Result<Value, ApiError> {
    let mut root = Value::Object(Map::new());
    for (n, (k, v)) in form_urlencoded::parse(query.as_bytes()).enumerate() {
        if n >= MAX_QUERY_KEYS {
            return Err(ApiError::new(
                "InvalidParameter",
                format!("The query string has more than {MAX_QUERY_KEYS} parameters."),
            ));
        }
        let mut node = &mut root;
        let parts: Vec<&str> = k.split('.').collect();
        if parts.len() > MAX_QUERY_DEPTH {
            return Err(ApiError::new(
                "InvalidParameter",
                format!("The parameter `{k}` nests deeper than {MAX_QUERY_DEPTH} levels."),
            ));
        }
        for (i, part) in parts.iter().enumerate() {
            let last = i + 1 == parts.len();
            let next_is_index = parts.get(i + 1).is_some_and(|p| p.parse::<usize>().is_ok());
            let fresh = || {
                if last {
                    Value::String(v.to_string())
                } else if next_is_index {
                    Value::Array(Vec::new())
                } else {
                    Value::Object(Map::new())
                }
            };
            node = match node {
                Value::Object(m) => m.entry(part.to_string()).or_insert_with(fresh),
                Value::Array(a) => {
                    let Ok(idx) = part.parse::<usize>() else {
                        break;
                    };
                    if idx > MAX_QUERY_INDEX {
                        return Err(ApiError::new(
                            "InvalidParameter",
                            format!("The parameter `{k}` has an index over {MAX_QUERY_INDEX}."),
                        ));
                    }
                    while a.len() <= idx {
                        a.push(Value::Null);
                    }
                    if a[idx].is_null() {
                        a[idx] = fresh();
                    }
                    &mut a[idx]
                }
                _ => break,
            };
        }
    }
    Ok(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn folds_flattened_queries() {
        assert_eq!(
            from_query(
                "SdkAppId=1400188366&RoomId=1234&UserIds.0=user_1&UserIds.1=user_2&AgentParams.UserId=bot"
            )
            .unwrap(),
            json!({"SdkAppId": "1400188366", "RoomId": "1234", "UserIds": ["user_1", "user_2"], "AgentParams": {"UserId": "bot"}})
        );
    }

    #[test]
    fn queries_that_would_build_deep_or_huge_values_are_refused() {
        let deep = format!("{}=1", ["a"; 30_000].join("."));
        assert_eq!(from_query(&deep).unwrap_err().code, "InvalidParameter");
        let dots = format!("{}=1", ".".repeat(30_000));
        assert_eq!(from_query(&dots).unwrap_err().code, "InvalidParameter");
        assert!(from_query("L.256=x").is_err());
        assert!(from_query("L.255=x").is_ok());
        let many: Vec<String> = (0..1025).map(|i| format!("k{i}=1")).collect();
        assert!(from_query(&many.join("&")).is_err());
        assert!(from_query("A.B.C.D.E.F.G.H=1").is_ok());
    }

    #[test]
    fn typed_getters_name_the_parameter() {
        let v = json!({"SdkAppId": "x", "RoomId": 5, "Name": "n"});
        let p = Params::new(v.as_object().unwrap());
        assert_eq!(
            p.req_u64("SdkAppId").unwrap_err().code,
            "InvalidParameter.SdkAppId"
        );
        assert_eq!(
            p.req_u64("TaskId").unwrap_err().code,
            "MissingParameter.TaskId"
        );
        assert_eq!(
            p.req_str("RoomId").unwrap_err().code,
            "InvalidParameter.RoomId"
        );
        assert_eq!(p.req_str("Name").unwrap(), "n");
        assert_eq!(p.req_str("Other").unwrap_err().code, "MissingParameter");
    }
}
