//! Kubernetes protobuf request bodies (`application/vnd.kubernetes.protobuf`,
//! what kubectl's typed clients send since 1.33) → the JSON value the server
//! stores: exactly what `encoding/json` makes of the Go object client-go
//! encoded, which is what the same client would have sent as JSON.
//!
//! The encoding (apimachinery `pkg/runtime/serializer/protobuf`): the magic
//! `k8s\0`, then a `runtime.Unknown` {1 typeMeta {1 apiVersion, 2 kind},
//! 2 raw, 3 contentEncoding, 4 contentType} whose `raw` is the object's
//! gogo-protobuf message. Fields are read with a table generated from the Go
//! types (`schema.txt`, see `scripts/proto-schema`), because the JSON form
//! needs Go facts the `.proto` files lost: gogo writes every non-pointer field,
//! zero or not, so a zero is dropped when the field is `omitempty` and kept
//! when it is a pointer (`replicas: 0`, `terminationGracePeriodSeconds: 0`,
//! `runAsUser: 0` mean what they say); embedded structs (`Volume`'s
//! `VolumeSource`, `Probe`'s `ProbeHandler`) are inlined.

mod schema;
mod wire;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use schema::{Field, Kind, Schema};
use wire::Wire;

/// The media type.
pub const MEDIA_TYPE: &str = "application/vnd.kubernetes.protobuf";

/// The magic every Kubernetes protobuf object starts with.
const MAGIC: &[u8] = b"k8s\0";

