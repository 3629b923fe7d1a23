//! `Idempotency-Key` around a flow (SPEC §7, "Idempotency"): request, `/otp/send` and resend.
//!
//! Claim the key ([`Io::ClaimIdempotency`], atomic at the store:
//! [`crate::idempotency::claim_stored`]), then by what the claim found:
//!
//! - **claimed**: run the inner flow; when it answers, store the answer first
//!   ([`Io::FinishIdempotency`]) — or, for a 5xx, drop the claim ([`Io::ReleaseIdempotency`]) so
//!   a retry runs again — then hand the answer out, then whatever the inner flow does after it;
//! - **replay**: answer the stored status and body with `Idempotent-Replayed: true`
//!   ([`Reply::replayed`]): nothing is sent or charged;
//! - **mismatch**: 422 `IDEMPOTENCY_KEY_REUSED`;
//! - **in flight**: the same request is running: pause ([`Io::Pause`]) and claim again, for up to
//!   [`WAIT_BUDGET_MS`] in all (a whole send, gateway timeout included, ends within it), then 409
//!   `IDEMPOTENCY_KEY_IN_USE` (a retry after that waits again, or takes over a claim gone stale).
//!
//! A store that cannot claim answers 503 (500 when its record is corrupt) and nothing runs: the
//! request is not run without the guarantee. A failed finish or release still answers (the send
//! happened; the claim goes stale and is taken over after [`crate::idempotency::STALE_MS`]).
//! Without a key the wrapper is transparent.
//!
//! What is refused before a flow starts (a malformed key or body, 400; a sender or country the
//! workspace does not allow, 403) claims nothing and is not stored: it touched no state, and the
//! same request gets the same answer again (a corrected request may then use the key).

use super::{store_error, Flow, Io, Outcome, Step};
use crate::error::Error;
use crate::http::envelope::{self, Reply};
use crate::idempotency::{Claim, Idempotency, Record, WAIT_BUDGET_MS};
use crate::time::UnixMillis;
use alloc::boxed::Box;

/// The first pause while waiting for the request in flight; each next one doubles, up to
/// [`MAX_PAUSE_MS`].
pub const FIRST_PAUSE_MS: u64 = 50;
/// The longest pause.
pub const MAX_PAUSE_MS: u64 = 1000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Claim the key next.
    Claim,
    /// Pause this long, then claim again.
    Pause(u64),
    /// The inner flow runs.
    Inner,
    /// Answered without the inner flow.
    Over,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Claim,
    Pause,
    /// Finish or release, with the inner answer held.
    Store,
}

/// A flow run at most once per `Idempotency-Key` (see the module's documentation).
#[derive(Debug)]
pub struct Idempotent<F> {
    inner: F,
    idem: Option<Idempotency>,
    phase: Phase,
    /// The claim's time and expiry, once claimed.
    claim: Option<(UnixMillis, UnixMillis)>,
    waited_ms: u64,
    next_pause_ms: u64,
    /// The inner flow answered (its answer went through the claim's finish or release).
    answered: bool,
    /// An answer to hand out at the next poll.
    ready: Option<Result<Reply, Error>>,
    /// Our IO handed out and not yet answered.
    waiting: Option<Wait>,
}

impl<F: Flow> Idempotent<F> {
    /// Wraps `inner`; with `idem` (the request had an `Idempotency-Key`), claims it first.
    #[must_use]
    pub fn new(inner: F, idem: Option<Idempotency>) -> Self {
        Idempotent {
            inner,
            phase: if idem.is_some() {
                Phase::Claim
            } else {
                Phase::Inner
            },
            idem,
            claim: None,
            waited_ms: 0,
            next_pause_ms: FIRST_PAUSE_MS,
            answered: false,
            ready: None,
            waiting: None,
        }
    }

    /// The wrapped flow.
    pub fn inner(&self) -> &F {
        &self.inner
    }

    fn ask(&mut self, wait: Wait, io: Io) -> Step {
        self.waiting = Some(wait);
        Step::Io(io)
    }

    /// The next step.
    pub fn poll(&mut self) -> Step {
        if self.waiting.is_some() {
            // A host bug: our IO was handed out and not answered.
            return Step::Done;
        }
        if let Some(answer) = self.ready.take() {
            return Step::Answer(answer);
        }
        match (self.phase, &self.idem) {
            (Phase::Claim, Some(idem)) => {
                let io = Io::ClaimIdempotency {
                    key_hash: idem.key_hash.clone(),
                    fingerprint: idem.fingerprint.clone(),
                };
                self.ask(Wait::Claim, io)
            }
            (Phase::Pause(millis), _) => {
                self.phase = Phase::Claim;
                self.ask(Wait::Pause, Io::Pause { millis })
            }
            (Phase::Inner, _) => match self.inner.poll() {
                Step::Answer(answer) if !self.answered => {
                    self.answered = true;
                    self.store(answer)
                }
                step => step,
            },
            (Phase::Claim | Phase::Over, _) => Step::Done,
        }
    }

