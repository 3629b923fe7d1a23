//! Secrets and variables (SPEC §6), read from the Worker environment on each request.

use otpkit_core::delivery::ReceiptSettings;
use otpkit_core::gateway::{GatewayConfig, GatewayKind, Gateways};
use otpkit_core::{Error, Pepper};
use std::sync::atomic::{AtomicBool, Ordering};
use worker::{Env, Url};

/// A secret or a plain var (wrangler puts `.dev.vars` entries in as secrets, `[vars]` as vars).
pub fn read(env: &Env, name: &str) -> Option<String> {
    env.secret(name)
        .map(|s| s.to_string())
        .or_else(|_| env.var(name).map(|v| v.to_string()))
        .ok()
        .filter(|s| !s.is_empty())
}

/// Writes one data point to the Workers Analytics Engine dataset `METRICS` (issue 17 item 3: the
/// counts `otpkit serve` keeps for `/metrics`): `blobs` are bounded labels (never a number or a
/// workspace's data), `doubles` the values; `index` groups them. No binding: nothing is written.
pub fn metric(env: &Env, index: &str, blobs: &[&str], doubles: &[f64]) {
    if let Ok(dataset) = env.analytics_engine("METRICS") {
        let point = worker::AnalyticsEngineDataPointBuilder::new()
            .indexes([index])
            .blobs(blobs.iter().copied())
            .doubles(doubles.iter().copied());
        let _ = point.write_to(&dataset);
    }
}

/// `LOG_LEVEL` (`debug`, `info` (default), `warn`, `error`).
pub fn log_level(env: &Env) -> otpkit_core::log::Level {
    otpkit_core::log::Level::parse(read(env, "LOG_LEVEL").as_deref())
}

/// The pepper, or `MISCONFIGURED` without one of ≥ 32 bytes.
pub fn pepper(env: &Env) -> Result<Pepper, Error> {
    match read(env, "OTP_PEPPER") {
        Some(p) => Pepper::new(p.as_bytes()),
        None => Pepper::new(b""),
    }
}

/// The gateway settings (`SMS_GATEWAY_KIND`, `_URL`, `_TOKEN`, `_ACCOUNT`; the same of
/// `WHATSAPP_GATEWAY_` when its URL is set); an unknown kind is a
/// configuration error. The first read in an isolate warns (console) when the URL is plain
/// http:// to a host other than this machine.
pub fn gateway(env: &Env) -> Result<Gateways, Error> {
    let url = read(env, "SMS_GATEWAY_URL");
    warn_plain_http_once(url.as_deref());
    let sms = GatewayConfig {
        kind: GatewayKind::parse(read(env, "SMS_GATEWAY_KIND").as_deref())?,
        url,
        token: read(env, "SMS_GATEWAY_TOKEN"),
        account: read(env, "SMS_GATEWAY_ACCOUNT"),
    };
    let whatsapp = match read(env, "WHATSAPP_GATEWAY_URL") {
        Some(url) => Some(GatewayConfig {
            kind: GatewayKind::parse_whatsapp(read(env, "WHATSAPP_GATEWAY_KIND").as_deref())?,
            url: Some(url),
            token: read(env, "WHATSAPP_GATEWAY_TOKEN"),
            account: read(env, "WHATSAPP_GATEWAY_ACCOUNT"),
        }),
        None => None,
    };
    Ok(Gateways {
        sms,
        whatsapp,
        public_base_url: read(env, "PUBLIC_BASE_URL"),
    })
}

/// The settings delivery receipts are checked with (SPEC §6, §8), as configured; the core
/// decides which secret checks which receipt ([`ReceiptSettings::keys`]).
pub fn receipt_settings(env: &Env) -> ReceiptSettings {
    ReceiptSettings {
        public_base_url: read(env, "PUBLIC_BASE_URL"),
        sms_kind: read(env, "SMS_GATEWAY_KIND"),
        sms_token: read(env, "SMS_GATEWAY_TOKEN"),
        whatsapp_url: read(env, "WHATSAPP_GATEWAY_URL"),
        whatsapp_kind: read(env, "WHATSAPP_GATEWAY_KIND"),
        whatsapp_token: read(env, "WHATSAPP_GATEWAY_TOKEN"),
        meta_app_secret: read(env, "WHATSAPP_APP_SECRET"),
        meta_verify_token: read(env, "WHATSAPP_VERIFY_TOKEN"),
    }
}

static URL_CHECKED: AtomicBool = AtomicBool::new(false);

/// Logs [`plain_http_host`]'s warning the first time in this isolate (the environment does not
/// change within one).
fn warn_plain_http_once(url: Option<&str>) {
    if URL_CHECKED.swap(true, Ordering::Relaxed) {
        return;
    }
    if let Some(host) = url.and_then(plain_http_host) {
        worker::console_warn!(
            "otpkit: warning: SMS_GATEWAY_URL is plain http:// to {host}: the gateway token and every code would cross the network unencrypted; use https://"
        );
    }
}

/// The host of a gateway URL that would carry the token and the codes in clear over the network
/// (`http://` to anything but 127.0.0.0/8, `localhost` or `[::1]`), or `None`. Only the host is
/// ever shown: the URL itself may hold credentials.
fn plain_http_host(url: &str) -> Option<String> {
    let u = Url::parse(url).ok()?;
    if u.scheme() != "http" {
        return None;
    }
    let loopback = match u.host()? {
        worker::url::Host::Domain(d) => d.trim_end_matches('.').eq_ignore_ascii_case("localhost"),
        worker::url::Host::Ipv4(a) => a.is_loopback(),
        worker::url::Host::Ipv6(a) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
    };
    (!loopback).then(|| u.host_str().unwrap_or_default().to_string())
}

#[cfg(test)]
mod tests {
    use super::plain_http_host;

    #[test]
    fn plain_http_elsewhere_is_named_by_host_only() {
        let named = |u: &str| plain_http_host(u);
        assert_eq!(
            named("http://user:pw@sms.example.net:8080/x?key=k").as_deref(),
            Some("sms.example.net")
        );
        assert_eq!(named("HTTP://10.0.0.7/sms").as_deref(), Some("10.0.0.7"));
        assert_eq!(
            named("http://[2001:db8::1]/").as_deref(),
            Some("[2001:db8::1]")
        );
        assert_eq!(
            named("http://127.example.com/").as_deref(),
            Some("127.example.com")
        );
        for quiet in [
            "https://sms.example.net/x",
            "http://127.0.0.1:8788/sms",
            "http://127.3.2.1/",
            "http://localhost:9000/",
            "http://LOCALHOST./",
            "http://[::1]:9000/",
            "http://[::ffff:127.0.0.1]/",
            "not a url",
        ] {
            assert_eq!(named(quiet), None, "{quiet}");
        }
    }
}
