//! `POST /v1/messaging/otp/sessions/{id}/resend` and `POST /otp/{id}/resend` (SPEC §7, "Resend"):
//! the same session, a new code (only a hash is stored, so the old one cannot be sent again; it
//! stops matching once the new one is stored), a new expiry, the attempts used kept.
//!
//! Reserve at the session (atomic: pending, and `resendAfterSeconds` since its last send, else
//! 429 `RESEND_TOO_SOON`) → charge at the destination guard and the flood shield, like a send →
//! deliver (on the channel asked for, else the session's; then the policy's fallbacks) → apply
//! the new code at the session (atomic: only if it is still pending) → answer as a new send →
//! audit `resent`, analytics. A refusal or a definite delivery failure hands the reservation
//! and the charge back (the daily spend too, [`crate::spend`]), so the user may try again at
//! once; a timeout keeps both (the message may have gone out).

use super::{refused, store_error, Admitted, Io, Outcome, Queue, Step, VerifyStep};
use crate::analytics;
use crate::audit::AuditEvent;
use crate::code::{digits_from_bytes, Entropy};
use crate::error::Error;
use crate::fraud::FraudCharge;
use crate::gateway::OutgoingMessage;
use crate::guard::DeliveryOutcome;
use crate::hash::{code_hash_for, to_hex};
use crate::http::envelope::{self, Reply};
use crate::http::request::{Dialect, ResendRequest};
use crate::policy::Policy;
use crate::secret::{Code, Pepper};
use crate::session::{Session, SessionState, StoredState};
use crate::spend::SpendPlan;
use crate::template;
use crate::time::UnixMillis;
use crate::validate::{self, Channel};
use alloc::collections::VecDeque;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// One step of a resend at the stored session ([`Io::Resend`], [`resend_stored`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "camelCase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum ResendStep {
    /// If the session is pending and its last send was at least `min_interval_secs` ago, mark
    /// a send as of now. Answers the session as it was before.
    Reserve {
        /// The policy's `resendAfterSeconds`.
        min_interval_secs: u32,
    },
    /// The new code was delivered: store its hash, expiry and channel, if the session is still
    /// pending (approved, canceled or locked meanwhile: nothing changes).
    Apply {
        /// Hex HMAC of the new code.
        code_hash: String,
        /// The new expiry.
        expires_at: UnixMillis,
        /// The channel that delivered it.
        channel: Channel,
        /// SMS segments of the message.
        segments: u32,
        /// The provider's message id of the new message, when the gateway's reply named one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        message_id: Option<String>,
    },
    /// The send failed definitely or was refused: give the reservation made at `reserved_at`
    /// back (the last send is `previous` again), unless another one replaced it.
    Release {
        /// When this resend reserved.
        reserved_at: UnixMillis,
        /// The session's last send before it.
        previous: Option<UnixMillis>,
    },
}

