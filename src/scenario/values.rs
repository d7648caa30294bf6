//! Value types that validate themselves while they are deserialized, so a bad
//! value is reported at its own line and column with its key path. The same
//! parsers serve command-line flags.

use std::{fmt, str::FromStr, time::Duration};

use serde::{Deserialize, Deserializer, Serialize, Serializer, de};

/// Highest rate rolltest accepts (requests per second).
pub const MAX_RATE: f64 = 1_000_000.0;

/// A request rate: finite, greater than zero, at most [`MAX_RATE`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate(pub f64);

impl Rate {
    /// Validates a rate.
    pub fn new(value: f64) -> Result<Self, String> {
        if !value.is_finite() || value <= 0.0 {
            Err(format!("rate must be greater than 0 (got {value})"))
        } else if value > MAX_RATE {
            Err(format!(
                "rate must be at most {MAX_RATE} requests/s (got {value})"
            ))
        } else {
            Ok(Rate(value))
        }
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Rate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number of requests per second, greater than 0")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Rate, E> {
                Rate::new(v as f64).map_err(E::custom)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Rate, E> {
                Rate::new(v as f64).map_err(E::custom)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Rate, E> {
                Rate::new(v).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.fract() == 0.0 && self.0 <= 9.0e15 {
            s.serialize_i64(self.0 as i64)
        } else {
            s.serialize_f64(self.0)
        }
    }
}

/// Parses a duration such as `500ms`, `30s`, `2m` or `1m 30s`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err("empty duration (expected e.g. \"500ms\", \"30s\", \"2m\")".into());
    }
    humantime::parse_duration(trimmed).map_err(|e| {
        format!("invalid duration {text:?}: {e} (expected e.g. \"500ms\", \"30s\", \"2m\")")
    })
}

/// Formats a duration the way [`parse_duration`] reads it.
pub fn format_duration(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// A duration greater than zero, written as a string like `"30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PositiveDuration(pub Duration);

impl FromStr for PositiveDuration {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let d = parse_duration(s)?;
        if d.is_zero() {
            Err(format!("duration must be greater than 0 (got {s:?})"))
        } else {
            Ok(PositiveDuration(d))
        }
    }
}

impl<'de> Deserialize<'de> for PositiveDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = PositiveDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration string such as \"500ms\", \"30s\" or \"2m\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PositiveDuration, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for PositiveDuration {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}

/// An `http://` URL with a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl(pub http::Uri);

impl FromStr for HttpUrl {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let uri: http::Uri = s.parse().map_err(|e| format!("invalid URL {s:?}: {e}"))?;
        match uri.scheme_str() {
            Some("http") => {}
            Some("https") => {
                return Err(format!(
                    "{s:?}: https targets are not supported; point rolltest at the plain-HTTP address (e.g. a NodePort)"
                ));
            }
            _ => return Err(format!("{s:?} is not an absolute http:// URL")),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("{s:?} has no host"));
        }
        Ok(HttpUrl(uri))
    }
}

impl<'de> Deserialize<'de> for HttpUrl {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HttpUrl {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

/// An HTTP method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpMethod(pub http::Method);

impl FromStr for HttpMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        http::Method::from_bytes(s.trim().to_ascii_uppercase().as_bytes())
            .map(HttpMethod)
            .map_err(|_| format!("{s:?} is not an HTTP method"))
    }
}

impl<'de> Deserialize<'de> for HttpMethod {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(de::Error::custom)
    }
}

impl Serialize for HttpMethod {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.0.as_str())
    }
}

/// A ratio in `0.0..=1.0`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Ratio(pub f64);

impl<'de> Deserialize<'de> for Ratio {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = NonNegative::deserialize(d)?.0;
        if v > 1.0 {
            return Err(de::Error::custom(format!(
                "must be a ratio between 0 and 1 (got {v})"
            )));
        }
        Ok(Ratio(v))
    }
}

/// A finite number ≥ 0 (integers accepted).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct NonNegative(pub f64);

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = NonNegative;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number ≥ 0")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NonNegative, E> {
                self.visit_f64(v as f64)
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NonNegative, E> {
                self.visit_f64(v as f64)
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NonNegative, E> {
                if v.is_finite() && v >= 0.0 {
                    Ok(NonNegative(v))
                } else {
                    Err(E::custom(format!("must be a number ≥ 0 (got {v})")))
                }
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_in_the_documented_forms() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!("0s".parse::<PositiveDuration>().is_err());
    }

    #[test]
    fn rates_must_be_positive_and_finite() {
        assert!(Rate::new(0.0).is_err());
        assert!(Rate::new(-3.0).is_err());
        assert!(Rate::new(f64::NAN).is_err());
        assert!(Rate::new(2e6).is_err());
        assert_eq!(Rate::new(0.5), Ok(Rate(0.5)));
    }

    #[test]
    fn urls_must_be_plain_http_with_a_host() {
        assert!("http://127.0.0.1:8080/x".parse::<HttpUrl>().is_ok());
        assert!("https://example.test/".parse::<HttpUrl>().is_err());
        assert!("127.0.0.1:80".parse::<HttpUrl>().is_err());
        assert!("/just/a/path".parse::<HttpUrl>().is_err());
    }
}

/// A duration that may be zero (`"0s"`, `"10s"`), e.g. an action's offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offset(pub Duration);

impl<'de> Deserialize<'de> for Offset {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl de::Visitor<'_> for V {
            type Value = Offset;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration such as \"10s\" or \"1m 30s\"")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Offset, E> {
                if v.trim() == "0" {
                    return Ok(Offset(Duration::ZERO));
                }
                parse_duration(v).map(Offset).map_err(E::custom)
            }
        }
        d.deserialize_str(V)
    }
}

impl Serialize for Offset {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(self.0))
    }
}
