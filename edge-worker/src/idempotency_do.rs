//! `IdempotencyObject`: one Durable Object per `Idempotency-Key` (named by its workspace-scoped
//! hash, [`otpkit_core::idempotency::key_hash`]: the key itself never reaches storage), holding
//! its record ([`otpkit_core::idempotency::Record`]).
//!
//! Each call is read–decide–write on this object's storage with no other await in between, so
//! input gates make it atomic: of any number of concurrent requests with one key, one claims it.
//! The decisions are the core's ([`claim_stored`], [`finish_stored`], [`release_stored`]), with
//! this object's clock. An alarm deletes the record when it expires (24 h after its claim).

use crate::http;
use otpkit_core::idempotency::{claim_stored, finish_stored, release_stored, Record};
use otpkit_core::{Error, UnixMillis};
use serde::{Deserialize, Serialize};
use worker::{durable_object, Date, DurableObject, Env, Request, Response, Result, State};

const KEY: &str = "record";

/// Worker → IdempotencyObject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum IdempotencyCall {
    /// Claim the key for a request of this fingerprint: 200 with the core's
    /// [`otpkit_core::flow::Outcome::Idempotency`].
    Claim { fingerprint: String },
    /// Store the answer of the claim `record.claimedAt` (if it is still this object's claim).
    Finish { record: Box<Record> },
    /// Drop the claim made at `claimed_at` (if it is still this object's claim).
    Release { claimed_at: UnixMillis },
}

#[durable_object]
pub struct IdempotencyObject {
    state: State,
}

impl IdempotencyObject {
    async fn load(&self) -> std::result::Result<Option<Record>, Error> {
        let raw: Option<String> = self
            .state
            .storage()
            .get(KEY)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        raw.map(|s| Record::from_json(&s)).transpose()
    }

    async fn store(&self, record: &Record) -> std::result::Result<(), Error> {
        self.state
            .storage()
            .put(KEY, record.to_json())
            .await
            .map_err(|_| Error::StoreUnavailable)
    }

    async fn handle(&self, call: IdempotencyCall) -> std::result::Result<Response, Error> {
        let storage = self.state.storage();
        let body = match call {
            IdempotencyCall::Claim { fingerprint } => {
                let now = UnixMillis(Date::now().as_millis());
                // Read, decide, write: no await but storage between load and store.
                let step = claim_stored(self.load().await?, &fingerprint, now);
                if let Some(record) = &step.write {
                    self.store(record).await?;
                    let at = i64::try_from(record.expires_at.0).unwrap_or(i64::MAX);
                    storage
                        .set_alarm(worker::ScheduledTime::new(js_date(at)))
                        .await
                        .map_err(|_| Error::StoreUnavailable)?;
                }
                serde_json::to_string(&step.into_outcome()).unwrap_or_default()
            }
            IdempotencyCall::Finish { record } => {
                if finish_stored(self.load().await?.as_ref(), &record) {
                    self.store(&record).await?;
                }
                String::new()
            }
            IdempotencyCall::Release { claimed_at } => {
                if release_stored(self.load().await?.as_ref(), claimed_at) {
                    storage
                        .delete_all()
                        .await
                        .map_err(|_| Error::StoreUnavailable)?;
                    let _ = storage.delete_alarm().await;
                }
                String::new()
            }
        };
        Response::ok(body).map_err(|_| Error::StoreUnavailable)
    }
}

fn js_date(ms: i64) -> worker::js_sys::Date {
    worker::js_sys::Date::new(&worker::wasm_bindgen::JsValue::from_f64(ms as f64))
}

impl DurableObject for IdempotencyObject {
    fn new(state: State, _env: Env) -> Self {
        IdempotencyObject { state }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: IdempotencyCall = match req.json().await {
            Ok(c) => c,
            Err(_) => return http::error(&Error::invalid("", "bad internal call")),
        };
        match self.handle(call).await {
            Ok(r) => Ok(r),
            Err(e) => http::error(&e),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        // The record's 24 h are over.
        self.state.storage().delete_all().await?;
        Response::ok("")
    }
}

impl std::fmt::Debug for IdempotencyObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdempotencyObject")
    }
}
