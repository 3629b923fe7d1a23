//! The OTP flows on the edge: request (reuse, admit, deliver, store), verify, status.
//! Every rule is the core's; this module only moves values between the Durable Objects,
//! KV, the gateway and D1.

use crate::proto::{
    AdmitAnswer, Delivery, DeliveryAnswer, DestinationCall, SessionCall, VerifyAnswer,
};
use crate::{audit, config, gateway};
use otpkit_core::analytics;
use otpkit_core::audit::AuditEvent;
use otpkit_core::envelope::{self, Reply};
use otpkit_core::guard::FloodShield;
use otpkit_core::request::{Dialect, IssueRequest, VerifyRequest};
use otpkit_core::session::plan_issue;
use otpkit_core::workspace::WorkspaceRecord;
use otpkit_core::{
    Entropy, Error, Pepper, Purpose, Session, UnixMillis, Verification, VerifyOutcome,
};
use serde::Serialize;
use worker::wasm_bindgen::JsValue;
use worker::{Context, Date, Env, Method, Request, RequestInit, Stub};

pub fn now() -> UnixMillis {
    UnixMillis(Date::now().as_millis())
}

/// CSPRNG bytes (`crypto.getRandomValues`).
pub fn random<const N: usize>() -> Result<[u8; N], Error> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| Error::Misconfigured {
        message: "no CSPRNG available".into(),
    })?;
    Ok(buf)
}

fn stub(env: &Env, binding: &str, name: &str) -> Result<Stub, Error> {
    let missing = || Error::Misconfigured {
        message: format!("Durable Object binding {binding} is missing").into(),
    };
    let ns = env.durable_object(binding).map_err(|_| missing())?;
    ns.get_by_name(name).map_err(|_| missing())
}

fn session_stub(env: &Env, workspace_id: &str, session_id: &str) -> Result<Stub, Error> {
    stub(env, "SESSIONS", &format!("{workspace_id}:{session_id}"))
}

fn destination_stub(env: &Env, workspace_id: &str, dest: &str) -> Result<Stub, Error> {
    stub(env, "DESTINATIONS", &format!("{workspace_id}:{dest}"))
}

/// Durable Object calls made while a request is answered (not those that follow the answer).
/// `scripts/test` checks the counts per route, and benchmarks report them, through the
/// `x-otpkit-do-calls` header a Worker adds when `OTPKIT_TRACE_DO_CALLS` is set.
#[derive(Debug, Default)]
pub struct Calls(std::cell::Cell<u32>);

impl Calls {
    pub fn get(&self) -> u32 {
        self.0.get()
    }
}

/// One internal call: POST JSON, answer status and text.
async fn call<T: Serialize>(calls: &Calls, stub: &Stub, body: &T) -> Result<(u16, String), Error> {
    calls.0.set(calls.0.get().saturating_add(1));
    let json = serde_json::to_string(body).map_err(|_| Error::StoreUnavailable)?;
    let mut init = RequestInit::new();
    init.with_method(Method::Post)
        .with_body(Some(JsValue::from_str(&json)));
    let req = Request::new_with_init("https://do.internal/", &init)
        .map_err(|_| Error::StoreUnavailable)?;
    let mut resp = stub
        .fetch_with_request(req)
        .await
        .map_err(|_| Error::StoreUnavailable)?;
    let text = resp.text().await.map_err(|_| Error::StoreUnavailable)?;
    Ok((resp.status_code(), text))
}

/// An internal answer that must be 200, else the error it carries (as a store failure).
async fn call_ok<T: Serialize>(calls: &Calls, stub: &Stub, body: &T) -> Result<String, Error> {
    match call(calls, stub, body).await? {
        (200, text) => Ok(text),
        (_, text) if text.contains("\"INTERNAL_ERROR\"") => Err(Error::CorruptState {
            message: "stored state could not be read".into(),
        }),
        _ => Err(Error::StoreUnavailable),
    }
}

async fn get_session(
    env: &Env,
    calls: &Calls,
    workspace_id: &str,
    session_id: &str,
) -> Result<Option<Session>, Error> {
    match call(
        calls,
        &session_stub(env, workspace_id, session_id)?,
        &SessionCall::Get,
    )
    .await?
    {
        (200, text) => Session::from_json(&text).map(Some),
        (404, _) => Ok(None),
        _ => Err(Error::StoreUnavailable),
    }
}