/// Why a protobuf body could not be read; each is the client's fault (400)
/// except `Schema`, a bug in the generated table (500).
#[derive(Debug, thiserror::Error)]
pub enum ProtoError {
    /// The body does not start with `k8s\0`.
    #[error("the protobuf body does not start with the Kubernetes magic number k8s\\0")]
    Magic,
    /// The bytes end early or hold an impossible value.
    #[error("malformed protobuf at byte {at}: bad {what}")]
    Malformed {
        /// Offset in the message being read.
        at: usize,
        /// What was being read.
        what: &'static str,
    },
    /// A field's value came with a wire type its kind cannot have.
    #[error("field {field} ({number}) has the wrong wire type")]
    WireType {
        /// JSON name of the field.
        field: &'static str,
        /// Its number.
        number: u32,
    },
    /// The envelope names a kind the server does not serve.
    #[error("{api_version:?} {kind:?} is not a kind this server reads from protobuf")]
    UnknownKind {
        /// `apps/v1`.
        api_version: String,
        /// `Deployment`.
        kind: String,
    },
    /// `runtime.Unknown.contentEncoding` was set (gzip and the like).
    #[error("content encoding {0:?} of the embedded object is not supported")]
    ContentEncoding(String),
    /// An embedded raw JSON value (RawExtension, FieldsV1) is not JSON.
    #[error("embedded JSON in field {field}: {source}")]
    EmbeddedJson {
        /// JSON name of the field.
        field: &'static str,
        /// The parse error.
        #[source]
        source: serde_json::Error,
    },
    /// A double is NaN or infinite (JSON has no such number).
    #[error("field {0} is not a finite number")]
    NotFinite(&'static str),
    /// The generated table is inconsistent (a bug here, not in the request).
    #[error("protobuf schema: {0}")]
    Schema(String),
}

/// Decodes one Kubernetes protobuf object (magic and envelope included) into
/// its JSON form, `apiVersion` and `kind` set from the envelope.
pub fn decode(body: &[u8]) -> Result<Value, ProtoError> {
    let envelope = body.strip_prefix(MAGIC).ok_or(ProtoError::Magic)?;
    let schema = Schema::get()?;
    let (mut api_version, mut kind, mut raw) = (String::new(), String::new(), &[][..]);
    for (number, value) in wire::fields(envelope)? {
        match (number, value) {
            (1, Wire::Bytes(type_meta)) => {
                for (n, v) in wire::fields(type_meta)? {
                    match (n, v) {
                        (1, Wire::Bytes(b)) => api_version = lossy(b),
                        (2, Wire::Bytes(b)) => kind = lossy(b),
                        _ => {}
                    }
                }
            }
            (2, Wire::Bytes(b)) => raw = b,
            (3, Wire::Bytes(b)) if !b.is_empty() => {
                return Err(ProtoError::ContentEncoding(lossy(b)));
            }
            _ => {}
        }
    }
    let message = schema
        .kind(&api_version, &kind)
        .ok_or_else(|| ProtoError::UnknownKind {
            api_version: api_version.clone(),
            kind: kind.clone(),
        })?;
    let mut object = Map::new();
    // TypeMeta is inline and omitempty in every kind.
    if !kind.is_empty() {
        object.insert("kind".into(), json!(kind));
    }
    if !api_version.is_empty() {
        object.insert("apiVersion".into(), json!(api_version));
    }
    message_into(schema, message, raw, &mut object)?;
    Ok(Value::Object(object))
}

/// Go's `string(bytes)` marshalled by encoding/json: invalid UTF-8 becomes U+FFFD.
fn lossy(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Decodes message `name` from `buf`, adding its JSON fields to `out` in
/// the Go struct's order.
fn message_into(
    schema: &Schema,
    name: &str,
    buf: &[u8],
    out: &mut Map<String, Value>,
) -> Result<(), ProtoError> {
    let wire = wire::fields(buf)?;
    for f in schema.message(name)? {
        let mut values = wire.iter().filter(|(n, _)| *n == f.number).map(|(_, v)| *v);
        if f.inline {
            let Kind::Message(inner) = f.kind else {
                return Err(ProtoError::Schema(format!(
                    "inline {} is no message",
                    f.name
                )));
            };
            let bytes = values.next_back().map_or(Ok(&[][..]), |v| bytes_of(f, v))?;
            message_into(schema, inner, bytes, out)?;
            continue;
        }
        if let Some(v) = field_json(schema, f, values)? {
            out.insert(f.name.to_string(), v);
        }
    }
    Ok(())
}

/// A field's JSON value, or `None` when encoding/json omits it.
fn field_json<'a>(
    schema: &Schema,
    f: &Field,
    values: impl Iterator<Item = Wire<'a>>,
) -> Result<Option<Value>, ProtoError> {
    if let Kind::Map(key, value) = &f.kind {
        let mut map = Map::new();
        for entry in values {
            let entry = wire::fields(bytes_of(f, entry)?)?;
            let key = single(schema, f, key, entry.iter().filter(|(n, _)| *n == 1))?;
            let value = single(schema, f, value, entry.iter().filter(|(n, _)| *n == 2))?;
            let key = match key {
                Value::String(s) => s,
                other => other.to_string(),
            };
            map.insert(key, value);
        }
        // A nil map: omitted with omitempty, else null (client-go never sends
        // an empty map entry list for a non-nil map, so empty means nil).
        return Ok(match (map.is_empty(), f.omitempty) {
            (true, true) => None,
            (true, false) => Some(Value::Null),
            (false, _) => Some(Value::Object(map)),
        });
    }
    if f.repeated {
        let mut items = Vec::new();
        for v in values {
            match (v, scalar_varint(&f.kind)) {
                // A packed repeated number: several in one length-delimited value.
                (Wire::Bytes(b), true) => {
                    for n in wire::packed_varints(b)? {
                        items.push(scalar(schema, f, &f.kind, Wire::Varint(n))?);
                    }
                }
                _ => items.push(scalar(schema, f, &f.kind, v)?),
            }
        }
        return Ok(match (items.is_empty(), f.omitempty) {
            (true, true) => None,
            (true, false) => Some(Value::Null),
            (false, _) => Some(Value::Array(items)),
        });
    }
    let present = values.last();
    if f.pointer {
        // A pointer is on the wire exactly when it was set: keep its zero.
        return match present {
            Some(v) => scalar(schema, f, &f.kind, v).map(Some),
            None if f.omitempty => Ok(None),
            None => Ok(Some(Value::Null)),
        };
    }
    let value = match present {
        Some(v) => scalar(schema, f, &f.kind, v)?,
        None => zero(schema, f, &f.kind)?,
    };
    let omit = (f.omitempty && is_empty(&f.kind, &value)) || (f.omitzero && value.is_null());
    Ok((!omit).then_some(value))
}

/// The last value of a map entry's key or value, or its kind's zero.
fn single<'a>(
    schema: &Schema,
    f: &Field,
    kind: &Kind,
    values: impl Iterator<Item = &'a (u32, Wire<'a>)>,
) -> Result<Value, ProtoError> {
    match values.last() {
        Some((_, v)) => scalar(schema, f, kind, *v),
        None => zero(schema, f, kind),
    }
}

/// Kinds carried as varints (and so packable).
fn scalar_varint(kind: &Kind) -> bool {
    matches!(
        kind,
        Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64
    )
}

/// What encoding/json's `omitempty` drops: false, 0, "", empty slices and
/// maps. Structs (Time, Quantity, IntOrString, messages) are never empty.
fn is_empty(kind: &Kind, v: &Value) -> bool {
    match kind {
        Kind::String | Kind::Bool | Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 => {
            match v {
                Value::String(s) => s.is_empty(),
                Value::Bool(b) => !b,
                Value::Number(n) => n.as_f64() == Some(0.0),
                _ => false,
            }
        }
        Kind::Double => v.as_f64() == Some(0.0),
        Kind::Bytes => v.is_null(),
        _ => false,
    }
}

/// The JSON of a Go zero value of `kind` (a non-pointer field absent from the wire).
fn zero(schema: &Schema, f: &Field, kind: &Kind) -> Result<Value, ProtoError> {
    Ok(match kind {
        Kind::String => json!(""),
        Kind::Bool => json!(false),
        Kind::Int32 | Kind::Int64 | Kind::Uint32 | Kind::Uint64 => json!(0),
        Kind::Double => json!(0.0),
        Kind::IntOrString => json!(0),
        Kind::Quantity => json!("0"),
        Kind::Bytes | Kind::Time | Kind::MicroTime | Kind::RawExtension | Kind::FieldsV1 => {
            Value::Null
        }
        Kind::Map(..) => Value::Null,
        Kind::Message(_) => scalar(schema, f, kind, Wire::Bytes(&[]))?,
    })
}

