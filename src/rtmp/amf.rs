//! A bounded AMF0 check for the command and data messages a peer sends.
//!
//! rml_rtmp decodes AMF0 with rml_amf0, which recurses once per nesting level
//! and trusts every count: a `connect` nesting objects a few thousand levels
//! deep overflows a worker's stack and aborts the process. Every AMF0 message
//! (`connect`, `publish`, `@setDataFrame`, ...) is scanned here first, without
//! recursion and without allocating, and refused when it nests deeper, holds
//! more entries or uses a type that rml_amf0 would not decode anyway. The
//! scan follows rml_amf0's grammar exactly (top-level values up to the end or
//! an object-end marker, ECMA arrays read as objects, a strict array ending
//! early at an object-end marker), so that what passes here decodes there
//! with at most `max_depth` levels. Pure: bytes in, a verdict out.

/// Limits on one AMF0 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AmfLimits {
    /// Objects and arrays open at once. Real clients nest two or three deep.
    pub max_depth: usize,
    /// Properties of one object or ECMA array, elements of one strict array.
    pub max_entries: usize,
}

impl Default for AmfLimits {
    fn default() -> Self {
        AmfLimits {
            max_depth: 32,
            max_entries: 1024,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AmfError {
    #[error("AMF0 nested deeper than {0} levels")]
    TooDeep(usize),
    #[error("AMF0 object or array with more than {0} entries")]
    TooManyEntries(usize),
    #[error("AMF0 value truncated at byte {0}")]
    Truncated(usize),
    #[error("AMF0 marker {marker:#04x} at byte {at} is not supported")]
    Marker { marker: u8, at: usize },
    #[error("AMF0 object property without a value at byte {0}")]
    MissingValue(usize),
}

const NUMBER: u8 = 0x00;
const BOOLEAN: u8 = 0x01;
const STRING: u8 = 0x02;
const OBJECT: u8 = 0x03;
const NULL: u8 = 0x05;
const UNDEFINED: u8 = 0x06;
const ECMA_ARRAY: u8 = 0x08;
const OBJECT_END: u8 = 0x09;
const STRICT_ARRAY: u8 = 0x0a;

/// An open container.
enum Open {
    /// An object or ECMA array: `name value` pairs up to an empty name and
    /// the end marker. `entries` read so far.
    Object { entries: usize },
    /// A strict array with `left` elements still declared.
    Array { left: u32 },
}

struct Reader<'a> {
    data: &'a [u8],
    at: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], AmfError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.data.len());
        let end = end.ok_or(AmfError::Truncated(self.at))?;
        let s = &self.data[self.at..end];
        self.at = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, AmfError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, AmfError> {
        let b = self.take(2)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Result<u32, AmfError> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn at_end(&self) -> bool {
        self.at >= self.data.len()
    }
}

/// Checks an AMF0 message body (a sequence of values) against `limits`;
/// returns how many top-level values it holds.
pub(crate) fn check(data: &[u8], limits: AmfLimits) -> Result<usize, AmfError> {
    let mut r = Reader { data, at: 0 };
    let mut stack: Vec<Open> = Vec::new();
    let mut values = 0;
    loop {
        let Some(top) = stack.last_mut() else {
            // Top level: values until the end (or an object-end marker).
            if r.at_end() {
                return Ok(values);
            }
            let at = r.at;
            match r.u8()? {
                OBJECT_END => return Ok(values),
                m => value(&mut r, m, at, &mut stack, limits)?,
            }
            values += 1;
            continue;
        };
        match top {
            Open::Object { entries } => {
                let name_len = r.u16()?;
                if name_len == 0 {
                    let at = r.at;
                    match r.u8()? {
                        OBJECT_END => {
                            stack.pop();
                            continue;
                        }
                        marker => return Err(AmfError::Marker { marker, at }),
                    }
                }
                *entries += 1;
                if *entries > limits.max_entries {
                    return Err(AmfError::TooManyEntries(limits.max_entries));
                }
                r.take(usize::from(name_len))?;
                let at = r.at;
                match r.u8()? {
                    OBJECT_END => return Err(AmfError::MissingValue(at)),
                    m => value(&mut r, m, at, &mut stack, limits)?,
                }
            }
            Open::Array { left } => {
                if *left == 0 {
                    stack.pop();
                    continue;
                }
                *left -= 1;
                let at = r.at;
                match r.u8()? {
                    // rml_amf0 ends a strict array early at an end marker.
                    OBJECT_END => {
                        stack.pop();
                    }
                    m => value(&mut r, m, at, &mut stack, limits)?,
                }
            }
        }
    }
}

/// Reads the value after `marker` (at byte `at`); a container is opened on
/// `stack` instead of read.
fn value(
    r: &mut Reader<'_>,
    marker: u8,
    at: usize,
    stack: &mut Vec<Open>,
    limits: AmfLimits,
) -> Result<(), AmfError> {
    let open = match marker {
        NUMBER => {
            r.take(8)?;
            return Ok(());
        }
        BOOLEAN => {
            r.take(1)?;
            return Ok(());
        }
        STRING => {
            let n = r.u16()?;
            r.take(usize::from(n))?;
            return Ok(());
        }
        NULL | UNDEFINED => return Ok(()),
        OBJECT => Open::Object { entries: 0 },
        ECMA_ARRAY => {
            // The declared count is ignored by rml_amf0 (it reads up to the
            // end marker) and so here: entries are counted as they come.
            r.u32()?;
            Open::Object { entries: 0 }
        }
        STRICT_ARRAY => {
            let left = r.u32()?;
            if left as usize > limits.max_entries {
                return Err(AmfError::TooManyEntries(limits.max_entries));
            }
            Open::Array { left }
        }
        marker => return Err(AmfError::Marker { marker, at }),
    };
    if stack.len() >= limits.max_depth {
        return Err(AmfError::TooDeep(limits.max_depth));
    }
    stack.push(open);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rml_amf0::Amf0Value;
    use std::collections::HashMap;

    fn encode(values: &[Amf0Value]) -> Vec<u8> {
        rml_amf0::serialize(&values.to_vec()).unwrap()
    }

    fn obj(pairs: &[(&str, Amf0Value)]) -> Amf0Value {
        Amf0Value::Object(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect::<HashMap<_, _>>(),
        )
    }

    /// `depth` nested containers of kind `marker`, as a peer would send them.
    fn nested(marker: u8, depth: usize) -> Vec<u8> {
        let mut b = vec![STRING, 0, 7];
        b.extend_from_slice(b"connect");
        b.push(NUMBER);
        b.extend_from_slice(&1f64.to_be_bytes());
        for _ in 0..depth {
            b.push(marker);
            match marker {
                OBJECT => b.extend_from_slice(&[0, 1, b'a']),
                ECMA_ARRAY => b.extend_from_slice(&[0, 0, 0, 1, 0, 1, b'a']),
                _ => b.extend_from_slice(&[0, 0, 0, 1]),
            }
        }
        b.push(NULL);
        for _ in 0..depth {
            if marker != STRICT_ARRAY {
                b.extend_from_slice(&[0, 0, OBJECT_END]);
            }
        }
        b
    }

    #[test]
    fn a_real_connect_and_metadata_pass() {
        let connect = encode(&[
            Amf0Value::Utf8String("connect".into()),
            Amf0Value::Number(1.0),
            obj(&[
                ("app", Amf0Value::Utf8String("push".into())),
                ("type", Amf0Value::Utf8String("nonprivate".into())),
                ("flashVer", Amf0Value::Utf8String("FMLE/3.0".into())),
                ("tcUrl", Amf0Value::Utf8String("rtmp://h/push".into())),
                ("fpad", Amf0Value::Boolean(false)),
                ("audioCodecs", Amf0Value::Number(3575.0)),
                ("nested", obj(&[("x", Amf0Value::Null)])),
            ]),
            Amf0Value::Undefined,
            Amf0Value::StrictArray(vec![Amf0Value::Number(1.0), Amf0Value::Null]),
        ]);
        assert_eq!(check(&connect, AmfLimits::default()), Ok(5));
        // An ECMA array as OBS writes onMetaData.
        let mut meta = vec![STRING, 0, 10];
        meta.extend_from_slice(b"onMetaData");
        meta.extend_from_slice(&[ECMA_ARRAY, 0, 0, 0, 2, 0, 5]);
        meta.extend_from_slice(b"width");
        meta.push(NUMBER);
        meta.extend_from_slice(&1280f64.to_be_bytes());
        meta.extend_from_slice(&[0, 7]);
        meta.extend_from_slice(b"encoder");
        meta.extend_from_slice(&[STRING, 0, 3]);
        meta.extend_from_slice(b"obs");
        meta.extend_from_slice(&[0, 0, OBJECT_END]);
        assert_eq!(check(&meta, AmfLimits::default()), Ok(2));
        assert!(rml_amf0::deserialize(&mut &meta[..]).is_ok());
        assert_eq!(check(&[], AmfLimits::default()), Ok(0));
    }

    #[test]
    fn nesting_is_refused_past_the_limit_for_every_container() {
        let limits = AmfLimits::default();
        for marker in [OBJECT, ECMA_ARRAY, STRICT_ARRAY] {
            let ok = nested(marker, limits.max_depth);
            assert_eq!(check(&ok, limits), Ok(3), "marker {marker}");
            // What passes decodes in rml_amf0 at that depth.
            assert!(rml_amf0::deserialize(&mut &ok[..]).is_ok());
            for depth in [limits.max_depth + 1, 100_000] {
                assert_eq!(
                    check(&nested(marker, depth), limits),
                    Err(AmfError::TooDeep(limits.max_depth)),
                    "marker {marker} depth {depth}"
                );
            }
        }
    }

    #[test]
    fn counts_are_bounded_and_declared_counts_are_not_trusted() {
        let limits = AmfLimits {
            max_depth: 4,
            max_entries: 3,
        };
        let many = |n: usize| {
            let mut b = vec![OBJECT];
            for i in 0..n {
                b.extend_from_slice(&[0, 1, b'a' + i as u8, NULL]);
            }
            b.extend_from_slice(&[0, 0, OBJECT_END]);
            b
        };
        assert_eq!(check(&many(3), limits), Ok(1));
        assert_eq!(check(&many(4), limits), Err(AmfError::TooManyEntries(3)));
        // A strict array declaring four billion elements is refused at once.
        let huge = [STRICT_ARRAY, 0xff, 0xff, 0xff, 0xff];
        assert_eq!(check(&huge, limits), Err(AmfError::TooManyEntries(3)));
        // An ECMA array's declared count is ignored; its entries are counted.
        let mut ecma = vec![ECMA_ARRAY, 0xff, 0xff, 0xff, 0xff];
        ecma.extend_from_slice(&many(2)[1..]);
        assert_eq!(check(&ecma, limits), Ok(1));
    }

    #[test]
    fn truncated_and_unknown_input_is_refused() {
        let l = AmfLimits::default();
        assert_eq!(check(&[NUMBER, 0, 0], l), Err(AmfError::Truncated(1)));
        assert_eq!(check(&[STRING, 0, 9, b'a'], l), Err(AmfError::Truncated(3)));
        assert_eq!(check(&[OBJECT, 0, 1, b'a'], l), Err(AmfError::Truncated(4)));
        assert_eq!(check(&[OBJECT], l), Err(AmfError::Truncated(1)));
        assert_eq!(
            check(&[0x11, 0x0a], l),
            Err(AmfError::Marker {
                marker: 0x11,
                at: 0
            })
        );
        assert_eq!(
            check(&[OBJECT, 0, 1, b'a', OBJECT_END], l),
            Err(AmfError::MissingValue(4))
        );
        assert_eq!(
            check(&[OBJECT, 0, 0, NULL], l),
            Err(AmfError::Marker {
                marker: NULL,
                at: 3
            })
        );
    }

    proptest::proptest! {
        /// Whatever bytes come in, the scan ends without panicking, and what
        /// it accepts rml_amf0 decodes without recursing past the limit (a
        /// small limit, so the decode itself is cheap).
        #[test]
        fn any_bytes_end_cleanly(data in proptest::collection::vec(
            proptest::prop_oneof![
                4 => proptest::prelude::Just(OBJECT),
                2 => proptest::prelude::Just(STRICT_ARRAY),
                2 => proptest::prelude::Just(ECMA_ARRAY),
                2 => proptest::prelude::Just(OBJECT_END),
                6 => proptest::prelude::Just(0u8),
                4 => proptest::num::u8::ANY,
            ],
            0..400,
        )) {
            let limits = AmfLimits { max_depth: 8, max_entries: 64 };
            if check(&data, limits).is_ok() {
                let _ = rml_amf0::deserialize(&mut &data[..]);
            }
        }
    }
}
