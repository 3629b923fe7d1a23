//! `Idempotency-Key` (SPEC §7, "Idempotency"): the key's check, its workspace-scoped hash, the
//! request's fingerprint, the stored record, and the decisions every store takes inside its
//! atomic section ([`claim_stored`], [`finish_stored`], [`release_stored`]), the way
//! [`crate::flow::verify_stored`] is used. The sequence (claim → run → store the answer, or
//! release it, or replay, or wait) is [`crate::flow::Idempotent`].
//!
//! - A key is 1–255 characters of `[\x21-\x7E]`; anything else is 400 `VALIDATION_ERROR` on the
//!   field `Idempotency-Key`.
//! - Stores see only [`key_hash`]: hex SHA-256 of `"otpkit/idempotency/v1" ‖ f(workspaceId) ‖
//!   f(key)` (`f` as in [`crate::hash`]), so keys are per workspace and never stored in clear.
//! - [`fingerprint`]: hex SHA-256 of `f(method) ‖ f(path) ‖ f(canonical JSON of the body)`: object
//!   keys sorted, no whitespace, so the same body in another key order matches; the route (which
//!   session a resend names) is part of it.
//! - A record lives [`KEEP_MS`] (24 h) from its claim. An in-flight claim older than
//!   [`STALE_MS`] is taken over (its host died mid-request); a finished one is replayed.

use crate::error::Error;
use crate::flow::Outcome;
use crate::hash::{sha256, to_hex};
use crate::http::envelope::Reply;
use crate::time::UnixMillis;
use alloc::string::String;
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The request header.
pub const HEADER: &str = "Idempotency-Key";
/// The response header of a replayed answer (value `true`).
pub const REPLAYED_HEADER: &str = "Idempotent-Replayed";
/// The longest key accepted.
pub const MAX_KEY_LEN: usize = 255;
/// How long a record is kept after its claim: 24 h.
pub const KEEP_MS: u64 = 24 * 3600 * 1000;
/// An in-flight claim older than this is stale (its host died) and may be taken over. A whole
/// send (gateway timeout 10 s, plus the stores' steps) ends well within it.
pub const STALE_MS: u64 = 30_000;
/// How long a duplicate waits, in [`crate::flow::Idempotent`]'s pauses, for the request in flight
/// with its key before it gives up with 409 `IDEMPOTENCY_KEY_IN_USE`.
pub const WAIT_BUDGET_MS: u64 = 25_000;

const DOMAIN: &[u8] = b"otpkit/idempotency/v1";

fn framed(out: &mut Vec<u8>, part: &[u8]) {
    let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(part);
}

/// Checks a key as given in the header: 1–255 characters of `[\x21-\x7E]`.
///
/// # Errors
/// 400 `VALIDATION_ERROR` on the field `Idempotency-Key`.
pub fn check_key(key: &str) -> Result<(), Error> {
    let ok = !key.is_empty()
        && key.len() <= MAX_KEY_LEN
        && key.bytes().all(|b| (0x21..=0x7e).contains(&b));
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(
            HEADER,
            "must be 1 to 255 visible ASCII characters (0x21-0x7E)",
        ))
    }
}

/// The key as stores see it: hex SHA-256 of `"otpkit/idempotency/v1" ‖ f(workspaceId) ‖ f(key)`.
#[must_use]
pub fn key_hash(workspace_id: &str, key: &str) -> String {
    let mut data = Vec::new();
    data.extend_from_slice(DOMAIN);
    framed(&mut data, workspace_id.as_bytes());
    framed(&mut data, key.as_bytes());
    to_hex(&sha256(&data))
}

/// The fingerprint of a request: method, path (without surrounding slashes) and the body as
/// canonical JSON (a body that is not JSON counts as its bytes; such a request is refused 400
/// before it could run anyway).
#[must_use]
pub fn fingerprint(method: &str, path: &str, body: &[u8]) -> String {
    let mut data = Vec::new();
    framed(&mut data, method.to_ascii_uppercase().as_bytes());
    framed(&mut data, path.trim_matches('/').as_bytes());
    match serde_json::from_slice::<Value>(body) {
        Ok(v) => {
            let mut text = String::new();
            canonical(&v, &mut text);
            framed(&mut data, text.as_bytes());
        }
        Err(_) => {
            data.push(0xff);
            framed(&mut data, body);
        }
    }
    to_hex(&sha256(&data))
}

