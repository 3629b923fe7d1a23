//! The fuzz harnesses of otpkit-core: one function per fuzz target, taking the raw bytes the
//! fuzzer made. Each drives the core's public entry points as a host would (parsing a request
//! body, loading a stored value, rendering a template, reading a query string) and checks
//! invariants with `assert!` — a panic is a finding, whether the core panicked or an invariant
//! broke.
//!
//! This file is compiled twice: by the fuzz crate (`core/fuzz`, built by `cargo fuzz`) and, via
//! `#[path]`, by the normal test `core/tests/fuzz_regressions.rs`, which replays every committed
//! corpus file and every regression through these same functions. It uses only the core's public
//! API (so the no_std library carries no fuzzing code) plus `serde_json`, a dependency of both.
//!
//! Every function returns whether the input was *accepted* by the main parser of its target, so
//! the replay test can check that the seed files named `valid-*` still are.

use otpkit_core::analytics::{self, AnalyticsQuery, Bucket};
use otpkit_core::audit::AuditQuery;
use otpkit_core::guard::{Admission, DeliveryOutcome, DestinationGuard};
use otpkit_core::http::envelope;
use otpkit_core::http::request::{
    check_body_len, Dialect, IssueRequest, VerifyRequest, MAX_BODY_BYTES,
};
use otpkit_core::http::route::{match_route, Route};
use otpkit_core::policy::Policy;
use otpkit_core::session::{plan_issue, Session, SessionState, StoredState, VerifyOutcome};
use otpkit_core::template::{self, Encoding, SegmentInfo};
use otpkit_core::validate::{self, Purpose};
use otpkit_core::workspace::WorkspaceRecord;
use otpkit_core::{Entropy, Error, Pepper, UnixMillis};
use std::borrow::Cow;

/// A harness: the fuzzer's bytes in, whether the target's main parser accepted them out.
pub type Harness = fn(&[u8]) -> bool;

/// The fuzz targets, by name (the names of `core/fuzz/fuzz_targets/*.rs` and of the corpus
/// directories), with their harness.
pub const TARGETS: [(&str, Harness); 7] = [
    ("request_body", request_body),
    ("verify_body", verify_body),
    ("template", template),
    ("session_state", session_state),
    ("guard_state", guard_state),
    ("admin_body", admin_body),
    ("query", query),
];

const WS: &str = "ws_fuzz";
const SENDER: &str = "OTPKIT";
/// 2026-01-01T00:00:00Z.
const T0: u64 = 1_767_225_600_000;
const PURPOSES: [Purpose; 7] = Purpose::ALL;

fn pepper() -> Pepper {
    match Pepper::new(b"the fuzz harness pepper, thirty-two bytes or more") {
        Ok(p) => p,
        Err(e) => panic!("pepper refused: {e}"),
    }
}

fn entropy(seed: &[u8]) -> Entropy {
    let mut b = [0x5au8; 48];
    for (slot, x) in b.iter_mut().zip(seed.iter().rev()) {
        *slot ^= *x;
    }
    Entropy::from_bytes(&b)
}

/// A request-level error: always a 400 `VALIDATION_ERROR` (the parsers decide nothing else).
fn assert_validation(e: &Error) {
    assert_eq!(e.code(), "VALIDATION_ERROR", "{e}");
    assert_eq!(e.http_status(), 400, "{e}");
    assert!(!e.message().is_empty());
    // The error body a host sends must be JSON that parses.
    let reply = envelope::error(e);
    assert_eq!(reply.status, 400);
    assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_ok());
}

/// A stored value that cannot be read: always the 500 `INTERNAL_ERROR` of [`Error::CorruptState`].
fn assert_corrupt(e: &Error) {
    assert!(matches!(e, Error::CorruptState { .. }), "{e}");
    assert_eq!(e.code(), "INTERNAL_ERROR");
    assert_eq!(e.http_status(), 500);
    assert!(!e.message().is_empty());
}

// ---------------------------------------------------------------------------------------------
// request bodies: POST /v1/messaging/otp/request and POST /otp/send
// ---------------------------------------------------------------------------------------------