fn reuse_key(workspace_id: &str, dest: &str, purpose: Purpose) -> String {
    format!("reuse:{workspace_id}:{dest}:{}", purpose.as_str())
}

fn issue_reply(dialect: Dialect, session: &Session, now: UnixMillis, reused: bool) -> Reply {
    match dialect {
        Dialect::V1 => envelope::v1_request(session, now, reused),
        Dialect::Zend => envelope::zend_send(session, reused),
    }
}

fn refused(code: &str, retry_after_secs: u32) -> Error {
    match code {
        "DESTINATION_LOCKED" => Error::DestinationLocked { retry_after_secs },
        _ => Error::RateLimited { retry_after_secs },
    }
}

/// Bookkeeping that may follow the response: audit rows, reuse hints, cancellations.
fn later(ctx: &Context, f: impl std::future::Future<Output = ()> + 'static) {
    ctx.wait_until(f);
}

/// The `reused` audit event and its analytics, after the response.
fn reused_later(env: &Env, ctx: &Context, ws_id: &str, s: &Session, now: UnixMillis) {
    let event = AuditEvent::for_session("reused", s, "ok", None, now);
    let deltas: Vec<_> = analytics::reused(s).into_iter().collect();
    let (env2, id) = (env.clone(), ws_id.to_string());
    later(ctx, async move {
        audit::write(&env2, &id, &[event], &deltas).await
    });
}

