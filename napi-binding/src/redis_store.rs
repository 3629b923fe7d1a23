//! The Redis store in Rust, behind `lib/redis-store.js`: every command it sends. The flows of
//! requests, verifies, resends, cancels, receipts and the admin routes run here between the
//! driver's own steps ([`RedisCore::run`], or one effect at a time by [`RedisCore::perform`]):
//! each effect is read, decided (otpkit-core, through [`crate::redis`], [`crate::idempotency`]
//! and the engine) and written with the Lua scripts of `lib/redis/` (given by the JavaScript
//! loader, run by EVALSHA). The API-key lookups (with their cache, [`crate::key_cache`]), the
//! sweep and the reports' reads are here too. One connection: one Redis (`ConnectionManager`,
//! which reconnects by itself) or a Redis Cluster (the cluster client, which follows the slots).
//!
//! Every value that changes is stored as `<version>|<JSON>` and written by a compare-and-set.
//! Key layout ([`Keys`]): `<prefix><kind>:<a>[:<b>]`; on a Cluster the keys one script touches
//! together carry their workspace's hash tag (`ws:{<id>}`), while guards (`g:<ws>:<dest>`) and
//! sessions (`s:<ws>:<id>`) hash on their own, so one busy workspace spreads over every shard.

use crate::engine::Engine;
use crate::errors::{throw, throw_caused};
use crate::flow::{outcome, step_json, Lent};
use crate::inflight::{self, now_ms, Inflight};
use crate::key_cache::{KeyCache, Refused, TrackTarget};
use crate::send::{Gateway, NativeGateway};
use crate::workspace::Workspace;
use crate::{ms, redis as steps};
use napi::bindgen_prelude::PromiseRaw;
use napi::threadsafe_function::{ThreadsafeFunction, ThreadsafeFunctionCallMode};
use napi::{Env, Result, Status};
use napi_derive::napi;
use otpkit_core::flow::{Flow, Io, Outcome, ResendStep, Step};
use otpkit_core::{Error, Session};
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisFuture, Script, ScriptInvocation, Value};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Compare-and-set tries before a step gives up (`STORE_UNAVAILABLE`).
const MAX_TRIES: usize = 500;
/// A session key outlives its purge time by this much, so the sweeper finds it.
const PURGE_GRACE_MS: u64 = 3600 * 1000;
/// otpkit-core's flood shield window, and how long its hash is kept.
const FLOOD_WINDOW_MS: u64 = 60_000;
const FLOOD_KEEP_MS: u64 = 120_000;
/// otpkit-core's spend counter counts UTC days.
const DAY_MS: u64 = 86_400_000;
/// Connecting, and waiting for an answer: past these a step fails (`STORE_UNAVAILABLE`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

/// A connection to one Redis or to a Redis Cluster (both cheap to clone: one multiplexed pipe).
#[derive(Clone)]
enum Conn {
    One(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::One(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }
    fn req_packed_commands<'a>(
        &'a mut self,
        cmd: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::One(c) => c.req_packed_commands(cmd, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(cmd, offset, count),
        }
    }
    fn get_db(&self) -> i64 {
        match self {
            Conn::One(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

/// The scripts of `lib/redis/`, each with the fragments it needs (resolved by the loader).
struct Scripts {
    cas: Script,
    admit: Script,
    charge: Script,
    confirm: Script,
    verify_write: Script,
    record: Script,
    resend_write: Script,
    refund_spend: Script,
    fraud_verified: Script,
    read_fraud: Script,
    unblock_prefix: Script,
    put_workspace: Script,
    put_record_only: Script,
    lookup_session: Script,
    sweep: Script,
    audit_lists: Script,
}

/// Key names: a key in a workspace's slot carries its hash tag on a Cluster (see the module doc).
struct Keys {
    prefix: String,
    cluster: bool,
}

impl Keys {
    fn key(&self, kind: &str, a: &str) -> String {
        format!("{}{kind}:{a}", self.prefix)
    }
    fn key2(&self, kind: &str, a: &str, b: &str) -> String {
        format!("{}{kind}:{a}:{b}", self.prefix)
    }
    /// A key in the workspace's slot: a hash tag on a Cluster.
    fn ws(&self, kind: &str, ws: &str) -> String {
        if self.cluster {
            format!("{}{kind}:{{{ws}}}", self.prefix)
        } else {
            self.key(kind, ws)
        }
    }
    fn ws2(&self, kind: &str, ws: &str, b: &str) -> String {
        format!("{}:{b}", self.ws(kind, ws))
    }
    fn seq(&self, ws: &str) -> String {
        if self.cluster {
            self.ws("aseq", ws)
        } else {
            self.key("aseq", "all")
        }
    }
    fn guard(&self, ws: &str, dest: &str) -> String {
        self.key2("g", ws, dest)
    }
    fn session(&self, ws: &str, id: &str) -> String {
        self.key2("s", ws, id)
    }
}

/// What one request's steps carry to the next (`lib/redis-store.js`'s `ctx`): the session read
/// with the API key, and the value a step left in the guard or the idempotency record, so the
/// next step decides on it without reading it again. `None`: not known (read it).
#[derive(Default)]
struct Carried {
    session: Option<Option<String>>,
    guard: Option<Option<String>>,
    idem: Option<Option<String>>,
}

/// The steps of one request on the Redis store (one per flow driven).
#[napi]
#[derive(Default)]
pub struct RedisSteps {
    carried: Arc<Mutex<Carried>>,
}

impl std::fmt::Debug for RedisSteps {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSteps").finish_non_exhaustive()
    }
}

#[napi]
impl RedisSteps {
    #[napi(constructor)]
    pub fn new() -> Self {
        Self::default()
    }
}

impl RedisSteps {
    /// The session's stored value read with the API key (`None`: there is none), for the
    /// flow's next read or verify of it (`FlowService`).
    pub(crate) fn prefetch(&self, value: Option<String>) {
        if let Ok(mut c) = self.carried.lock() {
            c.session = Some(value);
        }
    }
}

/// A step's end, handed to JavaScript: `ok` with the outcome JSON, or the error's message (an
/// `OTPKIT:` error `lib/errors.js` reads). For a flow run ([`RedisCore::run`]): `text` is the
/// flow's step (JSON) and `drained` says the flow is done after its answer; `failed` and
/// `timed` are its store effects that failed and, when asked, how long each took.
#[napi(object)]
#[derive(Debug)]
pub struct Finished {
    /// The id [`RedisCore::perform`] or [`RedisCore::run`] was given.
    pub id: u32,
    /// Whether `text` is the outcome (else the error).
    pub ok: bool,
    /// The outcome JSON or the error message.
    pub text: String,
    /// A flow run: what follows its answer is done.
    pub drained: bool,
    /// A flow run: `[effect, error code, cause, …]` of each store effect that failed (the cause:
    /// Redis's word, or the socket's condition; see `cause_word`).
    pub failed: Vec<String>,
    /// A flow run asked to time its effects: `[effect, seconds, …]`.
    pub timed: Vec<String>,
    /// A flow run that sent through a built-in gateway: `[channel, gateway kind, outcome,
    /// seconds, HTTP status or "", destination, session id, started at (ms), …]` of each send.
    pub sent: Vec<String>,
}

/// Where every step's end goes: one threadsafe function for all of them (one made per promise
/// would cost more than most steps). It keeps Node's event loop alive only while steps are in
/// flight ([`RedisCore::hold`]), as a connection with commands pending does.
type DoneFn = ThreadsafeFunction<Finished, (), Finished, Status, false, true>;

/// Called with a store failure's code when a receipt index write fails (it fails nothing else).
/// Weak: it does not keep Node's event loop alive.
type FailureLog = ThreadsafeFunction<String, (), String, Status, false, true>;

/// A Redis refused the key cache's tracking (so nothing is cached): the node and Redis's error
/// word, once per pair.
#[napi(object)]
#[derive(Debug)]
pub struct KeyCacheRefusal {
    /// `host:port`.
    pub node: String,
    /// Redis's error word (`NOPERM`, `ERR`, …).
    pub cause: String,
}

/// Where a [`KeyCacheRefusal`] goes. Weak, as [`FailureLog`].
type RefusalLog = ThreadsafeFunction<KeyCacheRefusal, (), KeyCacheRefusal, Status, false, true>;

struct Shared {
    keys: Keys,
    audit_keep: u32,
    /// The Fraud Guard count's fields, in the order the scripts store them (`fraud.lua`).
    fraud_fields: Vec<String>,
    scripts: Scripts,
    target: Target,
    conn: Mutex<Option<Conn>>,
    connecting: tokio::sync::Mutex<()>,
    closed: AtomicBool,
    on_index_failure: Option<FailureLog>,
    done: Mutex<Option<DoneFn>>,
    /// API key hash → workspace record, kept by Redis's invalidations (none: `keyCache: false`).
    key_cache: Option<Arc<KeyCache>>,
    /// Session id → how its send ended (`None` while in flight), for the requests of this
    /// process that wait for it ([`Shared::await_send`]).
    inflight: Inflight,
    /// Sessions as this process last stored them (see [`SessionCache`]).
    sessions: Mutex<SessionCache>,
}

/// The sessions this process stored or last wrote, as stored (`<version>|<JSON>`), so that a
/// verify on this process decides on the value it knows and writes at once (one round trip: the
/// compare-and-set, which compares the whole value, so a stale entry only costs the read it
/// saved). Two generations of at most [`SESSION_CACHE`] entries each: when the newer one is full
/// it becomes the older and the older is dropped.
#[derive(Default)]
struct SessionCache {
    new: HashMap<String, String>,
    old: HashMap<String, String>,
}

/// Entries of a [`SessionCache`] generation (about 0.5 KiB each).
const SESSION_CACHE: usize = 8192;

impl SessionCache {
    fn put(&mut self, key: String, raw: String) {
        if self.new.len() >= SESSION_CACHE {
            self.old = std::mem::take(&mut self.new);
        }
        self.old.remove(&key);
        self.new.insert(key, raw);
    }

    fn take(&mut self, key: &str) -> Option<String> {
        self.new.remove(key).or_else(|| self.old.remove(key))
    }
}

enum Target {
    Url(String),
    Nodes(Vec<String>),
}

/// How the JavaScript store configures [`RedisCore`].
#[napi(object, object_to_js = false)]
#[allow(missing_debug_implementations)] // its URL can hold a password
pub struct RedisCoreOptions {
    /// One Redis: its URL.
    pub url: Option<String>,
    /// A Redis Cluster: its start nodes, `host:port`.
    pub nodes: Option<Vec<String>>,
    /// Key prefix.
    pub prefix: String,
    /// Audit events kept per workspace in each list.
    pub audit_keep: u32,
    /// Script name → text (`cas`, `admit`, `charge`, `confirm`, `verifyWrite`, `record`,
    /// `resendWrite`, `refundSpend`, `fraudVerified`, `readFraud`, `unblockPrefix`,
    /// `putWorkspace`, `putRecordOnly`, `lookupSession`, `sweep`, `auditLists`).
    pub scripts: HashMap<String, String>,
    /// The Fraud Guard count's fields in the order `fraud.lua` stores them.
    pub fraud_fields: Vec<String>,
    /// Keep API key lookups in this process (`src/key_cache.rs`; default true).
    pub key_cache: Option<bool>,
}

/// The Redis store's flow steps (see the module documentation).
#[napi]
pub struct RedisCore {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for RedisCore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisCore")
            .field("cluster", &self.shared.keys.cluster)
            .finish_non_exhaustive()
    }
}

fn unavailable() -> napi::Error {
    throw(&Error::StoreUnavailable)
}

fn misconfigured(message: &str) -> napi::Error {
    throw(&Error::Misconfigured {
        message: message.to_string().into(),
    })
}

/// A Redis error as the store's: a reply that says the connection does not match the deployment
/// is `MISCONFIGURED` (a plain connection redirected by a Cluster node, a script whose keys span
/// slots); anything else is an outage (`STORE_UNAVAILABLE`), including a Cluster client that gave
/// up following redirections while a node fails over.
fn store_error(cluster: bool, e: &redis::RedisError) -> napi::Error {
    let text = e.to_string();
    let crossslot = matches!(e.kind(), ErrorKind::CrossSlot) || text.contains("CROSSSLOT");
    if cluster && crossslot {
        return misconfigured("a Redis Cluster refused a step of this store because its keys span slots (CROSSSLOT): a key prefix or client that does not match this store");
    }
    let redirected = matches!(e.kind(), ErrorKind::Moved | ErrorKind::Ask)
        || text.contains("cluster support disabled");
    if !cluster && (redirected || crossslot) {
        return misconfigured("Redis answered with a cluster redirection: REDIS_URL names a Redis Cluster node; set REDIS_CLUSTER_NODES");
    }
    throw_caused(&Error::StoreUnavailable, &cause_word(e))
}

/// What went wrong in one word, for the store-failure log line: a Redis reply's first word
/// (`READONLY`, `NOSCRIPT`, `CLUSTERDOWN`, …), the socket's condition as Node names it
/// (`ECONNREFUSED`, `ETIMEDOUT`, `ECONNRESET`), else the client's kind of error.
fn cause_word(e: &redis::RedisError) -> String {
    if let Some(code) = e.code() {
        return code.to_string();
    }
    if e.is_connection_refusal() {
        "ECONNREFUSED".into()
    } else if e.is_timeout() {
        "ETIMEDOUT".into()
    } else if e.is_connection_dropped() || e.is_unrecoverable_error() {
        "ECONNRESET".into()
    } else {
        format!("{:?}", e.kind())
    }
}

/// `<version>|<JSON>` → (version, JSON); (0, None) when absent.
fn split(raw: Option<&str>) -> (u64, Option<&str>) {
    match raw.and_then(|r| r.split_once('|')) {
        Some((v, json)) => (v.parse().unwrap_or(0), Some(json)),
        None => (0, None),
    }
}

/// The CAS scripts' keep argument: `-1` keeps the key's TTL; at least 1 s otherwise.
fn keep_arg(keep_ms: Option<f64>) -> String {
    match keep_ms {
        None => "-1".into(),
        Some(k) => (k.ceil().max(1000.0) as u64).to_string(),
    }
}

fn text(v: &Value) -> Option<String> {
    match v {
        Value::BulkString(b) => Some(String::from_utf8_lossy(b).into_owned()),
        Value::SimpleString(s) => Some(s.clone()),
        Value::Int(n) => Some(n.to_string()),
        _ => None,
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Int(n) => Some(*n),
        Value::BulkString(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        _ => None,
    }
}

/// A `{written, value}` reply (CAS, VERIFY_WRITE): the flag and the value it carries.
fn pair(v: &Value) -> (i64, Option<String>) {
    match v {
        Value::Array(items) => (
            items.first().and_then(int).unwrap_or(0),
            items.get(1).and_then(text),
        ),
        other => (int(other).unwrap_or(0), None),
    }
}

/// A step's write at one key: the state (None deletes), how long to keep it (None: keep the
/// key's TTL) and whether anything changed.
struct Write {
    state: Option<String>,
    keep_ms: Option<f64>,
    changed: bool,
}

impl From<&steps::GuardStep> for Write {
    fn from(s: &steps::GuardStep) -> Self {
        Write {
            state: s.state.clone(),
            keep_ms: Some(s.keep_ms),
            changed: s.changed,
        }
    }
}

/// A short random pause after a few conflicts, so contenders spread out.
async fn backoff(i: usize) {
    if i > 3 {
        let r = crate::random::<1>().map_or(0, |b| b[0]);
        let max = i.min(20) as u64;
        tokio::time::sleep(Duration::from_micros(u64::from(r) * max * 1000 / 256)).await;
    }
}

const DONE: &str = r#"{"result":"done"}"#;

fn json_str(s: Option<&str>) -> String {
    serde_json::to_string(&s).unwrap_or_else(|_| "null".into())
}

/// A record as stored: without its keys' `lastUsedAt` (kept beside it, never in it).
fn stored_record(ws: &otpkit_core::workspace::WorkspaceRecord) -> String {
    let mut ws = ws.clone();
    ws.clear_last_used();
    ws.to_json()
}

/// READ_FRAUD's flat reply (each prefix, then its count's fields in `fields` order) as the
/// `prefixes` outcome.
fn prefixes_outcome(fields: &[String], flat: &Value) -> String {
    let Value::Array(items) = flat else {
        return r#"{"result":"prefixes","prefixes":[]}"#.into();
    };
    let n = fields.len() + 1;
    let prefixes: Vec<serde_json::Value> = items
        .chunks_exact(n)
        .map(|c| {
            let count: serde_json::Map<String, serde_json::Value> = fields
                .iter()
                .zip(&c[1..])
                .map(|(f, v)| (f.clone(), int(v).unwrap_or(0).into()))
                .collect();
            serde_json::json!([text(&c[0]).unwrap_or_default(), count])
        })
        .collect();
    serde_json::json!({"result": "prefixes", "prefixes": prefixes}).to_string()
}

/// The strings of an array reply (nil and other kinds left out).
fn strings(v: Value) -> Vec<String> {
    match v {
        Value::Array(items) | Value::Set(items) => items.iter().filter_map(text).collect(),
        _ => Vec::new(),
    }
}

/// A HGETALL reply as flat `[field, value, …]` (RESP2 array or RESP3 map).
fn flat_hash(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items.iter().filter_map(text).collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some([text(k)?, text(v)?]))
            .flatten()
            .collect(),
        _ => Vec::new(),
    }
}

impl Shared {
    /// Session `key` is now stored as `raw` (by this process).
    fn remember(&self, key: String, raw: String) {
        if let Ok(mut c) = self.sessions.lock() {
            c.put(key, raw);
        }
    }

