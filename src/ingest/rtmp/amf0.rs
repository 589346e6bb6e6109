//! AMF0 (Action Message Format 0, Adobe AMF0 specification, 2006): the
//! encoding of RTMP commands and metadata.
//!
//! Supported types (§2.2 to §2.14): number, boolean, string, object, null,
//! undefined, ECMA array, object end, strict array and long string. The
//! others (movieclip, reference, date, unsupported, recordset, XML document,
//! typed object, AVM+) never appear in what ffmpeg and OBS send and are
//! reported as unsupported.
//!
//! Contract: messages are whole when AMF0 is decoded, so a value cut short
//! is malformed, not incomplete. Decoding is bounded: nesting deeper than
//! [`MAX_DEPTH`] or more than [`MAX_VALUES`] values in one message is a limit
//! error, and no allocation is sized by a count the peer wrote.
//! [`Amf0Value::encode`] and [`decode`] are inverse for every value whose
//! object keys are at most 65 535 bytes.

use super::{Reader, RtmpError};

/// How deep objects and arrays may nest. Commands nest two levels.
pub const MAX_DEPTH: usize = 16;

/// How many values (properties and array items included) one decode may
/// produce. Metadata has a few dozen.
pub const MAX_VALUES: usize = 4096;

mod marker {
    pub const NUMBER: u8 = 0x00;
    pub const BOOLEAN: u8 = 0x01;
    pub const STRING: u8 = 0x02;
    pub const OBJECT: u8 = 0x03;
    pub const MOVIECLIP: u8 = 0x04;
    pub const NULL: u8 = 0x05;
    pub const UNDEFINED: u8 = 0x06;
    pub const REFERENCE: u8 = 0x07;
    pub const ECMA_ARRAY: u8 = 0x08;
    pub const OBJECT_END: u8 = 0x09;
    pub const STRICT_ARRAY: u8 = 0x0A;
    pub const DATE: u8 = 0x0B;
    pub const LONG_STRING: u8 = 0x0C;
    pub const UNSUPPORTED: u8 = 0x0D;
    pub const RECORDSET: u8 = 0x0E;
    pub const XML_DOCUMENT: u8 = 0x0F;
    pub const TYPED_OBJECT: u8 = 0x10;
    pub const AVMPLUS: u8 = 0x11;
}

/// One AMF0 value.
#[derive(Debug, Clone, PartialEq)]
pub enum Amf0Value {
    /// An IEEE 754 double (§2.2).
    Number(f64),
    /// A boolean (§2.3).
    Boolean(bool),
    /// A UTF-8 string; encoded as a long string (§2.14) above 65 535 bytes.
    String(String),
    /// An anonymous object: properties in the order sent (§2.5).
    Object(Vec<(String, Amf0Value)>),
    /// null (§2.7).
    Null,
    /// undefined (§2.8).
    Undefined,
    /// An associative array (§2.10), as `onMetaData` uses.
    EcmaArray(Vec<(String, Amf0Value)>),
    /// A dense array (§2.12).
    StrictArray(Vec<Amf0Value>),
}

impl Amf0Value {
    /// A string value.
    pub fn string(value: impl Into<String>) -> Self {
        Self::String(value.into())
    }

    /// An object from `(key, value)` pairs.
    pub fn object<K: Into<String>>(properties: impl IntoIterator<Item = (K, Amf0Value)>) -> Self {
        Self::Object(properties.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// The string, if this is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::String(s) => Some(s),
            _ => None,
        }
    }

    /// The number, if this is one.
    pub fn as_number(&self) -> Option<f64> {
        match self {
            Self::Number(n) => Some(*n),
            _ => None,
        }
    }

    /// The properties of an object or ECMA array.
    pub fn properties(&self) -> Option<&[(String, Amf0Value)]> {
        match self {
            Self::Object(p) | Self::EcmaArray(p) => Some(p),
            _ => None,
        }
    }

    /// The first property named `key` of an object or ECMA array.
    pub fn get(&self, key: &str) -> Option<&Amf0Value> {
        self.properties()?
            .iter()
            .find_map(|(k, v)| (k == key).then_some(v))
    }

