//! What a flow run does between store effects when it runs in Rust with a gateway it sends to, for
//! both stores (`memory`, `redis_store`): the gateway's send, reported for the host's metrics and
//! log line, and the wait for another request's send. A send of this process is waited for on
//! its own channel; another process's (Redis) is watched through the store, as the store says.

use crate::send::{Delivered, Gateway};
use otpkit_core::flow::Outcome;
use otpkit_core::gateway::OutgoingMessage;
use otpkit_core::guard::{DeliveryOutcome, IN_FLIGHT_STALE_MS};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::watch;

/// How often another process's send is looked at while waiting for it.
pub(crate) const AWAIT_POLL: Duration = Duration::from_millis(20);

/// The sends of this process in flight: session id → how its send ended (`None` while it runs).
#[derive(Debug, Default)]
pub(crate) struct Inflight(Mutex<HashMap<String, watch::Sender<Option<bool>>>>);

impl Inflight {
    /// This process starts sending session `reference`'s message.
    pub(crate) fn sending(&self, reference: &str) {
        if let Ok(mut m) = self.0.lock() {
            m.insert(reference.to_string(), watch::channel(None).0);
        }
    }

    /// That send's request has answered: `ok` when it answered without an error (its session
    /// is stored and its message went out).
    pub(crate) fn sent(&self, reference: &str, ok: bool) {
        let tx = self.0.lock().ok().and_then(|mut m| m.remove(reference));
        if let Some(tx) = tx {
            tx.send_replace(Some(ok));
        }
    }

    /// Waits for another request's send of `session_id`: true once delivered, false if it
    /// failed or went stale. A send of this process is waited for directly (until it ends, or
    /// for the stale period); otherwise `probe` is asked every [`AWAIT_POLL`] until the stale
    /// period is over. `probe` answers the guard's entry (`pending`, `delivered`, `gone`; `None`
    /// when the store could not be read) and whether the session is stored: a stored session
    /// means its send succeeded, even if its sender died before confirming it.
    pub(crate) async fn await_send<P, Fut>(&self, session_id: &str, mut probe: P) -> bool
    where
        P: FnMut() -> Fut,
        Fut: Future<Output = Option<(String, bool)>>,
    {
        let stale = Duration::from_millis(IN_FLIGHT_STALE_MS);
        let local = self
            .0
            .lock()
            .ok()
            .and_then(|m| m.get(session_id).map(watch::Sender::subscribe));
        if let Some(mut rx) = local {
            let ended = tokio::time::timeout(stale, rx.wait_for(Option::is_some)).await;
            return matches!(ended, Ok(Ok(v)) if *v == Some(true));
        }
        let deadline = tokio::time::Instant::now() + stale;
        while tokio::time::Instant::now() < deadline {
            if let Some((state, stored)) = probe().await {
                if state == "delivered" {
                    return true;
                }
                if stored || state == "gone" {
                    return stored;
                }
            }
            tokio::time::sleep(AWAIT_POLL).await;
        }
        false
    }
}

/// The time now, Unix milliseconds.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Sends `message` of workspace `ws_id` through `gateway`, marked in flight in `inflight` (the
/// caller says when its request answered: [`Inflight::sent`]), and adds the send to `report` as
/// `[channel, gateway kind, outcome, seconds, HTTP status or "", destination, session id,
/// started at (ms)]`. Answers the flow's outcome.
pub(crate) async fn deliver(
    gateway: &Gateway,
    inflight: &Inflight,
    ws_id: &str,
    message: &OutgoingMessage,
    report: &mut Vec<String>,
) -> Outcome {
    inflight.sending(&message.reference);
    let started_ms = now_ms();
    let d = gateway.deliver(ws_id, message).await;
    delivered(d, message, started_ms, report)
}

/// Strings a send takes in a report (see [`delivered`]): channel, gateway kind, outcome (the
/// third), seconds, HTTP status, destination, session id, start (ms).
pub(crate) const SENT_FIELDS: usize = 8;

/// The flow's outcome of a send of `message` begun at `started_ms` that ended as `d`, added to
/// `report` as [`deliver`] says.
pub(crate) fn delivered(
    d: Delivered,
    message: &OutgoingMessage,
    started_ms: u64,
    report: &mut Vec<String>,
) -> Outcome {
    report.extend([
        message.channel.as_str().to_string(),
        d.kind,
        d.sent.outcome.clone(),
        d.seconds.to_string(),
        d.sent.status.map(|s| s.to_string()).unwrap_or_default(),
        message.to.clone(),
        message.reference.clone(),
        started_ms.to_string(),
    ]);
    let outcome = match d.sent.outcome.as_str() {
        "delivered" => DeliveryOutcome::Delivered,
        "timedOut" => DeliveryOutcome::TimedOut,
        _ => DeliveryOutcome::Failed,
    };
    Outcome::Delivery {
        outcome,
        message_id: d.sent.message_id,
    }
}
