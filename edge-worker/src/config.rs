//! Secrets and variables (SPEC §6), read from the Worker environment on each request.

use otpkit_core::gateway::{GatewayConfig, GatewayKind};
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

/// The gateway settings (`SMS_GATEWAY_KIND`, `_URL`, `_TOKEN`, `_ACCOUNT`); an unknown kind is a
/// configuration error.
pub fn gateway(env: &Env) -> Result<GatewayConfig, Error> {
    Ok(GatewayConfig {
        kind: GatewayKind::parse(read(env, "SMS_GATEWAY_KIND").as_deref())?,
        url: read(env, "SMS_GATEWAY_URL"),
        token: read(env, "SMS_GATEWAY_TOKEN"),
        account: read(env, "SMS_GATEWAY_ACCOUNT"),
    })
}