    /// Session `key` as this process last wrote it (taken: the write that follows puts it back).
    fn recall(&self, key: &str) -> Option<String> {
        self.sessions.lock().ok()?.take(key)
    }

    /// A compare-and-set wrote `json` over version `ver` of session `key` (`""`: deleted).
    fn written(&self, key: String, ver: u64, json: &str) {
        if !json.is_empty() {
            self.remember(key, format!("{}|{json}", ver + 1));
        }
    }
}

impl Shared {
    async fn open(&self) -> redis::RedisResult<Conn> {
        match &self.target {
            Target::Url(url) => {
                let client = redis::Client::open(url.as_str())?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(CONNECT_TIMEOUT)
                    .set_response_timeout(RESPONSE_TIMEOUT)
                    .set_number_of_retries(1)
                    .set_max_delay(1000);
                Ok(Conn::One(
                    ConnectionManager::new_with_config(client, config).await?,
                ))
            }
            Target::Nodes(nodes) => {
                let urls: Vec<String> = nodes.iter().map(|n| format!("redis://{n}")).collect();
                let client = redis::cluster::ClusterClientBuilder::new(urls)
                    .connection_timeout(CONNECT_TIMEOUT)
                    .response_timeout(RESPONSE_TIMEOUT)
                    .retries(3)
                    .build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// The connection, opened on first use (a failed open is tried again by the next step).
    async fn conn(&self) -> Result<Conn> {
        if self.closed.load(Ordering::Relaxed) {
            return Err(unavailable());
        }
        if let Some(c) = self.conn.lock().map_err(|_| unavailable())?.clone() {
            return Ok(c);
        }
        let _one = self.connecting.lock().await;
        if let Some(c) = self.conn.lock().map_err(|_| unavailable())?.clone() {
            return Ok(c);
        }
        let c = tokio::time::timeout(CONNECT_TIMEOUT * 2, self.open())
            .await
            .map_err(|_| throw_caused(&Error::StoreUnavailable, "ETIMEDOUT"))?
            .map_err(|e| store_error(self.keys.cluster, &e))?;
        *self.conn.lock().map_err(|_| unavailable())? = Some(c.clone());
        Ok(c)
    }

    /// Hands a step's end to JavaScript (nothing after `close()`).
    fn finished(&self, end: Finished) {
        if let Ok(done) = self.done.lock() {
            if let Some(f) = done.as_ref() {
                f.call(end, ThreadsafeFunctionCallMode::NonBlocking);
            }
        }
    }

    fn fail(&self, e: &redis::RedisError) -> napi::Error {
        store_error(self.keys.cluster, e)
    }

    async fn query(&self, cmd: &Cmd) -> Result<Value> {
        let mut c = self.conn().await?;
        cmd.query_async(&mut c).await.map_err(|e| self.fail(&e))
    }

    /// Commands sent together, each answered: one pipeline (one round trip) on one Redis; side
    /// by side on a Cluster, where their keys can be in different slots (a Cluster pipeline's
    /// keys must share one).
    async fn many(&self, cmds: Vec<Cmd>) -> Result<Vec<Value>> {
        if cmds.is_empty() {
            return Ok(Vec::new());
        }
        if self.keys.cluster {
            let each = cmds.iter().map(|c| self.query(c));
            return futures_util::future::join_all(each)
                .await
                .into_iter()
                .collect();
        }
        let mut pipe = redis::pipe();
        for c in cmds {
            pipe.add_command(c);
        }
        let mut c = self.conn().await?;
        pipe.query_async(&mut c).await.map_err(|e| self.fail(&e))
    }

    /// An admin write of a key entry or a record: this process's key cache is emptied before
    /// and after it (other processes hear Redis's invalidation).
    async fn own_write<T>(&self, write: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        let cache = self.key_cache.as_deref();
        cache.inspect(|c| c.drop_all());
        let done = write.await;
        cache.inspect(|c| c.drop_all());
        done
    }

    /// One page of the admin listing: the ids after `cursor` (the last id of the page before;
    /// any string orders) from the index, by id, then their records and key uses (one
    /// pipeline). `next` is the page's last id while more follow.
    async fn list_workspaces(&self, cursor: Option<String>, limit: u32) -> Result<String> {
        let k = &self.keys;
        let from = cursor.map_or_else(|| "-".to_string(), |c| format!("({c}"));
        let ids = strings(
            self.query(
                redis::cmd("ZRANGEBYLEX")
                    .arg(k.key("wsindex", "all"))
                    .arg(from)
                    .arg("+")
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit + 1),
            )
            .await?,
        );
        let page = &ids[..ids.len().min(limit as usize)];
        let mut cmds = Vec::with_capacity(page.len() * 2);
        for id in page {
            cmds.push(redis::cmd("GET").arg(k.ws("ws", id)).to_owned());
            cmds.push(redis::cmd("HGETALL").arg(k.ws("used", id)).to_owned());
        }
        let got = self.many(cmds).await?;
        let shown: Vec<String> = got
            .chunks_exact(2)
            .filter_map(|p| Some(with_last_used(text(&p[0])?, &p[1])))
            .collect();
        let next = (ids.len() > page.len()).then(|| page.last()).flatten();
        Ok(format!(
            r#"{{"result":"workspaces","workspaces":[{}],"next":{}}}"#,
            shown.join(","),
            json_str(next.map(String::as_str))
        ))
    }

    async fn get(&self, key: &str) -> Result<Option<String>> {
        Ok(text(&self.query(redis::cmd("GET").arg(key)).await?))
    }

    async fn run(&self, inv: &ScriptInvocation<'_>) -> Result<Value> {
        let mut c = self.conn().await?;
        inv.invoke_async(&mut c).await.map_err(|e| self.fail(&e))
    }

    /// Read → decide → compare-and-set, again on a conflict (deciding on the value the failed
    /// write found, without a GET). `first`: the key's value already known (`Some(None)`:
    /// absent); `guessed`: that value was guessed, not read, so a decision that writes nothing
    /// is checked by a read first. Answers the decision's extra and the value the key holds
    /// after the step.
    async fn update<T>(
        &self,
        key: &str,
        mut decide: impl FnMut(Option<&str>) -> Result<(Write, T)>,
        first: Option<Option<String>>,
        mut guessed: bool,
    ) -> Result<(T, Option<String>)> {
        let mut known = first;
        for i in 0..MAX_TRIES {
            let given = known.is_some();
            let raw = match known.take() {
                Some(v) => v,
                None => self.get(key).await?,
            };
            let (ver, json) = split(raw.as_deref());
            let (w, extra) = decide(json)?;
            if !w.changed {
                if !guessed {
                    return Ok((extra, raw));
                }
                guessed = false; // decided on a guess: read, and decide again
                continue;
            }
            guessed = false;
            let state = w.state.clone().unwrap_or_default();
            let expect = if given { raw.clone() } else { None };
            let reply = self
                .run(
                    self.scripts
                        .cas
                        .key(key)
                        .arg(ver)
                        .arg(&state)
                        .arg(keep_arg(w.keep_ms))
                        .arg(expect.unwrap_or_default()),
                )
                .await?;
            let (wrote, found) = pair(&reply);
            if wrote == 1 {
                let now = (!state.is_empty()).then(|| format!("{}|{state}", ver + 1));
                return Ok((extra, now));
            }
            known = Some(found);
            backoff(i).await;
        }
        Err(unavailable())
    }
}

/// Everything one effect needs, owned (it runs on the tokio runtime).
struct Job {
    shared: Arc<Shared>,
    ws: Workspace,
    engine: Option<Engine>,
    carried: Arc<Mutex<Carried>>,
    now: f64,
}

impl Job {
    fn take<T>(&self, pick: impl FnOnce(&mut Carried) -> Option<T>) -> Option<T> {
        self.carried.lock().ok().and_then(|mut c| pick(&mut c))
    }
    fn keep(&self, put: impl FnOnce(&mut Carried)) {
        if let Ok(mut c) = self.carried.lock() {
            put(&mut c);
        }
    }
    fn id(&self) -> &str {
        &self.ws.rec.id
    }
    fn now_ms(&self) -> u64 {
        ms(self.now).0
    }

    async fn perform(&self, io: Io) -> Result<String> {
        let s = Arc::clone(&self.shared);
        let k = &s.keys;
        match io {
            Io::ReadSession { session_id } => {
                let raw = match self.take(|c| c.session.take()) {
                    Some(v) => v,
                    None => s.get(&k.session(self.id(), &session_id)).await?,
                };
                let json = split(raw.as_deref()).1.unwrap_or("null");
                Ok(format!(r#"{{"result":"session","session":{json}}}"#))
            }
            Io::Admit {
                dest,
                purpose,
                session_id,
                expires_at,
                test,
                flood_limit,
                spend,
                fraud,
                resend,
            } => {
                let admit = Admit {
                    dest,
                    purpose: purpose.as_str().to_string(),
                    session_id,
                    expires_at: expires_at.0 as f64,
                    test,
                    resend,
                    flood_limit,
                    spend,
                    fraud,
                };
                self.admit(admit).await
            }
            Io::ReadActive { dest, purpose } => {
                let raw = s.get(&k.guard(self.id(), &dest)).await?;
                steps::guard_active(
                    split(raw.as_deref()).1.map(str::to_string),
                    purpose.as_str().to_string(),
                    self.now,
                )
            }
            Io::Forget { dest, session_id } => {
                let (ws, now) = (&self.ws, self.now);
                s.update(
                    &k.guard(self.id(), &dest),
                    |json| {
                        let g = steps::guard_forget(
                            json.map(str::to_string),
                            ws,
                            session_id.clone(),
                            now,
                        )?;
                        Ok((Write::from(&g), ()))
                    },
                    None,
                    false,
                )
                .await?;
                Ok(DONE.into())
            }
            Io::StoreSession { session } => self.store_session(&session).await,
            Io::ReportDelivery {
                dest,
                session_id,
                outcome,
            } => {
                let guess = self.take(|c| c.guard.take());
                let outcome = serde_json::to_value(outcome)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default();
                let (ws, now) = (&self.ws, self.now);
                let (cancel, _) = s
                    .update(
                        &k.guard(self.id(), &dest),
                        |json| {
                            let g = steps::guard_delivery(
                                json.map(str::to_string),
                                ws,
                                session_id.clone(),
                                outcome.clone(),
                                now,
                            )?;
                            Ok((Write::from(&g), g.session_id))
                        },
                        guess,
                        false,
                    )
                    .await?;
                Ok(format!(
                    r#"{{"result":"confirmed","cancel":{}}}"#,
                    json_str(cancel.as_deref())
                ))
            }
            Io::Resend { session_id, step } => self.resend(&session_id, &step).await,
            Io::CancelSession { session_id } => {
                s.update(
                    &k.session(self.id(), &session_id),
                    |json| match json {
                        None => Ok((
                            Write {
                                state: None,
                                keep_ms: None,
                                changed: false,
                            },
                            (),
                        )),
                        Some(j) => Ok((
                            Write {
                                state: Some(steps::cancel_json(j.to_string())?),
                                keep_ms: None,
                                changed: true,
                            },
                            (),
                        )),
                    },
                    None,
                    false,
                )
                .await?;
                Ok(DONE.into())
            }
            Io::RefundSpend { day, micros } => {
                s.run(
                    s.scripts
                        .refund_spend
                        .key(k.ws("sp", self.id()))
                        .arg(day)
                        .arg(micros),
                )
                .await?;
                Ok(DONE.into())
            }
            Io::FraudVerified { prefix, window_ms } => {
                s.run(
                    s.scripts
                        .fraud_verified
                        .key(k.ws2("fr", self.id(), &prefix))
                        .key(k.ws("fx", self.id()))
                        .arg(&prefix)
                        .arg(window_ms)
                        .arg(self.now_ms()),
                )
                .await?;
                Ok(DONE.into())
            }
            Io::Verify {
                session_id,
                code,
                transaction,
            } => {
                let tx = transaction
                    .as_deref()
                    .map(|t| serde_json::to_string(t).unwrap_or_default());
                self.verify(&session_id, &code.0, tx).await
            }
            Io::RecordVerify {
                dest,
                session_id,
                status,
                attempts_left,
            } => {
                let guess = self.take(|c| c.guard.take());
                let (ws, now) = (&self.ws, self.now);
                s.update(
                    &k.guard(self.id(), &dest),
                    |json| {
                        let g = steps::guard_verified(
                            json.map(str::to_string),
                            ws,
                            session_id.clone(),
                            status.clone(),
                            u32::from(attempts_left),
                            now,
                        )?;
                        Ok((Write::from(&g), ()))
                    },
                    guess,
                    false,
                )
                .await?;
                Ok(DONE.into())
            }
            Io::Record { events, deltas } => {
                record(&s, self.id(), &lines_of(&events), &deltas).await?;
                Ok(DONE.into())
            }
            // An admin action or a delivery receipt, in the trail of the workspace it concerns.
            Io::Audit {
                workspace_id,
                events,
                deltas,
            } => {
                record(&s, &workspace_id, &lines_of(&events), &deltas).await?;
                Ok(DONE.into())
            }
            // A record with each key's lastUsedAt, kept beside it (`used:<id>`, which the
            // JavaScript store's touchKey writes).
            Io::ReadWorkspace { workspace_id } => {
                let get = redis::cmd("GET").arg(k.ws("ws", &workspace_id)).to_owned();
                let used = redis::cmd("HGETALL")
                    .arg(k.ws("used", &workspace_id))
                    .to_owned();
                let (json, used) = tokio::try_join!(s.query(&get), s.query(&used))?;
                let json = text(&json).map(|j| with_last_used(j, &used));
                Ok(format!(
                    r#"{{"result":"workspace","workspace":{}}}"#,
                    json.as_deref().unwrap_or("null")
                ))
            }
            Io::FindReceipt { key } => {
                let owner = s.get(&k.key("rcpt", &key)).await?;
                Ok(format!(
                    r#"{{"result":"owner","owner":{}}}"#,
                    json_str(owner.as_deref())
                ))
            }
            Io::ApplyReceipt {
                workspace_id,
                session_id,
                receipt,
            } => {
                let receipt = serde_json::to_string(&receipt).unwrap_or_default();
                let (outcome, _) = s
                    .update(
                        &k.session(&workspace_id, &session_id),
                        |json| {
                            let st = steps::receipt_stored(
                                json.map(str::to_string),
                                workspace_id.clone(),
                                receipt.clone(),
                            )?;
                            let changed = st.write.is_some();
                            Ok((
                                Write {
                                    state: st.write,
                                    keep_ms: None,
                                    changed,
                                },
                                st.outcome,
                            ))
                        },
                        None,
                        false,
                    )
                    .await?;
                Ok(outcome)
            }
            Io::ClaimIdempotency {
                key_hash,
                fingerprint,
            } => {
                let now = self.now;
                let (outcome, after) = s
                    .update(
                        &k.key2("idem", self.id(), &key_hash),
                        |json| {
                            let st = crate::idempotency::idempotency_claim(
                                json.map(str::to_string),
                                fingerprint.clone(),
                                now,
                            )?;
                            let changed = st.changed;
                            Ok((
                                Write {
                                    state: st.state,
                                    keep_ms: st.keep_ms,
                                    changed,
                                },
                                (changed, st.outcome.unwrap_or_default()),
                            ))
                        },
                        Some(None),
                        false,
                    )
                    .await?;
                let (changed, outcome) = outcome;
                self.keep(|c| c.idem = changed.then_some(after));
                Ok(outcome)
            }
            // The first try compares the whole value the claim wrote: no GET.
            Io::FinishIdempotency { key_hash, record } => {
                let done = serde_json::to_string(&record).unwrap_or_default();
                self.end_idempotency(&key_hash, |json| {
                    crate::idempotency::idempotency_finish(json, done.clone())
                })
                .await
            }
            Io::ReleaseIdempotency {
                key_hash,
                claimed_at,
            } => {
                self.end_idempotency(&key_hash, |json| {
                    crate::idempotency::idempotency_release(json, claimed_at.0 as f64)
                })
                .await
            }
            Io::ReadFraud { workspace_id } => {
                let flat = s
                    .run(
                        s.scripts
                            .read_fraud
                            .key(k.ws("fx", &workspace_id))
                            .arg(format!("{}:", k.ws("fr", &workspace_id)))
                            .arg(self.now_ms()),
                    )
                    .await?;
                Ok(prefixes_outcome(&s.fraud_fields, &flat))
            }
            Io::UnblockPrefix {
                workspace_id,
                prefix,
                now,
            } => {
                let was = s
                    .run(
                        s.scripts
                            .unblock_prefix
                            .key(k.ws2("fr", &workspace_id, &prefix))
                            .key(k.ws("fx", &workspace_id))
                            .arg(&prefix)
                            .arg(now.0),
                    )
                    .await?;
                Ok(format!(
                    r#"{{"result":"unblocked","wasBlocked":{}}}"#,
                    int(&was) == Some(1)
                ))
            }
            // Compare-and-set on the record's revision: concurrent admin writes, from any
            // process, never lose one another (the core reads again and re-applies on a
            // conflict). This process's own writes empty its key cache before and after.
            Io::PutWorkspace {
                workspace,
                expected,
            } => {
                let json = stored_record(&workspace);
                let id = workspace.id.clone();
                let record = k.ws("ws", &id);
                let index = k.key("wsindex", "all");
                let expected = expected.map(|e| e.to_string()).unwrap_or_default();
                let written = s
                    .own_write(async {
                        if k.cluster {
                            // The index (another slot) takes the id first: a listed id whose
                            // record never came is skipped, and no record is unlisted.
                            s.query(redis::cmd("ZADD").arg(&index).arg(0).arg(&id))
                                .await?;
                            let mut inv = s.scripts.put_record_only.key(&record);
                            s.run(inv.arg(&json).arg(&expected).arg(&id)).await
                        } else {
                            let mut inv = s.scripts.put_workspace.key(&record);
                            s.run(inv.key(&index).arg(&json).arg(&expected).arg(&id))
                                .await
                        }
                    })
                    .await?;
                Ok(if int(&written) == Some(1) {
                    DONE.into()
                } else {
                    r#"{"result":"conflict"}"#.into()
                })
            }
            Io::IndexKey {
                key_hash,
                workspace_id,
            } => {
                let set = redis::cmd("SET")
                    .arg(k.key("key", &key_hash))
                    .arg(&workspace_id)
                    .to_owned();
                s.own_write(s.query(&set)).await?;
                Ok(DONE.into())
            }
            Io::UnindexKey { key_hash } => {
                let del = redis::cmd("DEL").arg(k.key("key", &key_hash)).to_owned();
                s.own_write(s.query(&del)).await?;
                Ok(DONE.into())
            }
            Io::ListWorkspaces { cursor, limit } => s.list_workspaces(cursor, limit).await,
            // This store keeps no reuse hints: the guard decides every request.
            Io::ReadReuseHint { .. } => Ok(r#"{"result":"reuseHint","sessionId":null}"#.into()),
            Io::PutReuseHint { .. } | Io::DropReuseHint { .. } => Ok(DONE.into()),
            other => Err(throw(&Error::CorruptState {
                message: format!("not a step of the native Redis store: {}", io_name(&other))
                    .into(),
            })),
        }
    }
}

/// A stored workspace record (JSON) with each key's `lastUsedAt` from `used` (HGETALL's
/// `keyId → ms`); as stored when none is known or the record is not JSON.
fn with_last_used(json: String, used: &Value) -> String {
    let pairs: Vec<(String, u64)> = match used {
        Value::Array(items) => items
            .chunks(2)
            .filter_map(|p| Some((text(p.first()?)?, text(p.get(1)?)?.parse().ok()?)))
            .collect(),
        Value::Map(items) => items
            .iter()
            .filter_map(|(k, v)| Some((text(k)?, text(v)?.parse().ok()?)))
            .collect(),
        _ => Vec::new(),
    };
    if pairs.is_empty() {
        return json;
    }
    let Ok(mut ws) = serde_json::from_str::<serde_json::Value>(&json) else {
        return json;
    };
    if let Some(keys) = ws.get_mut("keys").and_then(|k| k.as_array_mut()) {
        for key in keys {
            let id = key
                .get("keyId")
                .and_then(|i| i.as_str())
                .map(str::to_string);
            if let Some(at) = id.and_then(|id| pairs.iter().find(|(k, _)| *k == id).map(|p| p.1)) {
                key["lastUsedAt"] = at.into();
            }
        }
    }
    ws.to_string()
}

/// Audit events as the RECORD script's lines: whether each goes to the repeatable list, and its JSON.
fn lines_of(events: &[otpkit_core::audit::AuditEvent]) -> Vec<(bool, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.is_repeatable(),
                serde_json::to_string(e).unwrap_or_default(),
            )
        })
        .collect()
}

/// A store effect's error as the flow's outcome (`failed`: corrupt for `INTERNAL_ERROR`, with
/// the message for `MISCONFIGURED`), its code and its cause (see [`cause_word`]; the code when
/// none).
fn failed_outcome(e: &napi::Error) -> (String, String, Outcome) {
    let info: serde_json::Value = e
        .reason
        .strip_prefix("OTPKIT:")
        .and_then(|j| serde_json::from_str(j).ok())
        .unwrap_or_default();
    let code = info["code"]
        .as_str()
        .unwrap_or("STORE_UNAVAILABLE")
        .to_string();
    let cause = info["cause"].as_str().unwrap_or(&code).to_string();
    let failed = Outcome::Failed {
        corrupt: code == "INTERNAL_ERROR",
        misconfigured: (code == "MISCONFIGURED")
            .then(|| info["message"].as_str().unwrap_or_default().to_string()),
    };
    (code, cause, failed)
}

fn io_name(io: &Io) -> String {
    serde_json::to_value(io)
        .ok()
        .and_then(|v| v.get("io").and_then(|n| n.as_str().map(str::to_string)))
        .unwrap_or_default()
}

impl Job {
    /// A claimed Idempotency-Key's record finished or released, deciding first on what the
    /// claim wrote.
    async fn end_idempotency(
        &self,
        key_hash: &str,
        decide: impl Fn(Option<String>) -> Result<crate::idempotency::IdempotencyStep>,
    ) -> Result<String> {
        let guess = self.take(|c| c.idem.take());
        self.shared
            .update(
                &self.shared.keys.key2("idem", self.id(), key_hash),
                |json| {
                    let st = decide(json.map(str::to_string))?;
                    let w = Write {
                        state: st.state,
                        keep_ms: st.keep_ms,
                        changed: st.changed,
                    };
                    Ok((w, ()))
                },
                guess,
                false,
            )
            .await?;
        Ok(DONE.into())
    }
}

struct Admit {
    dest: String,
    purpose: String,
    session_id: String,
    expires_at: f64,
    test: bool,
    resend: bool,
    flood_limit: Option<u32>,
    spend: Option<otpkit_core::spend::SpendCharge>,
    fraud: Option<otpkit_core::fraud::FraudCharge>,
}

fn admitted(admission: &str) -> String {
    format!(r#"{{"result":"admitted","admission":{admission}}}"#)
}

impl Job {
    fn decide_admit(&self, a: &Admit, json: Option<&str>) -> Result<steps::GuardStep> {
        steps::guard_admit(
            json.map(str::to_string),
            &self.ws,
            a.purpose.clone(),
            a.session_id.clone(),
            a.expires_at,
            a.test,
            a.resend,
            self.now,
        )
    }

    /// Admits a send at the destination guard; with a flood limit, a spend cap or Fraud
    /// Guard, also charges the workspace in the same script (one Redis) or right after (a
    /// Cluster: the guard's slot, then the workspace's; the flow refunds a refused send).
    async fn admit(&self, a: Admit) -> Result<String> {
        let s = &self.shared;
        let k = &s.keys;
        let guard_key = k.guard(self.id(), &a.dest);
        let charged = a.flood_limit.is_some() || a.spend.is_some() || a.fraud.is_some();
        if !charged || k.cluster {
            // The first try decides on no guard (most sends go to a destination not seen
            // lately): a guard that is there makes the write fail and come back with it.
            let (step, after) = s
                .update(
                    &guard_key,
                    |json| {
                        let g = self.decide_admit(&a, json)?;
                        Ok((Write::from(&g), g))
                    },
                    Some(None),
                    true,
                )
                .await?;
            self.keep(|c| c.guard = Some(after));
            let admission = step.admission.unwrap_or_default();
            if !charged || step.kind != "send" {
                return Ok(admitted(&admission));
            }
            let mut inv = s.scripts.charge.key(k.ws("fw", self.id()));
            self.charge_args(&mut inv, &a);
            let reply = s.run(&inv).await?;
            return match reply {
                Value::Array(items) => self.refusal(&items, &a, true),
                _ => Ok(admitted(&admission)),
            };
        }
        let mut known: Option<Option<String>> = Some(None);
        let mut guess = true;
        for i in 0..MAX_TRIES {
            let raw = match known.take() {
                Some(v) => v,
                None => s.get(&guard_key).await?,
            };
            let (ver, json) = split(raw.as_deref());
            let step = self.decide_admit(&a, json)?;
            let admission = step.admission.clone().unwrap_or_default();
            let state = step.state.clone().unwrap_or_default();
            if step.kind != "send" {
                if !step.changed {
                    if !guess {
                        return Ok(admitted(&admission));
                    }
                    guess = false;
                    continue;
                }
                let reply = s
                    .run(
                        s.scripts
                            .cas
                            .key(&guard_key)
                            .arg(ver)
                            .arg(&state)
                            .arg(keep_arg(Some(step.keep_ms)))
                            .arg(""),
                    )
                    .await?;
                let (wrote, found) = pair(&reply);
                if wrote == 1 {
                    return Ok(admitted(&admission));
                }
                known = Some(found);
            } else {
                let mut inv = s.scripts.admit.key(&guard_key);
                inv.key(k.ws("fw", self.id()))
                    .key(k.ws("sp", self.id()))
                    .arg(ver)
                    .arg(&state)
                    .arg(keep_arg(Some(step.keep_ms)));
                self.charge_args(&mut inv, &a);
                let reply = s.run(&inv).await?;
                match &reply {
                    Value::Array(items) if items.first().and_then(int) == Some(0) => {
                        known = Some(items.get(1).and_then(text));
                    }
                    Value::Array(items) => return self.refusal(items, &a, false),
                    _ => {
                        let after = (!state.is_empty()).then(|| format!("{}|{state}", ver + 1));
                        self.keep(|c| c.guard = Some(after));
                        return Ok(admitted(&admission));
                    }
                }
            }
            guess = false;
            backoff(i).await;
        }
        Err(unavailable())
    }

    /// The ADMIT / CHARGE arguments after the guard's (see `admit.lua`); a Cluster's CHARGE
    /// takes the spend key as its second and three unused guard arguments.
    fn charge_args(&self, inv: &mut ScriptInvocation<'_>, a: &Admit) {
        let k = &self.shared.keys;
        let now = self.now_ms();
        if k.cluster {
            inv.key(k.ws("sp", self.id())).arg("").arg("").arg("");
        }
        inv.arg(a.flood_limit.map(|l| l.to_string()).unwrap_or_default())
            .arg(now)
            .arg(FLOOD_WINDOW_MS)
            .arg(FLOOD_KEEP_MS);
        match &a.spend {
            Some(sp) => {
                let keep = ((u64::from(sp.day) + 2) * DAY_MS)
                    .saturating_sub(now)
                    .max(1000);
                inv.arg(sp.limit_micros)
                    .arg(sp.cost_micros)
                    .arg(sp.day)
                    .arg(keep);
            }
            None => {
                inv.arg("").arg("").arg("").arg("");
            }
        }
        if let Some(f) = &a.fraud {
            inv.arg(k.ws2("fr", self.id(), &f.prefix))
                .arg(k.ws("fx", self.id()))
                .arg(&f.prefix)
                .arg(f.window_ms)
                .arg(f.min_sends)
                .arg(f.min_conversion)
                .arg(f.block_ms);
        }
    }

    /// A charge's refusal (`{-1|-2|-3, …}`: nothing written but Fraud Guard's own count) as the
    /// core's admission. `admitted`: the guard recorded the send in an earlier step (Cluster).
    fn refusal(&self, items: &[Value], a: &Admit, was_admitted: bool) -> Result<String> {
        let what = items.first().and_then(int).unwrap_or(0);
        let arg = items.get(1).and_then(text).unwrap_or_default();
        let admission = match what {
            -3 => steps::fraud_refused(arg == "1", Some(was_admitted)),
            -2 => {
                let spend = a.spend.as_ref().ok_or_else(unavailable)?;
                let full = format!(r#"{{"day":{arg},"micros":{}}}"#, spend.limit_micros);
                let charge = serde_json::to_string(spend).unwrap_or_default();
                steps::spend_json(Some(full), charge, self.now, Some(was_admitted))?
                    .refused
                    .unwrap_or_default()
            }
            _ => {
                let limit = a.flood_limit.unwrap_or(0);
                let full = format!(r#"{{"windowStart":{arg},"count":{limit}}}"#);
                steps::flood_json(Some(full), limit, self.now, Some(was_admitted))
                    .refused
                    .unwrap_or_default()
            }
        };
        Ok(admitted(&admission))
    }

    /// A delivered session: stored (with its purge entry) and confirmed at the guard in one
    /// script (one Redis), so a waiter told "delivered" always finds it; on a Cluster the
    /// session's slot first, then the guard's.
    async fn store_session(&self, session: &Session) -> Result<String> {
        let s = &self.shared;
        let k = &s.keys;
        let guess = self.take(|c| c.guard.take());
        let json = session.to_json();
        let guard_key = k.guard(self.id(), &session.dest);
        let session_key = k.session(&session.workspace_id, &session.id);
        let value = format!("1|{json}");
        let purge_at = session.purge_at().0;
        let now = self.now_ms();
        let keep = purge_at.saturating_sub(now).max(1000) + PURGE_GRACE_MS;
        let purge = k.key("purge", "all");
        let (ws, fnow) = (&self.ws, self.now);
        let decide = |json: Option<&str>| {
            steps::guard_delivery(
                json.map(str::to_string),
                ws,
                session.id.clone(),
                "delivered".into(),
                fnow,
            )
        };
        let confirm = async {
            Ok::<_, napi::Error>(if k.cluster {
                // Two slots: sent side by side, both awaited before the guard hears of it.
                let set = redis::cmd("SET")
                    .arg(&session_key)
                    .arg(&value)
                    .arg("PX")
                    .arg(keep)
                    .to_owned();
                let zadd = redis::cmd("ZADD")
                    .arg(&purge)
                    .arg(purge_at)
                    .arg(&session_key)
                    .to_owned();
                tokio::try_join!(s.query(&set), s.query(&zadd))?;
                s.update(
                    &guard_key,
                    |json| {
                        let g = decide(json)?;
                        Ok((Write::from(&g), g.session_id))
                    },
                    guess,
                    false,
                )
                .await?
                .0
            } else {
                let mut found = None;
                for i in 0..MAX_TRIES {
                    let guessed = i == 0 && guess.is_some();
                    let raw = match (i, &guess) {
                        (0, Some(g)) => g.clone(),
                        _ => s.get(&guard_key).await?,
                    };
                    let (ver, guard) = split(raw.as_deref());
                    let g = decide(guard)?;
                    let expect = if guessed {
                        raw.clone().unwrap_or_default()
                    } else {
                        String::new()
                    };
                    let (state, keep_guard) = if g.changed {
                        (
                            g.state.clone().unwrap_or_default(),
                            keep_arg(Some(g.keep_ms)),
                        )
                    } else {
                        // The guard needs no change: store the session against its current version.
                        (guard.unwrap_or_default().to_string(), "-1".to_string())
                    };
                    let reply = s
                        .run(
                            s.scripts
                                .confirm
                                .key(&guard_key)
                                .key(&session_key)
                                .key(&purge)
                                .arg(ver)
                                .arg(state)
                                .arg(keep_guard)
                                .arg(&value)
                                .arg(keep)
                                .arg(purge_at)
                                .arg(expect),
                        )
                        .await?;
                    if int(&reply) == Some(1) {
                        found = Some(g.session_id);
                        break;
                    }
                    backoff(i).await;
                }
                found.ok_or_else(unavailable)?
            })
        };
        // Side by side: the index writes ride the same connection as the confirmation.
        let (cancel, ()) = tokio::join!(confirm, self.index_receipts(session, purge_at));
        let cancel = cancel?;
        s.remember(session_key, value);
        Ok(format!(
            r#"{{"result":"storedAndConfirmed","cancel":{}}}"#,
            json_str(cancel.as_deref())
        ))
    }

    /// The delivery receipt index entries of a session, each kept until its purge time, written
    /// before the step answers (a receipt may follow the answer at once). A failed write fails
    /// nothing: it is logged (`onIndexFailure`).
    async fn index_receipts(&self, session: &Session, purge_at: u64) {
        let entries = otpkit_core::delivery::index_entries(session);
        let ttl = purge_at.saturating_sub(self.now_ms()).max(1);
        let s = &self.shared;
        let writes = entries.iter().map(|(key, value)| {
            let cmd = redis::cmd("SET")
                .arg(s.keys.key("rcpt", key))
                .arg(value)
                .arg("PX")
                .arg(ttl)
                .to_owned();
            async move { s.query(&cmd).await }
        });
        let failed = futures_util::future::join_all(writes)
            .await
            .iter()
            .any(Result::is_err);
        if failed {
            if let Some(log) = &s.on_index_failure {
                log.call(
                    "STORE_UNAVAILABLE".into(),
                    ThreadsafeFunctionCallMode::NonBlocking,
                );
            }
        }
    }

    /// One step of a resend: read → `resend_stored` → compare-and-set (with the purge time on
    /// one Redis), again on a conflict.
    async fn resend(&self, session_id: &str, step: &ResendStep) -> Result<String> {
        let s = &self.shared;
        let k = &s.keys;
        let key = k.session(self.id(), session_id);
        let step_json = serde_json::to_string(step).unwrap_or_default();
        let purge = k.key("purge", "all");
        let mut known: Option<Option<String>> = None;
        for i in 0..MAX_TRIES {
            let raw = match known.take() {
                Some(v) => v,
                None => s.get(&key).await?,
            };
            let (ver, json) = split(raw.as_deref());
            let st = steps::resend_stored(
                json.map(str::to_string),
                self.id().to_string(),
                step_json.clone(),
                self.now,
            )?;
            let Some(write) = st.write else {
                return Ok(st.outcome);
            };
            let written = Session::from_json(&write).map_err(|e| throw(&e))?;
            let purge_at = written.purge_at().0;
            let keep = purge_at.saturating_sub(self.now_ms()).max(1000) + PURGE_GRACE_MS;
            let reply = if k.cluster {
                s.run(s.scripts.cas.key(&key).arg(ver).arg(&write).arg(keep))
                    .await?
            } else {
                s.run(
                    s.scripts
                        .resend_write
                        .key(&key)
                        .key(&purge)
                        .arg(ver)
                        .arg(&write)
                        .arg(keep)
                        .arg(purge_at),
                )
                .await?
            };
            let (wrote, found) = pair(&reply);
            if wrote == 1 {
                if k.cluster {
                    s.query(redis::cmd("ZADD").arg(&purge).arg(purge_at).arg(&key))
                        .await?;
                }
                // A new message was applied: receipts find it by its id until the purge.
                if matches!(step, ResendStep::Apply { .. }) {
                    self.index_receipts(&written, purge_at).await;
                }
                return Ok(st.outcome);
            }
            known = Some(found);
            backoff(i).await;
        }
        Err(unavailable())
    }

    /// A verify: read → `verify_stored` → compare-and-set, again on a conflict. The first try
    /// uses the session read with the API key, if any; on one Redis the write also reads the
    /// destination guard, on which the failure streak that follows the answer decides first.
    async fn verify(&self, session_id: &str, code: &str, tx: Option<String>) -> Result<String> {
        let s = &self.shared;
        let k = &s.keys;
        let engine = self
            .engine
            .as_ref()
            .ok_or_else(|| misconfigured("OTP_PEPPER is not set"))?;
        let key = k.session(self.id(), session_id);
        // Read with the key, else as this process last wrote it (a request's answer waits for
        // its audit on a Cluster: see `RedisRun::until`), else read now.
        let mut known = self
            .take(|c| c.session.take())
            .or_else(|| s.recall(&key).map(Some));
        for i in 0..MAX_TRIES {
            let given = known.is_some();
            let raw = match known.take() {
                Some(v) => v,
                None => s.get(&key).await?,
            };
            let (ver, json) = split(raw.as_deref());
            let st = engine.verify_stored(
                json.map(str::to_string),
                self.id().to_string(),
                code.to_string(),
                self.now,
                tx.clone(),
            )?;
            let Some(write) = st.write else {
                return Ok(st.outcome); // nothing to write (no session, already ended)
            };
            let expect = if given {
                raw.clone().unwrap_or_default()
            } else {
                String::new()
            };
            if k.cluster {
                // The guard is in another slot: the failure streak after the answer reads it.
                let reply = s
                    .run(
                        s.scripts
                            .cas
                            .key(&key)
                            .arg(ver)
                            .arg(&write)
                            .arg("-1")
                            .arg(expect),
                    )
                    .await?;
                let (wrote, found) = pair(&reply);
                if wrote == 1 {
                    s.written(key, ver, &write);
                    return Ok(st.outcome);
                }
                known = Some(found);
            } else {
                let guard_key = k.guard(self.id(), st.dest.as_deref().unwrap_or(""));
                let reply = s
                    .run(
                        s.scripts
                            .verify_write
                            .key(&key)
                            .key(&guard_key)
                            .arg(ver)
                            .arg(&write)
                            .arg("-1")
                            .arg(expect),
                    )
                    .await?;
                let (ok, other) = pair(&reply);
                if ok == 1 {
                    self.keep(|c| c.guard = Some(other));
                    s.written(key, ver, &write);
                    return Ok(st.outcome);
                }
                known = Some(other);
            }
            backoff(i).await;
        }
        Err(unavailable())
    }
}

/// Appends audit lines (`(repeatable, JSON)`) and applies analytics deltas for one workspace,
/// in one atomic script (see `record.lua`).
async fn record(
    s: &Shared,
    ws_id: &str,
    lines: &[(bool, String)],
    deltas: &[otpkit_core::analytics::Delta],
) -> Result<()> {
    let k = &s.keys;
    let ops = if deltas.is_empty() {
        Vec::new()
    } else {
        steps::redis_analytics_ops(
            format!("{}:", k.ws("an", ws_id)),
            k.ws("ao", ws_id),
            serde_json::to_string(deltas).unwrap_or_default(),
            crate::num(otpkit_core::UnixMillis(now_ms())),
        )?
    };
    if lines.is_empty() && ops.is_empty() {
        return Ok(());
    }
    let mut inv = s.scripts.record.key(k.ws("a", ws_id));
    inv.key(k.seq(ws_id))
        .key(k.ws("ar", ws_id))
        .arg(lines.len())
        .arg(s.audit_keep);
    for (repeatable, line) in lines {
        inv.arg(format!("{}{line}", if *repeatable { 'r' } else { 'l' }));
    }
    for op in &ops {
        inv.arg(op);
    }
    s.run(&inv).await?;
    Ok(())
}

/// What a flow run did that its host logs and counts: the store effects that failed (`[effect,
/// error code, cause, …]`), their times when asked (`[effect, seconds, …]`), and the sends
/// through a built-in gateway (8 fields each: see [`inflight::deliver`]). Handed to JavaScript
/// as is for what follows an answer (`FlowService`'s `after`; `lib/log.js` `reportRun`).
#[napi(object)]
#[derive(Debug, Default)]
pub struct RunReports {
    pub failed: Vec<String>,
    pub timed: Vec<String>,
    pub sent: Vec<String>,
}

/// Where [`RedisRun::until`] stopped.
pub(crate) enum Stop {
    /// The flow's answer; what follows it is still to run.
    Answer(std::result::Result<otpkit_core::http::envelope::Reply, Error>),
    /// A step this run does not take (deliver or awaitSend without a built-in gateway).
    Yield(Io),
    /// The flow is done.
    Done,
}

/// One flow run on the Redis store: every store effect on the runtime, and with a built-in
/// gateway its send, the wait for another request's send and a pause too.
pub(crate) struct RedisRun {
    job: Job,
    shared: Arc<Shared>,
    gateway: Option<Gateway>,
    timed: bool,
    /// The session this run is sending, while it is (other requests may wait for it).
    sending: Option<String>,
    /// A send's answer held until its audit is written (a Cluster: see [`Self::until`]).
    held: Option<std::result::Result<otpkit_core::http::envelope::Reply, Error>>,
    /// The flow ended while its answer was held.
    done: bool,
}

impl RedisRun {
    /// Runs `flow` up to its answer, a step it does not take, or its end.
    ///
    /// On a Cluster the audit of a send (`requested`, `delivered`) goes to the workspace's slot,
    /// after the answer; a verify of that session, in another slot, could then be audited first.
    /// So there the answer of a run that sent waits for its first audit write (one round trip
    /// more for the request, none for the verify, which may then decide on the session this
    /// process stored: see `verify`). On one Redis both go through the same connection, in
    /// order.
    pub(crate) async fn until<F: Flow>(&mut self, flow: &mut F, reports: &mut RunReports) -> Stop {
        let shared = Arc::clone(&self.shared);
        if self.done {
            return Stop::Done;
        }
        loop {
            match flow.poll() {
                // The pause of an `Idempotency-Key` duplicate.
                Step::Io(Io::Pause { millis }) => {
                    tokio::time::sleep(Duration::from_millis(millis)).await;
                    flow.handle(Outcome::Done);
                }
                // The gateway's send, when the service's gateway is a built-in one.
                Step::Io(Io::Deliver { message }) if self.gateway.is_some() => {
                    let Some(g) = self.gateway.as_ref() else {
                        continue;
                    };
                    self.sending = Some(message.reference.clone());
                    let ws_id = self.job.id();
                    let inflight = &shared.inflight;
                    let sent = inflight::deliver(g, inflight, ws_id, &message, &mut reports.sent);
                    flow.handle(sent.await);
                }
                // Another request's send, when this run sends its own (a built-in gateway).
                Step::Io(Io::AwaitSend { dest, session_id }) if self.gateway.is_some() => {
                    let delivered = shared.await_send(self.job.id(), &dest, &session_id).await;
                    flow.handle(Outcome::Awaited { delivered });
                }
                Step::Io(io @ (Io::Deliver { .. } | Io::AwaitSend { .. })) => {
                    return Stop::Yield(io)
                }
                Step::Io(io) => {
                    let kind = io.kind();
                    let started = std::time::Instant::now();
                    self.job.now = now_ms() as f64;
                    let record = matches!(io, Io::Record { .. });
                    let result = self.job.perform(io).await;
                    if self.timed {
                        reports.timed.push(kind.into());
                        reports
                            .timed
                            .push(started.elapsed().as_secs_f64().to_string());
                    }
                    flow.handle(match result {
                        Ok(text) => outcome(&text),
                        Err(e) => {
                            let (code, cause, failed) = failed_outcome(&e);
                            reports.failed.extend([kind.into(), code, cause]);
                            failed
                        }
                    });
                    if record {
                        if let Some(a) = self.held.take() {
                            return Stop::Answer(a);
                        }
                    }
                }
                Step::Answer(a) => {
                    if let Some(reference) = self.sending.take() {
                        shared.inflight.sent(&reference, a.is_ok());
                        if shared.keys.cluster {
                            self.held = Some(a);
                            continue;
                        }
                    }
                    return Stop::Answer(a);
                }
                Step::Done => {
                    if let Some(reference) = self.sending.take() {
                        shared.inflight.sent(&reference, false);
                    }
                    if let Some(a) = self.held.take() {
                        self.done = true;
                        return Stop::Answer(a);
                    }
                    return Stop::Done;
                }
            }
        }
    }
}

#[napi]
impl RedisCore {
    /// `opts`: one Redis (`url`) or a Cluster (`nodes`), the key prefix, the audit cap and the
    /// scripts; `on_index_failure` is called (with the error code) when a receipt index write
    /// fails.
    #[napi(
        constructor,
        ts_args_type = "opts: RedisCoreOptions, onDone: (done: Finished) => void, onIndexFailure?: (code: string) => void, onKeyCacheRefused?: (refusal: KeyCacheRefusal) => void"
    )]
    pub fn new(
        opts: RedisCoreOptions,
        on_done: DoneFn,
        on_index_failure: Option<FailureLog>,
        on_key_cache_refused: Option<RefusalLog>,
    ) -> Result<Self> {
        let script = |name: &str| {
            opts.scripts
                .get(name)
                .map(|t| Script::new(t))
                .ok_or_else(|| misconfigured(&format!("the Redis script {name} is missing")))
        };
        let scripts = Scripts {
            cas: script("cas")?,
            admit: script("admit")?,
            charge: script("charge")?,
            confirm: script("confirm")?,
            verify_write: script("verifyWrite")?,
            record: script("record")?,
            resend_write: script("resendWrite")?,
            refund_spend: script("refundSpend")?,
            fraud_verified: script("fraudVerified")?,
            read_fraud: script("readFraud")?,
            unblock_prefix: script("unblockPrefix")?,
            put_workspace: script("putWorkspace")?,
            put_record_only: script("putRecordOnly")?,
            lookup_session: script("lookupSession")?,
            sweep: script("sweep")?,
            audit_lists: script("auditLists")?,
        };
        let (target, cluster) = match (opts.url, opts.nodes) {
            (_, Some(nodes)) if !nodes.is_empty() => (Target::Nodes(nodes), true),
            (Some(url), _) => (Target::Url(url), false),
            _ => return Err(misconfigured("RedisCore needs a url or nodes")),
        };
        let key_cache = opts.key_cache.unwrap_or(true).then(|| {
            let refused = on_key_cache_refused.map(|log| -> Refused {
                Box::new(move |node, cause| {
                    log.call(
                        KeyCacheRefusal { node, cause },
                        ThreadsafeFunctionCallMode::NonBlocking,
                    );
                })
            });
            let track = match &target {
                Target::Url(url) => TrackTarget::Url(url.clone()),
                Target::Nodes(nodes) => TrackTarget::Nodes(nodes.clone()),
            };
            KeyCache::new(opts.prefix.clone(), track, refused)
        });
        Ok(RedisCore {
            shared: Arc::new(Shared {
                keys: Keys {
                    prefix: opts.prefix,
                    cluster,
                },
                audit_keep: opts.audit_keep,
                fraud_fields: opts.fraud_fields,
                scripts,
                target,
                conn: Mutex::new(None),
                connecting: tokio::sync::Mutex::new(()),
                closed: AtomicBool::new(false),
                on_index_failure,
                done: Mutex::new(Some(on_done)),
                key_cache,
                inflight: Inflight::default(),
                sessions: Mutex::default(),
            }),
        })
    }

    /// Performs one store effect of a flow (`io_json`: the step the flow polled) in workspace
    /// `ws` at `now`; its end goes to `onDone` with `id`: the outcome JSON to feed back, or the
    /// store's error (`STORE_UNAVAILABLE`, `MISCONFIGURED`, or a corrupt value's
    /// `INTERNAL_ERROR`). `steps` carries what one effect read for the next of the same request.
    /// Throws (nothing started) for a step that is not the store's or a missing pepper.
    #[napi]
    pub fn perform(
        &self,
        id: u32,
        engine: &Engine,
        ws: &Workspace,
        io_json: String,
        now: f64,
        steps: &RedisSteps,
    ) -> Result<()> {
        let io: Io = serde_json::from_str(&io_json)
            .map_err(|_| throw(&Error::invalid("io", "not a flow step")))?;
        let engine = match &io {
            Io::Verify { .. } => Some(Engine {
                pepper: Ok(engine.pepper()?.clone()),
            }),
            _ => None,
        };
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(unavailable());
        }
        let shared = Arc::clone(&self.shared);
        let job = Job {
            shared: Arc::clone(&self.shared),
            ws: ws.clone(),
            engine,
            carried: Arc::clone(&steps.carried),
            now,
        };
        napi::bindgen_prelude::spawn(async move {
            let (ok, text) = match job.perform(io).await {
                Ok(outcome) => (true, outcome),
                Err(e) => (false, e.reason.clone()),
            };
            let end = Finished {
                id,
                ok,
                text,
                drained: false,
                failed: Vec::new(),
                timed: Vec::new(),
                sent: Vec::new(),
            };
            shared.finished(end);
        });
        Ok(())
    }

    /// Runs `flow` (lent by its napi object, given back through `slot`) on this store: see
    /// the flows' `runRedis`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run<F: Flow + Send + 'static>(
        &self,
        id: u32,
        mut flow: Box<F>,
        slot: Lent<F>,
        engine: &Engine,
        ws: &Workspace,
        steps: &RedisSteps,
        timed: bool,
        gateway: Option<&NativeGateway>,
    ) -> Result<()> {
        let gateway = gateway.map(|g| Gateway::Native(g.share()));
        let mut run = match self.runner(engine, ws, steps, gateway, timed) {
            Ok(run) => run,
            Err(e) => {
                slot.give_back(flow);
                return Err(e);
            }
        };
        napi::bindgen_prelude::spawn(async move {
            let mut answered = false;
            let mut reports = RunReports::default();
            loop {
                let end = |text: String, drained: bool, r: &mut RunReports| Finished {
                    id,
                    ok: true,
                    text,
                    drained,
                    failed: std::mem::take(&mut r.failed),
                    timed: std::mem::take(&mut r.timed),
                    sent: std::mem::take(&mut r.sent),
                };
                match run.until(&mut *flow, &mut reports).await {
                    // Not the store's: the gateway, the wait for another request's send (the
                    // driver's, for a gateway written in JavaScript).
                    Stop::Yield(io) => {
                        slot.give_back(flow);
                        run.shared
                            .finished(end(step_json(Step::Io(io)), false, &mut reports));
                        return;
                    }
                    Stop::Answer(a) => {
                        answered = true;
                        let text = step_json(Step::Answer(a));
                        run.shared.finished(end(text, false, &mut reports));
                    }
                    Stop::Done => {
                        slot.give_back(flow);
                        let text = r#"{"done":true}"#.to_string();
                        run.shared.finished(end(text, answered, &mut reports));
                        return;
                    }
                }
            }
        });
        Ok(())
    }

    /// A flow run on this store for `ws` (see [`RedisRun`]).
    pub(crate) fn runner(
        &self,
        engine: &Engine,
        ws: &Workspace,
        steps: &RedisSteps,
        gateway: Option<Gateway>,
        timed: bool,
    ) -> Result<RedisRun> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(unavailable());
        }
        Ok(RedisRun {
            // One job for the whole run: its clock is read again for each effect.
            job: Job {
                shared: Arc::clone(&self.shared),
                ws: ws.clone(),
                engine: engine.pepper().ok().map(|p| Engine {
                    pepper: Ok(p.clone()),
                }),
                carried: Arc::clone(&steps.carried),
                now: 0.0,
            },
            shared: Arc::clone(&self.shared),
            held: None,
            done: false,
            gateway,
            timed,
            sending: None,
        })
    }