    /// The inner flow's answer: stored (or released) first when the key was claimed.
    fn store(&mut self, answer: Result<Reply, Error>) -> Step {
        let (Some(idem), Some((claimed_at, expires_at))) = (&self.idem, self.claim) else {
            return Step::Answer(answer);
        };
        let key_hash = idem.key_hash.clone();
        let reply = match &answer {
            Ok(r) => r.clone(),
            Err(e) => envelope::error(e),
        };
        let io = if reply.status >= 500 {
            Io::ReleaseIdempotency {
                key_hash,
                claimed_at,
            }
        } else {
            Io::FinishIdempotency {
                key_hash,
                record: Box::new(Record::done(
                    &idem.fingerprint,
                    claimed_at,
                    expires_at,
                    &reply,
                )),
            }
        };
        self.ready = Some(answer);
        self.ask(Wait::Store, io)
    }

    /// Feeds the outcome of the IO last polled.
    pub fn handle(&mut self, outcome: Outcome) {
        match self.waiting.take() {
            None => self.inner.handle(outcome),
            // Paused: claim again (the phase says so already).
            Some(Wait::Pause) => {}
            // Stored or not, the held answer goes out next (see the module's documentation).
            Some(Wait::Store) => {}
            Some(Wait::Claim) => self.claimed(outcome),
        }
    }

    fn claimed(&mut self, outcome: Outcome) {
        let claim = match outcome {
            Outcome::Idempotency { claim } => claim,
            Outcome::Failed {
                corrupt,
                misconfigured,
            } => return self.over(Err(store_error(corrupt, misconfigured))),
            _ => return self.over(Err(Error::StoreUnavailable)),
        };
        match claim {
            Claim::Claimed {
                claimed_at,
                expires_at,
            } => {
                self.claim = Some((claimed_at, expires_at));
                self.phase = Phase::Inner;
            }
            Claim::Replay {
                status,
                body,
                retry_after,
            } => self.over(Ok(Reply {
                status,
                body,
                retry_after,
                replayed: true,
            })),
            Claim::Mismatch => self.over(Err(Error::IdempotencyKeyReused)),
            Claim::InFlight if self.waited_ms >= WAIT_BUDGET_MS => {
                self.over(Err(Error::IdempotencyKeyInUse));
            }
            Claim::InFlight => {
                let pause = self.next_pause_ms;
                self.waited_ms = self.waited_ms.saturating_add(pause);
                self.next_pause_ms = pause.saturating_mul(2).min(MAX_PAUSE_MS);
                self.phase = Phase::Pause(pause);
            }
        }
    }

    fn over(&mut self, answer: Result<Reply, Error>) {
        self.ready = Some(answer);
        self.phase = Phase::Over;
    }
}

