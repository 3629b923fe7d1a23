//! The gateway's HTTP request (SPEC §5), encoded by otpkit-core ([`otpkit_core::gateway`]) for
//! `lib/gateway.js`, which only sends it and reads the status.

use crate::errors::throw;
use napi::bindgen_prelude::Buffer;
use napi::Result;
use napi_derive::napi;
use otpkit_core::gateway::{message_id_of, GatewayConfig, GatewayKind, Gateways, OutgoingMessage};
use otpkit_core::Error;
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

/// Checks `WHATSAPP_GATEWAY_KIND` (`json`, `twilio` or `meta`; absent → `json`) and answers its
/// canonical name; throws `MISCONFIGURED` for anything else.
#[napi]
pub fn whatsapp_gateway_kind(kind_name: Option<String>) -> Result<String> {
    let kind = GatewayKind::parse_whatsapp(kind_name.as_deref()).map_err(|e| throw(&e))?;
    Ok(kind.as_str().to_string())
}

/// The request that delivers one message (`message_json`: the flow's `deliver` message, as the
/// core wrote it) of workspace `workspace_id` through the gateway `kind` (`json` by default,
/// `twilio` or `meta`), or `null` when it cannot be sent (no `url`; `meta` without a template in
/// the policy): a definite failure. A Twilio send asks for status callbacks at
/// `public_base_url` when it is set (SPEC §8). Throws `MISCONFIGURED` for an unknown kind and
/// `VALIDATION_ERROR` for a message that is not the core's.
#[napi]
#[allow(clippy::too_many_arguments)]
pub fn encode_gateway_message(
    kind_name: Option<String>,
    url: Option<String>,
    token: Option<String>,
    account: Option<String>,
    message_json: String,
    workspace_id: String,
    public_base_url: Option<String>,
) -> Result<Option<GatewayRequest>> {
    let kind = GatewayKind::parse_whatsapp(kind_name.as_deref()).map_err(|e| throw(&e))?;
    let config = GatewayConfig {
        kind,
        url,
        token,
        account,
    };
    let message: OutgoingMessage = serde_json::from_str(&message_json)
        .map_err(|_| throw(&Error::invalid("message", "is not a gateway message")))?;
    let gateways = Gateways {
        sms: config,
        whatsapp: None,
        public_base_url,
    };
    let (_, request) = gateways.encode(&workspace_id, &message);
    Ok(request.map(|r| GatewayRequest {
        method: r.method.to_string(),
        url: r.url,
        headers: r.headers.into_iter().collect(),
        body: r.body,
    }))
}

/// The provider's message id in an accepted reply body of gateway `kind` (Twilio `sid`, the json
/// gateway's `id`, Meta's `messages[0].id`), or `null`.
#[napi]
pub fn gateway_message_id(kind_name: Option<String>, body: Buffer) -> Option<String> {
    let kind = GatewayKind::parse_whatsapp(kind_name.as_deref()).ok()?;
    message_id_of(kind, &body)
}
