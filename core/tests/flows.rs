//! Runs the flow traces in `tests/vectors/flows/*.json` (format: that folder's README.md)
//! against `otpkit_core::flow`: each trace starts one flow, then every step the flow yields is
//! compared with the next expected step, and each IO is answered with the outcome the trace
//! scripts. The same file compiles for wasm32 and runs in Node under wasm-bindgen-test, so the
//! traces are embedded with `include_str!` (wasm has no filesystem);
//! `every_trace_file_is_embedded` fails natively when a file is missing from [`TRACES`].

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use otpkit_core::flow::Idempotent;
use otpkit_core::flow::{resend_stored, ResendFlow};
use otpkit_core::flow::{
    verify_stored_for, AdminAction, AdminFlow, CancelFlow, Flow, HostTraits, Io, Outcome,
    RequestFlow, StatusFlow, Step, VerifyFlow, ADMIN_RANDOM_BYTES,
};
use otpkit_core::hash::{code_hash_for, to_hex};
use otpkit_core::http::request::{Dialect, ResendRequest};
use otpkit_core::idempotency::Idempotency;
use otpkit_core::transaction::Transaction;
use otpkit_core::workspace::{api_key_hash, is_api_key_format, WorkspaceRecord};
use otpkit_core::{
    Entropy, Error, IssueRequest, Pepper, Policy, Purpose, Reply, Session, UnixMillis,
    VerifyRequest,
};
use serde_json::{json, Map, Value};
use std::collections::BTreeSet;

macro_rules! traces {
    ($($file:literal),* $(,)?) => {
        &[$(($file, include_str!(concat!("../../tests/vectors/flows/", $file)))),*]
    };
}