/// `POST /v1/messaging/otp/request` and `POST /otp/send`.
pub async fn request(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    pepper: &Pepper,
    ws: &WorkspaceRecord,
    req: IssueRequest,
) -> Result<Reply, Error> {
    let now = now();
    let entropy = Entropy::from_bytes(&random::<48>()?);
    let plan = plan_issue(&req, &ws.id, &ws.senders, &ws.policy, now, &entropy, pepper)?;
    let policy = &ws.policy;
    let key = reuse_key(&ws.id, &req.dest, req.purpose);

    // Fast path: a reuse hint in KV, confirmed against the session itself.
    if policy.reuse {
        let hint = match env.kv("REUSE") {
            Ok(kv) => kv.get(&key).text().await.ok().flatten(),
            Err(_) => None,
        };
        if let Some(sid) = hint {
            if let Some(s) = get_session(env, calls, &ws.id, &sid).await? {
                if s.reusable(now) {
                    reused_later(env, ctx, &ws.id, &s, now);
                    return Ok(issue_reply(req.dialect, &s, now, true));
                }
            }
        }
    }

    let dest = destination_stub(env, &ws.id, &req.dest)?;
    let session = plan.session;
    let mut admitted = false;
    for _ in 0..3 {
        let answer: AdmitAnswer = serde_json::from_str(
            &call_ok(
                calls,
                &dest,
                &DestinationCall::Admit {
                    purpose: session.purpose,
                    session_id: session.id.clone(),
                    expires_at: session.expires_at,
                    test: session.test,
                    policy: policy.clone(),
                },
            )
            .await?,
        )
        .map_err(|_| Error::StoreUnavailable)?;
        match answer {
            AdmitAnswer::Send => {
                admitted = true;
                break;
            }
            AdmitAnswer::Reuse { session_id } => {
                match get_session(env, calls, &ws.id, &session_id).await? {
                    Some(s) if s.reusable(now) => {
                        reused_later(env, ctx, &ws.id, &s, now);
                        return Ok(issue_reply(req.dialect, &s, now, true));
                    }
                    _ => {
                        call_ok(calls, &dest, &DestinationCall::Forget { session_id }).await?;
                    }
                }
            }
            AdmitAnswer::Failed => return Err(Error::DeliveryFailed),
            AdmitAnswer::Refused {
                code,
                retry_after_secs,
            } => {
                let event = AuditEvent::refused(
                    "rate_limited",
                    &req.dest,
                    req.purpose,
                    req.app.as_deref(),
                    &code,
                    now,
                );
                let (env2, id) = (env.clone(), ws.id.clone());
                later(
                    ctx,
                    async move { audit::write(&env2, &id, &[event], &[]).await },
                );
                return Err(refused(&code, retry_after_secs));
            }
        }
    }
    if !admitted {
        return Err(Error::StoreUnavailable);
    }
    // The workspace flood shield (approximate by SPEC: KV, last writer wins). A refusal here
    // hands the admitted send back to the guard as a definite failure, so nothing is charged.
    if !session.test {
        if let Err(e) = flood_shield(env, ctx, ws, now).await {
            let failed = DestinationCall::Delivery {
                session_id: session.id.clone(),
                outcome: Delivery::Failed,
                policy: policy.clone(),
            };
            call_ok(calls, &dest, &failed).await?;
            return Err(e);
        }
    }

    let outcome = match &plan.message {
        None => Delivery::Delivered, // test number: nothing is sent
        Some(message) => {
            let gw = config::gateway(env)?;
            let m = gateway::Message {
                to: &session.dest,
                from: &session.src,
                text: &message.text,
                channel: session.channel,
                reference: &session.id,
            };
            gateway::send(&gw, &m).await
        }
    };
    let mut final_outcome = outcome;
    if outcome == Delivery::Delivered {
        // Stored before the guard confirms it, so a waiter told to reuse it can read it.
        let create = SessionCall::Create {
            session: session.to_json(),
        };
        if call_ok(calls, &session_stub(env, &ws.id, &session.id)?, &create)
            .await
            .is_err()
        {
            final_outcome = Delivery::Failed;
        }
    }
    // A failure is confirmed before the answer, so the send window is refunded before the
    // client can retry. A delivered send is confirmed after the answer: the session is stored
    // already, so the request is decided; confirming releases concurrent waiters (they wait a
    // moment longer) and cancels the previous session when reuse is off. Either way at most two
    // Durable Object calls are on the response path. If a confirmation is lost, the entry goes
    // stale after 15 s as if the send had failed.
    let confirm = DestinationCall::Delivery {
        session_id: session.id.clone(),
        outcome: final_outcome,
        policy: policy.clone(),
    };
    let mut events = vec![AuditEvent::for_session(
        "requested",
        &session,
        "ok",
        None,
        now,
    )];
    if final_outcome != Delivery::Delivered {
        events.push(AuditEvent::for_session(
            "delivery_failed",
            &session,
            "failed",
            None,
            now,
        ));
        call_ok(calls, &dest, &confirm).await?;
        let deltas: Vec<_> = analytics::delivery_failed(&session).into_iter().collect();
        let (env2, id) = (env.clone(), ws.id.clone());
        later(ctx, async move {
            audit::write(&env2, &id, &events, &deltas).await;
        });
        return Err(if outcome == Delivery::Delivered {
            Error::StoreUnavailable
        } else {
            Error::DeliveryFailed
        });
    }
    events.push(AuditEvent::for_session(
        "delivered",
        &session,
        "ok",
        None,
        now,
    ));
    let deltas: Vec<_> = analytics::delivered(&session).into_iter().collect();
    let (env2, id, sid) = (env.clone(), ws.id.clone(), session.id.clone());
    let ttl = now.secs_until_ceil(session.expires_at).max(60);
    later(ctx, async move {
        let cancel = match call(&Calls::default(), &dest, &confirm).await {
            Ok((200, text)) => serde_json::from_str::<DeliveryAnswer>(&text)
                .ok()
                .and_then(|a| a.cancel),
            _ => None,
        };
        if let Some(old) = cancel {
            if let Ok(stub) = session_stub(&env2, &id, &old) {
                let _ = call(&Calls::default(), &stub, &SessionCall::Cancel).await;
            }
        }
        if let Ok(kv) = env2.kv("REUSE") {
            if let Ok(put) = kv.put(&key, sid.as_str()) {
                let _ = put.expiration_ttl(ttl).execute().await;
            }
        }
        audit::write(&env2, &id, &events, &deltas).await;
    });
    Ok(issue_reply(req.dialect, &session, now, false))
}