fn bytes_of<'a>(f: &Field, v: Wire<'a>) -> Result<&'a [u8], ProtoError> {
    match v {
        Wire::Bytes(b) => Ok(b),
        _ => Err(ProtoError::WireType {
            field: f.name,
            number: f.number,
        }),
    }
}

fn varint_of(f: &Field, v: Wire) -> Result<u64, ProtoError> {
    match v {
        Wire::Varint(n) => Ok(n),
        _ => Err(ProtoError::WireType {
            field: f.name,
            number: f.number,
        }),
    }
}

/// One value of field `f` (of kind `kind`: the field's, or its map's key or value).
fn scalar(schema: &Schema, f: &Field, kind: &Kind, v: Wire) -> Result<Value, ProtoError> {
    // Integers are two's complement in 64 bits; int32 truncates as Go's does.
    Ok(match kind {
        Kind::String => json!(lossy(bytes_of(f, v)?)),
        Kind::Bool => json!(varint_of(f, v)? != 0),
        Kind::Int32 => json!(varint_of(f, v)? as i64 as i32),
        Kind::Int64 => json!(varint_of(f, v)? as i64),
        Kind::Uint32 => json!(varint_of(f, v)? as u32),
        Kind::Uint64 => json!(varint_of(f, v)?),
        Kind::Double => {
            let Wire::Fixed64(bits) = v else {
                return Err(ProtoError::WireType {
                    field: f.name,
                    number: f.number,
                });
            };
            serde_json::Number::from_f64(f64::from_bits(bits))
                .map(Value::Number)
                .ok_or(ProtoError::NotFinite(f.name))?
        }
        Kind::Bytes => json!(base64::engine::general_purpose::STANDARD.encode(bytes_of(f, v)?)),
        Kind::Message(m) => {
            let mut out = Map::new();
            message_into(schema, m, bytes_of(f, v)?, &mut out)?;
            Value::Object(out)
        }
        Kind::Time | Kind::MicroTime => {
            let (mut seconds, mut nanos) = (None, 0i64);
            for (n, w) in wire::fields(bytes_of(f, v)?)? {
                match n {
                    1 => seconds = Some(varint_of(f, w)? as i64),
                    2 => nanos = i64::from(varint_of(f, w)? as i64 as i32),
                    _ => {}
                }
            }
            // metav1.Time's Unmarshal: an empty message is the zero time
            // (null); nanoseconds are dropped. MicroTime keeps microseconds.
            match (seconds, kind) {
                (None, _) if nanos == 0 => Value::Null,
                (s, Kind::Time) => json!(rfc3339(s.unwrap_or(0), None)),
                (s, _) => json!(rfc3339(s.unwrap_or(0), Some(nanos))),
            }
        }
        Kind::IntOrString => {
            let (mut ty, mut int, mut string) = (0u64, 0i64, String::new());
            for (n, w) in wire::fields(bytes_of(f, v)?)? {
                match n {
                    1 => ty = varint_of(f, w)?,
                    2 => int = i64::from(varint_of(f, w)? as i64 as i32),
                    3 => string = lossy(bytes_of(f, w)?),
                    _ => {}
                }
            }
            if ty == 1 { json!(string) } else { json!(int) }
        }
        Kind::Quantity => {
            let mut s = String::new();
            for (n, w) in wire::fields(bytes_of(f, v)?)? {
                if n == 1 {
                    s = lossy(bytes_of(f, w)?);
                }
            }
            if s.is_empty() { json!("0") } else { json!(s) }
        }
        Kind::RawExtension | Kind::FieldsV1 => {
            let mut raw: &[u8] = &[];
            for (n, w) in wire::fields(bytes_of(f, v)?)? {
                if n == 1 {
                    raw = bytes_of(f, w)?;
                }
            }
            if raw.is_empty() {
                Value::Null
            } else if raw.starts_with(MAGIC) {
                decode(raw)?
            } else {
                serde_json::from_slice(raw).map_err(|source| ProtoError::EmbeddedJson {
                    field: f.name,
                    source,
                })?
            }
        }
        Kind::Map(..) => return Err(ProtoError::Schema(format!("nested map in {}", f.name))),
    })
}

/// RFC 3339 in UTC: `2006-01-02T15:04:05Z` (metav1.Time), or with
/// `nanos` the microseconds of metav1.MicroTime (`.000000Z`).
fn rfc3339(seconds: i64, nanos: Option<i64>) -> String {
    // Days to civil date (Howard Hinnant's algorithm), valid for any i64 day.
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let date = format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}");
    match nanos {
        Some(n) => format!("{date}.{:06}Z", n.clamp(0, 999_999_999) / 1000),
        None => format!("{date}Z"),
    }
}

#[cfg(test)]
mod tests;