/// Every trace file, embedded.
const TRACES: &[(&str, &str)] = traces![
    "request-new-send-v1.json",
    "request-new-send-zend.json",
    "request-new-send-whatsapp.json",
    "request-hint-reused.json",
    "request-hint-reused-zend.json",
    "request-hint-none-puts-hint.json",
    "request-hint-stale-expired.json",
    "request-hint-stale-used.json",
    "request-hint-session-gone.json",
    "request-hint-other-workspace.json",
    "request-hint-read-failed.json",
    "request-hint-session-read-failed.json",
    "request-admit-reuse.json",
    "request-admit-reuse-other-purpose.json",
    "request-admit-reuse-stale.json",
    "request-admit-reuse-other-workspace.json",
    "request-admit-reuse-read-corrupt.json",
    "request-admit-reuse-forget-failed.json",
    "request-three-stale-reuses.json",
    "request-coalesced-delivered.json",
    "request-coalesced-failed.json",
    "request-coalesced-stale.json",
    "request-admit-failed-send.json",
    "request-admit-store-failed.json",
    "request-refused-rate-limited.json",
    "request-refused-destination-locked.json",
    "request-flood-refused-fused.json",
    "request-flood-refused-unfused.json",
    "request-flood-refund-failed.json",
    "request-gateway-failed.json",
    "request-gateway-timeout.json",
    "request-store-failed-after-send.json",
    "request-report-failed.json",
    "request-stored-and-confirmed.json",
    "request-stored-and-confirmed-cancel.json",
    "request-reuse-off-cancels-previous.json",
    "request-confirm-failed.json",
    "request-confirm-cancels-own.json",
    "request-confirm-cancels-own-hints.json",
    "request-record-failed.json",
    "request-test-number.json",
    "request-start-sender-not-allowed.json",
    "request-start-destination-not-allowed.json",
    "request-start-template-too-long.json",
    "idempotent-request-first.json",
    "idempotent-request-replay.json",
    "idempotent-request-replay-key-order.json",
    "idempotent-request-mismatch.json",
    "idempotent-request-in-flight-then-replay.json",
    "idempotent-request-in-flight-gives-up.json",
    "idempotent-request-gateway-failed-released.json",
    "idempotent-request-rate-limited-stored.json",
    "idempotent-request-claim-failed.json",
    "idempotent-request-claim-corrupt.json",
    "idempotent-zend-send-finish-failed.json",
    "idempotent-resend-replay.json",
    "idempotent-resend-other-session.json",
    "verify-approved.json",
    "verify-approved-hints.json",
    "verify-approved-uppercase-id.json",
    "verify-invalid.json",
    "verify-invalid-locks.json",
    "verify-invalid-literal.json",
    "verify-max-attempts.json",
    "verify-expired.json",
    "verify-canceled.json",
    "verify-already-used.json",
    "verify-not-found-missing.json",
    "verify-not-found-malformed.json",
    "verify-not-found-other-workspace.json",
    "verify-store-failed.json",
    "verify-store-corrupt.json",
    "verify-store-misconfigured.json",
    "verify-zend-approved.json",
    "verify-zend-invalid.json",
    "verify-zend-expired.json",
    "verify-zend-not-found.json",
    "verify-zend-malformed.json",
    "status-found-v1.json",
    "status-found-zend.json",
    "status-locked-v1.json",
    "status-expired-zend.json",
    "status-not-found-v1.json",
    "status-not-found-zend.json",
    "status-malformed-v1.json",
    "status-malformed-zend.json",
    "status-other-workspace.json",
    "status-store-failed.json",
    "status-store-corrupt.json",
    "admin-create-ok.json",
    "admin-create-bad-body.json",
    "admin-create-bad-policy.json",
    "admin-create-put-failed.json",
    "admin-create-index-failed.json",
    "admin-patch-ok.json",
    "admin-patch-senders.json",
    "admin-patch-conflict.json",
    "admin-get-workspace.json",
    "admin-get-unknown-workspace.json",
    "request-transaction-v1.json",
    "request-transaction-other-payment.json",
    "request-transaction-same-payment-reused.json",
    "verify-transaction-approved.json",
    "verify-transaction-other-amount.json",
    "verify-by-dest-approved.json",
    "verify-by-dest-invalid.json",
    "verify-by-dest-none.json",
    "verify-by-dest-store-failed.json",
    "cancel-approved.json",
    "cancel-expired.json",
    "cancel-locked.json",
    "cancel-malformed-id.json",
    "cancel-not-found.json",
    "cancel-other-workspace.json",
    "cancel-pending-v1.json",
    "cancel-pending-zend.json",
    "cancel-race-approved.json",
    "cancel-store-failed.json",
    "cancel-twice.json",
    "admin-patch-unknown-workspace.json",
    "admin-patch-malformed-id.json",
    "admin-patch-invalid-policy.json",
    "admin-patch-unknown-policy-key.json",
    "admin-patch-test-number-code-length.json",
    "admin-patch-read-corrupt.json",
    "admin-patch-put-failed.json",
    "admin-create-key-ok.json",
    "admin-create-key-unknown-workspace.json",
    "admin-create-key-index-failed.json",
    "admin-revoke-key-ok.json",
    "admin-revoke-key-unknown.json",
    "admin-revoke-key-already-revoked.json",
    "admin-revoke-key-unindex-failed.json",
    "admin-revoke-key-read-failed.json",
    "admin-create-key-audit-failed.json",
    "admin-list-first-page.json",
    "admin-list-last-page.json",
    "admin-list-empty-values.json",
    "admin-list-bad-limit.json",
    "admin-list-zero-limit.json",
    "admin-list-malformed-cursor.json",
    "admin-list-unknown-cursor.json",
    "admin-list-store-failed.json",
    "admin-list-store-corrupt.json",
    "request-channel-fallback.json",
    "request-channel-fallback-timeout.json",
    "resend-approved.json",
    "resend-canceled.json",
    "resend-channel-fallback.json",
    "resend-delivery-failed.json",
    "resend-expired.json",
    "resend-flood-refused.json",
    "resend-interval-zero.json",
    "resend-locked.json",
    "resend-malformed-id.json",
    "resend-not-found.json",
    "resend-pending-v1.json",
    "resend-race-approved.json",
    "resend-rate-limited.json",
    "resend-test-number.json",
    "resend-timeout.json",
    "resend-too-soon.json",
    "resend-zend.json",
    "request-spend-refused.json",
    "request-spend-refused-unfused.json",
    "request-spend-refund-gateway-failed.json",
    "request-spend-timeout-charged.json",
    "request-spend-fallback-unused.json",
    "request-spend-test-number.json",
    "resend-spend-refund-failed.json",
    "resend-spend-refused.json",
    "request-fraud-refused.json",
    "request-fraud-refused-unfused.json",
    "resend-fraud-refused.json",
    "verify-approved-fraud-guard.json",
    "admin-fraud-get.json",
    "admin-fraud-unblock.json",
    "admin-fraud-unblock-not-blocked.json",
    "admin-fraud-unblock-malformed.json",
];

/// Every IO, outcome and admission kind; the traces together must use each of them.
const IO_KINDS: [&str; 26] = [
    "readReuseHint",
    "readSession",
    "readActive",
    "admit",
    "awaitSend",
    "forget",
    "deliver",
    "storeSession",
    "reportDelivery",
    "cancelSession",
    "putReuseHint",
    "dropReuseHint",
    "verify",
    "recordVerify",
    "record",
    "readWorkspace",
    "putWorkspace",
    "indexKey",
    "unindexKey",
    "resend",
    "listWorkspaces",
    "audit",
    "refundSpend",
    "fraudVerified",
    "readFraud",
    "unblockPrefix",
];
const OUTCOME_KINDS: [&str; 17] = [
    "done",
    "conflict",
    "failed",
    "reuseHint",
    "session",
    "active",
    "admitted",
    "awaited",
    "delivery",
    "storedAndConfirmed",
    "confirmed",
    "verified",
    "workspace",
    "resent",
    "workspaces",
    "prefixes",
    "unblocked",
];
const ADMISSION_KINDS: [&str; 8] = [
    "send",
    "reuse",
    "wait",
    "failed",
    "refused",
    "floodRefused",
    "spendRefused",
    "fraudRefused",
];
/// The `Idempotency-Key` IO and outcomes (kept apart from the lists above, which other flows grow).
const IDEMPOTENCY_IO_KINDS: [&str; 4] = [
    "claimIdempotency",
    "finishIdempotency",
    "releaseIdempotency",
    "pause",
];
const CLAIM_KINDS: [&str; 4] = ["claimed", "replay", "mismatch", "inFlight"];

