//! `Idempotency-Key` records (SPEC §7) for `lib/redis-store.js`: the core's decisions
//! ([`otpkit_core::idempotency`]) on a stored record's JSON, answered as the write the store's
//! compare-and-set script makes (the same shape as the guard steps of [`crate::redis`]).

use crate::errors::throw;
use crate::ms;
use napi::Result;
use napi_derive::napi;
use otpkit_core::idempotency::{claim_stored, finish_stored, release_stored, Record};

/// A store step on an idempotency record.
#[napi(object)]
#[derive(Debug)]
pub struct IdempotencyStep {
    /// The record to store (JSON); `null` deletes it.
    pub state: Option<String>,
    /// How long to keep it (ms); `null` keeps the key's TTL.
    pub keep_ms: Option<f64>,
    /// Whether anything is written.
    pub changed: bool,
    /// The outcome JSON for the flow (a claim's).
    pub outcome: Option<String>,
}

fn record(json: Option<&str>) -> Result<Option<Record>> {
    json.map(Record::from_json)
        .transpose()
        .map_err(|e| throw(&e))
}

/// A claim of a key for a request of `fingerprint` at `now`, on the stored record (JSON, `null`
/// when absent): its outcome, and the in-flight record to write (kept 24 h) when it claims.
#[napi]
pub fn idempotency_claim(
    json: Option<String>,
    fingerprint: String,
    now: f64,
) -> Result<IdempotencyStep> {
    let now = ms(now);
    let step = claim_stored(record(json.as_deref())?, &fingerprint, now);
    let write = step.write.clone();
    Ok(IdempotencyStep {
        changed: write.is_some(),
        keep_ms: write.as_ref().map(|r| r.keep_ms(now) as f64),
        state: write.as_ref().map(Record::to_json),
        outcome: Some(serde_json::to_string(&step.into_outcome()).unwrap_or_default()),
    })
}

/// Stores a claim's answer (`record`, the done record's JSON) if the stored record is still that
/// claim; the key keeps its TTL.
#[napi]
pub fn idempotency_finish(json: Option<String>, record_json: String) -> Result<IdempotencyStep> {
    let done = Record::from_json(&record_json).map_err(|e| throw(&e))?;
    let write = finish_stored(record(json.as_deref())?.as_ref(), &done);
    Ok(IdempotencyStep {
        changed: write,
        keep_ms: None,
        state: write.then(|| done.to_json()),
        outcome: None,
    })
}

/// Releases the claim made at `claimed_at` (deletes the record) if the stored record is still
/// that claim.
#[napi]
pub fn idempotency_release(json: Option<String>, claimed_at: f64) -> Result<IdempotencyStep> {
    let release = release_stored(record(json.as_deref())?.as_ref(), ms(claimed_at));
    Ok(IdempotencyStep {
        changed: release,
        keep_ms: None,
        state: None,
        outcome: None,
    })
}