/// What a store does inside its critical section for [`Io::Resend`]: the step on the session it
/// holds (only a session of `workspace_id` is seen). `write` is what to store back.
#[must_use]
pub fn resend_stored(
    stored: Option<Session>,
    workspace_id: &str,
    step: &ResendStep,
    now: UnixMillis,
) -> VerifyStep {
    let Some(mut s) = stored.filter(|s| s.workspace_id == workspace_id) else {
        return VerifyStep {
            outcome: Outcome::Resent {
                done: false,
                session: None,
            },
            write: None,
        };
    };
    let done = match step {
        ResendStep::Reserve { min_interval_secs } => {
            let next = s.last_sent_at().plus_secs(u64::from(*min_interval_secs));
            // An interval of 0 admits every resend, even one whose clock read a little before
            // a concurrent one that reserved first (the hosts' clocks are read per request).
            let soon = *min_interval_secs > 0 && now < next;
            let ok = s.state_at(now) == SessionState::Pending && !soon;
            // Answered as it was before, so the flow knows the send it may have to give back.
            let before = s.clone();
            s.sent_at = Some(now);
            return VerifyStep {
                write: ok.then_some(s),
                outcome: Outcome::Resent {
                    done: ok,
                    session: Some(before),
                },
            };
        }
        ResendStep::Apply {
            code_hash,
            expires_at,
            channel,
            segments,
            message_id,
        } => {
            // Not `state_at`: a session that expired while its resend was being delivered is
            // brought back by it (the reservation was made while it lived).
            let ok = s.state == StoredState::Pending && s.attempts_used < s.max_attempts;
            if ok {
                s.ttl_seconds = Some(u32::try_from(s.ttl_secs()).unwrap_or(u32::MAX));
                s.code_hash.clone_from(code_hash);
                s.expires_at = *expires_at;
                s.channel = *channel;
                s.segments = *segments;
                s.resends = s.resends.saturating_add(1);
                if !s.test {
                    s.delivery = Some(crate::delivery::Delivery::accepted(message_id.clone()));
                }
            }
            ok
        }
        ResendStep::Release {
            reserved_at,
            previous,
        } => {
            let ok = s.sent_at == Some(*reserved_at);
            if ok {
                s.sent_at = *previous;
            }
            ok
        }
    };
    VerifyStep {
        write: done.then(|| s.clone()),
        outcome: Outcome::Resent {
            done,
            session: Some(s),
        },
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Reserve,
    Charge,
    FloodRefund,
    Deliver,
    Refund,
    SpendRefund,
    Release,
    Apply,
    After,
}

/// One resend as a flow.
#[derive(Debug)]
pub struct ResendFlow {
    dialect: Dialect,
    session_id: String,
    now: UnixMillis,
    channel: Option<Channel>,
    reuse_hints: bool,
    policy: Policy,
    entropy: Entropy,
    pepper: Pepper,
    /// The session as the reservation found it.
    session: Option<Session>,
    /// Its last send before this one (given back on a release).
    previous: Option<UnixMillis>,
    /// The new code's hash, expiry and SMS segments, once planned.
    code_hash: String,
    expires_at: UnixMillis,
    segments: u32,
    /// The provider's message id of the delivered message.
    message_id: Option<String>,
    /// The message, and the channels still to try after its own.
    message: Option<OutgoingMessage>,
    fallbacks: Vec<Channel>,
    /// The charge against the daily spend cap, if any, and whether it was made.
    spend: Option<SpendPlan>,
    spent: bool,
    /// The error answered once the reservation is given back.
    pending_error: Option<Error>,
    /// Audit events and analytics recorded after the answer.
    events: Vec<AuditEvent>,
    deltas: Vec<analytics::Delta>,
    q: Queue<Wait>,
    tags: VecDeque<Wait>,
}

impl ResendFlow {
    /// Starts a resend of the id as given in the path (malformed → NOT_FOUND at once).
    #[allow(clippy::too_many_arguments)]
    #[must_use]
    pub fn start(
        raw_id: &str,
        req: &ResendRequest,
        dialect: Dialect,
        policy: &Policy,
        now: UnixMillis,
        entropy: &Entropy,
        pepper: &Pepper,
        traits: super::HostTraits,
    ) -> Self {
        let mut flow = ResendFlow {
            dialect,
            session_id: String::new(),
            now,
            channel: req.channel,
            reuse_hints: traits.reuse_hints && policy.reuse,
            policy: policy.clone(),
            entropy: entropy.clone(),
            pepper: pepper.clone(),
            session: None,
            previous: None,
            code_hash: String::new(),
            expires_at: now,
            segments: 0,
            message_id: None,
            message: None,
            fallbacks: Vec::new(),
            spend: None,
            spent: false,
            pending_error: None,
            events: Vec::new(),
            deltas: Vec::new(),
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        match validate::normalize_session_id(raw_id) {
            Some(session_id) => {
                flow.session_id = session_id.clone();
                let step = ResendStep::Reserve {
                    min_interval_secs: policy.resend_after_seconds,
                };
                flow.ask(Wait::Reserve, Io::Resend { session_id, step });
            }
            None => flow.q.answer(Ok(flow.not_found())),
        }
        flow
    }

    /// The resend a delivery receipt asked for ([`super::receipt::Fallback`], SPEC §8
    /// `fallbackOnUndelivered`): on the fallback channel, in its workspace, charged as any
    /// resend, but not held to `resendAfterSeconds` (the user received nothing).
    #[must_use]
    pub fn fallback(
        fb: &super::receipt::Fallback,
        now: UnixMillis,
        entropy: &Entropy,
        pepper: &Pepper,
        traits: super::HostTraits,
    ) -> Self {
        let mut policy = fb.workspace.policy.clone();
        policy.resend_after_seconds = 0;
        let req = ResendRequest {
            channel: Some(fb.channel),
        };
        ResendFlow::start(
            &fb.session_id,
            &req,
            Dialect::V1,
            &policy,
            now,
            entropy,
            pepper,
            traits,
        )
    }

    /// The next step.
    pub fn poll(&mut self) -> Step {
        self.q.poll(&mut self.tags)
    }

    fn ask(&mut self, wait: Wait, io: Io) {
        self.tags.push_back(wait);
        self.q.io(io);
    }

    fn not_found(&self) -> Reply {
        super::session_not_found(self.dialect)
    }

    /// The refusal for a session that is no longer pending, or too soon after its last send.
    fn refusal(&self, s: &Session) -> Error {
        match s.state_at(self.now) {
            SessionState::Pending => {
                let interval = self.policy.resend_after_seconds;
                let next = s.last_sent_at().plus_secs(u64::from(interval));
                // Never more than the interval: a concurrent resend may have reserved with a
                // clock read after this request's own (`now` earlier than its send).
                let wait = crate::error::retry_secs_from_millis(self.now.millis_until(next));
                Error::ResendTooSoon {
                    retry_after_secs: wait.min(interval.max(1)),
                }
            }
            ended => super::ended_error(ended),
        }
    }

    /// Reserved: the new code, its hash and its message; then the charge.
    fn reserved(&mut self, s: Session) {
        let test_code = self.policy.test_code(&s.dest).map(ToString::to_string);
        let code = match test_code {
            Some(fixed) => Code::new(fixed),
            None => digits_from_bytes(&self.entropy.code, usize::from(s.code_length)),
        };
        let ttl = s.ttl_secs();
        self.expires_at = self.now.plus_secs(ttl);
        let tx = s.transaction.as_deref();
        let hash = code_hash_for(
            &self.pepper,
            &s.workspace_id,
            &s.id,
            s.purpose,
            code.expose(),
            tx,
        );
        self.code_hash = to_hex(&hash);
        let channel = self.channel.unwrap_or(s.channel);
        if !s.test {
            let text = s.template.as_deref().unwrap_or(if tx.is_some() {
                template::DEFAULT_TRANSACTION_TEMPLATE
            } else {
                template::DEFAULT_TEMPLATE
            });
            let ttl32 = u32::try_from(ttl).unwrap_or(u32::MAX);
            match template::render(
                "messageTemplate",
                text,
                code.expose(),
                ttl32,
                s.app.as_deref(),
                s.purpose,
                tx,
            ) {
                Ok(rendered) => {
                    self.segments = rendered.info.segments;
                    self.message = Some(OutgoingMessage {
                        to: s.dest.clone(),
                        from: s.src.clone(),
                        text: rendered.text,
                        channel,
                        reference: s.id.clone(),
                        whatsapp: crate::gateway::WhatsappSend::for_policy(
                            &self.policy,
                            code.expose(),
                        ),
                    });
                    self.fallbacks = self.policy.fallbacks_after(channel).to_vec();
                }
                Err(e) => {
                    // Rendered once already when the session was issued; cannot happen.
                    self.session = Some(s);
                    self.release(e);
                    return;
                }
            }
        }
        let channels: Vec<_> = core::iter::once(channel)
            .chain(self.fallbacks.iter().copied())
            .collect();
        self.spend = SpendPlan::new(&self.policy, s.test, self.segments, &channels, self.now);
        let io = Io::Admit {
            dest: s.dest.clone(),
            purpose: s.purpose,
            session_id: s.id.clone(),
            expires_at: self.expires_at,
            test: s.test,
            flood_limit: (!s.test).then_some(self.policy.sends_per_workspace_per_minute),
            spend: self.spend.map(|p| p.charge),
            fraud: FraudCharge::new(&self.policy.fraud_guard, &s.dest, s.test),
            resend: true,
        };
        self.session = Some(s);
        self.ask(Wait::Charge, io);
    }

    /// Gives the reservation back, then answers `e`.
    fn release(&mut self, e: Error) {
        self.pending_error = Some(e);
        let step = ResendStep::Release {
            reserved_at: self.now,
            previous: self.previous,
        };
        let session_id = self.session_id.clone();
        self.ask(Wait::Release, Io::Resend { session_id, step });
    }

    fn deliver(&mut self) {
        match self.message.clone() {
            Some(message) => self.ask(Wait::Deliver, Io::Deliver { message }),
            None => self.apply(),
        }
    }

    fn apply(&mut self) {
        let channel = match (&self.message, &self.session) {
            (Some(m), _) => m.channel,
            (None, Some(s)) => self.channel.unwrap_or(s.channel),
            (None, None) => Channel::Sms,
        };
        let segments = self.segments;
        let step = ResendStep::Apply {
            code_hash: core::mem::take(&mut self.code_hash),
            expires_at: self.expires_at,
            channel,
            segments,
            message_id: self.message_id.take(),
        };
        let session_id = self.session_id.clone();
        self.ask(Wait::Apply, Io::Resend { session_id, step });
    }

    fn report(&mut self, wait: Wait, outcome: DeliveryOutcome) {
        let Some(s) = &self.session else { return };
        let io = Io::ReportDelivery {
            dest: s.dest.clone(),
            session_id: s.id.clone(),
            outcome,
        };
        self.ask(wait, io);
    }

    /// Answers, then records what this resend did (one write).
    fn finish(&mut self, answer: Result<Reply, Error>) {
        self.q.answer(answer);
        let events = core::mem::take(&mut self.events);
        let deltas = core::mem::take(&mut self.deltas);
        if !events.is_empty() || !deltas.is_empty() {
            self.ask(Wait::After, Io::Record { events, deltas });
        }
    }

    /// The gateway failed on one channel: the next fallback, or the refund and the release.
    fn delivery_failed(&mut self, outcome: DeliveryOutcome) {
        let failed = self
            .message
            .as_ref()
            .zip(self.session.as_ref())
            .map(|(m, s)| {
                let mut tried = s.clone();
                tried.channel = m.channel;
                AuditEvent::for_session("delivery_failed", &tried, "failed", None, self.now)
            });
        // Each try is audited.
        self.events.extend(failed);
        if outcome == DeliveryOutcome::Failed && !self.fallbacks.is_empty() {
            // The next channel, within this resend.
            let next = self.fallbacks.remove(0);
            if let Some(m) = &mut self.message {
                m.channel = next;
            }
            self.deliver();
            return;
        }
        self.deltas
            .extend(self.session.as_ref().and_then(analytics::delivery_failed));
        if outcome == DeliveryOutcome::Failed {
            // Refunded at the guard, then the reservation given back.
            self.pending_error = Some(Error::DeliveryFailed);
            self.report(Wait::Refund, DeliveryOutcome::Failed);
        } else {
            // A timeout: the message may have gone out; charge and reservation stay.
            self.finish(Err(Error::DeliveryFailed));
        }
    }

    fn applied(&mut self, s: &Session) {
        let reply = match self.dialect {
            Dialect::V1 => envelope::v1_request(s, self.now, false),
            Dialect::Zend => envelope::zend_send(s, false),
        };
        self.events
            .push(AuditEvent::for_session("resent", s, "ok", None, self.now));
        self.deltas.extend(analytics::resent(s));
        self.finish(Ok(reply));
        // Charged the most of its channels: what the one that delivered did not use goes back.
        let unused = self
            .spend
            .filter(|_| self.spent)
            .and_then(|p| p.unused(s.channel).map(|micros| (p.charge.day, micros)));
        if let Some((day, micros)) = unused {
            self.ask(Wait::After, Io::RefundSpend { day, micros });
        }
        if self.reuse_hints {
            // The hint lives as long as the new code.
            let io = Io::PutReuseHint {
                dest: s.dest.clone(),
                purpose: s.purpose,
                session_id: s.id.clone(),
                ttl_secs: self.now.secs_until_ceil(s.expires_at).max(60),
            };
            self.ask(Wait::After, io);
        }
    }

    /// Feeds the outcome of the IO last polled.
    pub fn handle(&mut self, outcome: Outcome) {
        let Some(wait) = self.q.waiting.take() else {
            return;
        };
        match (wait, outcome) {
            (Wait::After, _) => {}
            (Wait::Reserve, Outcome::Resent { done, session }) => match session {
                None => self.q.answer(Ok(self.not_found())),
                Some(s) if !done => {
                    let e = self.refusal(&s);
                    self.q.answer(Err(e));
                }
                Some(s) => {
                    self.previous = s.sent_at;
                    self.reserved(s);
                }
            },
            (Wait::Charge, Outcome::Admitted { admission }) => match admission {
                Admitted::Send => {
                    self.spent = self.spend.is_some();
                    self.deliver();
                }
                Admitted::Refused {
                    code,
                    retry_after_secs,
                } => {
                    if let Some(s) = &self.session {
                        self.events.push(AuditEvent::refused(
                            "rate_limited",
                            &s.dest,
                            s.purpose,
                            s.app.as_deref(),
                            &code,
                            self.now,
                        ));
                    }
                    self.release(refused(&code, retry_after_secs));
                }
                Admitted::FloodRefused { admitted, .. }
                | Admitted::SpendRefused { admitted, .. }
                | Admitted::FraudRefused { admitted, .. } => {
                    let e = admission
                        .workspace_error()
                        .unwrap_or(Error::StoreUnavailable);
                    let fraud = self.session.as_ref().and_then(|s| {
                        FraudCharge::new(&self.policy.fraud_guard, &s.dest, s.test).map(|c| (s, c))
                    });
                    if let (Admitted::FraudRefused { new_block, .. }, Some((s, c))) =
                        (&admission, fraud)
                    {
                        let (events, delta) = super::fraud_refused(s, &c, *new_block, self.now);
                        self.events.extend(events);
                        self.deltas.extend(delta);
                    } else if let (Error::SpendLimitReached { .. }, Some(s)) = (&e, &self.session) {
                        self.events.push(AuditEvent::refused(
                            "rate_limited",
                            &s.dest,
                            s.purpose,
                            s.app.as_deref(),
                            e.code(),
                            self.now,
                        ));
                    }
                    self.pending_error = Some(e);
                    if admitted {
                        self.report(Wait::FloodRefund, DeliveryOutcome::Failed);
                    } else {
                        let e = self.pending_error.take().unwrap_or(Error::StoreUnavailable);
                        self.release(e);
                    }
                }
                // Reuse, wait and failed are answers to a new send, never to a resend.
                _ => self.release(Error::StoreUnavailable),
            },
            (Wait::Refund, _) if self.spent => {
                // A definite failure costs nothing: the day's spend goes back too.
                self.spent = false;
                if let Some(p) = self.spend {
                    let io = Io::RefundSpend {
                        day: p.charge.day,
                        micros: p.charge.cost_micros,
                    };
                    self.ask(Wait::SpendRefund, io);
                } else {
                    let e = self.pending_error.take().unwrap_or(Error::DeliveryFailed);
                    self.release(e);
                }
            }
            (Wait::FloodRefund | Wait::Refund | Wait::SpendRefund, _) => {
                let e = self.pending_error.take().unwrap_or(Error::DeliveryFailed);
                self.release(e);
            }
            (
                Wait::Deliver,
                Outcome::Delivery {
                    outcome,
                    message_id,
                },
            ) => {
                if outcome == DeliveryOutcome::Delivered {
                    self.message_id = message_id;
                    self.apply();
                } else {
                    self.delivery_failed(outcome);
                }
            }
            (Wait::Release, _) => {
                let e = self.pending_error.take().unwrap_or(Error::StoreUnavailable);
                self.finish(Err(e));
            }
            (
                Wait::Apply,
                Outcome::Resent {
                    done: true,
                    session: Some(s),
                },
            ) => self.applied(&s),
            (
                Wait::Apply,
                Outcome::Resent {
                    session: Some(s), ..
                },
            ) => {
                // Approved, canceled or locked while the new code was on its way: that stands.
                let e = self.refusal(&s);
                self.finish(Err(e));
            }
            (Wait::Apply, Outcome::Resent { session: None, .. }) => {
                let reply = self.not_found();
                self.finish(Ok(reply));
            }
            (
                _,
                Outcome::Failed {
                    corrupt,
                    misconfigured,
                },
            ) => self.finish(Err(store_error(corrupt, misconfigured))),
            (_, _) => self.finish(Err(Error::StoreUnavailable)),
        }
    }
}