type R<T> = Result<T, String>;

/// A day in ms (`createdAt` of a workspace fixture is a day before `now`).
const DAY_MS: u64 = 86_400_000;

fn get<'a>(v: &'a Value, k: &str) -> R<&'a Value> {
    v.get(k).ok_or_else(|| format!("missing `{k}` in {v}"))
}

fn get_str<'a>(v: &'a Value, k: &str) -> R<&'a str> {
    get(v, k)?
        .as_str()
        .ok_or_else(|| format!("`{k}` is not a string in {v}"))
}

fn get_u64(v: &Value, k: &str) -> R<u64> {
    get(v, k)?
        .as_u64()
        .ok_or_else(|| format!("`{k}` is not an integer in {v}"))
}

fn only_keys(v: &Value, what: &str, allowed: &[&str]) -> R<()> {
    let obj = v
        .as_object()
        .ok_or_else(|| format!("{what} is not an object"))?;
    match obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        Some(k) => Err(format!("unknown key `{k}` in {what}")),
        None => Ok(()),
    }
}

fn hex48(s: &str) -> R<[u8; 48]> {
    let bad = || format!("entropy must be 96 hex digits, got {s:?}");
    if s.len() != 96 || !s.is_ascii() {
        return Err(bad());
    }
    let mut out = [0u8; 48];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(out)
}

/// What fixtures and `$code` need of a trace.
struct Ctx {
    workspace_id: String,
    senders: Vec<String>,
    policy: Policy,
    /// Absent in traces that need none (admin flows).
    pepper: Option<Pepper>,
    /// The flow's `now`.
    now: UnixMillis,
    /// Destination and purpose of `$session` fixtures.
    dest: String,
    purpose: Purpose,
}

impl Ctx {
    fn pepper(&self) -> R<&Pepper> {
        self.pepper
            .as_ref()
            .ok_or_else(|| "this trace needs a `pepper`".to_string())
    }

    fn hash(&self, session: &Value, code: &str) -> R<String> {
        let purpose = get_str(session, "purpose")?;
        let purpose = Purpose::parse(purpose).ok_or_else(|| format!("bad purpose {purpose}"))?;
        // A session bound to a payment (PSD2) is hashed with the v2 framing.
        let tx: Option<Transaction> = match session.get("transaction") {
            None | Some(Value::Null) => None,
            Some(t) => Some(
                serde_json::from_value(t.clone())
                    .map_err(|e| format!("bad transaction {t}: {e}"))?,
            ),
        };
        Ok(to_hex(&code_hash_for(
            self.pepper()?,
            get_str(session, "workspaceId")?,
            get_str(session, "id")?,
            purpose,
            code,
            tx.as_ref(),
        )))
    }

    /// A pending session of the trace's workspace (README: "Session fixtures").
    fn base_session(&self, id: Option<&str>) -> Value {
        let created = self.now.0.saturating_sub(60_000);
        json!({
            "v": 1,
            "id": id,
            "workspaceId": self.workspace_id,
            "dest": self.dest,
            "src": self.senders.first(),
            "purpose": self.purpose.as_str(),
            "channel": "sms",
            "app": null,
            "codeHash": null,
            "codeLength": null,
            "createdAt": created,
            "expiresAt": created + u64::from(self.policy.ttl_seconds) * 1000,
            "attemptsUsed": 0,
            "maxAttempts": self.policy.max_attempts,
            "state": "PENDING",
            "verifiedAt": null,
            "test": false,
            "segments": 1,
            "retentionSeconds": self.policy.retention_seconds,
            "transaction": null,
            "template": null,
            "ttlSeconds": null,
            "sentAt": null,
            "resends": 0,
            "fraud": null,
        })
    }

    /// `overrides` (with an optional `$code`, default `123456`) merged over `base`; the code
    /// hash is computed unless `codeHash` is given.
    fn merged(&self, mut base: Value, overrides: &Value) -> R<Value> {
        let over = overrides
            .as_object()
            .ok_or_else(|| format!("session overrides are not an object: {overrides}"))?;
        let code = match over.get("$code") {
            Some(c) => c.as_str().ok_or("`$code` is not a string")?,
            None => "123456",
        };
        let fields = base
            .as_object_mut()
            .ok_or("base session is not an object")?;
        for (k, v) in over {
            if k == "$code" {
                continue;
            }
            let slot = fields
                .get_mut(k)
                .ok_or_else(|| format!("`{k}` is not a session field"))?;
            *slot = v.clone();
        }
        if !over.contains_key("codeHash") {
            let hash = self.hash(&base, code)?;
            base["codeHash"] = Value::from(hash);
            if !over.contains_key("codeLength") {
                base["codeLength"] = Value::from(code.len());
            }
        }
        let session: Session = serde_json::from_value(base.clone())
            .map_err(|e| format!("session fixture is not a Session ({e}): {base}"))?;
        serde_json::to_value(session).map_err(|e| e.to_string())
    }

