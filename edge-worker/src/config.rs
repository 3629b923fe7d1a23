//! Secrets and variables (SPEC §6), read from the Worker environment on each request.

use otpkit_core::{Error, Pepper};
use worker::Env;

/// A secret or a plain var (wrangler puts `.dev.vars` entries in as secrets, `[vars]` as vars).
pub fn read(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
        .filter(|s| !s.is_empty())
}

/// The pepper, or `MISCONFIGURED` without one of ≥ 32 bytes.
pub fn pepper(env: &Env) -> Result<Pepper, Error> {
    match read(env, "OTP_PEPPER") {
        Some(p) => Pepper::new(p.as_bytes()),
        None => Pepper::new(b""),
    }
}

/// The gateway settings.
#[derive(Clone)]
pub struct Gateway {
    /// `json` (default) or `twilio`.
    pub kind: GatewayKind,
    /// Where messages are POSTed.
    pub url: Option<String>,
    /// Bearer token (json) or auth token (twilio).
    pub token: Option<String>,
    /// Twilio account SID (basic-auth user).
    pub account: Option<String>,
}

/// Which wire format the gateway speaks.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum GatewayKind {
    /// SPEC §5 JSON.
    Json,
    /// Twilio Messages API form encoding.
    Twilio,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("url", &self.url)
            .field("token", &"<redacted>")
            .finish()
    }
}

/// Reads `SMS_GATEWAY_*`; an unknown kind is a configuration error.
pub fn gateway(env: &Env) -> Result<Gateway, Error> {
    let kind = match read(env, "SMS_GATEWAY_KIND")
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("json") => GatewayKind::Json,
        Some("twilio") => GatewayKind::Twilio,
        Some(_) => {
            return Err(Error::Misconfigured {
                message: "SMS_GATEWAY_KIND must be json or twilio".into(),
            });
        }
    };
    Ok(Gateway {
        kind,
        url: read(env, "SMS_GATEWAY_URL"),
        token: read(env, "SMS_GATEWAY_TOKEN"),
        account: read(env, "SMS_GATEWAY_ACCOUNT"),
    })
}