/// Compact JSON with object keys in byte order (whatever order serde_json keeps them in).
fn canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, x)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                canonical(x, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(x, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&serde_json::to_string(scalar).unwrap_or_default()),
    }
}

/// What an idempotent request carries into its flow: the key's hash and the fingerprint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Idempotency {
    /// [`key_hash`] (the store's key).
    pub key_hash: String,
    /// [`fingerprint`] of the request.
    pub fingerprint: String,
}

impl Idempotency {
    /// From the `Idempotency-Key` header (absent: `None`, the request is not idempotent), the
    /// workspace, the request's method and path, and its body.
    ///
    /// # Errors
    /// 400 `VALIDATION_ERROR` (field `Idempotency-Key`) for a malformed key.
    pub fn from_header(
        workspace_id: &str,
        header: Option<&str>,
        method: &str,
        path: &str,
        body: &[u8],
    ) -> Result<Option<Idempotency>, Error> {
        let Some(key) = header else { return Ok(None) };
        check_key(key)?;
        Ok(Some(Idempotency {
            key_hash: key_hash(workspace_id, key),
            fingerprint: fingerprint(method, path, body),
        }))
    }
}

/// Where a stored record stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RecordState {
    /// Claimed by a request that has not answered yet.
    InFlight,
    /// Answered: the answer is stored for replay.
    Done,
}

/// The stored record of one key (versioned JSON, the same in a Durable Object, Redis and memory).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Record {
    /// [`crate::STATE_VERSION`].
    pub v: u8,
    /// The fingerprint of the request that claimed the key.
    pub fingerprint: String,
    /// In flight or done.
    pub state: RecordState,
    /// When the claim was made (also names the claim: only its owner finishes or releases it).
    pub claimed_at: UnixMillis,
    /// When the record is dropped ([`KEEP_MS`] after the claim).
    pub expires_at: UnixMillis,
    /// The answer's HTTP status (done).
    #[serde(default)]
    pub status: Option<u16>,
    /// The answer's body (done).
    #[serde(default)]
    pub body: Option<String>,
    /// The answer's `Retry-After` seconds (done).
    #[serde(default)]
    pub retry_after: Option<u32>,
}

impl Record {
    /// The stored JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads a stored record.
    ///
    /// # Errors
    /// [`Error::CorruptState`] when it does not parse or has another version.
    pub fn from_json(json: &str) -> Result<Record, Error> {
        match serde_json::from_str::<Record>(json) {
            Ok(r) if r.v == crate::STATE_VERSION => Ok(r),
            _ => Err(Error::CorruptState {
                message: "stored idempotency record could not be read".into(),
            }),
        }
    }

    /// The done record of `reply` for a claim.
    #[must_use]
    pub fn done(
        fingerprint: &str,
        claimed_at: UnixMillis,
        expires_at: UnixMillis,
        reply: &Reply,
    ) -> Record {
        Record {
            v: crate::STATE_VERSION,
            fingerprint: fingerprint.into(),
            state: RecordState::Done,
            claimed_at,
            expires_at,
            status: Some(reply.status),
            body: Some(reply.body.clone()),
            retry_after: reply.retry_after,
        }
    }

    /// Milliseconds left to keep it at `now` (at least 1, for stores that take a TTL).
    #[must_use]
    pub fn keep_ms(&self, now: UnixMillis) -> u64 {
        self.expires_at.0.saturating_sub(now.0).max(1)
    }
}

/// What a claim found ([`crate::flow::Io::ClaimIdempotency`]'s answer).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum Claim {
    /// The key is this request's now: run it.
    Claimed {
        /// The claim's time (its name).
        claimed_at: UnixMillis,
        /// When the record expires.
        expires_at: UnixMillis,
    },
    /// The same request was answered: replay this.
    Replay {
        /// HTTP status.
        status: u16,
        /// Body.
        body: String,
        /// `Retry-After` seconds.
        #[serde(default)]
        retry_after: Option<u32>,
    },
    /// The key was used with another request (422).
    Mismatch,
    /// The same request is in flight: wait, and claim again.
    InFlight,
}