    /// Keeps Node's event loop alive (`on`) while steps are in flight, or lets it go: the store
    /// calls it when its first step starts and when its last one ends.
    #[napi]
    #[allow(deprecated)] // napi's ref / unref of a threadsafe function: what keeps the loop alive
    pub fn hold(&self, env: Env, on: bool) -> Result<()> {
        let mut done = self.shared.done.lock().map_err(|_| unavailable())?;
        match done.as_mut() {
            Some(f) if on => f.refer(&env),
            Some(f) => f.unref(&env),
            None => Ok(()),
        }
    }

    /// Closes the connection and stops the key cache; every later step fails
    /// (`STORE_UNAVAILABLE`).
    #[napi]
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::Relaxed);
        if let Some(cache) = &self.shared.key_cache {
            cache.stop();
        }
        // Steps in flight end unheard: the store's close() answers them.
        if let Ok(mut d) = self.shared.done.lock() {
            *d = None;
        }
        if let Ok(mut c) = self.shared.conn.lock() {
            *c = None;
        }
    }
}

/// An API key's workspace record (JSON) and, in that workspace, a session's stored value.
#[napi(object)]
#[derive(Debug)]
pub struct KeyLookup {
    /// The record the key points at (none: unknown key).
    pub workspace: Option<String>,
    /// The session's stored value (`<version>|<JSON>`), when one was asked for and exists.
    pub session: Option<String>,
}

