//! The gateway's HTTP request (SPEC §5), encoded by otpkit-core ([`otpkit_core::gateway`]) for
//! `lib/gateway.js`, which only sends it and reads the status.

use crate::errors::throw;
use napi::Result;
use napi_derive::napi;
use otpkit_core::gateway::{encode, GatewayConfig, GatewayKind, OutgoingMessage};
use otpkit_core::{Channel, Error};
use std::collections::HashMap;

/// An HTTP request to perform as is. `headers` hold the credentials and `body` the code: never
/// log them.
#[napi(object)]
pub struct GatewayRequest {
    /// `POST`.
    pub method: String,
    /// The gateway URL.
    pub url: String,
    /// Header names (lowercase) → values.
    pub headers: HashMap<String, String>,
    /// The request body.
    pub body: String,
}

impl std::fmt::Debug for GatewayRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayRequest")
            .field("method", &self.method)
            .field("url", &self.url)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body", &"<redacted>")
            .finish()
    }
}

fn kind(name: Option<&str>) -> Result<GatewayKind> {
    GatewayKind::parse(name).map_err(|e| throw(&e))
}

/// Checks `SMS_GATEWAY_KIND` (absent or empty → `json`; `json` or `twilio` in any case) and
/// answers its canonical name; throws `MISCONFIGURED` for anything else.
#[napi]
pub fn gateway_kind(kind_name: Option<String>) -> Result<String> {
    Ok(kind(kind_name.as_deref())?.as_str().to_string())
}

/// The request that delivers one message through the gateway `kind` (`json` by default or
/// `twilio`), or `null` when no `url` is configured (a definite failure: nothing to send).
/// Throws `MISCONFIGURED` for an unknown kind and `VALIDATION_ERROR` for an unknown channel.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn encode_gateway_request(
    kind_name: Option<String>,
    url: Option<String>,
    token: Option<String>,
    account: Option<String>,
    to: String,
    from: String,
    text: String,
    channel: String,
    reference: String,
) -> Result<Option<GatewayRequest>> {
    let config = GatewayConfig {
        kind: kind(kind_name.as_deref())?,
        url,
        token,
        account,
    };
    let channel = Channel::parse(&channel)
        .ok_or_else(|| throw(&Error::invalid("channel", "must be sms or whatsapp")))?;
    let message = OutgoingMessage {
        to,
        from,
        text,
        channel,
        reference,
    };
    Ok(encode(&config, &message).map(|r| GatewayRequest {
        method: r.method.to_string(),
        url: r.url,
        headers: r.headers.into_iter().collect(),
        body: r.body,
    }))
}