    /// Appends the encoding of this value to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Self::Number(n) => {
                out.push(marker::NUMBER);
                out.extend_from_slice(&n.to_be_bytes());
            }
            Self::Boolean(b) => out.extend_from_slice(&[marker::BOOLEAN, u8::from(*b)]),
            Self::String(s) => match u16::try_from(s.len()) {
                Ok(len) => {
                    out.push(marker::STRING);
                    out.extend_from_slice(&len.to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                Err(_) => {
                    out.push(marker::LONG_STRING);
                    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
            },
            Self::Object(properties) => {
                out.push(marker::OBJECT);
                encode_properties(properties, out);
            }
            Self::Null => out.push(marker::NULL),
            Self::Undefined => out.push(marker::UNDEFINED),
            Self::EcmaArray(properties) => {
                out.push(marker::ECMA_ARRAY);
                // The count is advisory (readers go by the end marker).
                out.extend_from_slice(&(properties.len() as u32).to_be_bytes());
                encode_properties(properties, out);
            }
            Self::StrictArray(items) => {
                out.push(marker::STRICT_ARRAY);
                out.extend_from_slice(&(items.len() as u32).to_be_bytes());
                for item in items {
                    item.encode(out);
                }
            }
        }
    }
}

fn encode_properties(properties: &[(String, Amf0Value)], out: &mut Vec<u8>) {
    for (key, value) in properties {
        // Keys are UTF-8-16: at most 65 535 bytes. Longer keys (never ours)
        // are cut at a character boundary rather than corrupting the stream.
        let mut end = key.len().min(usize::from(u16::MAX));
        while !key.is_char_boundary(end) {
            end -= 1;
        }
        out.extend_from_slice(&(end as u16).to_be_bytes());
        out.extend_from_slice(&key.as_bytes()[..end]);
        value.encode(out);
    }
    out.extend_from_slice(&[0, 0, marker::OBJECT_END]);
}

/// Encodes a sequence of values, as a command or data message carries them.
pub fn encode_all(values: &[Amf0Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for value in values {
        value.encode(&mut out);
    }
    out
}

/// Decodes one value from the front of `input`; returns it and the bytes it
/// took.
pub fn decode(input: &[u8]) -> Result<(Amf0Value, usize), RtmpError> {
    let mut decoder = Decoder {
        reader: Reader::new(input),
        values: 0,
    };
    let value = decoder.value(0)?;
    Ok((value, decoder.reader.position()))
}

/// Decodes all of `input` as a sequence of values.
pub fn decode_all(input: &[u8]) -> Result<Vec<Amf0Value>, RtmpError> {
    let mut decoder = Decoder {
        reader: Reader::new(input),
        values: 0,
    };
    let mut values = Vec::new();
    while decoder.reader.remaining() > 0 {
        values.push(decoder.value(0)?);
    }
    Ok(values)
}

struct Decoder<'a> {
    reader: Reader<'a>,
    values: usize,
}

