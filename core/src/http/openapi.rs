//! The OpenAPI 3.1 document of the HTTP API (`core/openapi.yaml`, inside the crate so that it
//! packages on its own; written in YAML's JSON-compatible style), served by both hosts as
//! `GET /openapi.json`.

use crate::http::envelope::Reply;
use alloc::string::ToString;

const DOCUMENT: &str = include_str!("../../openapi.yaml");

/// The document as JSON: the file without its leading comment lines.
#[must_use]
pub fn json() -> &'static str {
    DOCUMENT
        .find('{')
        .and_then(|i| DOCUMENT.get(i..))
        .unwrap_or("{}")
}

/// `GET /openapi.json`.
#[must_use]
pub fn reply() -> Reply {
    Reply {
        status: 200,
        body: json().trim_end().to_string(),
        retry_after: None,
        replayed: false,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_document_is_json_and_openapi_3_1() {
        let v: serde_json::Value =
            serde_json::from_str(super::json()).expect("openapi.yaml is JSON after its comments");
        assert_eq!(v["openapi"], "3.1.0");
        assert!(v["paths"]["/v1/messaging/otp/verify"]["post"]["responses"]["423"].is_object());
    }

    /// Every stable error code a host can answer is in the Error schema's enum (schemathesis
    /// found IDEMPOTENCY_KEY_REUSED answered but not documented).
    #[test]
    fn the_error_schema_lists_every_error_code() {
        use crate::error::{Ended, Error};
        let v: serde_json::Value = serde_json::from_str(super::json()).unwrap();
        let codes = &v["components"]["schemas"]["Error"]["properties"]["error"]["properties"]
            ["code"]["enum"];
        let listed: alloc::vec::Vec<&str> = codes
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|c| c.as_str())
            .collect();
        let every = [
            Error::invalid("", ""),
            Error::Unauthorized,
            Error::NotFound,
            Error::UnsupportedMediaType,
            Error::PayloadTooLarge,
            Error::MethodNotAllowed,
            Error::SenderNotAllowed,
            Error::DestinationNotAllowed,
            Error::RateLimited {
                retry_after_secs: 1,
            },
            Error::DestinationLocked {
                retry_after_secs: 1,
            },
            Error::ResendTooSoon {
                retry_after_secs: 1,
            },
            Error::DeliveryFailed,
            Error::StoreUnavailable,
            Error::Misconfigured { message: "".into() },
            Error::CorruptState { message: "".into() },
            Error::SessionEnded(Ended::AlreadyUsed),
            Error::SessionEnded(Ended::Expired),
            Error::SessionEnded(Ended::MaxAttempts),
        ];
        for e in every {
            assert!(
                listed.contains(&e.code()),
                "{} is not in the Error schema",
                e.code()
            );
        }
        let source = include_str!("../error.rs");
        for code in listed.iter() {
            assert!(
                source.contains(&alloc::format!("\"{code}\"")),
                "{code} is listed but no Error answers it"
            );
        }
        for extra in [
            "IDEMPOTENCY_KEY_REUSED",
            "IDEMPOTENCY_KEY_IN_USE",
            "SPEND_LIMIT_REACHED",
        ] {
            assert!(listed.contains(&extra), "{extra}");
            assert!(
                source.contains(&alloc::format!("=> \"{extra}\"")),
                "{extra} in error.rs"
            );
        }
    }
}
