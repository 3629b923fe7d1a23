//! Each export runs one core operation `n` times inside wasm and returns a checksum, so what
//! Node times is the operation, not the JS↔wasm boundary. `verify_once` is one call per
//! verification, to show what the boundary adds.
use otpkit_core::session::plan_issue;
use otpkit_core::{http::envelope, hash, template, Entropy, IssueRequest, Pepper, Policy, Purpose, Session, UnixMillis};
use std::cell::RefCell;
use wasm_bindgen::prelude::*;

const BODY: &[u8] = br#"{"dest":"+233202007745","src":"ZECKTA","purpose":"LOGIN"}"#;
const NOW: UnixMillis = UnixMillis(1_763_800_000_000);

struct Fixture {
    pepper: Pepper,
    policy: Policy,
    senders: Vec<String>,
    entropy: Entropy,
    session: Session,
    right: String,
}

thread_local! {
    static FIX: RefCell<Option<Fixture>> = const { RefCell::new(None) };
}

fn with<T>(f: impl FnOnce(&Fixture) -> T) -> T {
    FIX.with(|cell| {
        let mut slot = cell.borrow_mut();
        let fix = slot.get_or_insert_with(|| {
            let pepper = Pepper::new(b"0123456789abcdef0123456789abcdef").expect("pepper");
            let mut bytes = [0u8; 48];
            for (i, b) in bytes.iter_mut().enumerate() {
                *b = i as u8;
            }
            let entropy = Entropy::from_bytes(&bytes);
            let policy = Policy::default();
            let senders = vec!["ZECKTA".to_string()];
            let req = IssueRequest::from_v1_json(BODY).expect("request");
            let plan = plan_issue(&req, "ws_bench", &senders, &policy, NOW, &entropy, &pepper).expect("plan");
            let right = plan.code.expose().to_string();
            Fixture { pepper, policy, senders, entropy, session: plan.session, right }
        });
        f(fix)
    })
}

#[wasm_bindgen]
pub fn hash_n(n: u32) -> u32 {
    with(|f| (0..n).map(|i| u32::from(hash::code_hash(&f.pepper, "ws_bench", &f.session.id, Purpose::Login, if i % 2 == 0 { "123456" } else { "654321" })[0])).sum())
}

#[wasm_bindgen]
pub fn issue_n(n: u32) -> u32 {
    with(|f| {
        (0..n)
            .map(|_| {
                let req = IssueRequest::from_v1_json(BODY).expect("request");
                plan_issue(&req, "ws_bench", &f.senders, &f.policy, NOW, &f.entropy, &f.pepper).expect("plan").session.code_hash.len() as u32
            })
            .sum()
    })
}

fn verify_n(n: u32, right: bool) -> u32 {
    with(|f| {
        let code = if right { f.right.as_str() } else { "000000" };
        (0..n).map(|_| u32::from(f.session.clone().verify("ws_bench", code, NOW, &f.pepper).0.attempts_left)).sum()
    })
}

#[wasm_bindgen]
pub fn verify_right_n(n: u32) -> u32 {
    verify_n(n, true)
}

#[wasm_bindgen]
pub fn verify_wrong_n(n: u32) -> u32 {
    verify_n(n, false)
}

#[wasm_bindgen]
pub fn clone_n(n: u32) -> u32 {
    with(|f| (0..n).map(|_| f.session.clone().attempts_used as u32 + 1).sum())
}

#[wasm_bindgen]
pub fn render_segments_n(n: u32) -> u32 {
    (0..n)
        .map(|_| template::render("messageTemplate", template::DEFAULT_TEMPLATE, "123456", 300, None, Purpose::Login).expect("render").info.segments)
        .sum()
}

#[wasm_bindgen]
pub fn envelope_verify_n(n: u32) -> u32 {
    with(|f| {
        let (v, _) = f.session.clone().verify("ws_bench", &f.right, NOW, &f.pepper);
        (0..n).map(|_| envelope::v1_verify(&f.session.id, &v).body.len() as u32).sum()
    })
}

/// One verification per call (the JS↔wasm boundary included).
#[wasm_bindgen]
pub fn verify_once(code: &str) -> u32 {
    with(|f| u32::from(f.session.clone().verify("ws_bench", code, NOW, &f.pepper).0.attempts_left))
}