    /// The trace's workspace as stored (README: "Workspace fixtures").
    fn base_workspace(&self) -> R<Value> {
        let policy = serde_json::to_value(&self.policy).map_err(|e| e.to_string())?;
        Ok(json!({
            "v": 1,
            "id": self.workspace_id,
            "name": "Acme",
            "senders": self.senders,
            "policy": policy,
            "keys": [],
            "createdAt": self.now.0.saturating_sub(DAY_MS),
            "revision": 0,
        }))
    }

    /// `overrides` merged over [`Ctx::base_workspace`]: each given field replaces its value,
    /// but `policy` is a partial policy applied over the trace's (`Policy::patched`). The
    /// result must read back as a stored record (`WorkspaceRecord::from_json`).
    fn workspace(&self, overrides: &Value) -> R<Value> {
        let over = overrides
            .as_object()
            .ok_or_else(|| format!("workspace overrides are not an object: {overrides}"))?;
        let mut base = self.base_workspace()?;
        let fields = base
            .as_object_mut()
            .ok_or("base workspace is not an object")?;
        for (k, v) in over {
            let slot = fields
                .get_mut(k)
                .ok_or_else(|| format!("`{k}` is not a workspace field"))?;
            *slot = if k == "policy" {
                let p = self
                    .policy
                    .patched(v)
                    .map_err(|e| format!("workspace fixture policy: {e}"))?;
                serde_json::to_value(p).map_err(|e| e.to_string())?
            } else {
                v.clone()
            };
        }
        let text = base.to_string();
        let ws = WorkspaceRecord::from_json(&text)
            .map_err(|e| format!("workspace fixture does not read back ({e}): {text}"))?;
        serde_json::to_value(ws).map_err(|e| e.to_string())
    }

    /// Expands `$session` and `$workspace` fixtures anywhere in a scripted result (and
    /// `$workspace` in an expected step).
    fn expand(&self, v: &Value, id: Option<&str>) -> R<Value> {
        match v {
            Value::Object(o) if o.len() == 1 && o.contains_key("$session") => {
                self.merged(self.base_session(id), &o["$session"])
            }
            Value::Object(o) if o.len() == 1 && o.contains_key("$workspace") => {
                self.workspace(&o["$workspace"])
            }
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, x) in o {
                    out.insert(k.clone(), self.expand(x, id)?);
                }
                Ok(Value::Object(out))
            }
            Value::Array(a) => a.iter().map(|x| self.expand(x, id)).collect(),
            other => Ok(other.clone()),
        }
    }

    /// The outcome a scripted `result` feeds back for `io`.
    fn outcome(&self, result: &Value, io: &Io) -> R<Outcome> {
        let id = match io {
            Io::ReadSession { session_id }
            | Io::Verify { session_id, .. }
            | Io::Resend { session_id, .. } => Some(session_id.as_str()),
            _ => None,
        };
        if let Some(stored) = result.get("$resendStored") {
            // The store's step as every store performs it: `resend_stored` on the fixture.
            only_keys(result, "a $resendStored result", &["$resendStored"])?;
            let Io::Resend { step, .. } = io else {
                return Err("`$resendStored` answers a resend only".into());
            };
            let session = match stored {
                Value::Null => None,
                fixture => {
                    let v = self.expand(fixture, id)?;
                    Some(serde_json::from_value::<Session>(v).map_err(|e| e.to_string())?)
                }
            };
            return Ok(resend_stored(session, &self.workspace_id, step, self.now).outcome);
        }
        if let Some(stored) = result.get("$verifyStored") {
            only_keys(result, "a $verifyStored result", &["$verifyStored"])?;
            let Io::Verify {
                code, transaction, ..
            } = io
            else {
                return Err("`$verifyStored` answers a verify only".into());
            };
            let session = match stored {
                Value::Null => None,
                fixture => {
                    let v = self.expand(fixture, id)?;
                    Some(serde_json::from_value::<Session>(v).map_err(|e| e.to_string())?)
                }
            };
            let pepper = self.pepper()?;
            let step = verify_stored_for(
                session,
                &self.workspace_id,
                &code.0,
                transaction.as_deref(),
                self.now,
                pepper,
            );
            return Ok(step.outcome);
        }
        let v = self.expand(result, id)?;
        serde_json::from_value(v.clone()).map_err(|e| format!("result {v} is not an Outcome: {e}"))
    }

    /// Partial match: every key of `want` is in `got` and matches; arrays element-wise with
    /// equal length; scalars equal. `"$absent"` wants the key absent; `"$code": c` wants
    /// `codeHash` to be the hash of `c` for the object's workspace, id and purpose.
    fn matches(&self, path: &str, want: &Value, got: &Value) -> R<()> {
        let differ = || format!("at {path}: want {want}, got {got}");
        match want {
            Value::Object(w) => {
                let g = got.as_object().ok_or_else(differ)?;
                for (k, wv) in w {
                    let at = format!("{path}.{k}");
                    if k == "$code" {
                        let code = wv.as_str().ok_or("`$code` is not a string")?;
                        let hash = self.hash(got, code)?;
                        if got.get("codeHash") != Some(&Value::from(hash)) {
                            return Err(format!("at {path}: codeHash is not the hash of {code}"));
                        }
                    } else if wv == "$absent" {
                        if g.contains_key(k) {
                            return Err(format!("at {at}: want absent, got {}", g[k]));
                        }
                    } else {
                        let gv = g
                            .get(k)
                            .ok_or_else(|| format!("at {at}: missing (want {wv}) in {got}"))?;
                        self.matches(&at, wv, gv)?;
                    }
                }
                Ok(())
            }
            Value::Array(w) => {
                let g = got.as_array().ok_or_else(differ)?;
                if g.len() != w.len() {
                    return Err(format!(
                        "at {path}: want {} elements, got {}: {got}",
                        w.len(),
                        g.len()
                    ));
                }
                for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                    self.matches(&format!("{path}[{i}]"), wv, gv)?;
                }
                Ok(())
            }
            _ if want == got => Ok(()),
            _ => Err(differ()),
        }
    }
}