/// A store's step for [`crate::flow::Io::ClaimIdempotency`]: `outcome` answers it, `write` is
/// stored (in the same atomic step as the read) when given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimStep {
    /// What to feed back.
    pub outcome: Claim,
    /// What to store, if anything.
    pub write: Option<Record>,
}

impl ClaimStep {
    /// The outcome for the flow.
    #[must_use]
    pub fn into_outcome(self) -> Outcome {
        Outcome::Idempotency {
            claim: self.outcome,
        }
    }
}

/// What a store decides, holding `stored` (absent, or as read) for a claim of `fingerprint` at
/// `now`: expired or stale records are taken over as if absent.
#[must_use]
pub fn claim_stored(stored: Option<Record>, fingerprint: &str, now: UnixMillis) -> ClaimStep {
    let live = stored.filter(|r| {
        now < r.expires_at
            && !(r.state == RecordState::InFlight
                && now.0.saturating_sub(r.claimed_at.0) >= STALE_MS)
    });
    match live {
        None => {
            let expires_at = now.plus_millis(KEEP_MS);
            ClaimStep {
                outcome: Claim::Claimed {
                    claimed_at: now,
                    expires_at,
                },
                write: Some(Record {
                    v: crate::STATE_VERSION,
                    fingerprint: fingerprint.into(),
                    state: RecordState::InFlight,
                    claimed_at: now,
                    expires_at,
                    status: None,
                    body: None,
                    retry_after: None,
                }),
            }
        }
        Some(r) if r.fingerprint != fingerprint => ClaimStep {
            outcome: Claim::Mismatch,
            write: None,
        },
        Some(r) => ClaimStep {
            outcome: match (r.state, r.status, r.body) {
                (RecordState::Done, Some(status), Some(body)) => Claim::Replay {
                    status,
                    body,
                    retry_after: r.retry_after,
                },
                _ => Claim::InFlight,
            },
            write: None,
        },
    }
}

/// Whether a store writes `record` (a done record) over `stored`: only over its own claim, still
/// in flight (a claim taken over after it went stale belongs to another request now).
#[must_use]
pub fn finish_stored(stored: Option<&Record>, record: &Record) -> bool {
    stored.is_some_and(|s| {
        s.state == RecordState::InFlight
            && s.claimed_at == record.claimed_at
            && s.fingerprint == record.fingerprint
    })
}

