//! HTTP plumbing: bounded body reads, core `Reply` → `Response`, small helpers.

use futures_util::StreamExt;
use otpkit_core::http::envelope::{self, Reply};
use otpkit_core::http::request::{self, MAX_BODY_BYTES};
use otpkit_core::Error;
use worker::{Request, Response, Result};

/// Sends a core reply: JSON body (none for 204) and `Retry-After` when set.
pub fn respond(reply: &Reply) -> Result<Response> {
    let mut builder = Response::builder().with_status(reply.status);
    if reply.status != 204 {
        builder = builder.with_header("content-type", "application/json")?;
    }
    if let Some(secs) = reply.retry_after {
        builder = builder.with_header("retry-after", &secs.to_string())?;
    }
    Ok(builder.fixed(reply.body.as_bytes().to_vec()))
}

/// The error envelope of `e`.
pub fn error(e: &Error) -> Result<Response> {
    respond(&envelope::error(e))
}

/// 415 / 413 / body bytes, in SPEC's order. Stops reading past 16 KiB.
pub async fn json_body(req: &mut Request) -> std::result::Result<Vec<u8>, Error> {
    let headers = req.headers();
    let content_type = headers.get("content-type").ok().flatten();
    let declared = headers
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    request::check_content(content_type.as_deref(), declared)?;
    let mut out = Vec::new();
    if let Ok(mut stream) = req.stream() {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| Error::invalid("", "request body could not be read"))?;
            if out.len().saturating_add(chunk.len()) > MAX_BODY_BYTES {
                return Err(Error::PayloadTooLarge);
            }
            out.extend_from_slice(&chunk);
        }
    }
    request::check_body_len(out.len())?;
    Ok(out)
}

/// Query pairs of the request URL, percent-decoded.
pub fn query_pairs(req: &Request) -> Vec<(String, String)> {
    req.url()
        .map(|u| {
            u.query_pairs()
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}
