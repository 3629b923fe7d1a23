//! Core operations, native. `scripts/bench-core` runs this and the same operations as wasm in
//! Node (bench/wasm-core) and writes the table into BENCHMARKS.md.
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use otpkit_core::session::plan_issue;
use otpkit_core::{
    hash, http::envelope, template, Entropy, IssueRequest, Pepper, Policy, Purpose, UnixMillis,
};

const BODY: &[u8] = br#"{"dest":"+233202007745","src":"ZECKTA","purpose":"LOGIN"}"#;

fn setup() -> (Pepper, Policy, Vec<String>, Entropy) {
    let pepper = Pepper::new(b"0123456789abcdef0123456789abcdef").expect("pepper");
    let mut bytes = [0u8; 48];
    for (i, b) in bytes.iter_mut().enumerate() {
        *b = i as u8;
    }
    (
        pepper,
        Policy::default(),
        vec!["ZECKTA".to_string()],
        Entropy::from_bytes(&bytes),
    )
}

fn benches(c: &mut Criterion) {
    let (pepper, policy, senders, entropy) = setup();
    let now = UnixMillis(1_763_800_000_000);
    let req = IssueRequest::from_v1_json(BODY).expect("request");
    let plan =
        plan_issue(&req, "ws_bench", &senders, &policy, now, &entropy, &pepper).expect("plan");
    let right = plan.code.expose().to_string();
    let session = plan.session;

    c.bench_function("hash", |b| {
        b.iter(|| {
            hash::code_hash(
                &pepper,
                black_box("ws_bench"),
                black_box(&session.id),
                Purpose::Login,
                black_box("123456"),
            )
        })
    });
    c.bench_function("issue", |b| {
        b.iter(|| {
            let req = IssueRequest::from_v1_json(black_box(BODY)).expect("request");
            plan_issue(&req, "ws_bench", &senders, &policy, now, &entropy, &pepper).expect("plan")
        })
    });
    c.bench_function("verify_right", |b| {
        b.iter(|| {
            session
                .clone()
                .verify("ws_bench", black_box(&right), now, &pepper)
        })
    });
    c.bench_function("session_clone", |b| b.iter(|| black_box(&session).clone()));
    c.bench_function("verify_wrong", |b| {
        b.iter(|| {
            session
                .clone()
                .verify("ws_bench", black_box("000000"), now, &pepper)
        })
    });
    c.bench_function("render_segments", |b| {
        b.iter(|| {
            template::render(
                "messageTemplate",
                template::DEFAULT_TEMPLATE,
                black_box("123456"),
                300,
                None,
                Purpose::Login,
                None,
            )
        })
    });
    let (v, _) = session.clone().verify("ws_bench", &right, now, &pepper);
    c.bench_function("envelope_verify", |b| {
        b.iter(|| envelope::v1_verify(black_box(&session.id), black_box(&v)))
    });
}

criterion_group!(core, benches);
criterion_main!(core);
