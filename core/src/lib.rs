//! # otpkit-core
//!
//! Every rule of otpkit's behaviour contract (`SPEC.md`) as pure, deterministic Rust.
//!
//! The core does no IO: time comes in as [`UnixMillis`], randomness as bytes the host drew
//! from its CSPRNG ([`Entropy`]), and every state change is returned as a value for the host
//! to store. Both hosts (the Cloudflare Worker and the Node binding) call the same functions
//! and send the same bytes back, so they answer alike.
//!
//! | module | what |
//! |---|---|
//! | [`analytics`] | what events add to daily counters, the analytics query and its answer |
//! | [`audit`] | audit events, audit queries and their answer |
//! | [`error`] | [`Error`]: malformed input or configuration, with a stable `code()` and `http_status()` |
//! | [`validate`] | E.164, sender names, purposes, channels, apps, ids, codes |
//! | [`policy`] | workspace policy with defaults, bounds and PATCH merging |
//! | [`secret`] | the pepper and the code, with redacted `Debug` |
//! | [`hash`] | `HMAC-SHA256(pepper, "otpkit/v1" ‖ f(ws) ‖ f(id) ‖ f(purpose) ‖ f(code))` |
//! | [`code`] | uniform code digits from host bytes, session ids, API keys |
//! | [`session`] | the session state machine: issue, verify, reuse, status view |
//! | [`flow`] | the request, verify, status and admin flows as sans-IO state machines |
//! | [`gateway`] | gateway HTTP requests (json, twilio) encoded as values, replies classified |
//! | [`guard`] | the per-destination guard: send window, failure streak, active session per purpose |
//! | [`spend`] | the daily spend cap: what a send costs, the per-workspace per-day counter |
//! | [`template`] | template checks, rendering and SMS segment counting |
//! | [`http`] | the HTTP surface both hosts share, in four modules: |
//! | [`http::route`] | which route a method and path name (404, 405 and `HEAD` alike on both hosts) |
//! | [`http::request`] | parsing request bodies of both dialects into typed values |
//! | [`http::envelope`] | response bodies of both dialects, byte for byte |
//! | [`http::openapi`] | the OpenAPI 3.1 document both hosts serve |
//! | [`idempotency`] | `Idempotency-Key`: key check and hash, request fingerprint, stored record, claim decisions |
//! | [`workspace`] | the stored workspace record, API key hashing, admin bodies |
//! | [`time`] | [`UnixMillis`] and RFC 3339 |
#![no_std]
#![forbid(unsafe_code)]
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing,
        clippy::arithmetic_side_effects
    )
)]

extern crate alloc;

pub mod analytics;
pub mod audit;
pub mod code;
pub mod delivery;
pub mod error;
pub mod flow;
pub mod fraud;
pub mod gateway;
pub mod guard;
pub mod hash;
pub mod http;
pub mod idempotency;
pub mod log;
pub mod policy;
pub mod secret;
pub mod session;
pub mod spend;
pub mod template;
pub mod time;
pub mod transaction;
pub mod validate;
pub mod workspace;

mod json;

pub use code::Entropy;
pub use error::Error;
pub use guard::{Admission, DeliveryOutcome, DestinationGuard};
pub use http::envelope::Reply;
pub use http::request::{IssueRequest, VerifyRequest};
pub use policy::Policy;
pub use secret::{Code, Pepper};
pub use session::{Session, SessionState, SessionView, Verification, VerifyOutcome};
pub use time::UnixMillis;
pub use validate::{Channel, Purpose};

/// The version tag written into every stored JSON value (`"v": 1`).
pub const STATE_VERSION: u8 = 1;