/// One workspace's analytics rows for a period ([`crate::reports::analytics_reply`]'s input).
#[napi(object)]
#[derive(Debug)]
pub struct AnalyticsRows {
    /// Flat `[day, field, value, …]`.
    pub counters: Vec<String>,
    /// Members of its sessions still open and unexpired.
    pub open: Vec<String>,
}

impl Shared {
    /// The workspace record an API key hash points at and, in it, session `session_id`: one
    /// round trip on one Redis (a script), two on a Cluster (the key's entry, then the record and
    /// the session side by side: three slots).
    async fn lookup(&self, hash: &str, session_id: Option<&str>) -> Result<KeyLookup> {
        // Kept only if no invalidation came while the lookup was in flight.
        let gen = self.key_cache.as_ref().map(|c| c.generation());
        let found = self.lookup_uncached(hash, session_id).await?;
        if let (Some(cache), Some(gen), Some(json)) = (&self.key_cache, gen, &found.workspace) {
            cache.put(hash, json, gen);
        }
        Ok(found)
    }

    async fn lookup_uncached(&self, hash: &str, session_id: Option<&str>) -> Result<KeyLookup> {
        let k = &self.keys;
        if k.cluster {
            let Some(id) = self.get(&k.key("key", hash)).await? else {
                return Ok(KeyLookup {
                    workspace: None,
                    session: None,
                });
            };
            let record_key = k.ws("ws", &id);
            let record = self.get(&record_key);
            let (workspace, session) = match session_id {
                Some(sid) => {
                    let session_key = k.session(&id, sid);
                    tokio::try_join!(record, self.get(&session_key))?
                }
                None => (record.await?, None),
            };
            return Ok(KeyLookup { workspace, session });
        }
        let reply = self
            .run(
                self.scripts
                    .lookup_session
                    .key(k.key("key", hash))
                    .arg(format!("{}ws:", k.prefix))
                    .arg(format!("{}s:", k.prefix))
                    .arg(session_id.unwrap_or_default()),
            )
            .await?;
        let (workspace, session) = match &reply {
            Value::Array(items) => (items.first().and_then(text), items.get(1).and_then(text)),
            _ => (None, None),
        };
        Ok(KeyLookup {
            workspace,
            session: session_id.and(session),
        })
    }

