//! `DestinationObject`: one Durable Object per (workspace, destination).
//!
//! It is the arbiter of every send to one number: the sliding send window, the failure streak
//! across sessions, and the active session per purpose. Concurrent requests for one
//! (destination, purpose) are coalesced here: the first is told to send, the others wait (in
//! memory, on this object) for its outcome and answer with its session, or 502 if it failed.

use crate::http;
use crate::proto::DestinationCall;
use futures_channel::oneshot;
use futures_util::future::{select, Either};
use otpkit_core::flow::{Admitted, Outcome};
use otpkit_core::guard::{Admission, DeliveryOutcome, DestinationGuard, IN_FLIGHT_STALE_MS};
use otpkit_core::policy::Policy;
use otpkit_core::{Error, UnixMillis, VerifyOutcome};
use std::cell::RefCell;
use std::collections::HashMap;
use std::time::Duration;
use worker::{durable_object, Date, Delay, DurableObject, Env, Request, Response, Result, State};

const GUARD: &str = "guard";
const POLICY: &str = "policy";

#[durable_object]
pub struct DestinationObject {
    state: State,
    /// Requests waiting for an in-flight send, by session id. Lost on eviction, which only
    /// makes a waiter time out into a 502 (its sender's outcome is still recorded).
    waiters: RefCell<HashMap<String, Vec<oneshot::Sender<bool>>>>,
}

fn now() -> UnixMillis {
    UnixMillis(Date::now().as_millis())
}

impl DestinationObject {
    async fn load(&self) -> std::result::Result<DestinationGuard, Error> {
        let raw: Option<String> = self
            .state
            .storage()
            .get(GUARD)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        match raw {
            Some(s) => DestinationGuard::from_json(&s),
            None => Ok(DestinationGuard::new()),
        }
    }

    async fn store(
        &self,
        guard: &DestinationGuard,
        policy: &Policy,
    ) -> std::result::Result<(), Error> {
        let storage = self.state.storage();
        storage
            .put(GUARD, guard.to_json())
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        storage
            .put(POLICY, serde_json::to_string(policy).unwrap_or_default())
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        if let Some(at) = guard.next_change(policy) {
            let offset = i64::try_from(now().millis_until(at))
                .unwrap_or(i64::MAX)
                .max(1000);
            storage
                .set_alarm(offset)
                .await
                .map_err(|_| Error::StoreUnavailable)?;
        }
        Ok(())
    }

    /// Waits at most `timeout_ms` for the outcome of `session_id`'s send.
    async fn wait_for(&self, session_id: &str, timeout_ms: u64) -> bool {
        let (tx, rx) = oneshot::channel();
        self.waiters
            .borrow_mut()
            .entry(session_id.to_string())
            .or_default()
            .push(tx);
        let timeout = Delay::from(Duration::from_millis(timeout_ms));
        match select(rx, timeout).await {
            Either::Left((Ok(delivered), _)) => delivered,
            _ => false,
        }
    }

    fn wake(&self, session_id: &str, delivered: bool) {
        let waiting = self.waiters.borrow_mut().remove(session_id);
        for tx in waiting.into_iter().flatten() {
            let _ = tx.send(delivered);
        }
    }

    async fn handle(&self, call: DestinationCall) -> std::result::Result<String, Error> {
        match call {
            DestinationCall::Admit {
                purpose,
                session_id,
                expires_at,
                test,
                resend,
                policy,
            } => {
                // Read, decide, write: only storage awaits until the guard is stored.
                let mut guard = self.load().await?;
                let at = now();
                let admission = guard.admit_or_charge(
                    purpose,
                    &session_id,
                    expires_at,
                    test,
                    resend,
                    &policy,
                    at,
                );
                self.store(&guard, &policy).await?;
                let answer = match admission {
                    Ok(Admission::Send) => Admitted::Send,
                    Ok(Admission::Reuse { session_id }) => Admitted::Reuse { session_id },
                    Ok(Admission::Wait { session_id }) => {
                        // No longer than until that send goes stale: a sender that died (a
                        // crash or restart of this object, which also loses its waiters) never
                        // reports, and waiting a whole stale period from now overshoots it.
                        let stale_in = guard
                            .active
                            .iter()
                            .find(|a| a.session_id == session_id)
                            .map_or(IN_FLIGHT_STALE_MS, |a| {
                                at.millis_until(a.admitted_at.plus_millis(IN_FLIGHT_STALE_MS))
                            });
                        if self.wait_for(&session_id, stale_in).await {
                            Admitted::Reuse { session_id }
                        } else {
                            Admitted::Failed
                        }
                    }
                    Err(e) => Admitted::Refused {
                        code: e.code().to_string(),
                        retry_after_secs: e.retry_after_secs().unwrap_or(1),
                    },
                };
                Ok(to_json(&answer))
            }
            DestinationCall::Delivery {
                session_id,
                outcome,
                policy,
            } => {
                let mut guard = self.load().await?;
                let cancel = guard.delivery(&session_id, outcome);
                self.store(&guard, &policy).await?;
                self.wake(&session_id, outcome == DeliveryOutcome::Delivered);
                Ok(to_json(&Outcome::Confirmed { cancel }))
            }
            DestinationCall::Verified {
                session_id,
                status,
                attempts_left,
                policy,
            } => {
                let Some(outcome) = VerifyOutcome::from_status(&status, attempts_left) else {
                    return Ok(String::new());
                };
                let mut guard = self.load().await?;
                if guard.record_verify(&session_id, outcome, &policy, now()) {
                    self.store(&guard, &policy).await?;
                }
                Ok(String::new())
            }
            DestinationCall::Active { purpose } => {
                let guard = self.load().await?;
                let outcome = Outcome::Active {
                    session_id: guard.active_session(purpose, now()).map(str::to_string),
                };
                Ok(serde_json::to_string(&outcome).unwrap_or_default())
            }
            DestinationCall::Forget { session_id } => {
                let mut guard = self.load().await?;
                guard.forget(&session_id);
                let policy = self.policy().await;
                self.store(&guard, &policy).await?;
                Ok(String::new())
            }
        }
    }

    async fn policy(&self) -> Policy {
        let raw: Option<String> = self.state.storage().get(POLICY).await.ok().flatten();
        raw.and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default()
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

impl DurableObject for DestinationObject {
    fn new(state: State, _env: Env) -> Self {
        DestinationObject {
            state,
            waiters: RefCell::new(HashMap::new()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: DestinationCall = match req.json().await {
            Ok(c) => c,
            Err(_) => return http::error(&Error::invalid("", "bad internal call")),
        };
        match self.handle(call).await {
            Ok(body) => Response::ok(body),
            Err(e) => http::error(&e),
        }
    }

    async fn alarm(&self) -> Result<Response> {
        let policy = self.policy().await;
        let mut guard = match self.load().await {
            Ok(g) => g,
            Err(_) => DestinationGuard::new(),
        };
        guard.prune(&policy, now());
        if guard.is_idle() {
            self.state.storage().delete_all().await?;
        } else if self.store(&guard, &policy).await.is_err() {
            return Response::error("store failed", 503);
        }
        Response::ok("")
    }
}

impl std::fmt::Debug for DestinationObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DestinationObject")
            .field("waiting", &self.waiters.borrow().len())
            .finish()
    }
}
