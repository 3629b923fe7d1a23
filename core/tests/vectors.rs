//! Runs the shared vectors in `tests/vectors/*.json` through the core. The same file compiles
//! for wasm32 and runs in Node under wasm-bindgen-test, so the vectors hold for the Worker's
//! build too. A vector the code does not satisfy fails the run, naming the case.

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use otpkit_core::code::{base64url, digits_from_bytes, uuid_v4};
use otpkit_core::guard::{Admission, DeliveryOutcome, DestinationGuard};
use otpkit_core::hash::{code_hash_for, to_hex};
use otpkit_core::http::envelope;
use otpkit_core::http::request::{self, IssueRequest, VerifyRequest};
use otpkit_core::session::{plan_issue, Session, Verification, VerifyOutcome};
use otpkit_core::template::{self, Encoding};
use otpkit_core::transaction::Transaction;
use otpkit_core::workspace::{self, WorkspaceRecord};
use otpkit_core::{Entropy, Error, Pepper, Policy, Purpose, UnixMillis};
use serde_json::Value;

fn load(text: &str) -> Value {
    serde_json::from_str(text).expect("vector file is JSON")
}

fn cases(v: &Value) -> &Vec<Value> {
    v["cases"].as_array().expect("cases array")
}

fn s<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} is not a string in {v}"))
}

fn opt_s<'a>(v: &'a Value, k: &str) -> Option<&'a str> {
    v.get(k).and_then(Value::as_str)
}

fn n(v: &Value, k: &str) -> u64 {
    v[k].as_u64()
        .unwrap_or_else(|| panic!("{k} is not an integer in {v}"))
}

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

/// Collects failures so one run reports every broken case, then fails if any.
struct Check {
    file: &'static str,
    ran: usize,
    failures: Vec<String>,
}

impl Check {
    fn new(file: &'static str) -> Self {
        Check {
            file,
            ran: 0,
            failures: Vec::new(),
        }
    }
    fn eq<T: PartialEq + std::fmt::Debug>(&mut self, case: &str, what: &str, got: T, want: T) {
        if got != want {
            self.failures
                .push(format!("{case}: {what}: got {got:?}, want {want:?}"));
        }
    }
    fn done(self, at_least: usize) {
        assert!(
            self.failures.is_empty(),
            "{}: {} failing\n{}",
            self.file,
            self.failures.len(),
            self.failures.join("\n")
        );
        assert!(
            self.ran >= at_least,
            "{}: only {} cases ran (expected ≥ {at_least})",
            self.file,
            self.ran
        );
    }
}

fn error_of(v: &Value) -> Error {
    let secs = || u32::try_from(n(v, "retryAfterSeconds")).expect("u32");
    match s(v, "code") {
        "UNAUTHORIZED" => Error::Unauthorized,
        "UNSUPPORTED_MEDIA_TYPE" => Error::UnsupportedMediaType,
        "PAYLOAD_TOO_LARGE" => Error::PayloadTooLarge,
        "SENDER_NOT_ALLOWED" => Error::SenderNotAllowed,
        "DESTINATION_NOT_ALLOWED" => Error::DestinationNotAllowed,
        "RATE_LIMITED" => Error::RateLimited {
            retry_after_secs: secs(),
        },
        "DESTINATION_LOCKED" => Error::DestinationLocked {
            retry_after_secs: secs(),
        },
        "DELIVERY_FAILED" => Error::DeliveryFailed,
        "STORE_UNAVAILABLE" => Error::StoreUnavailable,
        other => panic!("unknown error code in vector: {other}"),
    }
}

fn outcome_of(name: &str, attempts_left: u8) -> VerifyOutcome {
    VerifyOutcome::from_status(name, attempts_left)
        .unwrap_or_else(|| panic!("unknown outcome {name}"))
}

