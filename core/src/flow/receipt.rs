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
//!
//! An undelivered or failed receipt that moved a pending session then reads its workspace
//! ([`Io::ReadWorkspace`]): with policy `fallbackOnUndelivered` and a next channel in
//! `channelFallback`, the flow ends with a [`Fallback`], which the host sends as
//! [`super::ResendFlow::fallback`] in that workspace (charged as a resend). Only the receipt
//! that moved the state can ask for it, so a duplicate never sends twice.

use super::{store_error, Io, Outcome, Queue, Step, VerifyStep};
use crate::analytics;
use crate::audit::AuditEvent;
use crate::delivery::{self, Applied, Receipt, ReceiptKeys, Target};
use crate::error::Error;
use crate::http::envelope::{self, Reply};
use crate::session::{Session, SessionState};
use crate::time::UnixMillis;
use crate::validate::Channel;
use crate::workspace::WorkspaceRecord;
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
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
    /// Meta's webhook (`POST …/meta`) and `X-Hub-Signature-256`: any number of statuses.
    Meta {
        /// `X-Hub-Signature-256`.
        signature: Option<&'a str>,
    },
    /// Meta's check of the callback URL (`GET …/meta`): the request's path and query.
    MetaChallenge {
        /// Path and query, as requested.
        path_and_query: &'a str,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Find,
    Apply,
    After,
    /// The workspace of `moved[i]`, for a fallback.
    Policy(usize),
}

/// A resend a receipt asks for (SPEC §8 `fallbackOnUndelivered`): the session's message did not
/// arrive, so send it again on `channel`, in `workspace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fallback {
    /// The session's workspace, as read (its policy charges the resend).
    pub workspace: WorkspaceRecord,
    /// The session.
    pub session_id: String,
    /// The next channel of the policy's `channelFallback` after the one that failed.
    pub channel: Channel,
}