impl Decoder<'_> {
    fn truncated(&self, what: &str) -> RtmpError {
        RtmpError::malformed(format!(
            "AMF0 {what} cut short at byte {} of the message",
            self.reader.position()
        ))
    }

    fn value(&mut self, depth: usize) -> Result<Amf0Value, RtmpError> {
        if depth > MAX_DEPTH {
            return Err(RtmpError::limit(format!(
                "AMF0 values nested deeper than {MAX_DEPTH}"
            )));
        }
        self.values += 1;
        if self.values > MAX_VALUES {
            return Err(RtmpError::limit(format!(
                "more than {MAX_VALUES} AMF0 values in one message"
            )));
        }
        let at = self.reader.position();
        let marker = self.reader.u8().ok_or_else(|| self.truncated("marker"))?;
        Ok(match marker {
            marker::NUMBER => {
                let bytes = self
                    .reader
                    .bytes(8)
                    .ok_or_else(|| self.truncated("number"))?;
                let mut array = [0; 8];
                array.copy_from_slice(bytes);
                Amf0Value::Number(f64::from_be_bytes(array))
            }
            marker::BOOLEAN => {
                Amf0Value::Boolean(self.reader.u8().ok_or_else(|| self.truncated("boolean"))? != 0)
            }
            marker::STRING => Amf0Value::String(self.short_string()?),
            marker::LONG_STRING => {
                let len = self
                    .reader
                    .u32_be()
                    .ok_or_else(|| self.truncated("long string length"))?;
                Amf0Value::String(self.utf8(len as usize)?)
            }
            marker::OBJECT => Amf0Value::Object(self.properties(depth)?),
            marker::NULL => Amf0Value::Null,
            marker::UNDEFINED => Amf0Value::Undefined,
            marker::ECMA_ARRAY => {
                // The count is advisory (ffmpeg writes it, others write 0);
                // the end marker ends the array.
                self.reader
                    .u32_be()
                    .ok_or_else(|| self.truncated("ECMA array count"))?;
                Amf0Value::EcmaArray(self.properties(depth)?)
            }
            marker::STRICT_ARRAY => {
                let count = self
                    .reader
                    .u32_be()
                    .ok_or_else(|| self.truncated("strict array count"))?;
                // Every item takes at least one byte: a count beyond the rest
                // of the message is a lie, and must not size an allocation.
                if count as usize > self.reader.remaining() {
                    return Err(RtmpError::malformed(format!(
                        "AMF0 strict array of {count} items in {} bytes",
                        self.reader.remaining()
                    )));
                }
                let mut items = Vec::new();
                for _ in 0..count {
                    items.push(self.value(depth + 1)?);
                }
                Amf0Value::StrictArray(items)
            }
            marker::OBJECT_END => {
                return Err(RtmpError::malformed(format!(
                    "AMF0 object end marker outside an object at byte {at}"
                )));
            }
            marker::MOVIECLIP
            | marker::REFERENCE
            | marker::DATE
            | marker::UNSUPPORTED
            | marker::RECORDSET
            | marker::XML_DOCUMENT
            | marker::TYPED_OBJECT
            | marker::AVMPLUS => {
                return Err(RtmpError::unsupported(format!(
                    "AMF0 type marker 0x{marker:02x} at byte {at} is not supported"
                )));
            }
            other => {
                return Err(RtmpError::malformed(format!(
                    "unknown AMF0 type marker 0x{other:02x} at byte {at}"
                )));
            }
        })
    }

    fn short_string(&mut self) -> Result<String, RtmpError> {
        let len = self
            .reader
            .u16_be()
            .ok_or_else(|| self.truncated("string length"))?;
        self.utf8(usize::from(len))
    }

    fn utf8(&mut self, len: usize) -> Result<String, RtmpError> {
        let bytes = self
            .reader
            .bytes(len)
            .ok_or_else(|| self.truncated("string"))?;
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            RtmpError::malformed(format!(
                "AMF0 string of {len} bytes before byte {} is not UTF-8",
                self.reader.position()
            ))
        })
    }

    /// Properties up to the object end marker (an empty key followed by
    /// 0x09, §2.5).
    fn properties(&mut self, depth: usize) -> Result<Vec<(String, Amf0Value)>, RtmpError> {
        let mut properties = Vec::new();
        loop {
            let key = self.short_string()?;
            if key.is_empty() {
                let mut peek = self.reader.clone();
                if peek.u8() == Some(marker::OBJECT_END) {
                    self.reader = peek;
                    return Ok(properties);
                }
            }
            let value = self.value(depth + 1)?;
            properties.push((key, value));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ingest::rtmp::prop;

    fn connect_command() -> Vec<Amf0Value> {
        vec![
            Amf0Value::string("connect"),
            Amf0Value::Number(1.0),
            Amf0Value::object([
                ("app", Amf0Value::string("live")),
                ("type", Amf0Value::string("nonprivate")),
                (
                    "flashVer",
                    Amf0Value::string("FMLE/3.0 (compatible; Lavf61.7.100)"),
                ),
                ("tcUrl", Amf0Value::string("rtmp://127.0.0.1:1935/live")),
            ]),
        ]
    }

    fn every_type() -> Vec<Amf0Value> {
        vec![
            Amf0Value::Number(-0.5),
            Amf0Value::Number(f64::INFINITY),
            Amf0Value::Boolean(true),
            Amf0Value::Boolean(false),
            Amf0Value::string(""),
            Amf0Value::string("päivää"),
            Amf0Value::String("x".repeat(70_000)),
            Amf0Value::Null,
            Amf0Value::Undefined,
            Amf0Value::object([
                ("", Amf0Value::Number(1.0)),
                ("nested", Amf0Value::object([("deep", Amf0Value::Null)])),
            ]),
            Amf0Value::EcmaArray(vec![
                ("duration".into(), Amf0Value::Number(0.0)),
                ("stereo".into(), Amf0Value::Boolean(true)),
            ]),
            Amf0Value::StrictArray(vec![Amf0Value::Null, Amf0Value::string("a")]),
            Amf0Value::StrictArray(vec![]),
            Amf0Value::Object(vec![]),
        ]
    }

    #[test]
    fn round_trips_every_supported_type() {
        for values in [connect_command(), every_type()] {
            let bytes = encode_all(&values);
            assert_eq!(decode_all(&bytes).unwrap(), values);
            let (first, used) = decode(&bytes).unwrap();
            assert_eq!(first, values[0]);
            assert_eq!(encode_all(&values[..1]).len(), used);
        }
    }

    #[test]
    fn encodes_as_the_spec_lays_out() {
        let mut out = Vec::new();
        Amf0Value::object([("a", Amf0Value::Boolean(true))]).encode(&mut out);
        assert_eq!(out, [0x03, 0, 1, b'a', 0x01, 1, 0, 0, 0x09]);
        let long = encode_all(&[Amf0Value::String("y".repeat(65_536))]);
        assert_eq!(&long[..5], &[0x0C, 0, 1, 0, 0]);
    }

    #[test]
    fn rejects_bad_input_with_errors() {
        let cases: [(&[u8], &str); 8] = [
            (&[0x00, 1, 2, 3], "truncated number"),
            (&[0x02, 0, 5, b'a'], "truncated string"),
            (&[0x02, 0, 2, 0xff, 0xfe], "not UTF-8"),
            (&[0x03, 0, 1, b'a', 0x05], "object without end"),
            (&[0x09], "stray object end"),
            (
                &[0x0A, 0xff, 0xff, 0xff, 0xff, 0x05],
                "lying strict array count",
            ),
            (&[0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], "date"),
            (&[0x42], "unknown marker"),
        ];
        for (bytes, what) in cases {
            assert!(decode_all(bytes).is_err(), "{what} accepted");
        }
        assert!(matches!(
            decode_all(&[0x0B, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(RtmpError::Unsupported { .. })
        ));
    }

    #[test]
    fn bounds_depth_and_value_count() {
        let mut deep = Amf0Value::Null;
        for _ in 0..=MAX_DEPTH {
            deep = Amf0Value::StrictArray(vec![deep]);
        }
        let error = decode_all(&encode_all(&[deep])).unwrap_err();
        assert!(matches!(error, RtmpError::Limit { .. }), "{error}");

        let many = Amf0Value::StrictArray(vec![Amf0Value::Null; MAX_VALUES]);
        let error = decode_all(&encode_all(&[many])).unwrap_err();
        assert!(matches!(error, RtmpError::Limit { .. }), "{error}");
    }

    #[test]
    fn survives_random_and_mutated_input() {
        let valid = encode_all(&connect_command());
        let mut inputs = prop::random_inputs(31, 1000, 300);
        inputs.extend(prop::mutations(32, &valid, 1000));
        for input in inputs {
            fuzz_one(&input);
        }
    }

    /// What the fuzz target does: whatever decodes must re-encode to a
    /// decoding of the same values.
    pub(crate) fn fuzz_one(input: &[u8]) {
        if let Ok(values) = decode_all(input) {
            let again = decode_all(&encode_all(&values)).expect("re-encoded values decode");
            // NaN != NaN, so compare encodings rather than values.
            assert_eq!(encode_all(&again), encode_all(&values));
        }
    }
}