/// Parses a body for a route; `Ok` carries the values a case may check.
fn parse_route(case: &Value) -> Result<Value, Error> {
    let body = s(case, "body").as_bytes();
    let issue = |r: IssueRequest| {
        serde_json::json!({
            "dest": r.dest, "purpose": r.purpose.as_str(), "channel": r.channel.as_str(),
            "ttlSeconds": r.ttl_seconds, "codeLength": r.code_length,
        })
    };
    match s(case, "route") {
        "v1.request" => IssueRequest::from_v1_json(body).map(issue),
        "zend.send" => IssueRequest::from_zend_json(body).map(issue),
        "v1.verify" => VerifyRequest::from_v1_json(body).map(|r| serde_json::json!({"sessionId": r.session_id})),
        "zend.verify" => VerifyRequest::from_zend_json(s(case, "pathId"), body)
            .map(|r| serde_json::json!({"sessionId": r.session_id})),
        "admin.create" => WorkspaceRecord::from_create_json(body, "ws_test".into(), UnixMillis(0)).map(|w| {
            serde_json::json!({"senders": w.senders, "ttlSeconds": w.policy.ttl_seconds, "maxAttempts": w.policy.max_attempts})
        }),
        "admin.patch" => {
            let base = WorkspaceRecord::from_create_json(br#"{"name":"Acme","senders":["ACME"]}"#, "ws_test".into(), UnixMillis(0))
                .expect("base workspace");
            base.patched(body).map(|w| {
                serde_json::json!({"senders": w.senders, "ttlSeconds": w.policy.ttl_seconds, "maxAttempts": w.policy.max_attempts})
            })
        }
        other => panic!("unknown route {other}"),
    }
}

#[test]
fn validation_vectors() {
    let v = load(include_str!("../../tests/vectors/validation.json"));
    let mut c = Check::new("validation.json");
    for case in cases(&v) {
        c.ran += 1;
        let name = s(case, "name");
        let got = if s(case, "route") == "content" {
            request::check_content(opt_s(case, "contentType"), Some(n(case, "length")))
                .map(|()| Value::Null)
        } else {
            parse_route(case)
        };
        match (got, case.get("error")) {
            (Err(e), Some(want)) => {
                c.eq(name, "code", e.code(), s(want, "code"));
                c.eq(name, "field", e.field(), opt_s(want, "field"));
                c.eq(
                    name,
                    "status",
                    u64::from(e.http_status()),
                    n(want, "status"),
                );
            }
            (Ok(values), None) => {
                for (k, want) in case["ok"].as_object().expect("ok object") {
                    c.eq(name, k, &values[k.as_str()], want);
                }
            }
            (Ok(values), Some(_)) => c
                .failures
                .push(format!("{name}: accepted ({values}) but should fail")),
            (Err(e), None) => c
                .failures
                .push(format!("{name}: refused with {e} but should pass")),
        }
    }
    c.done(50);
}

#[test]
fn hash_vectors() {
    let v = load(include_str!("../../tests/vectors/hash.json"));
    let mut c = Check::new("hash.json");
    for case in cases(&v) {
        c.ran += 1;
        let pepper = Pepper::new(s(case, "pepper").as_bytes()).expect("pepper");
        let purpose = Purpose::parse(s(case, "purpose")).expect("purpose");
        // A case with amount/currency/payee is a code bound to a payment (v2 framing).
        let tx = case.get("amount").map(|_| {
            Transaction::parse(
                Some(s(case, "amount")),
                Some(s(case, "currency")),
                Some(s(case, "payee")),
            )
            .expect("valid payment")
            .expect("all three")
        });
        let got = code_hash_for(
            &pepper,
            s(case, "workspaceId"),
            s(case, "sessionId"),
            purpose,
            s(case, "code"),
            tx.as_ref(),
        );
        c.eq(
            s(case, "code"),
            "hash",
            to_hex(&got),
            s(case, "hash").to_string(),
        );
    }
    c.done(18);
}

#[test]
fn code_vectors() {
    let v = load(include_str!("../../tests/vectors/codes.json"));
    let mut c = Check::new("codes.json");
    for case in cases(&v) {
        c.ran += 1;
        let seed: [u8; 32] = hex(s(case, "seed")).try_into().expect("32 bytes");
        let got = digits_from_bytes(&seed, usize::try_from(n(case, "length")).expect("len"));
        c.eq(s(case, "seed"), "code", got.expose(), s(case, "code"));
    }
    c.done(9);
}

#[test]
fn id_vectors() {
    let v = load(include_str!("../../tests/vectors/ids.json"));
    let mut c = Check::new("ids.json");
    for case in v["uuids"].as_array().expect("uuids") {
        c.ran += 1;
        let bytes: [u8; 16] = hex(s(case, "bytes")).try_into().expect("16 bytes");
        c.eq(
            s(case, "uuid"),
            "uuid",
            uuid_v4(&bytes),
            s(case, "uuid").to_string(),
        );
    }
    for case in v["apiKeys"].as_array().expect("apiKeys") {
        c.ran += 1;
        let bytes: [u8; 32] = hex(s(case, "bytes")).try_into().expect("32 bytes");
        let k = workspace::new_api_key(&bytes, UnixMillis(0));
        c.eq(
            s(case, "keyId"),
            "apiKey",
            k.api_key.as_str(),
            s(case, "apiKey"),
        );
        c.eq(
            s(case, "keyId"),
            "keyId",
            k.record.key_id.as_str(),
            s(case, "keyId"),
        );
        c.eq(
            s(case, "keyId"),
            "keyHash",
            k.record.key_hash.as_str(),
            s(case, "keyHash"),
        );
        c.eq(
            s(case, "keyId"),
            "format",
            workspace::is_api_key_format(&k.api_key),
            true,
        );
        c.eq(
            s(case, "keyId"),
            "base64url length",
            base64url(&bytes).len(),
            43,
        );
    }
    for case in v["masks"].as_array().expect("masks") {
        c.ran += 1;
        c.eq(
            s(case, "dest"),
            "mask",
            otpkit_core::validate::mask_destination(s(case, "dest")),
            s(case, "masked").to_string(),
        );
    }
    for case in v["times"].as_array().expect("times") {
        c.ran += 1;
        let t = UnixMillis(n(case, "millis"));
        c.eq(
            s(case, "rfc3339"),
            "rfc3339",
            t.to_rfc3339(),
            s(case, "rfc3339").to_string(),
        );
        c.eq(
            s(case, "rfc3339"),
            "date",
            t.utc_date(),
            s(case, "date").to_string(),
        );
        c.eq(
            s(case, "rfc3339"),
            "parse",
            UnixMillis::parse_rfc3339(s(case, "rfc3339")),
            Some(t),
        );
    }
    c.done(15);
}

#[test]
fn template_vectors() {
    let v = load(include_str!("../../tests/vectors/templates.json"));
    let mut c = Check::new("templates.json");
    for case in cases(&v) {
        c.ran += 1;
        let name = s(case, "template");
        let purpose = Purpose::parse(s(case, "purpose")).expect("purpose");
        let ttl = u32::try_from(n(case, "ttlSeconds")).expect("ttl");
        let got = template::render(
            "messageTemplate",
            name,
            s(case, "code"),
            ttl,
            opt_s(case, "app"),
            purpose,
            None,
        );
        match (got, case.get("error")) {
            (Ok(r), None) => {
                c.eq(name, "text", r.text.as_str(), s(case, "text"));
                let seg = &case["segments"];
                let enc = match r.info.encoding {
                    Encoding::Gsm7 => "gsm7",
                    Encoding::Ucs2 => "ucs2",
                };
                c.eq(name, "encoding", enc, s(seg, "encoding"));
                c.eq(name, "units", u64::from(r.info.units), n(seg, "units"));
                c.eq(
                    name,
                    "segments",
                    u64::from(r.info.segments),
                    n(seg, "segments"),
                );
            }
            (Err(e), Some(want)) => {
                c.eq(name, "code", e.code(), s(want, "code"));
                c.eq(name, "field", e.field(), opt_s(want, "field"));
            }
            (Ok(r), Some(_)) => c.failures.push(format!(
                "{name}: rendered {} segments but should fail",
                r.info.segments
            )),
            (Err(e), None) => c
                .failures
                .push(format!("{name}: refused with {e} but should render")),
        }
    }
    c.done(16);
}

#[test]
fn envelope_vectors() {
    let v = load(include_str!("../../tests/vectors/envelopes.json"));
    let mut c = Check::new("envelopes.json");
    for case in cases(&v) {
        c.ran += 1;
        let name = s(case, "name");
        let attempts = || u8::try_from(n(case, "attemptsLeft")).expect("u8");
        let reply = match s(case, "kind") {
            "error" => envelope::error(&error_of(&case["error"])),
            "pepper" => envelope::error(
                &Pepper::new(s(case, "pepper").as_bytes()).expect_err("short pepper"),
            ),
            "validation" => envelope::error(&parse_route(case).expect_err("body must be refused")),
            "verify" => envelope::v1_verify(
                s(case, "sessionId"),
                &Verification {
                    outcome: outcome_of(s(case, "outcome"), attempts()),
                    attempts_left: attempts(),
                },
            ),
            "zendVerify" => envelope::zend_verify(
                &Verification {
                    outcome: outcome_of(s(case, "outcome"), attempts()),
                    attempts_left: attempts(),
                },
                case["verifiedAt"].as_u64().map(UnixMillis),
            ),
            "health" => envelope::health(case["configured"].as_bool().expect("bool")),
            other => panic!("unknown kind {other}"),
        };
        let want_body = opt_s(case, "reply").or(opt_s(case, "body")).expect("body");
        c.eq(name, "status", u64::from(reply.status), n(case, "status"));
        c.eq(name, "body", reply.body.as_str(), want_body);
        if let Some(ra) = case.get("retryAfter") {
            c.eq(
                name,
                "retryAfter",
                reply.retry_after.map(u64::from),
                ra.as_u64(),
            );
        }
    }
    c.done(25);
}

#[test]
fn session_traces() {
    let v = load(include_str!("../../tests/vectors/traces.json"));
    let mut c = Check::new("traces.json");
    for case in cases(&v) {
        c.ran += 1;
        let name = s(case, "name");
        let pepper = Pepper::new(s(case, "pepper").as_bytes()).expect("pepper");
        let policy = Policy::from_json(case.get("policy")).expect("policy");
        let ws = s(case, "workspaceId");
        let senders: Vec<String> = case["senders"]
            .as_array()
            .expect("senders")
            .iter()
            .map(|x| x.as_str().expect("str").to_string())
            .collect();
        let body = s(case, "request").as_bytes();
        let req = match s(case, "route") {
            "v1.request" => IssueRequest::from_v1_json(body),
            _ => IssueRequest::from_zend_json(body),
        }
        .expect("request parses");
        let entropy = Entropy::from_bytes(&hex(s(case, "entropy")).try_into().expect("48 bytes"));
        let start = n(case, "start");
        let plan = match (
            plan_issue(
                &req,
                ws,
                &senders,
                &policy,
                UnixMillis(start),
                &entropy,
                &pepper,
            ),
            case.get("planError"),
        ) {
            (Err(e), Some(want)) => {
                c.eq(name, "plan code", e.code(), s(want, "code"));
                c.eq(
                    name,
                    "plan status",
                    u64::from(e.http_status()),
                    n(want, "status"),
                );
                c.eq(name, "plan field", e.field(), opt_s(want, "field"));
                continue;
            }
            (Ok(_), Some(_)) => {
                c.failures
                    .push(format!("{name}: plan succeeded but should fail"));
                continue;
            }
            (Err(e), None) => {
                c.failures.push(format!("{name}: plan failed: {e}"));
                continue;
            }
            (Ok(plan), None) => plan,
        };
        if let Some(want) = case.get("expectPlan") {
            c.eq(
                name,
                "test",
                plan.session.test,
                want["test"].as_bool().expect("bool"),
            );
            c.eq(
                name,
                "message",
                plan.message.as_ref().map(|m| m.text.as_str()),
                opt_s(want, "message"),
            );
            if let Some(seg) = want.get("segments") {
                c.eq(
                    name,
                    "segments",
                    plan.message.as_ref().map(|m| u64::from(m.info.segments)),
                    seg.as_u64(),
                );
            }
        }
        let right = plan.code.expose().to_string();
        let mut session = plan.session;
        for step in case["steps"].as_array().expect("steps") {
            let now = UnixMillis(start + n(step, "at"));
            let label = format!("{name} @{}", n(step, "at"));
            if let Some(code) = opt_s(step, "verify") {
                let code = if code == "right" {
                    right.as_str()
                } else {
                    code
                };
                let workspace = opt_s(step, "workspace").unwrap_or(ws);
                let before = session.clone();
                let (verification, after) = session.clone().verify(workspace, code, now, &pepper);
                let want = &step["expect"];
                c.eq(
                    &label,
                    "outcome",
                    verification.outcome.status(),
                    s(want, "outcome"),
                );
                c.eq(
                    &label,
                    "http",
                    u64::from(verification.outcome.http_status()),
                    n(want, "status"),
                );
                c.eq(
                    &label,
                    "attemptsLeft",
                    u64::from(verification.attempts_left),
                    n(want, "attemptsLeft"),
                );
                if let Some(locked) = want.get("locked") {
                    c.eq(
                        &label,
                        "locked",
                        verification.outcome.locked_session(),
                        locked.as_bool().expect("bool"),
                    );
                }
                if !verification.outcome.consumed_attempt() {
                    c.eq(&label, "unchanged when nothing consumed", &after, &before);
                }
                if let Some(body) = opt_s(want, "body") {
                    c.eq(
                        &label,
                        "v1 body",
                        envelope::v1_verify(&session.id, &verification)
                            .body
                            .as_str(),
                        body,
                    );
                }
                if let Some(body) = opt_s(step, "zendBody") {
                    c.eq(
                        &label,
                        "zend body",
                        envelope::zend_verify(&verification, after.verified_at)
                            .body
                            .as_str(),
                        body,
                    );
                }
                session = after;
            } else if let Some(kind) = opt_s(step, "reply") {
                let reply = match kind {
                    "request.new" => envelope::v1_request(&session, now, false),
                    "request.reused" => envelope::v1_request(&session, now, true),
                    "session" => envelope::v1_session(&session.view(now)),
                    "zend.send" => envelope::zend_send(&session, false),
                    "zend.send.reused" => envelope::zend_send(&session, true),
                    "zend.status" => envelope::zend_status(&session, now),
                    other => panic!("unknown reply {other}"),
                };
                c.eq(
                    &label,
                    "status",
                    u64::from(reply.status),
                    n(&step["expect"], "status"),
                );
                c.eq(
                    &label,
                    "body",
                    reply.body.as_str(),
                    s(&step["expect"], "body"),
                );
            } else if step.get("cancel").is_some() {
                session = session.cancel();
            } else if let Some(state) = opt_s(step, "state") {
                c.eq(&label, "state", session.state_at(now).as_str(), state);
            } else if let Some(r) = step.get("reusable") {
                c.eq(
                    &label,
                    "reusable",
                    session.reusable(now),
                    r.as_bool().expect("bool"),
                );
            } else {
                panic!("{label}: unknown step {step}");
            }
            c.eq(
                &label,
                "stored JSON round-trips",
                Session::from_json(&session.to_json()).as_ref(),
                Ok(&session),
            );
        }
    }
    c.done(16);
}

#[test]
fn guard_traces() {
    let v = load(include_str!("../../tests/vectors/guard.json"));
    let mut c = Check::new("guard.json");
    for case in cases(&v) {
        c.ran += 1;
        let name = s(case, "name");
        let policy = Policy::from_json(case.get("policy")).expect("policy");
        let mut g = DestinationGuard::new();
        for step in case["steps"].as_array().expect("steps") {
            let at = n(step, "at");
            let now = UnixMillis(at);
            let label = format!("{name} @{at}");
            if let Some(a) = step.get("admit") {
                let purpose = Purpose::parse(s(a, "purpose")).expect("purpose");
                let ttl = a.get("ttlSeconds").and_then(Value::as_u64).unwrap_or(300);
                let test = a.get("test").and_then(Value::as_bool).unwrap_or(false);
                let got = match g.admit(
                    purpose,
                    s(a, "session"),
                    now.plus_secs(ttl),
                    test,
                    &policy,
                    now,
                ) {
                    Ok(Admission::Send) => Value::from("send"),
                    Ok(Admission::Reuse { session_id }) => {
                        Value::from(format!("reuse:{session_id}"))
                    }
                    Ok(Admission::Wait { session_id }) => Value::from(format!("wait:{session_id}")),
                    Err(e) => {
                        serde_json::json!({"error": e.code(), "retryAfter": e.retry_after_secs()})
                    }
                };
                c.eq(&label, "admit", &got, &step["expect"]);
            } else if let Some(d) = step.get("delivery") {
                let outcome = match s(d, "outcome") {
                    "delivered" => DeliveryOutcome::Delivered,
                    "failed" => DeliveryOutcome::Failed,
                    _ => DeliveryOutcome::TimedOut,
                };
                let cancel = g.delivery(s(d, "session"), outcome);
                c.eq(
                    &label,
                    "cancel",
                    cancel.as_deref(),
                    opt_s(step, "expectCancel"),
                );
            } else if let Some(vv) = step.get("verify") {
                let outcome = outcome_of(
                    s(vv, "outcome"),
                    u8::try_from(n(vv, "attemptsLeft")).expect("u8"),
                );
                g.record_verify(s(vv, "session"), outcome, &policy, now);
            } else {
                panic!("{label}: unknown step {step}");
            }
            c.eq(
                &label,
                "stored JSON round-trips",
                DestinationGuard::from_json(&g.to_json()).as_ref(),
                Ok(&g),
            );
        }
    }
    c.done(8);
}
