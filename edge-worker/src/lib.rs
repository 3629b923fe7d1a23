//! otpkit on Cloudflare Workers. Routing and authentication here; the rules are otpkit-core's;
//! state lives in two Durable Object classes ([`session_do`], [`destination_do`]), KV and D1.

mod analytics;
mod audit;
mod config;
mod destination_do;
mod gateway;
mod http;
mod otp;
mod proto;
mod session_do;
mod workspaces;

pub use destination_do::DestinationObject;
pub use session_do::SessionObject;

use otpkit_core::envelope::{self, Reply};
use otpkit_core::request::{Dialect, IssueRequest, VerifyRequest};
use otpkit_core::route::{match_route, Route};
use otpkit_core::workspace::{self, WorkspaceRecord};
use otpkit_core::{audit as core_audit, Error};
use worker::{event, Context, Env, Request, Response, Result};

#[event(fetch)]
async fn fetch(mut req: Request, env: Env, ctx: Context) -> Result<Response> {
    let method = req.inner().method();
    let path = req.path();
    let calls = otp::Calls::default();
    let answer = route(&mut req, &env, &ctx, &calls, &method, &path).await;
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
        Route::OpenApi => return Ok(otpkit_core::openapi::reply()),
        _ => {}
    }
    let pepper = config::pepper(env)?;
    let header = |name: &str| req.headers().get(name).ok().flatten();
    match route {
        r if r.is_admin() => {
            let Some(admin) = config::read(env, "ADMIN_TOKEN") else {
                return Err(Error::NotFound);
            };
            if !workspace::admin_authorized(&admin, header("authorization").as_deref()) {
                return Err(Error::Unauthorized);
            }
            admin_route(req, env, route).await
        }
        _ => {
            let ws = workspaces::authenticate(
                env,
                header("authorization").as_deref(),
                header("x-api-key").as_deref(),
            )
            .await?;
            match route {
                Route::Request(dialect) => {
                    let body = http::json_body(req).await?;
                    let parsed = match dialect {
                        Dialect::V1 => IssueRequest::from_v1_json(&body)?,
                        Dialect::Zend => IssueRequest::from_zend_json(&body)?,
                    };
                    otp::request(env, ctx, calls, &pepper, &ws, parsed).await
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

/// Mints an API key, stores the workspace with it, and indexes its hash.
async fn add_key(
    env: &Env,
    ws: &mut WorkspaceRecord,
    now: otpkit_core::UnixMillis,
) -> std::result::Result<workspace::NewApiKey, Error> {
    let key = workspace::new_api_key(&otp::random::<32>()?, now);
    ws.keys.push(key.record.clone());
    workspaces::save(env, ws).await?;
    workspaces::index_key(env, &key.record.key_hash, &ws.id).await?;
    Ok(key)
}

async fn admin_route(
    req: &mut Request,
    env: &Env,
    route: Route<'_>,
) -> std::result::Result<Reply, Error> {
    let now = otp::now();
    match route {
        Route::CreateWorkspace => {
            let body = http::json_body(req).await?;
            let id = workspace::workspace_id(&otp::random::<12>()?);
            let mut ws = WorkspaceRecord::from_create_json(&body, id, now)?;
            let key = add_key(env, &mut ws, now).await?;
            Ok(envelope::admin_workspace_created(
                &ws.id,
                &key.api_key,
                &key.record.key_id,
            ))
        }
        Route::PatchWorkspace(id) => {
            let body = http::json_body(req).await?;
            let ws = workspaces::load(env, id).await?.ok_or(Error::NotFound)?;
            let next = ws.patched(&body)?;
            workspaces::save(env, &next).await?;
            Ok(envelope::admin_workspace_updated(&next))
        }
        Route::CreateKey(id) => {
            let mut ws = workspaces::load(env, id).await?.ok_or(Error::NotFound)?;
            let key = add_key(env, &mut ws, now).await?;
            Ok(envelope::admin_key_created(
                &key.api_key,
                &key.record.key_id,
            ))
        }
        Route::RevokeKey(id, key_id) => {
            let mut ws = workspaces::load(env, id).await?.ok_or(Error::NotFound)?;
            let hash = ws
                .keys
                .iter()
                .find(|k| k.key_id == key_id && k.revoked_at.is_none())
                .map(|k| k.key_hash.clone());
            if !ws.revoke(key_id, now) {
                return Err(Error::NotFound);
            }
            workspaces::save(env, &ws).await?;
            if let Some(hash) = hash {
                workspaces::unindex_key(env, &hash).await?;
            }
            Ok(Reply::no_content())
        }
        _ => Err(Error::NotFound),
    }
}
