//! The API-key cache of the Redis store ([`crate::redis_store::RedisCore`]): key hash →
//! workspace JSON, in this process, so that a request's authentication usually costs no Redis
//! round trip (a new send then waits for 2 round trips on one Redis, plus the gateway).
//!
//! Revocation stays immediate through Redis's server-assisted client-side caching: a dedicated
//! RESP3 connection to each Redis that holds keys (the one Redis, or every master of a Cluster)
//! turns on `CLIENT TRACKING ON BCAST PREFIX <prefix>key: PREFIX <prefix>ws:`. Redis then pushes
//! an `invalidate` message on that same connection for every write to those keys, by any process
//! or by hand, and the cache is emptied on each (admin writes are rare). A lookup answered by
//! Redis is kept only if no invalidation came while it was in flight ([`KeyCache::generation`]).
//!
//! Unless every tracking connection is tracking (starting, reconnecting, a master added or
//! failed over, an ACL without `CLIENT`, Redis before 6), nothing is cached and every lookup goes
//! to Redis. Any change in the set of tracking connections or in their state empties the cache.
//! Each tracker reconnects by itself (backoff up to 1 s, a `PING` each second notices a dead
//! peer) and re-arms tracking; a Redis that refuses tracking is told once per node and cause
//! ([`Refused`]) and tried again every [`REFUSED_RETRY`]. On a Cluster the masters are read
//! (`CLUSTER NODES`; a master flagged `fail` is skipped once it owns no slot) every [`RECHECK`]
//! and whenever a tracker loses its connection: trackers of nodes no longer masters are closed,
//! new masters get one.
//!
//! Background tasks hold the cache weakly: dropping the last [`Arc`] stops them as
//! [`KeyCache::stop`] does. A URL is never logged or formatted (it can hold a password).

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, Client, ConnectionAddr, ConnectionInfo, ErrorKind, IntoConnectionInfo,
    ProtocolVersion, PushInfo, PushKind, RedisConnectionInfo, RedisError,
};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::AbortHandle;

/// How long a cached lookup is used at most, even with no invalidation heard.
const MAX_AGE: Duration = Duration::from_secs(60);
/// Entries kept at most; past that the cache starts over (forgetting costs one lookup each).
const MAX_ENTRIES: usize = 10_000;
/// Connecting (with the handshake), and waiting for an answer on a tracking connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
/// A live tracking connection is pinged this often (a silent dead peer sends no disconnection).
const HEARTBEAT: Duration = Duration::from_secs(1);
/// A Cluster's masters are read again this often.
const RECHECK: Duration = Duration::from_millis(1500);
/// A Redis that refused tracking is asked again after this long.
const REFUSED_RETRY: Duration = Duration::from_secs(30);

/// Where the keys live: one Redis URL (`redis://`, `rediss://`, with its credentials and
/// database), or a Cluster's start nodes `host:port`.
pub(crate) enum TrackTarget {
    Url(String),
    Nodes(Vec<String>),
}

impl std::fmt::Debug for TrackTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TrackTarget::Url(_) => f.write_str("Url(..)"), // it can hold a password
            TrackTarget::Nodes(nodes) => f.debug_tuple("Nodes").field(nodes).finish(),
        }
    }
}

/// Told once per (node `host:port`, cause) that Redis refused tracking there; the cause is
/// Redis's error word (`NOPERM`, `ERR`, …), never more of its text.
pub(crate) type Refused = Box<dyn Fn(String, String) + Send + Sync>;

/// The API-key cache (see the module's doc). Shared as `Arc<KeyCache>`.
pub(crate) struct KeyCache {
    prefix: String,
    target: TrackTarget,
    refused: Option<Refused>,
    state: Mutex<State>,
    /// Wakes a Cluster's topology check early (a tracker lost its connection).
    recheck: Arc<Notify>,
}

