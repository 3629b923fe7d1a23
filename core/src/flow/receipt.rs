//! `POST /v1/messaging/otp/delivery-receipts/twilio` and `…/json` (SPEC §8): a provider tells what
//! became of a message.
//!
//! Authenticate and read ([`crate::delivery::twilio`] / [`crate::delivery::json`]: 403
//! `INVALID_SIGNATURE`, 400) → find whose session it is, when the receipt does not say
//! ([`Io::FindReceipt`]: the index a store keeps per delivered session) → apply it at the store,
//! atomically ([`receipt_stored`]: forward only, only for the session's latest message) →
//! answer 200 → audit `delivery_receipt` and the analytics of a final state, in the session's
//! own workspace ([`Io::Audit`] with its deltas).
//!
//! Unknown ids, duplicates, out-of-order receipts and statuses that say nothing of delivery are
//! answered 200 and change nothing (providers retry anything else). A store failure is 503, so
//! the provider retries. No workspace scopes this flow: the receipt names it, or the index does.

use super::{store_error, Io, Outcome, Queue, Step, VerifyStep};
use crate::analytics;
use crate::audit::AuditEvent;
use crate::delivery::{self, Applied, Receipt, ReceiptKeys, Target};
use crate::error::Error;
use crate::http::envelope::{self, Reply};
use crate::session::Session;
use crate::time::UnixMillis;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use serde::Serialize;

/// Which receipt route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReceiptSource<'a> {
    /// Twilio's status callback: the path with its query string as received, and
    /// `X-Twilio-Signature`.
    Twilio {
        /// Path and query, as requested.
        path_and_query: &'a str,
        /// `X-Twilio-Signature`.
        signature: Option<&'a str>,
    },
    /// The JSON gateway's receipt and `X-Otpkit-Signature`.
    Json {
        /// `X-Otpkit-Signature`.
        signature: Option<&'a str>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Find,
    Apply,
    After,
}

/// One delivery receipt as a flow.
#[derive(Debug)]
pub struct ReceiptFlow {
    now: UnixMillis,
    receipt: Option<Receipt>,
    /// The session as the receipt left it, when it moved.
    moved: Option<Session>,
    workspace_id: String,
    q: Queue<Wait>,
    tags: VecDeque<Wait>,
}

#[derive(Serialize)]
struct Received {
    received: bool,
}

fn received() -> Reply {
    envelope::ok(&Received { received: true })
}

/// What a store does inside its critical section for [`Io::ApplyReceipt`]: the receipt on the
/// session it holds (only a session of `workspace_id`). `write` is what to store back.
#[must_use]
pub fn receipt_stored(
    stored: Option<Session>,
    workspace_id: &str,
    receipt: &Receipt,
) -> VerifyStep {
    let Some(mut s) = stored.filter(|s| s.workspace_id == workspace_id) else {
        return VerifyStep {
            outcome: Outcome::ReceiptApplied {
                applied: false,
                session: None,
            },
            write: None,
        };
    };
    let applied = delivery::apply(&mut s, receipt) == Applied::Moved;
    VerifyStep {
        write: applied.then(|| s.clone()),
        outcome: Outcome::ReceiptApplied {
            applied,
            session: Some(s),
        },
    }
}