/// The same body through both issue parsers; what parses is planned (code, template, session)
/// and the planned session is stored, read back and verified with its own code.
pub fn request_body(data: &[u8]) -> bool {
    assert_eq!(
        check_body_len(data.len()).is_ok(),
        data.len() <= MAX_BODY_BYTES
    );
    let mut accepted = false;
    for (dialect, parsed) in [
        (Dialect::V1, IssueRequest::from_v1_json(data)),
        (Dialect::Zend, IssueRequest::from_zend_json(data)),
    ] {
        match parsed {
            Ok(req) => {
                accepted = true;
                check_issue_request(dialect, &req);
                plan_and_verify(&req, data);
            }
            Err(e) => assert_validation(&e),
        }
    }
    accepted
}

fn check_issue_request(dialect: Dialect, req: &IssueRequest) {
    assert_eq!(req.dialect, dialect);
    assert!(validate::is_e164(&req.dest), "dest {:?}", req.dest);
    if let Some(app) = &req.app {
        assert!(validate::app("app", app).is_ok());
    }
    if let Some(t) = &req.template {
        assert!(template::check_template("messageTemplate", t).is_ok());
    }
    match dialect {
        Dialect::V1 => {
            assert!(req.src.as_deref().is_some_and(validate::is_sender_name));
            assert_eq!((req.ttl_seconds, req.code_length), (None, None));
        }
        Dialect::Zend => {
            assert_eq!((&req.src, &req.template), (&None, &None));
            let ttl = req.ttl_seconds.unwrap_or(0);
            assert!((60..=600).contains(&ttl) && ttl % 60 == 0, "ttl {ttl}");
            assert!(req.code_length.is_none_or(|n| (6..=10).contains(&n)));
        }
    }
}

fn plan_and_verify(req: &IssueRequest, seed: &[u8]) {
    let senders = [req.src.clone().unwrap_or_else(|| SENDER.into())];
    let policy = Policy::default();
    let now = UnixMillis(T0);
    let pepper = pepper();
    let plan = match plan_issue(req, WS, &senders, &policy, now, &entropy(seed), &pepper) {
        Ok(plan) => plan,
        Err(e) => {
            // Only the template can fail here (more than 3 segments).
            assert_validation(&e);
            assert_eq!(e.field(), Some("messageTemplate"));
            return;
        }
    };
    let code = plan.code.expose().to_string();
    let want_len = usize::from(req.code_length.unwrap_or(policy.code_length));
    assert_eq!(code.len(), want_len);
    assert!(code.bytes().all(|b| b.is_ascii_digit()));
    let message = plan.message.as_ref().map(|m| (m.text.clone(), m.info));
    let Some((text, info)) = message else {
        panic!("no message for a number that is not a test number");
    };
    assert!(text.contains(code.as_str()));
    assert_eq!(info, template::segments(&text));
    assert!((1..=template::MAX_SEGMENTS).contains(&info.segments));
    // Debug of the message never shows its text (it carries the code).
    assert!(!format!("{:?}", plan.message).contains(code.as_str()));

    let session = plan.session;
    assert_eq!(session.segments, info.segments);
    assert_eq!(
        session.expires_at.0 - session.created_at.0,
        u64::from(req.ttl_seconds.unwrap_or(policy.ttl_seconds)) * 1000
    );
    let json = session.to_json();
    let stored = match Session::from_json(&json) {
        Ok(s) => s,
        Err(e) => panic!("a planned session does not read back: {e}"),
    };
    assert_eq!(stored, session);
    // The replies of both dialects are JSON and carry no code.
    for reply in [
        envelope::v1_request(&stored, now, false),
        envelope::zend_send(&stored, false),
    ] {
        match serde_json::from_str::<serde_json::Value>(&reply.body) {
            Ok(v) => assert!(!holds_string(&v, &code), "a reply carries the code"),
            Err(e) => panic!("a reply is not JSON: {e}"),
        }
    }
    let (v, after) = stored.verify(WS, &code, now.plus_secs(1), &pepper);
    assert_eq!(v.outcome, VerifyOutcome::Approved);
    assert_eq!(after.state_at(now.plus_secs(1)), SessionState::Approved);
}

