//! The gateway's configuration checks and its HTTP request (SPEC §5), encoded by otpkit-core
//! ([`otpkit_core::gateway`]); [`crate::send`] sends it.

use crate::errors::throw;
use napi::Result;
use napi_derive::napi;
use otpkit_core::gateway::{GatewayConfig, GatewayKind, Gateways, HttpRequest, OutgoingMessage};
use otpkit_core::Error;

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
/// core wrote it) of workspace `workspace_id` through a gateway of `kind`, or `None` when it
/// cannot be sent (no `url`; `meta` without a template in the policy): a definite failure. A
/// Twilio send asks for status callbacks at `public_base_url` when it is set (SPEC §8). Errors
/// with `VALIDATION_ERROR` for a message that is not the core's. [`crate::send`] sends it.
pub(crate) fn encode_request(
    kind: GatewayKind,
    url: Option<String>,
    token: Option<String>,
    account: Option<String>,
    message_json: &str,
    workspace_id: &str,
    public_base_url: Option<String>,
) -> Result<Option<HttpRequest>> {
    let message: OutgoingMessage = serde_json::from_str(message_json)
        .map_err(|_| throw(&Error::invalid("message", "is not a gateway message")))?;
    let gateways = Gateways {
        sms: GatewayConfig {
            kind,
            url,
            token,
            account,
        },
        whatsapp: None,
        public_base_url,
    };
    Ok(gateways.encode(workspace_id, &message).1)
}