impl ReceiptFlow {
    /// Starts with the request as received: its route, raw body and the keys to check it with.
    #[must_use]
    pub fn start(
        source: ReceiptSource<'_>,
        body: &[u8],
        keys: &ReceiptKeys<'_>,
        now: UnixMillis,
    ) -> Self {
        let mut flow = ReceiptFlow {
            now,
            receipt: None,
            moved: None,
            workspace_id: String::new(),
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        let read = match source {
            ReceiptSource::Twilio {
                path_and_query,
                signature,
            } => delivery::twilio(path_and_query, body, signature, keys),
            ReceiptSource::Json { signature } => delivery::json(body, signature, keys),
        };
        match read {
            Err(e) => flow.q.answer(Err(e)),
            // A status that says nothing of delivery: acknowledged.
            Ok(None) => flow.q.answer(Ok(received())),
            Ok(Some(r)) => match &r.target {
                Target::Session {
                    workspace_id,
                    session_id,
                } => {
                    let (ws, id) = (workspace_id.clone(), session_id.clone());
                    flow.receipt = Some(r);
                    flow.apply(ws, id);
                }
                Target::Reference { .. } | Target::Message { .. } => {
                    let key = r.index_key().unwrap_or_default();
                    flow.receipt = Some(r);
                    flow.ask(Wait::Find, Io::FindReceipt { key });
                }
            },
        }
        flow
    }

    /// The next step.
    pub fn poll(&mut self) -> Step {
        self.q.poll(&mut self.tags)
    }

    fn ask(&mut self, wait: Wait, io: Io) {
        self.tags.push_back(wait);
        self.q.io(io);
    }

    fn apply(&mut self, workspace_id: String, session_id: String) {
        let Some(receipt) = self.receipt.clone() else {
            return;
        };
        self.workspace_id.clone_from(&workspace_id);
        let io = Io::ApplyReceipt {
            workspace_id,
            session_id,
            receipt: Box::new(receipt),
        };
        self.ask(Wait::Apply, io);
    }

    /// After the answer: the receipt in the session's trail, and a final state's analytics.
    fn record(&mut self, s: &Session) {
        let Some(r) = &self.receipt else { return };
        let event = AuditEvent::for_session(
            "delivery_receipt",
            s,
            r.state.as_str(),
            r.error_code.as_deref(),
            self.now,
        );
        let deltas = analytics::receipt(s, r.state).into_iter().collect();
        let io = Io::Audit {
            workspace_id: self.workspace_id.clone(),
            events: vec![event],
            deltas,
        };
        self.ask(Wait::After, io);
    }

    /// The log line a host prints once the receipt is answered, when it said a message did not
    /// arrive ([`crate::log::receipt_failure`]); `None` otherwise.
    #[must_use]
    pub fn log_line(&self, time: UnixMillis, threshold: crate::log::Level) -> Option<String> {
        crate::log::receipt_failure(
            time,
            self.moved.as_ref()?,
            self.receipt.as_ref()?,
            threshold,
        )
    }

    /// Feeds the outcome of the IO last polled.
    pub fn handle(&mut self, outcome: Outcome) {
        let Some(wait) = self.q.waiting.take() else {
            return;
        };
        match (wait, outcome) {
            (Wait::Find, Outcome::Owner { owner: Some(value) }) => {
                match delivery::parse_owner(&value) {
                    Some((ws, id)) => self.apply(ws, id),
                    None => self.q.answer(Ok(received())),
                }
            }
            // Nobody's: an id otpkit never sent, or a session already purged.
            (Wait::Find, Outcome::Owner { owner: None }) => self.q.answer(Ok(received())),
            (
                Wait::Apply,
                Outcome::ReceiptApplied {
                    applied: true,
                    session: Some(s),
                },
            ) => {
                self.q.answer(Ok(received()));
                self.record(&s);
                self.moved = Some(s);
            }
            (Wait::Apply, Outcome::ReceiptApplied { .. }) => self.q.answer(Ok(received())),
            (Wait::After, _) => {}
            (_, Outcome::Failed { corrupt }) => self.q.answer(Err(store_error(corrupt))),
            (_, _) => self.q.answer(Err(Error::StoreUnavailable)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{Delivery, DeliveryState};
    use crate::hash::to_hex;
    use crate::http::request::IssueRequest;
    use crate::policy::Policy;
    use crate::secret::Pepper;
    use crate::session::plan_issue;
    use crate::Entropy;
    use alloc::vec::Vec;
    use hmac::{Hmac, Mac};

    const NOW: UnixMillis = UnixMillis(1_795_348_800_000);

    fn delivered_session() -> Session {
        let body = br#"{"dest":"+233201234567","src":"otpkit","purpose":"LOGIN"}"#;
        let req = IssueRequest::from_v1_json(body).unwrap();
        let pepper = Pepper::new("p".repeat(32).as_bytes()).unwrap();
        let mut s = plan_issue(
            &req,
            "ws_1",
            &["otpkit".into()],
            &Policy::default(),
            NOW,
            &Entropy::from_bytes(&[7; 48]),
            &pepper,
        )
        .unwrap()
        .session;
        s.delivery = Some(Delivery::accepted(Some("m-1".into())));
        s
    }

    fn keys() -> ReceiptKeys<'static> {
        ReceiptKeys {
            public_base_url: None,
            twilio_tokens: [None, None],
            json_token: Some("tok"),
        }
    }

    fn signed(body: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"tok").unwrap();
        mac.update(body.as_bytes());
        alloc::format!("sha256={}", to_hex(&mac.finalize().into_bytes()))
    }

    fn run(flow: &mut ReceiptFlow, stored: &mut Option<Session>) -> (u16, Vec<Io>) {
        let mut status = 0;
        let mut ios = Vec::new();
        loop {
            match flow.poll() {
                Step::Io(io) => {
                    let outcome = match &io {
                        Io::FindReceipt { key } => Outcome::Owner {
                            owner: stored
                                .as_ref()
                                .and_then(|s| {
                                    delivery::index_entries(s)
                                        .into_iter()
                                        .find(|(k, _)| k == key)
                                })
                                .map(|(_, v)| v),
                        },
                        Io::ApplyReceipt {
                            workspace_id,
                            receipt,
                            ..
                        } => {
                            let step = receipt_stored(stored.clone(), workspace_id, receipt);
                            if let Some(w) = step.write {
                                *stored = Some(w);
                            }
                            step.outcome
                        }
                        _ => Outcome::Done,
                    };
                    ios.push(io);
                    flow.handle(outcome);
                }
                Step::Answer(Ok(r)) => status = r.status,
                Step::Answer(Err(e)) => status = e.http_status(),
                Step::Done => return (status, ios),
            }
        }
    }

    #[test]
    fn json_receipt_by_message_id_moves_forward_once_and_records() {
        let mut stored = Some(delivered_session());
        let body = r#"{"id":"m-1","status":"undelivered","errorCode":"30003"}"#;
        let source = ReceiptSource::Json {
            signature: Some(&signed(body)),
        };
        let mut flow = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
        let (status, ios) = run(&mut flow, &mut stored);
        assert_eq!(status, 200);
        let d = stored.as_ref().unwrap().delivery.clone().unwrap();
        assert_eq!(d.state, DeliveryState::Undelivered);
        assert_eq!(d.error_code.as_deref(), Some("30003"));
        let Some(Io::Audit { events, deltas, .. }) = ios.last() else {
            panic!("audit after the answer: {ios:?}");
        };
        assert_eq!(events[0].event, "delivery_receipt");
        assert_eq!(events[0].message_id.as_deref(), Some("m-1"));
        assert_eq!(deltas[0].counts.undelivered, 1);
        let line = flow.log_line(NOW, crate::log::Level::Info).unwrap();
        assert!(line.contains(r#""msg":"delivery_undelivered""#), "{line}");
        assert!(line.contains(r#""errorCode":"30003""#), "{line}");
        assert!(line.contains(r#""dest":"+233*****4567""#), "{line}");
        // The same receipt again: 200, nothing stored, nothing recorded.
        let mut again = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
        let (status, ios) = run(&mut again, &mut stored);
        assert_eq!(status, 200);
        assert!(!ios.iter().any(|io| matches!(io, Io::Audit { .. })));
    }

    #[test]
    fn unknown_ids_are_acknowledged_and_bad_signatures_refused() {
        let mut stored = Some(delivered_session());
        let body = r#"{"id":"m-unknown","status":"delivered"}"#;
        let source = ReceiptSource::Json {
            signature: Some(&signed(body)),
        };
        let mut flow = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
        let (status, ios) = run(&mut flow, &mut stored);
        assert_eq!(status, 200);
        assert_eq!(ios.len(), 1, "only the lookup: {ios:?}");
        let forged = ReceiptSource::Json {
            signature: Some("sha256=abcd"),
        };
        let mut flow = ReceiptFlow::start(forged, body.as_bytes(), &keys(), NOW);
        assert_eq!(run(&mut flow, &mut stored).0, 403);
    }

    #[test]
    fn a_store_failure_is_503_so_the_provider_retries() {
        let s = delivered_session();
        let body = alloc::format!(r#"{{"reference":"{}","status":"delivered"}}"#, s.id);
        let sig = signed(&body);
        let mut flow = ReceiptFlow::start(
            ReceiptSource::Json {
                signature: Some(&sig),
            },
            body.as_bytes(),
            &keys(),
            NOW,
        );
        let Step::Io(Io::FindReceipt { .. }) = flow.poll() else {
            panic!("a lookup first");
        };
        flow.handle(Outcome::Failed { corrupt: false });
        let Step::Answer(Err(e)) = flow.poll() else {
            panic!("an error");
        };
        assert_eq!(e.http_status(), 503);
    }
}