    /// Purges the sessions whose retention has passed (at most `limit`), each with its `purged`
    /// audit event; answers how many.
    async fn sweep(&self, now: u64, limit: u32) -> Result<u32> {
        let purge = self.keys.key("purge", "all");
        let values = if self.keys.cluster {
            self.sweep_cluster(&purge, now, limit).await?
        } else {
            strings(
                self.run(self.scripts.sweep.key(&purge).arg(now).arg(limit))
                    .await?,
            )
        };
        let mut by_ws: Vec<(String, Vec<otpkit_core::audit::AuditEvent>)> = Vec::new();
        for raw in &values {
            // Unreadable: dropped without an event.
            let Some(session) = split(Some(raw)).1.and_then(|j| Session::from_json(j).ok()) else {
                continue;
            };
            let event = otpkit_core::audit::AuditEvent::for_session(
                "purged",
                &session,
                "ok",
                None,
                otpkit_core::UnixMillis(now),
            );
            match by_ws.iter_mut().find(|(id, _)| *id == session.workspace_id) {
                Some((_, events)) => events.push(event),
                None => by_ws.push((session.workspace_id.clone(), vec![event])),
            }
        }
        for (ws_id, events) in &by_ws {
            record(self, ws_id, &lines_of(events), &[]).await?;
        }
        Ok(values.len() as u32)
    }

