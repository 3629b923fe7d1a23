//! otpkit on Cloudflare Workers. Routing and authentication here; the rules are otpkit-core's;
//! state lives in three Durable Object classes ([`session_do`], [`destination_do`],
//! [`workspace_do`]), KV and D1.

mod analytics;
mod audit;
mod config;
mod destination_do;
mod gateway;
mod http;
mod idempotency_do;
mod otp;
mod proto;
mod session_do;
mod workspace_do;
mod workspaces;

pub use destination_do::DestinationObject;
pub use idempotency_do::IdempotencyObject;
pub use session_do::SessionObject;
pub use workspace_do::WorkspaceObject;

use otpkit_core::flow::{AdminAction, ReceiptSource};
use otpkit_core::http::envelope::{self, Reply};
use otpkit_core::http::request::{Dialect, IssueRequest, ResendRequest, VerifyRequest};
use otpkit_core::http::route::{match_route, Route};
use otpkit_core::idempotency::Idempotency;
use otpkit_core::workspace::{self, WorkspaceRecord};
use otpkit_core::{audit as core_audit, Error};
use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let method = req.inner().method();
    let path = req.path();
    let started = worker::Date::now().as_millis();
    let calls = otp::Calls::default();
    let answer = route(&mut req, &env, &ctx, &calls, &method, &path).await;
    log_request(&env, &method, &path, &answer, &calls, started);
    let mut response = match answer {
        Ok(reply) => http::respond(&reply)?,
        Err(e) => http::error(&e)?,
    };
    if config::read(&env, "OTPKIT_TRACE_DO_CALLS").is_some() {
        response
            .headers_mut()
            .set("x-otpkit-do-calls", &calls.get().to_string())?;
        // The isolate's wasm linear memory (it only grows): tells the soak whether memory the
        // host keeps is Rust's (this number grows) or the runtime's (it stays flat).
        response
            .headers_mut()
            .set("x-otpkit-wasm-bytes", &wasm_memory_bytes().to_string())?;
    }
    Ok(response)
}

/// One JSON line per request (SPEC §9 "Logs"; [`otpkit_core::log::RequestLog`]): the route's
/// name, never the path a client wrote.
fn log_request(
    env: &Env,
    method: &str,
    path: &str,
    answer: &std::result::Result<Reply, Error>,
    calls: &otp::Calls,
    started: u64,
) {
    let (status, error) = match answer {
        Ok(reply) if reply.status >= 400 => {
            (reply.status, otpkit_core::log::error_code(&reply.body))
        }
        Ok(reply) => (reply.status, None),
        Err(e) => (e.http_status(), Some(e.code().to_string())),
    };
    let now = worker::Date::now().as_millis();
    let workspace = calls.workspace();
    let entry = otpkit_core::log::RequestLog {
        time: otpkit_core::UnixMillis(now),
        method,
        route: match_route(method, path).map_or("unknown", |r| r.name()),
        status,
        latency_ms: now.saturating_sub(started),
        workspace: workspace.as_deref(),
        error: error.as_deref(),
    };
    let level = config::log_level(env);
    if let Some(line) = entry.line(level) {
        worker::console_log!("{line}");
    }
    // A 500 MISCONFIGURED also says what is missing, on a line of its own.
    let problem = match answer {
        Ok(reply) if reply.status == 500 => {
            otpkit_core::log::config_problem_line(entry.time, &reply.body, level)
        }
        Err(Error::Misconfigured { message }) => {
            otpkit_core::log::config_problem(entry.time, message, level)
        }
        _ => None,
    };
    if let Some(line) = problem {
        worker::console_log!("{line}");
    }
    let status = status.to_string();
    let blobs = [entry.route, status.as_str(), entry.error.unwrap_or("")];
    #[allow(clippy::cast_precision_loss)] // a latency in ms: exact far beyond any real one
    config::metric(env, "request", &blobs, &[entry.latency_ms as f64, 1.0]);
}

#[cfg(target_arch = "wasm32")]
fn wasm_memory_bytes() -> usize {
    core::arch::wasm32::memory_size(0) * 65_536
}

#[cfg(not(target_arch = "wasm32"))]
fn wasm_memory_bytes() -> usize {
    0
}