fn reply_json(r: &Reply) -> R<Value> {
    let body = if r.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&r.body).map_err(|e| format!("answer body is not JSON: {e}"))?
    };
    Ok(
        json!({"status": r.status, "body": body, "retryAfter": r.retry_after, "replayed": r.replayed}),
    )
}

fn error_json(e: &Error) -> Value {
    json!({"error": {
        "code": e.code(),
        "status": e.http_status(),
        "field": e.field(),
        "retryAfterSecs": e.retry_after_secs(),
    }})
}

fn step_json(step: &Step) -> R<Value> {
    Ok(match step {
        Step::Io(io) => {
            let v = serde_json::to_value(io).map_err(|e| e.to_string())?;
            if v.get("io").and_then(Value::as_str) != Some(io.kind()) {
                return Err(format!("Io::kind() is {} for {v}", io.kind()));
            }
            let back: Io = serde_json::from_value(v.clone())
                .map_err(|e| format!("{v} does not read back as an Io: {e}"))?;
            if &back != io {
                return Err(format!("{v} reads back as another Io"));
            }
            v
        }
        Step::Answer(Ok(reply)) => json!({"answer": reply_json(reply)?}),
        Step::Answer(Err(e)) => error_json(e),
        Step::Done => json!("done"),
    })
}

/// What the traces used, for the coverage check.
#[derive(Default)]
struct Seen {
    io: BTreeSet<String>,
    outcomes: BTreeSet<String>,
    admissions: BTreeSet<String>,
    claims: BTreeSet<String>,
}

fn dialect(start: &Value) -> R<Dialect> {
    match get_str(start, "dialect")? {
        "v1" => Ok(Dialect::V1),
        "zend" => Ok(Dialect::Zend),
        other => Err(format!("unknown dialect {other}")),
    }
}

