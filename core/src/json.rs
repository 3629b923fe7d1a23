//! Typed field extraction from a parsed JSON object, with field-specific errors.
//! Bodies are parsed into `serde_json::Value` first so that every problem names its field.

use crate::error::Error;
use alloc::borrow::Cow;
use alloc::format;
use serde_json::{Map, Value};

pub(crate) type Object = Map<alloc::string::String, Value>;

/// Parses a request body that must be one JSON object.
pub(crate) fn parse_object(body: &[u8]) -> Result<Object, Error> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(Error::invalid("", "request body must be a JSON object"));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(Error::invalid("", "request body must be a JSON object")),
        Err(_) => Err(Error::invalid("", "request body is not valid JSON")),
    }
}

pub(crate) fn invalid(field: &str, message: &'static str) -> Error {
    Error::Validation {
        field: Cow::Owned(field.into()),
        message: Cow::Borrowed(message),
    }
}

pub(crate) fn invalid_owned(field: &str, message: alloc::string::String) -> Error {
    Error::Validation {
        field: Cow::Owned(field.into()),
        message: Cow::Owned(message),
    }
}

/// `null` counts as absent.
pub(crate) fn get<'a>(obj: &'a Object, key: &str) -> Option<&'a Value> {
    obj.get(key).filter(|v| !v.is_null())
}

pub(crate) fn req_str<'a>(obj: &'a Object, key: &'static str) -> Result<&'a str, Error> {
    match get(obj, key) {
        None => Err(Error::invalid(key, "is required")),
        Some(Value::String(s)) => Ok(s),
        Some(_) => Err(Error::invalid(key, "must be a string")),
    }
}

pub(crate) fn opt_str<'a>(obj: &'a Object, key: &'static str) -> Result<Option<&'a str>, Error> {
    match get(obj, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(Error::invalid(key, "must be a string")),
    }
}

/// An optional integer in `lo..=hi` (JSON numbers with a fraction are refused).
pub(crate) fn opt_int(
    obj: &Object,
    key: &str,
    field: &str,
    lo: u64,
    hi: u64,
) -> Result<Option<u64>, Error> {
    match get(obj, key) {
        None => Ok(None),
        Some(v) => int_in(v, field, lo, hi).map(Some),
    }
}

pub(crate) fn int_in(v: &Value, field: &str, lo: u64, hi: u64) -> Result<u64, Error> {
    match v.as_u64() {
        Some(n) if (lo..=hi).contains(&n) => Ok(n),
        _ => Err(invalid_owned(
            field,
            format!("must be an integer from {lo} to {hi}"),
        )),
    }
}
