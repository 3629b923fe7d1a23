//! HTTP plumbing: bounded body reads, core `Reply` → `Response`, small helpers.

use futures_util::StreamExt;
use otpkit_core::http::envelope::{self, Reply};
use otpkit_core::http::request::{self, MAX_BODY_BYTES};
use otpkit_core::Error;
use worker::{Request, Response, Result};

/// Sends a core reply: JSON body (none for 204), `Retry-After` when set, and
/// `Idempotent-Replayed: true` for a replayed answer (SPEC §7).
pub fn respond(reply: &Reply) -> Result<Response> {
    let mut builder = Response::builder().with_status(reply.status);
    if reply.status != 204 {
        builder = builder.with_header("content-type", "application/json")?;
    }
    if let Some(secs) = reply.retry_after {
        builder = builder.with_header("retry-after", &secs.to_string())?;
    }
    if reply.replayed {
        builder = builder.with_header("idempotent-replayed", "true")?;
    }
    Ok(builder.fixed(reply.body.as_bytes().to_vec()))
}

/// The error envelope of `e`.
pub fn error(e: &Error) -> Result<Response> {
    respond(&envelope::error(e))
}

/// 415 / 413 / body bytes, in SPEC's order. Stops reading past 16 KiB.
/// The `Content-Type` and the declared `Content-Length`.
fn content_headers(req: &Request) -> (Option<String>, Option<u64>) {
    let headers = req.headers();
    let content_type = headers.get("content-type").ok().flatten();
    let declared = headers
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.trim().parse::<u64>().ok());
    (content_type, declared)
}

/// [`json_body`] on a route whose body is optional ([`request::has_body`]): empty without one.
pub async fn optional_json_body(req: &mut Request) -> std::result::Result<Vec<u8>, Error> {
    let (content_type, declared) = content_headers(req);
    if request::has_body(content_type.as_deref(), declared) {
        json_body(req).await
    } else {
        Ok(Vec::new())
    }
}

pub async fn json_body(req: &mut Request) -> std::result::Result<Vec<u8>, Error> {
    let (content_type, declared) = content_headers(req);
    request::check_content(content_type.as_deref(), declared)?;
    read_body(req).await
}

/// The body bytes as received, of any content type (the delivery receipt routes: Twilio posts a
/// form), with the same 16 KiB limit (413).
pub async fn raw_body(req: &mut Request) -> std::result::Result<Vec<u8>, Error> {
    let (_, declared) = content_headers(req);
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(Error::PayloadTooLarge);
    }
    read_body(req).await
}

/// Reads the body, stopping past 16 KiB (413).
async fn read_body(req: &mut Request) -> std::result::Result<Vec<u8>, Error> {
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

/// The request's path with its query string, as received (a Twilio signature covers them
/// byte for byte: nothing is decoded or re-encoded).
pub fn path_and_query(req: &Request) -> String {
    let url = req.inner().url();
    let rest = url.split_once("://").map_or(url.as_str(), |(_, r)| r);
    let from = rest.find(['/', '?']).unwrap_or(rest.len());
    let pq = rest[from..].split('#').next().unwrap_or("");
    match pq.strip_prefix('?') {
        Some(_) => format!("/{pq}"),
        None if pq.is_empty() => "/".to_string(),
        None => pq.to_string(),
    }
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
