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
}