impl std::fmt::Debug for KeyCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("KeyCache");
        if let Ok(s) = self.state.try_lock() {
            d.field("live", &s.live)
                .field("entries", &s.entries.len())
                .field("trackers", &s.trackers.len())
                .field("generation", &s.gen);
        }
        d.finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    entries: HashMap<String, Entry>,
    /// Bumped by every invalidation and own write: a lookup that spans one is not kept.
    gen: u64,
    live: bool,
    /// Node `host:port` → its tracking connection's task.
    trackers: BTreeMap<String, Tracker>,
    /// (node, cause) pairs already told to `refused`.
    said: HashSet<(String, String)>,
    started: bool,
    stopped: bool,
    /// The last tracker's number: a task or connection of a replaced tracker changes nothing.
    epoch: u64,
    watcher: Option<AbortHandle>,
}

struct Entry {
    json: Arc<str>,
    id: Arc<str>,
    at: Instant,
}

struct Tracker {
    epoch: u64,
    tracking: bool,
    task: AbortHandle,
}

/// One tracking connection's fate, shared with its push handler.
#[derive(Default)]
struct Link {
    lost: AtomicBool,
    wake: Notify,
}

#[derive(serde::Deserialize)]
struct Record {
    id: String,
}

impl KeyCache {
    pub(crate) fn new(prefix: String, target: TrackTarget, refused: Option<Refused>) -> Arc<Self> {
        Arc::new(KeyCache {
            prefix,
            target,
            refused,
            state: Mutex::default(),
            recheck: Arc::new(Notify::new()),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts the tracking connections in the background (idempotent; never again after
    /// [`stop`](Self::stop)). Spawns on napi's tokio runtime, so it works on the JS thread.
    pub(crate) fn start(self: &Arc<Self>) {
        let weak = Arc::downgrade(self);
        let mut s = self.lock();
        if s.started || s.stopped {
            return;
        }
        s.started = true;
        match &self.target {
            TrackTarget::Url(url) => {
                drop(s);
                // An unreadable URL: no tracker, never live (the store fails on it too).
                if let Ok(mut info) = url.as_str().into_connection_info() {
                    info.redis.protocol = ProtocolVersion::RESP3;
                    self.sync(&weak, BTreeMap::from([(node_name(&info.addr), info)]));
                }
            }
            TrackTarget::Nodes(starts) => {
                let task = watch(weak, starts.clone(), Arc::clone(&self.recheck));
                s.watcher = Some(napi::bindgen_prelude::spawn(task).abort_handle());
            }
        }
    }

    /// (workspace JSON, workspace id) cached for `hash` when live and at most 60 s old (else
    /// None; an expired entry is removed).
    pub(crate) fn entry(&self, hash: &str) -> Option<(Arc<str>, Arc<str>)> {
        let mut s = self.lock();
        if !s.live {
            return None;
        }
        let e = s.entries.get(hash)?;
        if e.at.elapsed() <= MAX_AGE {
            return Some((Arc::clone(&e.json), Arc::clone(&e.id)));
        }
        s.entries.remove(hash);
        None
    }

    /// The generation: bumped by every invalidation and own write. A lookup reads it before
    /// asking Redis and passes it to [`put`](Self::put).
    pub(crate) fn generation(&self) -> u64 {
        self.lock().gen
    }

    /// Keeps what Redis answered for `hash` when live, `json` is a record with a string `id`,
    /// and no invalidation came since `gen`. Unknown keys are not cached by the caller (a flood
    /// of random keys would only churn the cache). At most 10,000 entries (then it starts over).
    pub(crate) fn put(&self, hash: &str, json: &str, gen: u64) {
        if !self.lock().live {
            return;
        }
        let Ok(record) = serde_json::from_str::<Record>(json) else {
            return; // not a record: the caller's parse will say so
        };
        let mut s = self.lock();
        if !s.live || s.gen != gen {
            return;
        }
        if s.entries.len() >= MAX_ENTRIES {
            s.entries.clear();
        }
        let entry = Entry {
            json: json.into(),
            id: record.id.into(),
            at: Instant::now(),
        };
        s.entries.insert(hash.to_owned(), entry);
    }

    /// Empties the cache and bumps the generation (an own admin write calls it before and after).
    pub(crate) fn drop_all(&self) {
        drop_locked(&mut self.lock());
    }

    /// Live only while every tracking connection is tracking (and there is at least one).
    pub(crate) fn live(&self) -> bool {
        self.lock().live
    }

    /// How many tracking connections exist (one per master).
    pub(crate) fn trackers(&self) -> usize {
        self.lock().trackers.len()
    }

    /// Stops: not live, emptied, every tracking connection closed, background tasks end.
    pub(crate) fn stop(&self) {
        let mut s = self.lock();
        s.stopped = true;
        s.live = false;
        for t in std::mem::take(&mut s.trackers).into_values() {
            t.task.abort(); // drops its connection, which closes it
        }
        if let Some(w) = s.watcher.take() {
            w.abort();
        }
        drop_locked(&mut s);
    }

    /// One tracker per node of `masters` (address → how to connect): others are closed.
    fn sync(&self, weak: &Weak<Self>, masters: BTreeMap<String, ConnectionInfo>) {
        let mut s = self.lock();
        if s.stopped {
            return;
        }
        let before = s.trackers.len();
        s.trackers.retain(|node, t| {
            let keep = masters.contains_key(node);
            if !keep {
                t.task.abort();
            }
            keep
        });
        let mut changed = s.trackers.len() != before;
        for (node, info) in masters {
            if s.trackers.contains_key(&node) {
                continue;
            }
            s.epoch += 1;
            let epoch = s.epoch;
            let task = track(weak.clone(), node.clone(), info, epoch);
            let task = napi::bindgen_prelude::spawn(task).abort_handle();
            let tracking = false;
            s.trackers.insert(
                node,
                Tracker {
                    epoch,
                    tracking,
                    task,
                },
            );
            changed = true;
        }
        if changed {
            settle(&mut s);
        }
    }

    /// A tracker is tracking (`on`, unless its connection was lost meanwhile) or not.
    fn mark(&self, node: &str, epoch: u64, link: &Link, on: bool) {
        let mut s = self.lock();
        let Some(t) = s.trackers.get_mut(node).filter(|t| t.epoch == epoch) else {
            return;
        };
        let on = on && !link.lost.load(Ordering::SeqCst);
        if t.tracking != on {
            t.tracking = on;
            settle(&mut s);
        }
    }

    /// Says once per node and cause that Redis refused tracking there.
    fn report(&self, node: &str, cause: String) {
        if self.lock().said.insert((node.to_owned(), cause.clone())) {
            if let Some(refused) = &self.refused {
                refused(node.to_owned(), cause);
            }
        }
    }
}

impl Drop for KeyCache {
    fn drop(&mut self) {
        self.stop();
    }
}

fn drop_locked(s: &mut State) {
    s.gen = s.gen.wrapping_add(1);
    s.entries.clear();
}

/// Live only while every connection tracks; any change empties the cache.
fn settle(s: &mut State) {
    s.live = !s.trackers.is_empty() && s.trackers.values().all(|t| t.tracking);
    drop_locked(s);
}

/// Runs `f` on the cache unless it is gone (then false: the task ends).
fn with(weak: &Weak<KeyCache>, f: impl FnOnce(&KeyCache)) -> bool {
    weak.upgrade().map(|c| f(&c)).is_some()
}

/// One tracking connection, for as long as its tracker exists: connects, arms tracking, holds
/// until the connection is lost, and again after a pause.
async fn track(weak: Weak<KeyCache>, node: String, info: ConnectionInfo, epoch: u64) {
    let mut tries: u64 = 0;
    loop {
        let link = Arc::new(Link::default());
        let pause = match arm(&weak, &node, &info, epoch, &link).await {
            Ok(mut conn) => {
                tries = 0;
                if !with(&weak, |c| c.mark(&node, epoch, &link, true)) {
                    return;
                }
                hold(&mut conn, &link).await;
                drop(conn);
                let lost = |c: &KeyCache| {
                    c.mark(&node, epoch, &link, false);
                    c.recheck.notify_one();
                };
                if !with(&weak, lost) {
                    return;
                }
                Duration::from_millis(100)
            }
            Err(e) => {
                let cause = refusal(&e);
                let refused = cause.is_some();
                let failed = |c: &KeyCache| {
                    c.mark(&node, epoch, &link, false);
                    if let Some(cause) = cause {
                        c.report(&node, cause);
                    }
                };
                if !with(&weak, failed) {
                    return;
                }
                tries += 1;
                if refused {
                    REFUSED_RETRY
                } else {
                    Duration::from_millis(tries.saturating_mul(100).min(1000))
                }
            }
        };
        tokio::time::sleep(pause).await;
    }
}

/// Connects (RESP3, pushes to `link` and the cache) and turns tracking on.
async fn arm(
    weak: &Weak<KeyCache>,
    node: &str,
    info: &ConnectionInfo,
    epoch: u64,
    link: &Arc<Link>,
) -> Result<MultiplexedConnection, RedisError> {
    let prefix = match weak.upgrade() {
        Some(c) => c.prefix.clone(),
        None => return Err(closed()),
    };
    let (to, on, name) = (weak.clone(), Arc::clone(link), node.to_owned());
    let pushed = move |push: PushInfo| {
        match push.kind {
            PushKind::Invalidate => {
                with(&to, KeyCache::drop_all);
            }
            PushKind::Disconnection => {
                on.lost.store(true, Ordering::SeqCst);
                with(&to, |c| c.mark(&name, epoch, &on, false));
                on.wake.notify_one();
            }
            _ => {}
        }
        Ok::<(), ()>(())
    };
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT)
        .set_push_sender(pushed);
    let client = Client::open(info.clone())?;
    let connecting = client.get_multiplexed_async_connection_with_config(&config);
    let mut conn = tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting)
        .await
        .map_err(|_| closed())??;
    redis::cmd("CLIENT")
        .arg("TRACKING")
        .arg("ON")
        .arg("BCAST")
        .arg("PREFIX")
        .arg(format!("{prefix}key:"))
        .arg("PREFIX")
        .arg(format!("{prefix}ws:"))
        .query_async::<()>(&mut conn)
        .await?;
    Ok(conn)
}

/// Waits until the connection is lost: a disconnection push, or a `PING` unanswered.
async fn hold(conn: &mut MultiplexedConnection, link: &Link) {
    loop {
        tokio::select! {
            _ = link.wake.notified() => return,
            _ = tokio::time::sleep(HEARTBEAT) => {}
        }
        if link.lost.load(Ordering::SeqCst) {
            return;
        }
        // The connection's response timeout bounds the wait.
        if redis::cmd("PING").query_async::<()>(conn).await.is_err() {
            return;
        }
    }
}

/// Redis's error word when Redis refused (an ACL, a password, Redis before 6); None when the
/// connection failed or Redis is only busy (tried again soon).
fn refusal(e: &RedisError) -> Option<String> {
    match (e.code(), e.kind()) {
        (Some("LOADING" | "BUSY" | "MASTERDOWN" | "TRYAGAIN" | "CLUSTERDOWN"), _) => None,
        (Some(code), _) => Some(code.to_owned()),
        (None, ErrorKind::RESP3NotSupported) => Some("ERR".to_owned()), // unknown command HELLO
        (None, ErrorKind::AuthenticationFailed) => Some("WRONGPASS".to_owned()),
        (None, _) => None,
    }
}

fn closed() -> RedisError {
    RedisError::from((ErrorKind::IoError, "key cache tracker: no connection"))
}

/// A Cluster's topology: the masters read from any reachable node (the last one that answered,
/// then the tracked masters, then the start nodes), again every [`RECHECK`] or when woken.
async fn watch(weak: Weak<KeyCache>, starts: Vec<String>, recheck: Arc<Notify>) {
    let mut via: Option<(String, MultiplexedConnection)> = None;
    loop {
        let Some(known) = weak
            .upgrade()
            .map(|c| c.lock().trackers.keys().cloned().collect())
        else {
            return;
        };
        let known: Vec<String> = known;
        if let Some(masters) = discover(&mut via, known.iter().chain(&starts)).await {
            let masters = masters
                .into_iter()
                .filter_map(|n| Some((n.clone(), node_info(&n, ProtocolVersion::RESP3)?)))
                .collect();
            if !with(&weak, |c| c.sync(&weak, masters)) {
                return;
            }
        }
        tokio::select! {
            _ = recheck.notified() => {}
            _ = tokio::time::sleep(RECHECK) => {}
        }
    }
}

/// The masters' addresses by `CLUSTER NODES`, or None when no node answered.
async fn discover<'a>(
    via: &mut Option<(String, MultiplexedConnection)>,
    candidates: impl Iterator<Item = &'a String>,
) -> Option<BTreeSet<String>> {
    if let Some((node, conn)) = via {
        if let Ok(text) = cluster_nodes(conn).await {
            return Some(masters(&text, node));
        }
        *via = None;
    }
    let config = AsyncConnectionConfig::new()
        .set_connection_timeout(CONNECT_TIMEOUT)
        .set_response_timeout(RESPONSE_TIMEOUT);
    for node in candidates {
        let Some(client) =
            node_info(node, ProtocolVersion::RESP2).and_then(|i| Client::open(i).ok())
        else {
            continue;
        };
        let connecting = client.get_multiplexed_async_connection_with_config(&config);
        let Ok(Ok(mut conn)) = tokio::time::timeout(CONNECT_TIMEOUT * 2, connecting).await else {
            continue;
        };
        if let Ok(text) = cluster_nodes(&mut conn).await {
            let found = masters(&text, node);
            *via = Some((node.clone(), conn));
            return Some(found);
        }
    }
    None
}

async fn cluster_nodes(conn: &mut MultiplexedConnection) -> Result<String, RedisError> {
    // The connection's response timeout bounds the wait.
    redis::cmd("CLUSTER").arg("NODES").query_async(conn).await
}

/// The masters (`host:port`) of a `CLUSTER NODES` answer got from `via`: all of them, with
/// slots or not (a master given slots later is tracked already), but those flagged `noaddr` or
/// `handshake`, and those flagged `fail` that own no slot. A failed master that still owns slots
/// is kept (its tracker is not tracking, so nothing is cached) until a replica takes them over:
/// then the new master is in the same answer, so no write on it goes unheard.
fn masters(text: &str, via: &str) -> BTreeSet<String> {
    let via_host = split_node(via).map_or("", |(h, _)| h);
    let master = |line: &str| {
        // <id> <addr> <flags> <master> <ping> <pong> <epoch> <link> <slot>...
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (addr, flags) = (*fields.get(1)?, *fields.get(2)?);
        let flags: Vec<&str> = flags.split(',').collect();
        let gone = flags.contains(&"fail") && fields.len() <= 8;
        if !flags.contains(&"master")
            || flags.contains(&"noaddr")
            || flags.contains(&"handshake")
            || gone
        {
            return None;
        }
        // `ip:port@cport[,hostname]`; a node that does not know its own ip says `:port`.
        let (host, port) = split_node(addr.split(['@', ',']).next()?)?;
        let host = if host.is_empty() { via_host } else { host };
        (port != 0 && !host.is_empty()).then(|| format!("{host}:{port}"))
    };
    text.lines().filter_map(master).collect()
}

/// `host:port` (or `[v6]:port`) split.
fn split_node(node: &str) -> Option<(&str, u16)> {
    let (host, port) = node.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host, port.parse().ok()?))
}

/// How to connect to a Cluster node: plain TCP, no credentials (as the store's cluster client).
fn node_info(node: &str, protocol: ProtocolVersion) -> Option<ConnectionInfo> {
    let (host, port) = split_node(node)?;
    Some(ConnectionInfo {
        addr: ConnectionAddr::Tcp(host.to_owned(), port),
        redis: RedisConnectionInfo {
            protocol,
            ..RedisConnectionInfo::default()
        },
    })
}

/// A node's name for [`Refused`]: `host:port`, or a Unix socket's path (no credentials).
fn node_name(addr: &ConnectionAddr) -> String {
    match addr {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        ConnectionAddr::Unix(path) => path.display().to_string(),
    }
}