async fn flood_shield(
    env: &Env,
    ctx: &Context,
    ws: &WorkspaceRecord,
    now: UnixMillis,
) -> Result<(), Error> {
    let Ok(kv) = env.kv("REUSE") else {
        return Ok(());
    };
    let key = format!("flood:{}", ws.id);
    let mut shield: FloodShield = kv
        .get(&key)
        .text()
        .await
        .ok()
        .flatten()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    shield.admit(ws.policy.sends_per_workspace_per_minute, now)?;
    let value = serde_json::to_string(&shield).unwrap_or_default();
    later(ctx, async move {
        if let Ok(put) = kv.put(&key, value) {
            let _ = put.expiration_ttl(120).execute().await;
        }
    });
    Ok(())
}

/// `POST /v1/messaging/otp/verify` and `POST /otp/{id}/verify`.
pub async fn verify(
    env: &Env,
    ctx: &Context,
    calls: &Calls,
    ws: &WorkspaceRecord,
    req: VerifyRequest,
    dialect: Dialect,
) -> Result<Reply, Error> {
    let not_found = || match dialect {
        Dialect::V1 => envelope::v1_verify(&req.raw_session_id, &Verification::NOT_FOUND),
        Dialect::Zend => envelope::zend_not_found(),
    };
    let Some(sid) = req.session_id.clone() else {
        return Ok(not_found());
    };
    let call_body = SessionCall::Verify {
        workspace_id: ws.id.clone(),
        code: req.code.clone(),
    };
    let answer: VerifyAnswer =
        serde_json::from_str(&call_ok(calls, &session_stub(env, &ws.id, &sid)?, &call_body).await?)
            .map_err(|_| Error::StoreUnavailable)?;
    let outcome = VerifyOutcome::from_status(&answer.status, answer.attempts_left)
        .unwrap_or(VerifyOutcome::NotFound);
    let Some(session) = answer
        .session
        .as_deref()
        .map(Session::from_json)
        .transpose()?
    else {
        return Ok(not_found());
    };
    let v = Verification {
        outcome,
        attempts_left: answer.attempts_left,
    };
    let reply = match dialect {
        Dialect::V1 => envelope::v1_verify(&session.id, &v),
        Dialect::Zend => envelope::zend_verify(&v, session.verified_at),
    };
    let now = now();
    let (env2, policy) = (env.clone(), ws.policy.clone());
    let event = AuditEvent::for_verify(&session, outcome, now);
    let deltas: Vec<_> = analytics::verified(&session, outcome).into_iter().collect();
    let ws_id = ws.id.clone();
    later(ctx, async move {
        if outcome.consumed_attempt() {
            if let Ok(dest) = destination_stub(&env2, &ws_id, &session.dest) {
                let call_body = DestinationCall::Verified {
                    session_id: session.id.clone(),
                    status: outcome.status().to_string(),
                    attempts_left: v.attempts_left,
                    policy,
                };
                let _ = call(&Calls::default(), &dest, &call_body).await;
            }
        }
        if outcome == VerifyOutcome::Approved || outcome.locked_session() {
            if let Ok(kv) = env2.kv("REUSE") {
                let _ = kv
                    .delete(&reuse_key(&ws_id, &session.dest, session.purpose))
                    .await;
            }
        }
        let events: Vec<_> = event.into_iter().collect();
        audit::write(&env2, &ws_id, &events, &deltas).await;
    });
    Ok(reply)
}

/// `GET /v1/messaging/otp/sessions/{id}` and `GET /otp/{id}/status`.
pub async fn status(
    env: &Env,
    calls: &Calls,
    ws: &WorkspaceRecord,
    raw_id: &str,
    dialect: Dialect,
) -> Result<Reply, Error> {
    let not_found = || match dialect {
        Dialect::V1 => envelope::v1_session_not_found(),
        Dialect::Zend => envelope::zend_not_found(),
    };
    let Some(sid) = otpkit_core::validate::normalize_session_id(raw_id) else {
        return Ok(not_found());
    };
    match get_session(env, calls, &ws.id, &sid).await? {
        Some(s) if s.workspace_id == ws.id => Ok(match dialect {
            Dialect::V1 => envelope::v1_session(&s.view(now())),
            Dialect::Zend => envelope::zend_status(&s, now()),
        }),
        _ => Ok(not_found()),
    }
}