    /// The sweep on a Redis Cluster, where the schedule and the sessions are in different
    /// slots: each due entry is claimed by the one process whose ZREM removes it; its session is
    /// deleted only if its own purge time has come (a resend writes the session, then moves its
    /// entry: the session is the truth) and it did not change since it was read. Answers the
    /// values purged.
    async fn sweep_cluster(&self, purge: &str, now: u64, limit: u32) -> Result<Vec<String>> {
        let due = strings(
            self.query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(purge)
                    .arg("-inf")
                    .arg(now)
                    .arg("LIMIT")
                    .arg(0)
                    .arg(limit),
            )
            .await?,
        );
        let one = |key: String| async move {
            if int(&self.query(redis::cmd("ZREM").arg(purge).arg(&key)).await?) != Some(1) {
                return Ok(None); // another process has it
            }
            let Some(raw) = self.get(&key).await? else {
                return Ok(None);
            };
            let (ver, json) = split(Some(&raw));
            let Some(purge_at) = json
                .and_then(|j| Session::from_json(j).ok())
                .map(|s| s.purge_at().0)
            else {
                // unreadable: dropped without an event, as SWEEP does
                self.query(redis::cmd("DEL").arg(&key)).await?;
                return Ok(None);
            };
            if purge_at > now {
                self.query(redis::cmd("ZADD").arg(purge).arg(purge_at).arg(&key))
                    .await?;
                return Ok(None);
            }
            let mut cas = self.scripts.cas.key(&key);
            let reply = self.run(cas.arg(ver).arg("").arg("-1").arg(&raw)).await?;
            if pair(&reply).0 == 1 {
                return Ok(Some(raw));
            }
            // It changed: the next sweep decides again.
            self.query(redis::cmd("ZADD").arg(purge).arg(now).arg(&key))
                .await?;
            Ok::<_, napi::Error>(None)
        };
        let done = futures_util::future::join_all(due.into_iter().map(one)).await;
        let mut purged = Vec::new();
        for d in done {
            if let Some(raw) = d? {
                purged.push(raw);
            }
        }
        Ok(purged)
    }

    /// Connects and checks that the connection matches the deployment: `REDIS_URL` on a Cluster
    /// node, or `REDIS_CLUSTER_NODES` on a Redis without cluster mode, is `MISCONFIGURED`.
    async fn check(&self) -> Result<()> {
        match self.conn().await {
            Ok(_) => {}
            Err(e) => {
                if let Target::Nodes(nodes) = &self.target {
                    if let Some(seed) = nodes.first() {
                        if cluster_enabled(&format!("redis://{seed}")).await == Some(false) {
                            return Err(misconfigured("REDIS_CLUSTER_NODES names a Redis without cluster mode: set REDIS_URL=redis://host:port for one Redis"));
                        }
                    }
                }
                return Err(e);
            }
        }
        self.query(&redis::cmd("PING")).await?;
        if !self.keys.cluster {
            let info = text(&self.query(redis::cmd("INFO").arg("cluster")).await?);
            if info.is_some_and(|i| i.contains("cluster_enabled:1")) {
                return Err(misconfigured("REDIS_URL names a Redis Cluster node: set REDIS_CLUSTER_NODES=host:port,… to use the cluster"));
            }
        }
        Ok(())
    }
}