/// Is `s` one of the strings anywhere in `v`?
fn holds_string(v: &serde_json::Value, s: &str) -> bool {
    match v {
        serde_json::Value::String(x) => x == s,
        serde_json::Value::Array(a) => a.iter().any(|x| holds_string(x, s)),
        serde_json::Value::Object(o) => o.values().any(|x| holds_string(x, s)),
        _ => false,
    }
}

// ---------------------------------------------------------------------------------------------
// verify bodies: POST /v1/messaging/otp/verify and POST /otp/{id}/verify
// ---------------------------------------------------------------------------------------------

/// `path id \n body` for the second dialect (no newline: a fixed well-formed id); the whole
/// input as the first dialect's body.
pub fn verify_body(data: &[u8]) -> bool {
    let (path_id, body): (Cow<'_, str>, &[u8]) = match data.iter().position(|&b| b == b'\n') {
        Some(i) => (
            String::from_utf8_lossy(data.get(..i).unwrap_or_default()),
            data.get(i + 1..).unwrap_or_default(),
        ),
        None => (Cow::Borrowed("feab6011-2469-4804-ace5-ee9dcb5b9ef2"), data),
    };
    let mut accepted = false;
    for parsed in [
        VerifyRequest::from_v1_json(data),
        VerifyRequest::from_zend_json(&path_id, body),
    ] {
        match parsed {
            Ok(r) => {
                accepted = true;
                check_verify_request(&r);
            }
            Err(e) => assert_validation(&e),
        }
    }
    accepted
}

fn check_verify_request(r: &VerifyRequest) {
    assert!(validate::is_code_format(&r.code));
    match &r.session_id {
        Some(id) => {
            assert_eq!(id.len(), 36);
            assert!(!id.bytes().any(|b| b.is_ascii_uppercase()));
            assert_eq!(id, &r.raw_session_id.to_ascii_lowercase());
            assert_eq!(validate::normalize_session_id(id).as_ref(), Some(id));
        }
        None => assert_eq!(validate::normalize_session_id(&r.raw_session_id), None),
    }
    // Debug never shows the code (only the session id, which is hex and dashes).
    let dbg = format!("{r:?}");
    assert!(dbg.contains("<redacted>"));
    let id_digits = r.session_id.as_deref().unwrap_or("");
    assert!(
        !dbg.contains(&r.code) || id_digits.contains(&r.code) || "VerifyRequest".contains(&r.code)
    );
}

// ---------------------------------------------------------------------------------------------
// templates: rendering and SMS segment counting
// ---------------------------------------------------------------------------------------------

/// Input: `ttl (2 bytes LE) · flags · template [0xFF app]`. flags: bits 0–2 purpose, bits 3–6 code
/// length − 4 (clamped to 4–10), bit 7 "has app". Invalid UTF-8 becomes U+FFFD.
pub fn template(data: &[u8]) -> bool {
    let (header, rest) = data.split_at(data.len().min(3));
    let mut h = [0u8; 3];
    h[..header.len()].copy_from_slice(header);
    let ttl = u32::from(u16::from_le_bytes([h[0], h[1]]));
    let purpose = PURPOSES[usize::from(h[2] & 7) % PURPOSES.len()];
    let code_len = (usize::from((h[2] >> 3) & 15) + 4).min(10);
    let has_app = h[2] & 0x80 != 0;
    let (tpl, app) = match rest.iter().position(|&b| b == 0xFF) {
        Some(i) if has_app => (
            String::from_utf8_lossy(&rest[..i]),
            Some(String::from_utf8_lossy(&rest[i + 1..])),
        ),
        _ => (
            String::from_utf8_lossy(rest),
            has_app.then_some(Cow::Borrowed("")),
        ),
    };
    let code: String = "0123456789"
        .chars()
        .cycle()
        .skip(usize::from(h[1] % 10))
        .take(code_len)
        .collect();

    check_segments(&tpl);
    let rendered = template::render(
        "messageTemplate",
        &tpl,
        &code,
        ttl,
        app.as_deref(),
        purpose,
        None,
    );
    let checked = template::check_template("messageTemplate", &tpl);
    match rendered {
        Ok(r) => {
            assert!(checked.is_ok());
            let expected = reference_render(&tpl, &code, ttl, app.as_deref(), purpose);
            assert_eq!(r.text, expected);
            assert!(r.text.contains(code.as_str()));
            assert_eq!(r.info, template::segments(&r.text));
            assert!((1..=template::MAX_SEGMENTS).contains(&r.info.segments));
            check_segments(&r.text);
            // Debug never shows the text (it carries the code).
            assert!(format!("{r:?}").contains("<redacted>"));
            true
        }
        Err(e) => {
            assert_validation(&e);
            assert_eq!(e.field(), Some("messageTemplate"));
            if checked.is_ok() {
                // A good template fails only for its size on the air.
                let expected = reference_render(&tpl, &code, ttl, app.as_deref(), purpose);
                assert!(template::segments(&expected).segments > template::MAX_SEGMENTS);
            }
            false
        }
    }
}