/// Whether a store deletes `stored` to release the claim made at `claimed_at` (a 5xx answer: a
/// retry runs again): only its own claim, still in flight.
#[must_use]
pub fn release_stored(stored: Option<&Record>, claimed_at: UnixMillis) -> bool {
    stored.is_some_and(|s| s.state == RecordState::InFlight && s.claimed_at == claimed_at)
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: UnixMillis = UnixMillis(1_763_800_000_000);

    #[test]
    fn keys_are_checked() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"k".repeat(255)).is_ok());
        assert!(check_key("!~").is_ok());
        for bad in ["", " ", "a b", "é", "a\tb", "\x7f"] {
            let e = check_key(bad).unwrap_err();
            assert_eq!(e.code(), "VALIDATION_ERROR");
            assert_eq!(e.field(), Some("Idempotency-Key"));
        }
        assert!(check_key(&"k".repeat(256)).is_err());
        assert_eq!(
            Idempotency::from_header("ws", None, "POST", "/x", b"{}"),
            Ok(None)
        );
        assert!(Idempotency::from_header("ws", Some(""), "POST", "/x", b"{}").is_err());
    }

    #[test]
    fn hashes_are_per_workspace_and_hide_the_key() {
        let a = key_hash("ws_a", "key-1");
        assert_eq!(a.len(), 64);
        assert!(!a.contains("key-1"));
        assert_ne!(a, key_hash("ws_b", "key-1"));
        assert_ne!(a, key_hash("ws_a", "key-2"));
        // Framing: moving a byte between workspace and key changes the hash.
        assert_ne!(key_hash("ws_ak", "ey-1"), a);
    }

    #[test]
    fn fingerprints_ignore_key_order_and_whitespace_but_not_values_or_routes() {
        let p = "/v1/messaging/otp/request";
        let a = fingerprint(
            "POST",
            p,
            br#"{"dest":"+1","purpose":"LOGIN","n":{"b":1,"a":[1,2]}}"#,
        );
        let b = fingerprint(
            "POST",
            p,
            br#" { "n" : {"a":[1,2],"b":1}, "purpose":"LOGIN", "dest":"+1" } "#,
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            fingerprint(
                "POST",
                p,
                br#"{"dest":"+2","purpose":"LOGIN","n":{"b":1,"a":[1,2]}}"#
            )
        );
        assert_ne!(
            a,
            fingerprint(
                "POST",
                p,
                br#"{"dest":"+1","purpose":"LOGIN","n":{"b":1,"a":[2,1]}}"#
            )
        );
        let body = br#"{"channel":"sms"}"#;
        assert_ne!(
            fingerprint("POST", "/otp/s1/resend", body),
            fingerprint("POST", "/otp/s2/resend", body)
        );
        assert_eq!(
            fingerprint("POST", "/otp/s1/resend/", body),
            fingerprint("post", "otp/s1/resend", body)
        );
        // Not JSON: its bytes, never equal to a JSON body's.
        assert_ne!(fingerprint("POST", p, b"{"), fingerprint("POST", p, b"{}"));
    }

    fn claimed(fp: &str, now: UnixMillis) -> Record {
        claim_stored(None, fp, now).write.unwrap()
    }

    #[test]
    fn claim_finish_replay() {
        let step = claim_stored(None, "fp", NOW);
        assert_eq!(
            step.outcome,
            Claim::Claimed {
                claimed_at: NOW,
                expires_at: NOW.plus_millis(KEEP_MS)
            }
        );
        let rec = step.write.unwrap();
        assert_eq!(Record::from_json(&rec.to_json()), Ok(rec.clone()));
        // In flight: the same request waits, another is refused.
        let later = NOW.plus_millis(1000);
        assert_eq!(
            claim_stored(Some(rec.clone()), "fp", later),
            ClaimStep {
                outcome: Claim::InFlight,
                write: None
            }
        );
        assert_eq!(
            claim_stored(Some(rec.clone()), "other", later).outcome,
            Claim::Mismatch
        );
        let reply = Reply {
            status: 429,
            body: "{}".into(),
            retry_after: Some(7),
            replayed: false,
        };
        let done = Record::done("fp", NOW, rec.expires_at, &reply);
        assert!(finish_stored(Some(&rec), &done));
        assert!(!finish_stored(None, &done));
        assert!(!finish_stored(Some(&done), &done));
        assert_eq!(
            claim_stored(Some(done.clone()), "fp", later).outcome,
            Claim::Replay {
                status: 429,
                body: "{}".into(),
                retry_after: Some(7)
            }
        );
        assert_eq!(
            claim_stored(Some(done.clone()), "other", later).outcome,
            Claim::Mismatch
        );
        // A done record is kept 24 h, then the key is free again.
        let day = NOW.plus_millis(KEEP_MS);
        assert!(matches!(
            claim_stored(Some(done.clone()), "other", day).outcome,
            Claim::Claimed { .. }
        ));
        assert_eq!(done.keep_ms(later), KEEP_MS - 1000);
        assert_eq!(done.keep_ms(day.plus_millis(5)), 1);
    }

    #[test]
    fn stale_claims_are_taken_over_and_lose_their_writes() {
        let old = claimed("fp", NOW);
        let at = NOW.plus_millis(STALE_MS);
        let step = claim_stored(Some(old.clone()), "fp", at);
        assert_eq!(
            step.outcome,
            Claim::Claimed {
                claimed_at: at,
                expires_at: at.plus_millis(KEEP_MS)
            }
        );
        let new = step.write.unwrap();
        // The first request finishing late neither overwrites nor releases the new claim.
        let reply = Reply::no_content();
        assert!(!finish_stored(
            Some(&new),
            &Record::done("fp", NOW, old.expires_at, &reply)
        ));
        assert!(!release_stored(Some(&new), NOW));
        assert!(release_stored(Some(&new), at));
        assert!(!release_stored(None, at));
        let done = Record::done("fp", at, new.expires_at, &reply);
        assert!(!release_stored(Some(&done), at));
    }

    #[test]
    fn corrupt_records_are_errors() {
        assert!(Record::from_json("nope").is_err());
        let mut r = claimed("fp", NOW);
        r.v = 2;
        assert!(Record::from_json(&r.to_json()).is_err());
    }
}