/// Whether the Redis at `url` runs in cluster mode (`None`: not reachable or not answering).
async fn cluster_enabled(url: &str) -> Option<bool> {
    let probe = async {
        let client = redis::Client::open(url).ok()?;
        let mut c = client.get_multiplexed_async_connection().await.ok()?;
        let info: String = redis::cmd("INFO")
            .arg("cluster")
            .query_async(&mut c)
            .await
            .ok()?;
        Some(info.contains("cluster_enabled:1"))
    };
    tokio::time::timeout(CONNECT_TIMEOUT, probe)
        .await
        .ok()
        .flatten()
}

/// What the flow routes answered in Rust (`crate::service`) ask of the store outside a flow.
impl RedisCore {
    /// Another handle on the same store.
    pub(crate) fn share(&self) -> RedisCore {
        RedisCore {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The workspace record cached for an API key hash (see [`RedisCore::cached_key`]).
    pub(crate) fn cached(&self, hash: &str) -> Option<String> {
        let (json, _) = self.shared.key_cache.as_ref()?.entry(hash)?;
        Some(json.to_string())
    }

    /// See [`RedisCore::lookup`].
    pub(crate) async fn find_key(&self, hash: &str, session_id: Option<&str>) -> Result<KeyLookup> {
        self.shared()?.lookup(hash, session_id).await
    }

    /// See [`RedisCore::touch_key`].
    pub(crate) async fn touch(&self, ws_id: &str, key_id: &str, at: u64) -> Result<()> {
        let s = self.shared()?;
        let hset = redis::cmd("HSET")
            .arg(s.keys.ws("used", ws_id))
            .arg(key_id)
            .arg(at)
            .to_owned();
        s.query(&hset).await.map(|_| ())
    }
}

/// The store's reads and writes that are not a flow's steps: key lookups, another request's
/// send, the reports, the sweep, the checks. Each answers a promise (none is on a request's
/// hot path but the key lookup, and that one only when the key cache does not hold the key).
#[napi]
impl RedisCore {
    fn shared(&self) -> Result<Arc<Shared>> {
        if self.shared.closed.load(Ordering::Relaxed) {
            return Err(unavailable());
        }
        Ok(Arc::clone(&self.shared))
    }

    /// The workspace record an API key hash points at and, when `session_id` is given, that
    /// workspace's session (its stored value): see [`KeyLookup`].
    #[napi(ts_return_type = "Promise<KeyLookup>")]
    pub fn lookup<'env>(
        &self,
        env: &'env Env,
        hash: String,
        session_id: Option<String>,
    ) -> Result<PromiseRaw<'env, KeyLookup>> {
        let s = self.shared()?;
        env.spawn_future(async move { s.lookup(&hash, session_id.as_deref()).await })
    }