/// `AdminFlow::start` for an admin `start` (README: "A trace"); `random` is the first
/// [`ADMIN_RANDOM_BYTES`] of the trace's entropy.
fn admin_flow(start: &Value, now: UnixMillis, random: &[u8; ADMIN_RANDOM_BYTES]) -> R<AdminFlow> {
    let action = get_str(start, "action")?;
    let allowed: &[&str] = match action {
        "createWorkspace" => &["body"],
        "patchWorkspace" => &["id", "body"],
        "getWorkspace" | "createKey" | "getFraud" => &["id"],
        "unblockPrefix" => &["id", "prefix"],
        "revokeKey" => &["id", "keyId"],
        "listWorkspaces" => &["cursor", "limit"],
        other => return Err(format!("unknown admin action {other}")),
    };
    let keys = [["flow", "action", "now"].as_slice(), allowed].concat();
    only_keys(start, &format!("a {action} start"), &keys)?;
    let body = match start.get("body") {
        Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let action = match action {
        "createWorkspace" => AdminAction::CreateWorkspace { body: &body },
        "patchWorkspace" => AdminAction::PatchWorkspace {
            id: get_str(start, "id")?,
            body: &body,
        },
        "getWorkspace" => AdminAction::GetWorkspace {
            id: get_str(start, "id")?,
        },
        "createKey" => AdminAction::CreateKey {
            id: get_str(start, "id")?,
        },
        "listWorkspaces" => AdminAction::ListWorkspaces {
            cursor: start.get("cursor").and_then(Value::as_str),
            limit: start.get("limit").and_then(Value::as_str),
        },
        "getFraud" => AdminAction::GetFraud {
            id: get_str(start, "id")?,
        },
        "unblockPrefix" => AdminAction::UnblockPrefix {
            id: get_str(start, "id")?,
            prefix: get_str(start, "prefix")?,
        },
        _ => AdminAction::RevokeKey {
            id: get_str(start, "id")?,
            key_id: get_str(start, "keyId")?,
        },
    };
    Ok(AdminFlow::start(action, now, random))
}

/// What an admin flow wrote and indexed so far, to check an answer's `apiKey` against.
#[derive(Default)]
struct AdminWrites {
    /// The last `putWorkspace` record.
    put: Option<WorkspaceRecord>,
    /// The last `indexKey`: key hash and workspace id.
    indexed: Option<(String, String)>,
    /// Every IO handed out, serialized.
    io_text: Vec<String>,
}

impl AdminWrites {
    fn saw(&mut self, io: &Io, got: &Value) {
        self.io_text.push(got.to_string());
        match io {
            Io::PutWorkspace { workspace, .. } => self.put = Some((**workspace).clone()),
            Io::IndexKey {
                key_hash,
                workspace_id,
            } => self.indexed = Some((key_hash.clone(), workspace_id.clone())),
            _ => {}
        }
    }

    /// A 201 with an `apiKey`: the key is well-formed, is the one whose hash was indexed for the
    /// written workspace, its `keyId` names that key (live, created now) in the written record,
    /// and the key itself was never handed to the host in an IO.
    fn check_answer(&self, answer: &Value, now: UnixMillis) -> R<()> {
        let data = &answer["body"]["data"];
        let Some(api_key) = data.get("apiKey") else {
            return Ok(());
        };
        let api_key = api_key.as_str().ok_or("apiKey is not a string")?;
        if !is_api_key_format(api_key) {
            return Err(format!("apiKey {api_key:?} is not `otpk_` + 43 base64url"));
        }
        let hash = api_key_hash(api_key);
        let (indexed, indexed_ws) = self
            .indexed
            .as_ref()
            .ok_or("apiKey answered, none indexed")?;
        if indexed != &hash {
            return Err("the answered apiKey is not the one indexed".into());
        }
        let ws = self
            .put
            .as_ref()
            .ok_or("apiKey answered, no workspace written")?;
        if indexed_ws != &ws.id {
            return Err(format!(
                "key indexed for {indexed_ws}, written to {}",
                ws.id
            ));
        }
        if let Some(id) = data.get("workspaceId") {
            if id != &Value::from(ws.id.as_str()) {
                return Err(format!("workspaceId {id} is not the written {}", ws.id));
            }
        }
        let key_id = get_str(data, "keyId")?;
        let live = ws
            .live_key(&hash)
            .ok_or("the written record lacks the key")?;
        if live.key_id != key_id || live.created_at != now {
            return Err(format!("keyId {key_id} is not the written key {live:?}"));
        }
        if self.io_text.iter().any(|t| t.contains(api_key)) {
            return Err("the apiKey itself was handed to the host in an IO".into());
        }
        Ok(())
    }
}

fn run_trace(file: &str, text: &str, seen: &mut Seen) -> R<()> {
    let t: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    only_keys(
        &t,
        "the trace",
        &[
            "name",
            "about",
            "workspace",
            "traits",
            "now",
            "entropy",
            "pepper",
            "start",
            "steps",
        ],
    )?;
    let name = get_str(&t, "name")?;
    if format!("{name}.json") != file {
        return Err(format!("name {name:?} is not the file name"));
    }
    if get_str(&t, "about")?.trim().is_empty() {
        return Err("empty about".into());
    }
    let ws = get(&t, "workspace")?;
    only_keys(ws, "workspace", &["id", "senders", "policy"])?;
    let senders: Vec<String> = get(ws, "senders")?
        .as_array()
        .ok_or("senders is not a list")?
        .iter()
        .map(|s| {
            s.as_str()
                .map(String::from)
                .ok_or("a sender is not a string")
        })
        .collect::<Result<_, _>>()?;
    let policy = Policy::from_json(ws.get("policy")).map_err(|e| format!("policy: {e}"))?;
    let traits = match t.get("traits") {
        None => HostTraits::default(),
        Some(traits_v) => {
            only_keys(traits_v, "traits", &["reuseHints"])?;
            HostTraits {
                reuse_hints: get(traits_v, "reuseHints")?
                    .as_bool()
                    .ok_or("reuseHints is not a bool")?,
            }
        }
    };
    let entropy_bytes = hex48(get_str(&t, "entropy")?)?;
    let entropy = Entropy::from_bytes(&entropy_bytes);
    let mut admin_random = [0u8; ADMIN_RANDOM_BYTES];
    admin_random.copy_from_slice(&entropy_bytes[..ADMIN_RANDOM_BYTES]);
    let pepper = match t.get("pepper") {
        None => None,
        Some(p) => {
            let p = p.as_str().ok_or("pepper is not a string")?;
            Some(Pepper::new(p.as_bytes()).map_err(|e| e.to_string())?)
        }
    };
    let start = get(&t, "start")?;
    let flow_name = get_str(start, "flow")?;
    if flow_name != "admin" {
        only_keys(
            start,
            "start",
            &[
                "flow",
                "dialect",
                "body",
                "pathId",
                "id",
                "now",
                "idempotency",
            ],
        )?;
    }
    let now = UnixMillis(match start.get("now") {
        Some(n) => n.as_u64().ok_or("start.now is not an integer")?,
        None => get_u64(&t, "now")?,
    });
    let body =
        || -> R<Vec<u8>> { serde_json::to_vec(get(start, "body")?).map_err(|e| e.to_string()) };
    let mut ctx = Ctx {
        workspace_id: get_str(ws, "id")?.to_string(),
        senders,
        policy,
        pepper,
        now,
        dest: "+233202007745".into(),
        purpose: Purpose::Login,
    };
    let started: Result<Box<dyn Flow>, Error> = match flow_name {
        "request" => {
            let dialect = dialect(start)?;
            let body = body()?;
            let req = match dialect {
                Dialect::V1 => IssueRequest::from_v1_json(&body),
                Dialect::Zend => IssueRequest::from_zend_json(&body),
            }
            .map_err(|e| format!("start.body does not parse: {e}"))?;
            ctx.dest.clone_from(&req.dest);
            ctx.purpose = req.purpose;
            RequestFlow::start(
                &req,
                &ctx.workspace_id,
                &ctx.senders,
                &ctx.policy,
                now,
                &entropy,
                ctx.pepper()?,
                traits,
            )
            .map(|f| Box::new(f) as Box<dyn Flow>)
        }
        "verify" => {
            let dialect = dialect(start)?;
            let body = body()?;
            let req = match dialect {
                Dialect::V1 => VerifyRequest::from_v1_json(&body),
                Dialect::Zend => VerifyRequest::from_zend_json(get_str(start, "pathId")?, &body),
            }
            .map_err(|e| format!("start.body does not parse: {e}"))?;
            Ok(Box::new(VerifyFlow::start(&req, dialect, now, traits)))
        }
        "resend" => {
            let body = match start.get("body") {
                Some(_) => body()?,
                None => Vec::new(),
            };
            let req = ResendRequest::from_json(&body)
                .map_err(|e| format!("start.body does not parse: {e}"))?;
            Ok(Box::new(ResendFlow::start(
                get_str(start, "id")?,
                &req,
                dialect(start)?,
                &ctx.policy,
                now,
                &entropy,
                ctx.pepper()?,
                traits,
            )))
        }
        "status" => Ok(Box::new(StatusFlow::start(
            get_str(start, "id")?,
            dialect(start)?,
            &ctx.workspace_id,
            now,
        ))),
        "cancel" => Ok(Box::new(CancelFlow::start(
            get_str(start, "id")?,
            dialect(start)?,
            &ctx.workspace_id,
            now,
        ))),
        "admin" => Ok(Box::new(admin_flow(start, now, &admin_random)?)),
        other => return Err(format!("unknown flow {other}")),
    };
    // With an `Idempotency-Key`: the flow inside `Idempotent` (README: "Idempotency").
    let started = match start.get("idempotency") {
        None => started,
        Some(i) => {
            only_keys(i, "start.idempotency", &["key", "method", "path"])?;
            // A resend's body is optional: none is the empty body.
            let bytes = match start.get("body") {
                Some(_) => body()?,
                None => Vec::new(),
            };
            let idem = Idempotency::from_header(
                &ctx.workspace_id,
                Some(get_str(i, "key")?),
                get_str(i, "method")?,
                get_str(i, "path")?,
                &bytes,
            )
            .map_err(|e| format!("start.idempotency: {e}"))?;
            started.map(|f| Box::new(Idempotent::new(f, idem)) as Box<dyn Flow>)
        }
    };
    let steps = get(&t, "steps")?.as_array().ok_or("steps is not a list")?;
    if steps.last() != Some(&json!("done")) {
        return Err("the steps do not end with \"done\"".into());
    }
    let mut flow = match started {
        Ok(flow) => flow,
        Err(e) => {
            let [want, done] = steps.as_slice() else {
                return Err(format!(
                    "start failed ({e}): want [error, \"done\"], the trace has {} steps",
                    steps.len()
                ));
            };
            ctx.matches("steps[0]", want, &error_json(&e))?;
            return ctx.matches("steps[1]", done, &json!("done"));
        }
    };
    let mut writes = AdminWrites::default();
    let mut answers = 0;
    for (i, want) in steps.iter().enumerate() {
        let step = flow.poll();
        let got = step_json(&step)?;
        let path = format!("steps[{i}]");
        let (want_step, result) = match want {
            Value::Object(o) if o.contains_key("result") => {
                let mut w = o.clone();
                let r = w.remove("result");
                (Value::Object(w), r)
            }
            other => (other.clone(), None),
        };
        let want_step = ctx
            .expand(&want_step, None)
            .map_err(|e| format!("{path}: {e}"))?;
        ctx.matches(&path, &want_step, &got)?;
        match (&step, result) {
            (Step::Io(io), Some(result)) => {
                let outcome = ctx
                    .outcome(&result, io)
                    .map_err(|e| format!("{path}: {e}"))?;
                seen.io.insert(get_str(&got, "io")?.to_string());
                let o = serde_json::to_value(&outcome).map_err(|e| e.to_string())?;
                seen.outcomes.insert(get_str(&o, "result")?.to_string());
                if let Some(a) = o.get("admission") {
                    seen.admissions.insert(get_str(a, "kind")?.to_string());
                }
                if let Some(c) = o.get("claim") {
                    seen.claims.insert(get_str(c, "kind")?.to_string());
                }
                if let Io::StoreSession { session } = io {
                    // What a flow asks to store must read back as itself.
                    if Session::from_json(&session.to_json()).as_ref() != Ok(session) {
                        return Err(format!("{path}: the stored session does not read back"));
                    }
                }
                if let Io::PutWorkspace { workspace, .. } = io {
                    if WorkspaceRecord::from_json(&workspace.to_json()).as_ref() != Ok(&**workspace)
                    {
                        return Err(format!("{path}: the stored workspace does not read back"));
                    }
                }
                writes.saw(io, &got);
                flow.handle(outcome);
            }
            (Step::Io(_), None) => return Err(format!("{path}: an IO step needs a `result`")),
            (_, Some(_)) => return Err(format!("{path}: `result` given for a step that is no IO")),
            (Step::Answer(answer), None) => {
                answers += 1;
                if answer.is_ok() {
                    writes
                        .check_answer(&got["answer"], now)
                        .map_err(|e| format!("{path}: {e}"))?;
                }
            }
            (Step::Done, None) => {}
        }
        if step == Step::Done {
            if i + 1 != steps.len() {
                return Err(format!("the flow was done at {path}, before the trace"));
            }
            if flow.poll() != Step::Done {
                return Err("the flow yielded a step after Done".into());
            }
        }
    }
    if answers != 1 {
        return Err(format!("the flow answered {answers} times"));
    }
    // An Idempotency-Key reaches the host's stores only as its hash.
    if let Some(key) = start.get("idempotency").and_then(|i| i.get("key")) {
        let key = key
            .as_str()
            .ok_or("start.idempotency.key is not a string")?;
        if writes.io_text.iter().any(|t| t.contains(key)) {
            return Err("the Idempotency-Key itself was handed to the host in an IO".into());
        }
    }
    Ok(())
}

#[test]
fn flow_traces() {
    let mut seen = Seen::default();
    let mut failures = Vec::new();
    for (file, text) in TRACES {
        if let Err(e) = run_trace(file, text, &mut seen) {
            failures.push(format!("{file}: {e}"));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} flow traces failing:\n{}",
        failures.len(),
        TRACES.len(),
        failures.join("\n")
    );
    assert!(TRACES.len() >= 40, "only {} flow traces", TRACES.len());
    let unused = |all: &[&str], seen: &BTreeSet<String>| -> Vec<String> {
        all.iter()
            .filter(|k| !seen.contains(**k))
            .map(|k| (*k).to_string())
            .collect()
    };
    let missing = [
        unused(&IO_KINDS, &seen.io),
        unused(&OUTCOME_KINDS, &seen.outcomes),
        unused(&IDEMPOTENCY_IO_KINDS, &seen.io),
        unused(&["idempotency"], &seen.outcomes),
        unused(&CLAIM_KINDS, &seen.claims),
        unused(&ADMISSION_KINDS, &seen.admissions),
    ]
    .concat();
    assert!(missing.is_empty(), "no trace uses {missing:?}");
}

/// A trace file that is not embedded in [`TRACES`] would silently not run.
#[cfg(not(target_arch = "wasm32"))]
#[test]
fn every_trace_file_is_embedded() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/vectors/flows");
    let on_disk: BTreeSet<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            entry
                .expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".json"))
        .collect();
    let embedded: BTreeSet<String> = TRACES.iter().map(|(f, _)| (*f).to_string()).collect();
    assert_eq!(embedded.len(), TRACES.len(), "a trace is listed twice");
    let missing: Vec<_> = on_disk.difference(&embedded).collect();
    assert!(
        missing.is_empty(),
        "add these to TRACES in core/tests/flows.rs: {missing:?}"
    );
}