async fn route(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    calls: &otp::Calls,
    method: &str,
    path: &str,
) -> std::result::Result<Reply, Error> {
    let route = match_route(method, path)?;
    match route {
        Route::Health => return Ok(envelope::health(config::pepper(env).is_ok())),
        Route::Ready => {
            let store = workspaces::ready(env).await;
            return Ok(envelope::ready(store, config::pepper(env).is_ok()));
        }
        Route::OpenApi => return Ok(otpkit_core::http::openapi::reply()),
        _ => {}
    }
    let pepper = config::pepper(env)?;
    if route.is_receipt() {
        return receipt_route(req, env, ctx, calls, &pepper, route).await;
    }
    let header = |name: &str| req.headers().get(name).ok().flatten();
    match route {
        r if r.is_admin() => {
            let Some(admin) = config::read(env, "ADMIN_TOKEN") else {
                return Err(Error::NotFound);
            };
            if !workspace::admin_authorized(&admin, header("authorization").as_deref()) {
                return Err(Error::Unauthorized);
            }
            admin_route(req, env, ctx, calls, route).await
        }
        _ => {
            let (ws, key_id) = workspaces::authenticate(
                env,
                header("authorization").as_deref(),
                header("x-api-key").as_deref(),
            )
            .await?;
            calls.set_workspace(&ws.id);
            // `lastUsedAt` (SPEC §9): at most one write an hour per key, after the answer.
            otp::note_key_use(env, ctx, &ws.id, &key_id, otp::now());
            // SPEC §7 "Idempotency": checked once the body is read (after 415/413), before it is
            // parsed; only request, send and resend take it.
            let idem_key = header("idempotency-key");
            let idempotency = |body: &[u8]| {
                Idempotency::from_header(&ws.id, idem_key.as_deref(), method, path, body)
            };
            match route {
                Route::Request(dialect) => {
                    let body = http::json_body(req).await?;
                    let idem = idempotency(&body)?;
                    let parsed = match dialect {
                        Dialect::V1 => IssueRequest::from_v1_json(&body)?,
                        Dialect::Zend => IssueRequest::from_zend_json(&body)?,
                    };
                    otp::request(env, ctx, calls, &pepper, &ws, parsed, idem).await
                }
                Route::Verify(dialect, path_id) => {
                    let body = http::json_body(req).await?;
                    let parsed = match path_id {
                        None => VerifyRequest::from_v1_json(&body)?,
                        Some(id) => VerifyRequest::from_zend_json(id, &body)?,
                    };
                    otp::verify(env, ctx, calls, &ws, parsed, dialect).await
                }
                Route::Status(dialect, id) => otp::status(env, ctx, calls, &ws, id, dialect).await,
                Route::Cancel(dialect, id) => otp::cancel(env, ctx, calls, &ws, id, dialect).await,
                Route::Resend(dialect, id) => {
                    let body = http::optional_json_body(req).await?;
                    let idem = idempotency(&body)?;
                    let parsed = ResendRequest::from_json(&body)?;
                    otp::resend(env, ctx, calls, &pepper, &ws, id, &parsed, dialect, idem).await
                }
                Route::Audit => audit_route(req, env, &ws).await,
                Route::Analytics => {
                    let pairs = http::query_pairs(req);
                    let q = otpkit_core::analytics::AnalyticsQuery::from_pairs(
                        pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
                    )?;
                    analytics::report(env, &ws, &q, otp::now()).await
                }
                _ => Err(Error::NotFound),
            }
        }
    }
}

/// The delivery receipt routes (SPEC §8): no API key (the flow checks the provider's
/// signature), any content type (Twilio posts a form), the usual size limit; the raw body.
async fn receipt_route(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    calls: &otp::Calls,
    pepper: &otpkit_core::Pepper,
    route: Route<'_>,
) -> std::result::Result<Reply, Error> {
    let body = http::raw_body(req).await?;
    let path_and_query = http::path_and_query(req);
    let signature_header = match route {
        Route::TwilioReceipt => "x-twilio-signature",
        Route::MetaReceipt => "x-hub-signature-256",
        _ => "x-otpkit-signature",
    };
    let sig = req.headers().get(signature_header).ok().flatten();
    let signature = sig.as_deref();
    let source = match route {
        Route::TwilioReceipt => ReceiptSource::Twilio {
            path_and_query: &path_and_query,
            signature,
        },
        Route::MetaReceipt => ReceiptSource::Meta { signature },
        Route::MetaCheck => ReceiptSource::MetaChallenge {
            path_and_query: &path_and_query,
        },
        _ => ReceiptSource::Json { signature },
    };
    otp::receipt(env, ctx, calls, pepper, source, &body).await
}

async fn audit_route(
    req: &Request,
    env: &Env,
    ws: &WorkspaceRecord,
) -> std::result::Result<Reply, Error> {
    let pairs = http::query_pairs(req);
    let q =
        core_audit::AuditQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let (events, next) = audit::query(env, &ws.id, &q).await?;
    Ok(core_audit::reply(&events, next))
}

async fn admin_route(
    req: &mut Request,
    env: &Env,
    ctx: &Context,
    calls: &otp::Calls,
    route: Route<'_>,
) -> std::result::Result<Reply, Error> {
    let body = match route {
        Route::CreateWorkspace | Route::PatchWorkspace(_) => http::json_body(req).await?,
        _ => Vec::new(),
    };
    let pairs = http::query_pairs(req);
    let param = |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let action = match route {
        Route::CreateWorkspace => AdminAction::CreateWorkspace { body: &body },
        Route::PatchWorkspace(id) => AdminAction::PatchWorkspace { id, body: &body },
        Route::GetWorkspace(id) => AdminAction::GetWorkspace { id },
        Route::CreateKey(id) => AdminAction::CreateKey { id },
        Route::RevokeKey(id, key_id) => AdminAction::RevokeKey { id, key_id },
        Route::GetFraud(id) => AdminAction::GetFraud { id },
        Route::UnblockPrefix(id, prefix) => AdminAction::UnblockPrefix { id, prefix },
        Route::ListWorkspaces => AdminAction::ListWorkspaces {
            cursor: param("cursor"),
            limit: param("limit"),
        },
        Route::AdminAnalytics => {
            let q = otpkit_core::analytics::AnalyticsQuery::from_pairs(
                pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            )?;
            return analytics::admin_report(env, &q, otp::now()).await;
        }
        _ => return Err(Error::NotFound),
    };
    otp::admin(env, ctx, calls, action).await
}