/// SPEC's rendering, written independently: left to right, the first placeholder that starts at
/// each position is replaced, anything else is copied one character at a time.
fn reference_render(
    tpl: &str,
    code: &str,
    ttl: u32,
    app: Option<&str>,
    purpose: Purpose,
) -> String {
    let minutes = ttl.div_ceil(60).to_string();
    let subs: [(&str, &str); 4] = [
        ("{code}", code),
        ("{minutes}", &minutes),
        ("{app}", app.unwrap_or("")),
        ("{purpose}", purpose.as_str()),
    ];
    let mut out = String::new();
    let mut i = 0;
    while let Some(c) = tpl[i..].chars().next() {
        match subs.iter().find(|(p, _)| tpl[i..].starts_with(p)) {
            Some((p, v)) => {
                out.push_str(v);
                i += p.len();
            }
            None => {
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

fn check_segments(text: &str) {
    let info = template::segments(text);
    let chars = text.chars().count();
    let (single, multi) = match info.encoding {
        Encoding::Gsm7 => {
            assert!(info.units as usize >= chars && info.units as usize <= 2 * chars);
            (160, 153)
        }
        Encoding::Ucs2 => {
            assert_eq!(info.units as usize, text.encode_utf16().count());
            (70, 67)
        }
    };
    assert_eq!(info.segments == 0, text.is_empty());
    if !text.is_empty() {
        assert!(info.segments >= 1);
    }
    let expected = if info.units == 0 {
        0
    } else if info.units <= single {
        1
    } else {
        info.units.div_ceil(multi)
    };
    assert_eq!(info.segments, expected, "{info:?}");
    // Appending never makes a message take fewer segments (even when it switches the
    // encoding to UCS-2), and within one encoding always takes more units.
    for extra in ["a", "€", "😀"] {
        let more: SegmentInfo = template::segments(&format!("{text}{extra}"));
        assert!(
            more.segments >= info.segments,
            "{info:?} + {extra:?} → {more:?}"
        );
        if more.encoding == info.encoding {
            assert!(more.units > info.units, "{info:?} + {extra:?} → {more:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// stored state: the session and the destination guard as the stores keep them
// ---------------------------------------------------------------------------------------------

/// A stored session value: either a clear `CorruptState` error, or a session that round-trips
/// and that every host operation handles at any time.
pub fn session_state(data: &[u8]) -> bool {
    let s = String::from_utf8_lossy(data);
    let session = match Session::from_json(&s) {
        Ok(session) => session,
        Err(e) => {
            assert_corrupt(&e);
            return false;
        }
    };
    let json = session.to_json();
    assert_eq!(
        Session::from_json(&json).as_ref(),
        Ok(&session),
        "round trip of {json}"
    );
    let pepper = pepper();
    let c = session.created_at.0;
    let x = session.expires_at.0;
    for now in [0, c, x.saturating_sub(1), x, x.saturating_add(1), u64::MAX].map(UnixMillis) {
        let state = session.state_at(now);
        match session.state {
            StoredState::Approved => assert_eq!(state, SessionState::Approved),
            StoredState::Canceled => assert_eq!(state, SessionState::Canceled),
            StoredState::Pending => {
                assert!(state != SessionState::Approved && state != SessionState::Canceled)
            }
        }
        let view = session.view(now);
        assert_eq!(view.state, state);
        assert!(session.remaining_secs(now) <= (x.saturating_sub(c)).div_ceil(1000) || now.0 < c);
        let _ = session.reusable(now);
        let _ = session.purge_at();
        for reply in [
            envelope::v1_session(&view),
            envelope::v1_request(&session, now, true),
            envelope::zend_send(&session, true),
            envelope::zend_status(&session, now),
        ] {
            assert!(
                !reply.body.contains(&session.code_hash),
                "a reply shows the code hash"
            );
            assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_ok());
        }
        let (v, after) = session
            .clone()
            .verify(&session.workspace_id, "123456", now, &pepper);
        assert!(after.attempts_used <= after.max_attempts);
        assert_eq!(v.attempts_left, after.attempts_left());
        if v.outcome.consumed_attempt() {
            assert_eq!(after.attempts_used, session.attempts_used + 1);
        } else {
            assert_eq!(after, session);
        }
        assert_eq!(Session::from_json(&after.to_json()).as_ref(), Ok(&after));
        let reply = envelope::zend_verify(&v, after.verified_at);
        assert!(serde_json::from_str::<serde_json::Value>(&reply.body).is_ok());
        // Another workspace (the stored one may be named anything, "ws_other" included).
        let foreign = format!("{}-other", session.workspace_id);
        let (other, same) = session.clone().verify(&foreign, "123456", now, &pepper);
        assert_eq!((other.outcome, &same), (VerifyOutcome::NotFound, &session));
        if let Some(d) = analytics::verified(&session, v.outcome) {
            check_bucket_key(d.day, &d.bucket);
        }
    }
    for d in [
        analytics::delivered(&session),
        analytics::reused(&session),
        analytics::delivery_failed(&session),
    ]
    .into_iter()
    .flatten()
    {
        check_bucket_key(d.day, &d.bucket);
        assert_eq!(
            analytics::parse_open_member(&d.open_member()),
            Bucket::parse(d.day, &d.bucket)
        );
    }
    let canceled = session.clone().cancel();
    assert_eq!(
        Session::from_json(&canceled.to_json()).as_ref(),
        Ok(&canceled)
    );
    true
}

fn check_bucket_key(day: u32, key: &str) {
    let Some(b) = Bucket::parse(day, key) else {
        panic!("the core wrote a bucket key it cannot read: {key:?}");
    };
    assert_eq!(b.key(), key);
}

/// A stored guard value (input starting with `{`): a clear error or a guard that round-trips and
/// takes every operation. Any other input is a sequence of operations on a fresh guard (one byte
/// each). After the changes the guard must store and read back as itself.
pub fn guard_state(data: &[u8]) -> bool {
    let mut policy = Policy::default();
    let (mut guard, ops) = if data.first() == Some(&b'{') {
        match DestinationGuard::from_json(&String::from_utf8_lossy(data)) {
            Ok(g) => (g, &b"\x00\x10\x21\x32\x43\x54\x65\x76\x87\x98"[..]),
            Err(e) => {
                assert_corrupt(&e);
                return false;
            }
        }
    } else {
        (DestinationGuard::new(), data)
    };
    assert_round_trip(&guard);
    let mut now = T0;
    let mut next_id = 0u32;
    // Storing and reading back after every operation is the costly part: every operation of
    // the first 64, then every 16th, and at the end (at most 1024 operations).
    for (i, &op) in ops.iter().take(1024).enumerate() {
        let purpose = PURPOSES[usize::from(op >> 4) % 3];
        let id = |n: u32| format!("s{n}");
        match op & 15 {
            0..=3 => {
                policy.reuse = op & 1 == 0;
                next_id += 1;
                let sid = id(next_id);
                let test = op & 2 != 0;
                let before = guard.clone();
                match guard.admit(
                    purpose,
                    &sid,
                    UnixMillis(now).plus_secs(300),
                    test,
                    &policy,
                    UnixMillis(now),
                ) {
                    Ok(Admission::Send) => {
                        assert!(guard.active.iter().any(|a| a.session_id == sid))
                    }
                    Ok(Admission::Reuse { session_id } | Admission::Wait { session_id }) => {
                        assert!(policy.reuse);
                        assert!(before.active.iter().any(|a| a.session_id == session_id));
                    }
                    Err(e) => assert!(
                        matches!(e.code(), "RATE_LIMITED" | "DESTINATION_LOCKED"),
                        "{e}"
                    ),
                }
            }
            4..=6 => {
                let outcome = [
                    DeliveryOutcome::Delivered,
                    DeliveryOutcome::Failed,
                    DeliveryOutcome::TimedOut,
                ][usize::from(op & 15) - 4];
                let sid = id(next_id.saturating_sub(u32::from(op >> 6)));
                let _ = guard.delivery(&sid, outcome);
            }
            7..=9 => {
                let outcome = [
                    VerifyOutcome::Approved,
                    VerifyOutcome::Invalid { attempts_left: 2 },
                    VerifyOutcome::Invalid { attempts_left: 0 },
                ][usize::from(op & 15) - 7];
                let sid = id(next_id.saturating_sub(u32::from(op >> 6)));
                let _ = guard.record_verify(&sid, outcome, &policy, UnixMillis(now));
            }
            10 => now += 1_000 * u64::from(op >> 4),
            11 => now += 60_000 * u64::from(op >> 4),
            12 => guard.prune(&policy, UnixMillis(now)),
            13 => {
                if let Some(t) = guard.next_change(&policy) {
                    now = now.max(t.0);
                }
            }
            14 => guard.forget(&id(next_id)),
            _ => {
                let _ = guard.is_idle();
            }
        }
        if i < 64 || i % 16 == 0 {
            assert_round_trip(&guard);
        }
    }
    assert_round_trip(&guard);
    true
}

fn assert_round_trip(guard: &DestinationGuard) {
    let json = guard.to_json();
    match DestinationGuard::from_json(&json) {
        Ok(back) => assert_eq!(&back, guard, "round trip of {json}"),
        Err(e) => panic!("a guard does not read back ({e}): {json}"),
    }
}

// ---------------------------------------------------------------------------------------------
// admin bodies and the stored workspace record
// ---------------------------------------------------------------------------------------------

/// The input as a create body, as a PATCH body on a fixed workspace, and as a stored record.
pub fn admin_body(data: &[u8]) -> bool {
    let now = UnixMillis(T0);
    let mut accepted = false;
    let base = match WorkspaceRecord::from_create_json(
        br#"{"name":"Base","senders":["OTPKIT"]}"#,
        WS.into(),
        now,
    ) {
        Ok(w) => w,
        Err(e) => panic!("the base workspace is refused: {e}"),
    };
    match WorkspaceRecord::from_create_json(data, WS.into(), now) {
        Ok(w) => {
            accepted = true;
            check_workspace(&w);
        }
        Err(e) => assert_validation(&e),
    }
    match base.patched(data) {
        Ok(w) => {
            accepted = true;
            check_workspace(&w);
            // PATCH replaces what it names: applying it twice changes nothing more.
            assert_eq!(w.patched(data).as_ref(), Ok(&w));
        }
        Err(e) => assert_validation(&e),
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        match Policy::from_json(Some(&v)) {
            Ok(p) => check_policy(&p),
            Err(e) => assert_validation(&e),
        }
    }
    match WorkspaceRecord::from_json(&String::from_utf8_lossy(data)) {
        Ok(w) => {
            let json = w.to_json();
            assert_eq!(WorkspaceRecord::from_json(&json).as_ref(), Ok(&w));
            let view = serde_json::to_string(&w.public_view()).unwrap_or_default();
            for k in &w.keys {
                assert!(
                    !view.contains(&k.key_hash),
                    "the admin view shows a key hash"
                );
            }
        }
        Err(e) => assert_corrupt(&e),
    }
    accepted
}

fn check_workspace(w: &WorkspaceRecord) {
    assert!(!w.senders.is_empty() && w.senders.len() <= 50);
    assert!(w.senders.iter().all(|s| validate::is_sender_name(s)));
    assert!(!w.name.trim().is_empty());
    check_policy(&w.policy);
    let json = w.to_json();
    match WorkspaceRecord::from_json(&json) {
        Ok(back) => assert_eq!(&back, w),
        Err(e) => panic!("a workspace the admin API made does not read back ({e}): {json}"),
    }
}

fn check_policy(p: &Policy) {
    assert!(p.check().is_ok());
    assert!((6..=10).contains(&p.code_length));
    assert!((60..=600).contains(&p.ttl_seconds));
    assert!((1..=10).contains(&p.max_attempts));
    assert!((1..=100).contains(&p.sends_per_destination.limit));
    assert!((60..=86_400).contains(&p.sends_per_destination.window_seconds));
    assert!((5..=1000).contains(&p.failure_streak_limit));
    assert!(p.retention_seconds <= 2_592_000);
    // The price multiplies exactly: `amount × 1` is the amount itself (without leading zeros).
    let amount = &p.price_per_segment.amount;
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let int = int.trim_start_matches('0');
    let int = if int.is_empty() { "0" } else { int };
    let plain = if frac.is_empty() {
        int.to_string()
    } else {
        format!("{int}.{frac}")
    };
    assert_eq!(analytics::times(amount, 1), plain);
    // A policy the API accepted is accepted again as a patch of itself.
    match serde_json::to_value(p) {
        Ok(v) => assert_eq!(Policy::default().patched(&v).as_ref(), Ok(p)),
        Err(e) => panic!("policy does not serialise: {e}"),
    }
}

// ---------------------------------------------------------------------------------------------
// routes and query strings
// ---------------------------------------------------------------------------------------------

/// `METHOD path?query`: the route, then the query pairs through the analytics and audit
/// parsers; every value also through the RFC 3339 parser and the analytics key parsers.
pub fn query(data: &[u8]) -> bool {
    let s = String::from_utf8_lossy(data);
    let (method, target) = s.split_once(' ').unwrap_or(("GET", &s));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    match match_route(method, path) {
        Ok(route) => {
            let get_only = matches!(
                route,
                Route::Health
                    | Route::OpenApi
                    | Route::Status(..)
                    | Route::Audit
                    | Route::Analytics
            );
            assert!(method != "HEAD" || get_only);
            match route {
                Route::Status(_, id)
                | Route::PatchWorkspace(id)
                | Route::CreateKey(id)
                | Route::Verify(_, Some(id)) => {
                    assert!(path.contains(id) && !id.contains('/'));
                }
                Route::RevokeKey(a, b) | Route::UnblockPrefix(a, b) => {
                    assert!(!a.contains('/') && !b.contains('/'));
                }
                Route::GetFraud(id) => assert!(path.contains(id) && !id.contains('/')),
                _ => {}
            }
        }
        Err(e) => assert!(
            matches!(e, Error::NotFound | Error::MethodNotAllowed),
            "{e}"
        ),
    }
    let pairs: Vec<(&str, &str)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| p.split_once('=').unwrap_or((p, "")))
        .collect();
    let now = UnixMillis(T0);
    let mut accepted = false;
    match AnalyticsQuery::from_pairs(pairs.iter().copied()) {
        Ok(q) => {
            accepted = true;
            assert!((1..=90).contains(&q.days));
            assert!(q
                .app
                .as_deref()
                .is_none_or(|a| !a.is_empty() && validate::app("app", a).is_ok()));
            assert!(q.first_day(now) <= analytics::day_of(now));
        }
        Err(e) => assert_validation(&e),
    }
    match AuditQuery::from_pairs(pairs.iter().copied()) {
        Ok(q) => {
            accepted = true;
            assert!((1..=500).contains(&q.limit));
            if let Some(id) = &q.session_id {
                assert_eq!(validate::normalize_session_id(id).as_ref(), Some(id));
            }
        }
        Err(e) => assert_validation(&e),
    }
    for (k, v) in &pairs {
        for text in [k, v] {
            if let Some(t) = UnixMillis::parse_rfc3339(text) {
                let again = t.to_rfc3339();
                assert_eq!(
                    UnixMillis::parse_rfc3339(&again),
                    Some(t),
                    "{text:?} → {again}"
                );
            }
            if let Some(b) = analytics::parse_open_member(text) {
                assert_eq!(Bucket::parse(b.day, &b.key()), Some(b));
            }
            let _ = analytics::times(text, 3);
        }
    }
    accepted
}