/// One delivery receipt request (one receipt, or a webhook's several, applied in order) as a
/// flow.
#[derive(Debug)]
pub struct ReceiptFlow {
    now: UnixMillis,
    /// Receipts not yet applied, in order.
    todo: VecDeque<Receipt>,
    /// The receipt being applied, and its session's workspace once known.
    current: Option<Receipt>,
    workspace_id: String,
    /// Each receipt that moved a session, with the session as it left it.
    moved: Vec<(Receipt, Session)>,
    fallbacks: Vec<Fallback>,
    /// A workspace the host holds itself rather than in its store (the Node library's own).
    own: Option<WorkspaceRecord>,
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
            todo: VecDeque::new(),
            current: None,
            workspace_id: String::new(),
            moved: Vec::new(),
            fallbacks: Vec::new(),
            own: None,
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        let read = match source {
            ReceiptSource::Twilio {
                path_and_query,
                signature,
            } => delivery::twilio(path_and_query, body, signature, keys).map(Vec::from_iter),
            ReceiptSource::Json { signature } => {
                delivery::json(body, signature, keys).map(Vec::from_iter)
            }
            ReceiptSource::Meta { signature } => delivery::meta(body, signature, keys),
            ReceiptSource::MetaChallenge { path_and_query } => {
                let query = path_and_query.split_once('?').map_or("", |(_, q)| q);
                flow.q.answer(delivery::meta_challenge(query, keys));
                return flow;
            }
        };
        match read {
            Err(e) => flow.q.answer(Err(e)),
            Ok(receipts) => {
                flow.todo = receipts.into();
                flow.next_receipt();
            }
        }
        flow
    }

    /// A workspace the host holds itself, not in its store (the Node library's own workspace,
    /// built from its options): a receipt for one of its sessions takes the policy from here
    /// instead of [`Io::ReadWorkspace`].
    #[must_use]
    pub fn with_own_workspace(mut self, workspace: WorkspaceRecord) -> Self {
        self.own = Some(workspace);
        self
    }

    /// The next step.
    pub fn poll(&mut self) -> Step {
        self.q.poll(&mut self.tags)
    }

    fn ask(&mut self, wait: Wait, io: Io) {
        self.tags.push_back(wait);
        self.q.io(io);
    }

    /// Applies the next receipt (finding its session first when it does not name it); once all
    /// are applied, answers and records what moved.
    fn next_receipt(&mut self) {
        let Some(r) = self.todo.pop_front() else {
            self.q.answer(Ok(received()));
            self.after();
            return;
        };
        match &r.target {
            Target::Session {
                workspace_id,
                session_id,
            } => {
                let (ws, id) = (workspace_id.clone(), session_id.clone());
                self.current = Some(r);
                self.apply(ws, id);
            }
            Target::Reference { .. } | Target::Message { .. } => {
                let key = r.index_key().unwrap_or_default();
                self.current = Some(r);
                self.ask(Wait::Find, Io::FindReceipt { key });
            }
        }
    }

    fn apply(&mut self, workspace_id: String, session_id: String) {
        let Some(receipt) = self.current.clone() else {
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

    /// After the answer: each move in its session's trail with a final state's analytics (in the
    /// session's own workspace), then the policy of each refused message of a pending session.
    fn after(&mut self) {
        let moved = core::mem::take(&mut self.moved);
        for (r, s) in &moved {
            let event = AuditEvent::for_session(
                "delivery_receipt",
                s,
                r.state.as_str(),
                r.error_code.as_deref(),
                self.now,
            );
            let io = Io::Audit {
                workspace_id: s.workspace_id.clone(),
                events: vec![event],
                deltas: analytics::receipt(s, r.state).into_iter().collect(),
            };
            self.ask(Wait::After, io);
        }
        for (i, (r, s)) in moved.iter().enumerate() {
            if !r.state.is_failure() || s.state_at(self.now) != SessionState::Pending {
                continue;
            }
            match &self.own {
                Some(own) if own.id == s.workspace_id => {
                    let own = own.clone();
                    self.decide_fallback(s, own);
                }
                _ => {
                    let io = Io::ReadWorkspace {
                        workspace_id: s.workspace_id.clone(),
                    };
                    self.ask(Wait::Policy(i), io);
                }
            }
        }
        self.moved = moved;
    }

    fn decide_fallback(&mut self, s: &Session, ws: WorkspaceRecord) {
        if !ws.policy.fallback_on_undelivered || ws.id != s.workspace_id {
            return;
        }
        if let Some(&channel) = ws.policy.fallbacks_after(s.channel).first() {
            self.fallbacks.push(Fallback {
                session_id: s.id.clone(),
                channel,
                workspace: ws,
            });
        }
    }

    /// Once the flow is done: the resends the receipts ask for ([`Fallback`]), in order.
    #[must_use]
    pub fn fallbacks(&self) -> &[Fallback] {
        &self.fallbacks
    }

    /// The log lines a host prints once the receipt is answered: one per message a receipt
    /// said did not arrive ([`crate::log::receipt_failure`]).
    #[must_use]
    pub fn log_lines(&self, time: UnixMillis, threshold: crate::log::Level) -> Vec<String> {
        self.moved
            .iter()
            .filter_map(|(r, s)| crate::log::receipt_failure(time, s, r, threshold))
            .collect()
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
                    None => self.next_receipt(),
                }
            }
            // Nobody's: an id otpkit never sent, or a session already purged.
            (Wait::Find, Outcome::Owner { owner: None }) => self.next_receipt(),
            (
                Wait::Apply,
                Outcome::ReceiptApplied {
                    applied: true,
                    session: Some(s),
                },
            ) => {
                if let Some(r) = self.current.take() {
                    self.moved.push((r, s));
                }
                self.next_receipt();
            }
            (Wait::Apply, Outcome::ReceiptApplied { .. }) => self.next_receipt(),
            (Wait::After, _) => {}
            (
                Wait::Policy(i),
                Outcome::Workspace {
                    workspace: Some(ws),
                },
            ) => {
                if let Some((_, s)) = self.moved.get(i).cloned() {
                    self.decide_fallback(&s, ws);
                }
            }
            // No record, or it could not be read: no fallback (the receipt is answered).
            (Wait::Policy(_), _) => {}
            // A store failure before the answer: 503, so the provider retries (what was applied
            // stays applied; a receipt applied again changes nothing).
            (
                _,
                Outcome::Failed {
                    corrupt,
                    misconfigured,
                },
            ) => self.failed(store_error(corrupt, misconfigured)),
            (_, _) => self.failed(Error::StoreUnavailable),
        }
    }

    /// A store failure while applying: the error answer, and what moved before it is still
    /// recorded (applied again on the provider's retry, it would not move, so not be recorded).
    fn failed(&mut self, e: Error) {
        self.q.answer(Err(e));
        self.todo.clear();
        self.after();
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
            meta_app_secret: Some("tok"),
            meta_verify_token: Some("verify"),
        }
    }

    fn signed(body: &str) -> String {
        let mut mac = Hmac::<sha2::Sha256>::new_from_slice(b"tok").unwrap();
        mac.update(body.as_bytes());
        alloc::format!("sha256={}", to_hex(&mac.finalize().into_bytes()))
    }

    fn run(flow: &mut ReceiptFlow, stored: &mut Option<Session>) -> (u16, Vec<Io>) {
        run_in(flow, stored, None)
    }

    /// As [`run`], with the workspace record a store holds (`None`: none).
    fn run_in(
        flow: &mut ReceiptFlow,
        stored: &mut Option<Session>,
        workspace: Option<&WorkspaceRecord>,
    ) -> (u16, Vec<Io>) {
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
                        Io::ReadWorkspace { workspace_id } => Outcome::Workspace {
                            workspace: workspace.filter(|w| w.id == *workspace_id).cloned(),
                        },
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
        let Some(Io::Audit { events, deltas, .. }) =
            ios.iter().find(|io| matches!(io, Io::Audit { .. }))
        else {
            panic!("audit after the answer: {ios:?}");
        };
        // Then the workspace's policy, for a fallback; it has none (no record here).
        assert!(matches!(ios.last(), Some(Io::ReadWorkspace { .. })));
        assert_eq!(flow.fallbacks(), &[]);
        assert_eq!(events[0].event, "delivery_receipt");
        assert_eq!(events[0].message_id.as_deref(), Some("m-1"));
        assert_eq!(deltas[0].counts.undelivered, 1);
        let lines = flow.log_lines(NOW, crate::log::Level::Info);
        let [line] = lines.as_slice() else {
            panic!("one line: {lines:?}")
        };
        assert!(line.contains(r#""msg":"delivery_undelivered""#), "{line}");
        assert!(line.contains(r#""errorCode":"30003""#), "{line}");
        assert!(line.contains(r#""dest":"+233*****4567""#), "{line}");
        // The same receipt again: 200, nothing stored, nothing recorded.
        let mut again = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
        let (status, ios) = run(&mut again, &mut stored);
        assert_eq!(status, 200);
        assert!(!ios.iter().any(|io| matches!(io, Io::Audit { .. })));
    }

    fn workspace(policy: serde_json::Value) -> WorkspaceRecord {
        let body = serde_json::json!({"name": "w", "senders": ["otpkit"], "policy": policy});
        let body = serde_json::to_vec(&body).unwrap();
        WorkspaceRecord::from_create_json(&body, "ws_1".into(), NOW).unwrap()
    }

    fn receipt_of(status: &str) -> (String, String) {
        let body = alloc::format!(r#"{{"id":"m-1","status":"{status}","errorCode":"30003"}}"#);
        let sig = signed(&body);
        (body, sig)
    }

    #[test]
    fn an_undelivered_receipt_falls_back_to_the_next_channel_when_the_policy_says() {
        let on = workspace(
            serde_json::json!({"channelFallback": ["sms", "whatsapp"], "fallbackOnUndelivered": true}),
        );
        for (status, ws, want) in [
            ("undelivered", Some(&on), Some(Channel::Whatsapp)),
            ("failed", Some(&on), Some(Channel::Whatsapp)),
            // Delivered, or sent: nothing to fall back from.
            ("delivered", Some(&on), None),
            ("sent", Some(&on), None),
            // Off, or no record.
            (
                "undelivered",
                Some(&workspace(
                    serde_json::json!({"channelFallback": ["sms", "whatsapp"]}),
                )),
                None,
            ),
            ("undelivered", None, None),
            // The session's channel is the list's last: nowhere to go.
            (
                "undelivered",
                Some(&workspace(
                    serde_json::json!({"channelFallback": ["whatsapp", "sms"], "fallbackOnUndelivered": true}),
                )),
                None,
            ),
        ] {
            let mut stored = Some(delivered_session());
            let (body, sig) = receipt_of(status);
            let source = ReceiptSource::Json {
                signature: Some(&sig),
            };
            let mut flow = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
            let (code, _) = run_in(&mut flow, &mut stored, ws);
            assert_eq!(code, 200);
            assert_eq!(
                flow.fallbacks().first().map(|f| f.channel),
                want,
                "{status}"
            );
            if let Some(fb) = flow.fallbacks().first() {
                assert_eq!(fb.session_id, stored.as_ref().unwrap().id);
                assert_eq!(fb.workspace.id, "ws_1");
            }
            // A duplicate moves nothing, so it never asks again.
            let mut again = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
            let (code, ios) = run_in(&mut again, &mut stored, ws);
            assert_eq!(code, 200);
            assert_eq!(again.fallbacks(), &[]);
            assert!(!ios.iter().any(|io| matches!(io, Io::ReadWorkspace { .. })));
        }
        // A session no longer pending (expired) does not fall back.
        let mut stored = Some(delivered_session());
        let (body, sig) = receipt_of("undelivered");
        let source = ReceiptSource::Json {
            signature: Some(&sig),
        };
        let late = stored.as_ref().unwrap().expires_at;
        let mut flow = ReceiptFlow::start(source, body.as_bytes(), &keys(), late);
        let (code, ios) = run_in(&mut flow, &mut stored, Some(&on));
        assert_eq!(code, 200);
        assert_eq!(flow.fallbacks(), &[]);
        assert!(!ios.iter().any(|io| matches!(io, Io::ReadWorkspace { .. })));
    }

    #[test]
    fn a_workspace_the_host_holds_is_not_read() {
        let own = workspace(
            serde_json::json!({"channelFallback": ["sms", "whatsapp"], "fallbackOnUndelivered": true}),
        );
        let mut stored = Some(delivered_session());
        let (body, sig) = receipt_of("undelivered");
        let source = ReceiptSource::Json {
            signature: Some(&sig),
        };
        let mut flow =
            ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW).with_own_workspace(own);
        let (code, ios) = run_in(&mut flow, &mut stored, None);
        assert_eq!(code, 200);
        assert!(!ios.iter().any(|io| matches!(io, Io::ReadWorkspace { .. })));
        assert_eq!(
            flow.fallbacks().first().map(|f| f.channel),
            Some(Channel::Whatsapp)
        );
    }

    #[test]
    fn a_meta_webhook_applies_each_status_in_order_then_answers_once() {
        let mut a = delivered_session();
        let mut stored = Some(a.clone());
        let body = r#"{"entry":[{"changes":[{"value":{"statuses":[
            {"id":"m-1","status":"sent"},
            {"id":"m-unknown","status":"delivered"},
            {"id":"m-1","status":"failed","errors":[{"code":131026}]},
            {"id":"m-1","status":"delivered"}]}}]}]}"#;
        let source = ReceiptSource::Meta {
            signature: Some(&signed(body)),
        };
        let mut flow = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
        let (code, ios) = run(&mut flow, &mut stored);
        assert_eq!(code, 200);
        let applies = ios
            .iter()
            .filter(|io| matches!(io, Io::ApplyReceipt { .. }))
            .count();
        assert_eq!(
            applies, 3,
            "the unknown id is not found, the others are applied"
        );
        let d = stored.as_ref().unwrap().delivery.clone().unwrap();
        assert_eq!(
            d.state,
            DeliveryState::Failed,
            "failed is final: delivered after it is ignored"
        );
        assert_eq!(d.error_code.as_deref(), Some("131026"));
        let audits: Vec<&str> = ios
            .iter()
            .filter_map(|io| match io {
                Io::Audit { events, .. } => Some(events[0].outcome.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(audits, ["sent", "failed"]);
        // Unsigned: 403, nothing applied.
        a.delivery = Some(Delivery::accepted(Some("m-1".into())));
        let mut fresh = Some(a);
        let forged = ReceiptSource::Meta { signature: None };
        let mut flow = ReceiptFlow::start(forged, body.as_bytes(), &keys(), NOW);
        let (code, ios) = run(&mut flow, &mut fresh);
        assert_eq!((code, ios.len()), (403, 0));
        // The callback check answers the challenge.
        let check = ReceiptSource::MetaChallenge {
            path_and_query: "/v1/messaging/otp/delivery-receipts/meta?hub.mode=subscribe&hub.verify_token=verify&hub.challenge=42",
        };
        let mut flow = ReceiptFlow::start(check, b"", &keys(), NOW);
        let Step::Answer(Ok(r)) = flow.poll() else {
            panic!("answered at once")
        };
        assert_eq!((r.status, r.body.as_str()), (200, "42"));
    }

    #[test]
    fn a_store_failure_mid_batch_is_503_and_what_moved_is_still_recorded() {
        let stored = Some(delivered_session());
        let body = r#"{"entry":[{"changes":[{"value":{"statuses":[
            {"id":"m-1","status":"sent"},{"id":"m-2","status":"sent"}]}}]}]}"#;
        let source = ReceiptSource::Meta {
            signature: Some(&signed(body)),
        };
        let mut flow = ReceiptFlow::start(source, body.as_bytes(), &keys(), NOW);
        let mut finds = 0;
        let mut status = 0;
        let mut audited = 0;
        loop {
            match flow.poll() {
                Step::Io(io) => {
                    let outcome = match &io {
                        Io::FindReceipt { key } => {
                            finds += 1;
                            if finds == 1 {
                                let s = stored.as_ref().unwrap();
                                Outcome::Owner {
                                    owner: delivery::index_entries(s)
                                        .into_iter()
                                        .find(|(k, _)| k == key)
                                        .map(|(_, v)| v),
                                }
                            } else {
                                Outcome::Failed {
                                    corrupt: false,
                                    misconfigured: None,
                                }
                            }
                        }
                        Io::ApplyReceipt {
                            workspace_id,
                            receipt,
                            ..
                        } => receipt_stored(stored.clone(), workspace_id, receipt).outcome,
                        Io::Audit { .. } => {
                            audited += 1;
                            Outcome::Done
                        }
                        _ => Outcome::Done,
                    };
                    flow.handle(outcome);
                }
                Step::Answer(Ok(r)) => status = r.status,
                Step::Answer(Err(e)) => status = e.http_status(),
                Step::Done => break,
            }
        }
        assert_eq!(status, 503);
        assert_eq!(audited, 1, "the first receipt's move is recorded");
    }

    #[test]
    fn fallback_on_undelivered_needs_channel_fallback() {
        let body = br#"{"name":"w","senders":["otpkit"],"policy":{"fallbackOnUndelivered":true}}"#;
        let err = WorkspaceRecord::from_create_json(body, "ws_1".into(), NOW).unwrap_err();
        assert_eq!(err.field(), Some("policy.fallbackOnUndelivered"));
        let bad = br#"{"name":"w","senders":["otpkit"],"policy":{"fallbackOnUndelivered":"yes"}}"#;
        let err = WorkspaceRecord::from_create_json(bad, "ws_1".into(), NOW).unwrap_err();
        assert_eq!(err.field(), Some("policy.fallbackOnUndelivered"));
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
        flow.handle(Outcome::Failed {
            corrupt: false,
            misconfigured: None,
        });
        let Step::Answer(Err(e)) = flow.poll() else {
            panic!("an error");
        };
        assert_eq!(e.http_status(), 503);
    }
}
