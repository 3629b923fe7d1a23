//! `POST /v1/messaging/otp/sessions/{id}/cancel` and `POST /otp/{id}/cancel` (SPEC §7, "Cancel"):
//! a pending session becomes `CANCELED` (verify then answers `EXPIRED`), the destination stops
//! treating it as active (so reuse never returns it), audit `canceled`.
//!
//! Read → cancel (atomic at the store: [`crate::Session::cancel`], which leaves an approved or
//! locked session as it is) → read again, and answer what the store now holds: a verify that
//! won the race is answered 409 `ALREADY_USED`, never a cancel that did not happen.

use super::{store_error, Io, Outcome, Queue, Step};
use crate::audit::AuditEvent;
use crate::error::Error;
use crate::http::envelope::{self, Reply};
use crate::http::request::Dialect;
use crate::session::{Session, SessionState};
use crate::time::UnixMillis;
use crate::validate;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Read,
    Cancel,
    Reread,
    After,
}

/// One cancellation as a flow.
#[derive(Debug)]
pub struct CancelFlow {
    dialect: Dialect,
    workspace_id: String,
    now: UnixMillis,
    session_id: String,
    q: Queue<Wait>,
    tags: VecDeque<Wait>,
}

impl CancelFlow {
    /// Starts a cancellation of the id as given in the path (malformed → NOT_FOUND at once).
    #[must_use]
    pub fn start(raw_id: &str, dialect: Dialect, workspace_id: &str, now: UnixMillis) -> Self {
        let mut flow = CancelFlow {
            dialect,
            workspace_id: workspace_id.into(),
            now,
            session_id: String::new(),
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        match validate::normalize_session_id(raw_id) {
            Some(session_id) => {
                flow.session_id = session_id.clone();
                flow.ask(Wait::Read, Io::ReadSession { session_id });
            }
            None => flow.q.answer(Ok(flow.not_found())),
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

    fn not_found(&self) -> Reply {
        super::session_not_found(self.dialect)
    }

    /// The session if it is this workspace's.
    fn own(&self, outcome: Outcome) -> Result<Option<Session>, Error> {
        match outcome {
            Outcome::Session { session: Some(s) } if s.workspace_id == self.workspace_id => {
                Ok(Some(s))
            }
            Outcome::Session { .. } => Ok(None),
            Outcome::Failed {
                corrupt,
                misconfigured,
            } => Err(store_error(corrupt, misconfigured)),
            _ => Err(Error::StoreUnavailable),
        }
    }

    fn canceled(&mut self, s: &Session) {
        let reply = match self.dialect {
            Dialect::V1 => envelope::v1_session(&s.view(self.now)),
            Dialect::Zend => envelope::zend_status(s, self.now),
        };
        self.q.answer(Ok(reply));
        // After the answer: the destination forgets it (reuse never returns it; a new request
        // sends a new code), the reuse hint goes, and the audit event.
        self.ask(
            Wait::After,
            Io::Forget {
                dest: s.dest.clone(),
                session_id: s.id.clone(),
            },
        );
        self.ask(
            Wait::After,
            Io::DropReuseHint {
                dest: s.dest.clone(),
                purpose: s.purpose,
            },
        );
        let event = AuditEvent::for_session("canceled", s, "ok", None, self.now);
        self.ask(
            Wait::After,
            Io::Record {
                events: vec![event],
                deltas: Vec::new(),
            },
        );
    }

    /// Feeds the outcome of the IO last polled.
    pub fn handle(&mut self, outcome: Outcome) {
        let Some(wait) = self.q.waiting.take() else {
            return;
        };
        match wait {
            Wait::Read => match self.own(outcome) {
                Ok(Some(s)) => match s.state_at(self.now) {
                    SessionState::Pending => {
                        let session_id = self.session_id.clone();
                        self.ask(Wait::Cancel, Io::CancelSession { session_id });
                    }
                    state => self.q.answer(Err(super::ended_error(state))),
                },
                Ok(None) => self.q.answer(Ok(self.not_found())),
                Err(e) => self.q.answer(Err(e)),
            },
            Wait::Cancel => match outcome {
                Outcome::Done => {
                    let session_id = self.session_id.clone();
                    self.ask(Wait::Reread, Io::ReadSession { session_id });
                }
                Outcome::Failed {
                    corrupt,
                    misconfigured,
                } => self.q.answer(Err(store_error(corrupt, misconfigured))),
                _ => self.q.answer(Err(Error::StoreUnavailable)),
            },
            Wait::Reread => match self.own(outcome) {
                Ok(Some(s)) => match s.state_at(self.now) {
                    SessionState::Canceled => self.canceled(&s),
                    SessionState::Pending => self.q.answer(Err(Error::StoreUnavailable)),
                    // The store did not cancel it: a concurrent verify approved or locked it.
                    ended => self.q.answer(Err(super::ended_error(ended))),
                },
                // Purged in between: it is gone either way.
                Ok(None) => self.q.answer(Ok(self.not_found())),
                Err(e) => self.q.answer(Err(e)),
            },
            Wait::After => {}
        }
    }
}
