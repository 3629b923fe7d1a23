//! otpkit for Node.js: otpkit-core's pure operations through Node-API, a thread-safe in-memory
//! store, the Redis store (redis-rs: its flows' steps, key lookups and their cache, sweep and
//! reads), the gateway's HTTP client and `otpkit serve`'s HTTP server. The npm package's
//! JavaScript (`lib/`) holds the service API and the flows' driver for the library's calls and
//! `handle()`; `otpkit serve`'s OTP routes are driven here (`service`). Every rule those need is
//! a function here, so no rule of SPEC is written twice.
//!
//! Conventions at this boundary:
//! - Errors are thrown as `Error` whose message is `OTPKIT:` + JSON `{code, httpStatus, message,
//!   field?, retryAfterSeconds?, body}`; `lib/errors.js` turns them into `OtpError`. `body` is the
//!   core's error envelope, so an HTTP host answers it byte for byte like the Worker.
//! - Times are Unix milliseconds as JS numbers.
//! - Stored state crosses as the core's versioned JSON (`"v": 1`).
//!
//! | module | what |
//! |---|---|
//! | `flow` | the core's request, verify, status and admin flows (`poll` / `handle` / `runMemory`) |
//! | `engine` | `Engine`: the pepper; verifies codes on stored JSON |
//! | `workspace` | `Workspace`: a tenant's senders, policy and keys |
//! | `memory` | `MemoryStore`: the in-memory store, every effect atomic under one lock |
//! | `idempotency` | `Idempotency-Key` records: the core's claim, finish and release on stored JSON (Redis) |
//! | `redis` | the JSON transitions of the Redis store's compare-and-set steps |
//! | `redis_store` | `RedisCore`: the Redis store in Rust (redis-rs, one Redis or a Cluster): flows a whole segment at a time (`runRedis`), key lookups, sweep, the reports' reads |
//! | `key_cache` | the Redis store's API-key cache, kept exact by `CLIENT TRACKING` (RESP3 pushes) |
//! | `ops` | the store operations both stores apply, written once over typed state |
//! | `http` | routing, checks before the body, authentication, non-flow answers (`Reply`) |
//! | `reports` | audit and analytics: queries, pages, reports from a store's raw rows |
//! | `gateway` | the gateway's HTTP request, encoded by the core |
//! | `inflight` | a flow run's send from Rust and its wait for another request's send, for both stores |
//! | `send` | that request sent (reqwest + rustls on napi's tokio runtime); the delivery outcome |
//! | `service` | the OTP routes answered in Rust for `otpkit serve` (authentication, the route's flow on the store, the gateway) |
//! | `serve` | `otpkit serve`'s HTTP server: hyper on the tokio runtime, each request answered by the JavaScript service |
//! | `errors` | core errors thrown as JS errors; host-side error codes |

/// The addon's allocations go through mimalloc: the memory store's sessions are written from the
/// runtime's threads and the JavaScript thread alike, and the system allocator's per-thread
/// arenas left them spread thin (RSS a live session and CPU in BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod engine;
mod errors;
mod flow;
mod gateway;
mod http;
mod idempotency;
mod inflight;
mod key_cache;
mod log;
mod memory;
mod ops;
mod redis;
mod redis_store;
mod reports;
mod send;
mod serve;
mod service;
mod workspace;

use crate::errors::throw;
use napi::Result;
use otpkit_core::http::request::Dialect;
use otpkit_core::{Error, Purpose, UnixMillis};

/// Worker threads of the tokio runtime that serves `otpkit serve`'s connections and sends to
/// the gateway: `OTPKIT_THREADS` when set (1–256), else one fewer than the CPUs (at least one),
/// since the JavaScript thread is busy on its own core. Measured on 2 cores (BENCHMARKS.md
/// "otpkit serve on hyper"): 2 workers cost 25 % more CPU per pair than 1 and served fewer pairs.
fn worker_threads() -> usize {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    std::env::var("OTPKIT_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|n| (1..=256).contains(n))
        .unwrap_or_else(|| cpus.saturating_sub(1).max(1))
}

#[napi_derive::module_init]
fn init() {
    if let Ok(rt) = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads())
        .thread_name("otpkit")
        .enable_all()
        .build()
    {
        napi::bindgen_prelude::create_custom_tokio_runtime(rt);
    }
}

/// A JS time (ms) as the core's.
pub(crate) fn ms(now: f64) -> UnixMillis {
    // JS numbers are exact up to 2^53 ms; negative or NaN clock values become 0.
    UnixMillis(if now.is_finite() && now > 0.0 {
        now as u64
    } else {
        0
    })
}

/// A core time as a JS number (ms).
pub(crate) fn num(t: UnixMillis) -> f64 {
    t.0 as f64
}

/// Bytes from the OS CSPRNG, for the core's `Entropy` (codes, ids, keys).
pub(crate) fn random<const N: usize>() -> Result<[u8; N]> {
    let mut buf = [0u8; N];
    getrandom::fill(&mut buf).map_err(|_| {
        throw(&Error::Misconfigured {
            message: "no CSPRNG available".into(),
        })
    })?;
    Ok(buf)
}

/// `v1` or `zend`.
fn dialect(name: &str) -> Result<Dialect> {
    match name {
        "v1" => Ok(Dialect::V1),
        "zend" => Ok(Dialect::Zend),
        _ => Err(throw(&Error::invalid("dialect", "must be v1 or zend"))),
    }
}

/// A purpose by name (`LOGIN`, …).
fn purpose(name: &str) -> Result<Purpose> {
    Purpose::parse(name).ok_or_else(|| throw(&Error::invalid("purpose", "is not a purpose")))
}
