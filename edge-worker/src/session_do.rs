//! `SessionObject`: one Durable Object per OTP session (named `workspaceId:sessionId`).
//!
//! Verify is read–decide–write on this object's storage with no other await in between, so
//! input gates make it atomic: attempts are never over-counted and approval happens once,
//! under any concurrency. An alarm purges the session `retentionSeconds` after expiry (with its
//! `purged` audit event, its analytics open row, and the workspace's counters past 90 days).

use crate::proto::SessionCall;
use crate::{config, http};
use otpkit_core::flow::{receipt_stored, resend_stored, verify_stored_for, ResendStep};
use otpkit_core::{Error, Session, UnixMillis};
use worker::{durable_object, Date, DurableObject, Env, Request, Response, Result, State};

const KEY: &str = "session";

#[durable_object]
pub struct SessionObject {
    state: State,
    env: Env,
}

impl SessionObject {
    async fn load(&self) -> std::result::Result<Option<Session>, Error> {
        let raw: Option<String> = self
            .state
            .storage()
            .get(KEY)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        raw.map(|s| Session::from_json(&s)).transpose()
    }

    async fn store(&self, session: &Session) -> std::result::Result<(), Error> {
        self.state
            .storage()
            .put(KEY, session.to_json())
            .await
            .map_err(|_| Error::StoreUnavailable)
    }

    /// Sets the alarm that purges the session.
    async fn purge_at(&self, session: &Session) -> std::result::Result<(), Error> {
        let purge_at = i64::try_from(session.purge_at().0).unwrap_or(i64::MAX);
        let at = worker::ScheduledTime::new(js_sys_date(purge_at));
        self.state
            .storage()
            .set_alarm(at)
            .await
            .map_err(|_| Error::StoreUnavailable)
    }

    async fn handle(&self, call: SessionCall) -> std::result::Result<Response, Error> {
        let now = UnixMillis(Date::now().as_millis());
        let json = |body: String| Response::ok(body).map_err(|_| Error::StoreUnavailable);
        match call {
            SessionCall::Create { session } => {
                let session = Session::from_json(&session)?;
                self.store(&session).await?;
                self.purge_at(&session).await?;
                json(String::new())
            }
            SessionCall::Resend { workspace_id, step } => {
                // Read, decide, write: no await but storage between load and store.
                let done = resend_stored(self.load().await?, &workspace_id, &step, now);
                if let Some(after) = &done.write {
                    self.store(after).await?;
                    if matches!(step, ResendStep::Apply { .. }) {
                        // A new expiry: the purge moves with it.
                        self.purge_at(after).await?;
                    }
                }
                json(serde_json::to_string(&done.outcome).unwrap_or_default())
            }
            SessionCall::Receipt {
                workspace_id,
                receipt,
            } => {
                // Read, decide, write: no await but storage between load and store. The purge
                // time stays (a receipt does not change the expiry).
                let step = receipt_stored(self.load().await?, &workspace_id, &receipt);
                if let Some(after) = &step.write {
                    self.store(after).await?;
                }
                json(serde_json::to_string(&step.outcome).unwrap_or_default())
            }
            SessionCall::Get => match self.load().await? {
                Some(s) => json(s.to_json()),
                None => Response::error("not found", 404).map_err(|_| Error::StoreUnavailable),
            },
            SessionCall::Verify {
                workspace_id,
                code,
                transaction,
            } => {
                let pepper = config::pepper(&self.env)?;
                // Read, decide, write: no await but storage between load and store.
                let step = verify_stored_for(
                    self.load().await?,
                    &workspace_id,
                    &code,
                    transaction.as_ref(),
                    now,
                    &pepper,
                );
                if let Some(after) = &step.write {
                    self.store(after).await?;
                }
                json(serde_json::to_string(&step.outcome).unwrap_or_default())
            }
            SessionCall::Cancel => {
                if let Some(s) = self.load().await? {
                    self.store(&s.cancel()).await?;
                }
                json(String::new())
            }
        }
    }
}

fn js_sys_date(ms: i64) -> worker::js_sys::Date {
    worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(ms as f64))
}

impl DurableObject for SessionObject {
    fn new(state: State, env: Env) -> Self {
        SessionObject { state, env }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: SessionCall = match req.json().await {
            Ok(c) => c,
            Err(_) => return http::error(&Error::invalid("", "bad internal call")),
        };
        match self.handle(call).await {
            Ok(r) => Ok(r),
            Err(e) => http::error(&e),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        // Purge: the session's retention after expiry has passed.
        let session = self.load().await.ok().flatten();
        self.state.storage().delete_all().await?;
        if let Some(s) = session {
            let now = UnixMillis(Date::now().as_millis());
            let event = otpkit_core::audit::AuditEvent::for_session("purged", &s, "ok", None, now);
            crate::audit::write(&self.env, &s.workspace_id, &[event], &[]).await;
            crate::analytics::purge(&self.env, &s.workspace_id, &s.id, now).await;
        }
        Response::ok("")
    }
}

impl std::fmt::Debug for SessionObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SessionObject")
    }
}