    /// Where another request's send stands: `pending`, `delivered` or `gone` (also once stale).
    #[napi(ts_return_type = "Promise<string>")]
    pub fn entry<'env>(
        &self,
        env: &'env Env,
        ws_id: String,
        dest: String,
        session_id: String,
        now: f64,
    ) -> Result<PromiseRaw<'env, String>> {
        let s = self.shared()?;
        env.spawn_future(async move {
            let raw = s.get(&s.keys.guard(&ws_id, &dest)).await?;
            steps::guard_entry(
                split(raw.as_deref()).1.map(str::to_string),
                session_id,
                Some(now),
            )
        })
    }

    /// A session's JSON (none: not stored).
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn get_session<'env>(
        &self,
        env: &'env Env,
        ws_id: String,
        session_id: String,
    ) -> Result<PromiseRaw<'env, Option<String>>> {
        let s = self.shared()?;
        env.spawn_future(async move {
            let raw = s.get(&s.keys.session(&ws_id, &session_id)).await?;
            Ok(split(raw.as_deref()).1.map(str::to_string))
        })
    }

    /// A workspace's stored record (JSON; none: unknown).
    #[napi(ts_return_type = "Promise<string | null>")]
    pub fn get_workspace<'env>(
        &self,
        env: &'env Env,
        id: String,
    ) -> Result<PromiseRaw<'env, Option<String>>> {
        let s = self.shared()?;
        env.spawn_future(async move { s.get(&s.keys.ws("ws", &id)).await })
    }

    /// Key `key_id` of workspace `ws_id` authenticated a request at `at` (ms): one HSET of the
    /// hash `used:<ws>` beside the record (never in it: no part in its revision).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn touch_key<'env>(
        &self,
        env: &'env Env,
        ws_id: String,
        key_id: String,
        at: f64,
    ) -> Result<PromiseRaw<'env, ()>> {
        let core = self.share();
        env.spawn_future(async move { core.touch(&ws_id, &key_id, ms(at).0).await })
    }

    /// Both audit lists of a workspace (`seq|event` lines, newest first), read at once:
    /// `[lifecycle, repeatable]`.
    #[napi(ts_return_type = "Promise<string[][]>")]
    pub fn audit_lists<'env>(
        &self,
        env: &'env Env,
        ws_id: String,
    ) -> Result<PromiseRaw<'env, Vec<Vec<String>>>> {
        let s = self.shared()?;
        env.spawn_future(async move {
            let k = &s.keys;
            let reply = s
                .run(
                    s.scripts
                        .audit_lists
                        .key(k.ws("a", &ws_id))
                        .key(k.ws("ar", &ws_id)),
                )
                .await?;
            let Value::Array(lists) = reply else {
                return Err(unavailable());
            };
            Ok(lists.into_iter().map(strings).collect())
        })
    }

    /// A workspace's analytics rows for days `first_day`..=`last_day` and its sessions open
    /// after `now` (one round trip).
    #[napi(ts_return_type = "Promise<AnalyticsRows>")]
    pub fn analytics_rows<'env>(
        &self,
        env: &'env Env,
        ws_id: String,
        first_day: u32,
        last_day: u32,
        now: f64,
    ) -> Result<PromiseRaw<'env, AnalyticsRows>> {
        let s = self.shared()?;
        env.spawn_future(async move {
            let mut rows = s
                .analytics_rows(
                    std::slice::from_ref(&ws_id),
                    first_day,
                    last_day,
                    ms(now).0,
                    false,
                )
                .await?;
            let (_, _, counters, open) = rows.pop().ok_or_else(unavailable)?;
            Ok(AnalyticsRows { counters, open })
        })
    }

    /// Every indexed workspace's (and `extra`'s: the library's workspace id and record, not
    /// stored here) record and analytics rows, for `GET /v1/admin/analytics`.
    #[napi(ts_return_type = "Promise<WorkspaceRows[]>")]
    pub fn admin_analytics_rows<'env>(
        &self,
        env: &'env Env,
        first_day: u32,
        last_day: u32,
        now: f64,
        extra_id: Option<String>,
        extra_json: Option<String>,
    ) -> Result<PromiseRaw<'env, Vec<crate::reports::WorkspaceRows>>> {
        let s = self.shared()?;
        env.spawn_future(async move {
            let mut ids = strings(
                s.query(
                    redis::cmd("ZRANGE")
                        .arg(s.keys.key("wsindex", "all"))
                        .arg(0)
                        .arg(-1),
                )
                .await?,
            );
            if let Some(extra) = &extra_id {
                if !ids.contains(extra) {
                    ids.push(extra.clone());
                }
            }
            let rows = s
                .analytics_rows(&ids, first_day, last_day, ms(now).0, true)
                .await?;
            Ok(rows
                .into_iter()
                .map(|(id, record, counters, open)| {
                    let workspace = record.or_else(|| {
                        (extra_id.as_deref() == Some(id.as_str()))
                            .then(|| extra_json.clone())
                            .flatten()
                    });
                    crate::reports::WorkspaceRows {
                        workspace_id: id,
                        workspace,
                        counters,
                        open,
                    }
                })
                .collect())
        })
    }

    /// Purges sessions past retention (at most `limit`), each with its `purged` audit event;
    /// answers how many.
    #[napi(ts_return_type = "Promise<number>")]
    pub fn sweep<'env>(
        &self,
        env: &'env Env,
        now: f64,
        limit: u32,
    ) -> Result<PromiseRaw<'env, u32>> {
        let s = self.shared()?;
        env.spawn_future(async move { s.sweep(ms(now).0, limit).await })
    }

    /// `GET /ready`'s check: Redis answers PING within a second.
    #[napi(ts_return_type = "Promise<boolean>")]
    pub fn ping<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, bool>> {
        let s = self.shared()?;
        env.spawn_future(async move {
            let ping = redis::cmd("PING");
            let pong = tokio::time::timeout(Duration::from_secs(1), s.query(&ping));
            Ok(matches!(pong.await, Ok(Ok(_))))
        })
    }

    /// Starts the key cache's tracking connections (nothing is cached until every one tracks).
    #[napi]
    pub fn start_key_cache(&self) {
        if let Some(cache) = &self.shared.key_cache {
            if !self.shared.closed.load(Ordering::Relaxed) {
                cache.start();
            }
        }
    }

    /// The workspace record cached for an API key hash (none: not cached, or the cache is not
    /// live).
    #[napi]
    pub fn cached_key(&self, hash: String) -> Option<String> {
        self.cached(&hash)
    }

    /// Whether the key cache is live (every tracking connection tracks).
    #[napi]
    pub fn key_cache_live(&self) -> bool {
        self.shared.key_cache.as_ref().is_some_and(|c| c.live())
    }

    /// How many tracking connections the key cache has (one per Redis master).
    #[napi]
    pub fn key_cache_trackers(&self) -> u32 {
        self.shared
            .key_cache
            .as_ref()
            .map_or(0, |c| c.trackers() as u32)
    }

    /// Connects now, and checks the deployment (see [`Shared::check`]).
    #[napi(ts_return_type = "Promise<void>")]
    pub fn check<'env>(&self, env: &'env Env) -> Result<PromiseRaw<'env, ()>> {
        let s = self.shared()?;
        env.spawn_future(async move { s.check().await })
    }
}

impl Shared {
    /// Waits for another request's send of session `session_id` to `dest` (see
    /// [`Inflight::await_send`]): another process's is watched at its guard and session.
    async fn await_send(&self, ws_id: &str, dest: &str, session_id: &str) -> bool {
        let (guard, session) = (
            self.keys.guard(ws_id, dest),
            self.keys.session(ws_id, session_id),
        );
        let probe = || async {
            let raw = self.get(&guard).await.ok()?;
            let state = steps::guard_entry(
                split(raw.as_deref()).1.map(str::to_string),
                session_id.to_string(),
                Some(now_ms() as f64),
            )
            .unwrap_or_default();
            let stored = state != "delivered" && matches!(self.get(&session).await, Ok(Some(_)));
            Some((state, stored))
        };
        self.inflight.await_send(session_id, probe).await
    }

    /// For each workspace of `ids`: its record (when `records`), its day hashes of
    /// `first_day..=last_day` flattened, and its open sessions after `now`; one round trip (see
    /// [`Shared::many`]).
    async fn analytics_rows(
        &self,
        ids: &[String],
        first_day: u32,
        last_day: u32,
        now: u64,
        records: bool,
    ) -> Result<Vec<(String, Option<String>, Vec<String>, Vec<String>)>> {
        let k = &self.keys;
        let days = last_day.saturating_sub(first_day) as usize + 1;
        let mut cmds = Vec::new();
        for id in ids {
            if records {
                cmds.push(redis::cmd("GET").arg(k.ws("ws", id)).to_owned());
            }
            for day in first_day..=last_day {
                cmds.push(
                    redis::cmd("HGETALL")
                        .arg(k.ws2("an", id, &day.to_string()))
                        .to_owned(),
                );
            }
            cmds.push(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(k.ws("ao", id))
                    .arg(format!("({now}"))
                    .arg("+inf")
                    .to_owned(),
            );
        }
        let got = self.many(cmds).await?;
        let per = days + 1 + usize::from(records);
        if got.len() != per * ids.len() {
            return Err(unavailable());
        }
        Ok(ids
            .iter()
            .zip(got.chunks_exact(per))
            .map(|(id, g)| {
                let (record, g) = if records {
                    (text(&g[0]), &g[1..])
                } else {
                    (None, g)
                };
                let mut counters = Vec::new();
                for (d, hash) in g[..days].iter().enumerate() {
                    let day = (first_day as usize + d).to_string();
                    for fv in flat_hash(hash).chunks_exact(2) {
                        counters.extend([day.clone(), fv[0].clone(), fv[1].clone()]);
                    }
                }
                let open = strings(g[days].clone());
                (id.clone(), record, counters, open)
            })
            .collect())
    }
}