impl<F: Flow> Flow for Idempotent<F> {
    fn poll(&mut self) -> Step {
        Idempotent::poll(self)
    }
    fn handle(&mut self, outcome: Outcome) {
        Idempotent::handle(self, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::idempotency::{claim_stored, fingerprint, key_hash, Record, STALE_MS};
    use alloc::string::ToString;
    use alloc::vec::Vec;

    /// A stand-in inner flow: one store IO, then the answer, then one IO after it.
    #[derive(Debug)]
    struct Fake {
        answer: Option<Result<Reply, Error>>,
        step: u8,
    }

    impl Flow for Fake {
        fn poll(&mut self) -> Step {
            self.step += 1;
            match self.step {
                1 => Step::Io(Io::Pause { millis: 1 }),
                2 => Step::Answer(self.answer.take().unwrap()),
                3 => Step::Io(Io::Pause { millis: 2 }),
                _ => Step::Done,
            }
        }
        fn handle(&mut self, _: Outcome) {}
    }

    fn idem() -> Idempotency {
        Idempotency {
            key_hash: key_hash("ws", "k"),
            fingerprint: fingerprint("POST", "/otp/send", b"{}"),
        }
    }

    /// Runs `flow`, answering each of its IO through a one-record store at `now` (pauses pass
    /// no time); answers the steps it yielded (IO by kind) and the answer.
    fn run(
        flow: &mut Idempotent<Fake>,
        store: &mut Option<Record>,
        now: UnixMillis,
    ) -> (Vec<alloc::string::String>, Option<Result<Reply, Error>>) {
        let mut seen = Vec::new();
        let mut answer = None;
        loop {
            match flow.poll() {
                Step::Io(io) => {
                    let outcome = match &io {
                        Io::ClaimIdempotency { fingerprint, .. } => {
                            let step = claim_stored(store.clone(), fingerprint, now);
                            if let Some(w) = step.write.clone() {
                                *store = Some(w);
                            }
                            step.into_outcome()
                        }
                        Io::FinishIdempotency { record, .. } => {
                            if crate::idempotency::finish_stored(store.as_ref(), record) {
                                *store = Some((**record).clone());
                            }
                            Outcome::Done
                        }
                        Io::ReleaseIdempotency { claimed_at, .. } => {
                            if crate::idempotency::release_stored(store.as_ref(), *claimed_at) {
                                *store = None;
                            }
                            Outcome::Done
                        }
                        _ => Outcome::Done,
                    };
                    let v = serde_json::to_value(&io).unwrap();
                    seen.push(v["io"].as_str().unwrap().to_string());
                    flow.handle(outcome);
                }
                Step::Answer(a) => {
                    seen.push("answer".into());
                    answer = Some(a);
                }
                Step::Done => return (seen, answer),
            }
        }
    }

    fn fake(answer: Result<Reply, Error>) -> Fake {
        Fake {
            answer: Some(answer),
            step: 0,
        }
    }

    const NOW: UnixMillis = UnixMillis(1_763_800_000_000);

    #[test]
    fn without_a_key_it_is_transparent() {
        let mut f = Idempotent::new(fake(Err(Error::DeliveryFailed)), None);
        let mut store = None;
        let (seen, answer) = run(&mut f, &mut store, NOW);
        assert_eq!(seen, ["pause", "answer", "pause"]);
        assert_eq!(answer, Some(Err(Error::DeliveryFailed)));
        assert_eq!(store, None);
    }

    #[test]
    fn claims_stores_then_replays() {
        let ok = envelope::zend_not_found();
        let mut f = Idempotent::new(fake(Ok(ok.clone())), Some(idem()));
        let mut store = None;
        let (seen, answer) = run(&mut f, &mut store, NOW);
        assert_eq!(
            seen,
            [
                "claimIdempotency",
                "pause",
                "finishIdempotency",
                "answer",
                "pause"
            ]
        );
        assert_eq!(answer, Some(Ok(ok.clone())));
        let mut again = Idempotent::new(fake(Err(Error::DeliveryFailed)), Some(idem()));
        let (seen, answer) = run(&mut again, &mut store, NOW.plus_millis(10));
        assert_eq!(seen, ["claimIdempotency", "answer"]);
        assert_eq!(
            answer,
            Some(Ok(Reply {
                replayed: true,
                ..ok
            }))
        );
        // Another body with the key: 422.
        let mut other = Idempotent::new(
            fake(Err(Error::DeliveryFailed)),
            Some(Idempotency {
                fingerprint: "x".into(),
                ..idem()
            }),
        );
        let (_, answer) = run(&mut other, &mut store, NOW.plus_millis(10));
        assert_eq!(answer, Some(Err(Error::IdempotencyKeyReused)));
    }

    #[test]
    fn errors_4xx_are_stored_5xx_released() {
        let limited = Error::RateLimited {
            retry_after_secs: 9,
        };
        let mut store = None;
        run(
            &mut Idempotent::new(fake(Err(limited.clone())), Some(idem())),
            &mut store,
            NOW,
        );
        let (_, answer) = run(
            &mut Idempotent::new(fake(Err(Error::DeliveryFailed)), Some(idem())),
            &mut store,
            NOW,
        );
        let want = Reply {
            replayed: true,
            ..envelope::error(&limited)
        };
        assert_eq!(answer, Some(Ok(want)));

        let mut store = None;
        let (seen, answer) = run(
            &mut Idempotent::new(fake(Err(Error::DeliveryFailed)), Some(idem())),
            &mut store,
            NOW,
        );
        assert_eq!(
            seen,
            [
                "claimIdempotency",
                "pause",
                "releaseIdempotency",
                "answer",
                "pause"
            ]
        );
        assert_eq!(answer, Some(Err(Error::DeliveryFailed)));
        assert_eq!(store, None, "a 5xx is not stored");
    }

    #[test]
    fn a_duplicate_in_flight_waits_then_gives_up_with_409() {
        let mut store = claim_stored(None, &idem().fingerprint, NOW).write;
        let mut f = Idempotent::new(fake(Err(Error::DeliveryFailed)), Some(idem()));
        let (seen, answer) = run(&mut f, &mut store, NOW.plus_millis(1));
        assert_eq!(answer, Some(Err(Error::IdempotencyKeyInUse)));
        let pauses = seen.iter().filter(|s| *s == "pause").count();
        let claims = seen.iter().filter(|s| *s == "claimIdempotency").count();
        assert_eq!(claims, pauses + 1);
        assert!(f.waited_ms >= WAIT_BUDGET_MS && f.waited_ms < STALE_MS);
        assert!((20..40).contains(&pauses), "{pauses} pauses");
        // A claim gone stale is taken over.
        let mut f = Idempotent::new(fake(Ok(Reply::no_content())), Some(idem()));
        let (seen, _) = run(&mut f, &mut store, NOW.plus_millis(STALE_MS));
        assert_eq!(seen.first().map(|s| s.as_str()), Some("claimIdempotency"));
        assert!(seen.contains(&"finishIdempotency".to_string()));
    }

    #[test]
    fn a_failed_claim_runs_nothing() {
        let mut f = Idempotent::new(fake(Ok(Reply::no_content())), Some(idem()));
        assert!(matches!(f.poll(), Step::Io(Io::ClaimIdempotency { .. })));
        f.handle(Outcome::Failed {
            corrupt: true,
            misconfigured: None,
        });
        assert_eq!(f.poll().clone(), Step::Answer(Err(store_error(true, None))));
        assert_eq!(f.poll(), Step::Done);
        assert_eq!(f.inner().step, 0);
    }
}
