//! The admin flows: create a workspace, patch it, mint and revoke API keys, read one workspace or
//! a page of all of them. The host checks the admin token and reads the body; the flow reads and
//! writes workspace records and the key index through [`Io`] and answers. A new API key exists
//! only inside the flow and its answer. Every change is audited in the workspace's own trail
//! after the answer ([`Io::Audit`]: `workspace_created`, `workspace_updated`, `key_created`,
//! `key_revoked`; SPEC §9 "Admin").

use super::{store_error, Io, Outcome, Queue, Step};
use crate::audit::AuditEvent;
use crate::error::Error;
use crate::http::envelope::{self, Reply};
use crate::time::UnixMillis;
use crate::validate;
use crate::workspace::{self, NewApiKey, WorkspaceRecord};
use alloc::boxed::Box;
use alloc::collections::VecDeque;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

/// Random bytes an admin flow needs: 12 for a workspace id, 32 for an API key.
pub const ADMIN_RANDOM_BYTES: usize = 44;

/// How many times a change is read and applied again after another write came first
/// ([`Outcome::Conflict`]); past it the flow answers 503 `STORE_UNAVAILABLE`. Each conflict means
/// another write landed, so N concurrent writers all land within N tries.
pub const MAX_WRITE_TRIES: u32 = 64;

/// Workspaces in a page of `GET /v1/admin/workspaces` when the query names no `limit`.
pub const LIST_DEFAULT_LIMIT: u32 = 50;
/// The largest page of `GET /v1/admin/workspaces`.
pub const LIST_MAX_LIMIT: u32 = 200;
/// The longest `cursor` accepted (a store's own, from `nextCursor`).
const MAX_CURSOR_LEN: usize = 1024;

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminAction<'a> {
    /// `POST /v1/admin/workspaces` with this body.
    CreateWorkspace {
        /// JSON body.
        body: &'a [u8],
    },
    /// `PATCH /v1/admin/workspaces/{id}` with this body.
    PatchWorkspace {
        /// Workspace id.
        id: &'a str,
        /// JSON body.
        body: &'a [u8],
    },
    /// `GET /v1/admin/workspaces/{id}`.
    GetWorkspace {
        /// Workspace id.
        id: &'a str,
    },
    /// `POST /v1/admin/workspaces/{id}/keys`.
    CreateKey {
        /// Workspace id.
        id: &'a str,
    },
    /// `DELETE /v1/admin/workspaces/{id}/keys/{keyId}`.
    RevokeKey {
        /// Workspace id.
        id: &'a str,
        /// Key id.
        key_id: &'a str,
    },
    /// `GET /v1/admin/workspaces?cursor=&limit=`: the query's values as given (percent-decoded;
    /// absent or empty: not given). The flow checks them (400 `VALIDATION_ERROR` naming the field).
    ListWorkspaces {
        /// `cursor`: a `nextCursor` of an earlier page.
        cursor: Option<&'a str>,
        /// `limit`: 1–[`LIST_MAX_LIMIT`], default [`LIST_DEFAULT_LIMIT`].
        limit: Option<&'a str>,
    },
    /// `GET /v1/admin/workspaces/{id}/fraud`: Fraud Guard's prefixes, busiest first.
    GetFraud {
        /// Workspace id.
        id: &'a str,
    },
    /// `DELETE /v1/admin/workspaces/{id}/fraud/blocks/{prefix}`: 204, or 404 when the prefix
    /// is not blocked. The prefix as in the path: `+233202`, `%2B233202` or `233202`.
    UnblockPrefix {
        /// Workspace id.
        id: &'a str,
        /// The prefix.
        prefix: &'a str,
    },
}

/// The checked query of a workspace listing: the cursor (if any) and the page size.
fn list_query(cursor: Option<&str>, limit: Option<&str>) -> Result<(Option<String>, u32), Error> {
    let limit = match limit.filter(|l| !l.is_empty()) {
        None => LIST_DEFAULT_LIMIT,
        Some(l) => l
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=LIST_MAX_LIMIT).contains(n))
            .ok_or(Error::invalid("limit", "must be an integer from 1 to 200"))?,
    };
    let cursor = match cursor.filter(|c| !c.is_empty()) {
        None => None,
        Some(c) if c.len() <= MAX_CURSOR_LEN && c.bytes().all(|b| b.is_ascii_graphic()) => {
            Some(c.into())
        }
        Some(_) => return Err(bad_cursor()),
    };
    Ok((cursor, limit))
}

fn bad_cursor() -> Error {
    Error::invalid("cursor", "must be a nextCursor of an earlier page")
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct WorkspacePage<'a> {
    workspaces: Vec<workspace::WorkspaceDetail<'a>>,
    next_cursor: Option<&'a str>,
}

/// `GET /v1/admin/workspaces/{id}/fraud`.
#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
struct FraudPage<'a> {
    workspace_id: &'a str,
    fraud_guard: &'a crate::fraud::FraudGuard,
    prefixes: Vec<crate::fraud::PrefixView>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Read,
    Put,
    Index,
    Unindex,
    List,
    Audit,
    Fraud,
    Unblock,
}

#[derive(Debug)]
enum Todo {
    Create,
    Get,
    Patch(Vec<u8>),
    CreateKey,
    Revoke(String),
    List(u32),
    Fraud,
    Unblock(String),
}

/// One admin action as a flow.
#[derive(Debug)]
pub struct AdminFlow {
    todo: Todo,
    now: UnixMillis,
    key: NewApiKey,
    /// The record being written (for the answer).
    written: Option<WorkspaceRecord>,
    /// The hash to take out of the index (revocation).
    unindex: Option<String>,
    /// The workspace re-read after a conflict, and the writes tried so far.
    id: String,
    tries: u32,
    q: Queue<Wait>,
    tags: VecDeque<Wait>,
}

impl AdminFlow {
    /// Starts an action; `random` comes from the host's CSPRNG (a workspace id and a key are
    /// drawn from it even when the action needs neither, so every action takes the same input).
    #[must_use]
    pub fn start(
        action: AdminAction<'_>,
        now: UnixMillis,
        random: &[u8; ADMIN_RANDOM_BYTES],
    ) -> Self {
        let (id_bytes, key_bytes) = random.split_at(12);
        let mut ws_random = [0u8; 12];
        ws_random.copy_from_slice(id_bytes);
        let mut key_random = [0u8; 32];
        key_random.copy_from_slice(key_bytes);
        let mut flow = AdminFlow {
            todo: Todo::Create,
            now,
            key: workspace::new_api_key(&key_random, now),
            written: None,
            unindex: None,
            id: String::new(),
            tries: 0,
            q: Queue::default(),
            tags: VecDeque::new(),
        };
        let id = match action {
            AdminAction::CreateWorkspace { body } => {
                let id = workspace::workspace_id(&ws_random);
                match WorkspaceRecord::from_create_json(body, id, now) {
                    Ok(ws) => flow.put_with_key(ws),
                    Err(e) => flow.q.answer(Err(e)),
                }
                return flow;
            }
            AdminAction::PatchWorkspace { id, body } => {
                flow.todo = Todo::Patch(body.to_vec());
                id
            }
            AdminAction::GetWorkspace { id } => {
                flow.todo = Todo::Get;
                id
            }
            AdminAction::CreateKey { id } => {
                flow.todo = Todo::CreateKey;
                id
            }
            AdminAction::RevokeKey { id, key_id } => {
                flow.todo = Todo::Revoke(key_id.into());
                id
            }
            AdminAction::GetFraud { id } => {
                flow.todo = Todo::Fraud;
                id
            }
            AdminAction::UnblockPrefix { id, prefix } => {
                let digits = prefix
                    .strip_prefix('+')
                    .or_else(|| prefix.strip_prefix("%2B"))
                    .or_else(|| prefix.strip_prefix("%2b"))
                    .unwrap_or(prefix);
                let prefix = alloc::format!("+{digits}");
                if !crate::fraud::is_prefix(&prefix) {
                    flow.q.answer(Err(Error::NotFound));
                    return flow;
                }
                flow.todo = Todo::Unblock(prefix);
                id
            }
            AdminAction::ListWorkspaces { cursor, limit } => {
                match list_query(cursor, limit) {
                    Ok((cursor, limit)) => {
                        flow.todo = Todo::List(limit);
                        flow.ask(Wait::List, Io::ListWorkspaces { cursor, limit });
                    }
                    Err(e) => flow.q.answer(Err(e)),
                }
                return flow;
            }
        };
        if validate::is_workspace_id(id) {
            flow.id = id.into();
            flow.read();
        } else {
            flow.q.answer(Err(Error::NotFound));
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

    fn read(&mut self) {
        let io = Io::ReadWorkspace {
            workspace_id: self.id.clone(),
        };
        self.ask(Wait::Read, io);
    }

    /// Writes `ws` over the revision it was read at (`None`: a new workspace).
    fn put(&mut self, mut ws: WorkspaceRecord, expected: Option<u64>) {
        self.tries = self.tries.saturating_add(1);
        if let Some(r) = expected {
            ws.revision = r.saturating_add(1);
        }
        self.written = Some(ws.clone());
        self.ask(
            Wait::Put,
            Io::PutWorkspace {
                workspace: Box::new(ws),
                expected,
            },
        );
    }

    fn put_with_key(&mut self, mut ws: WorkspaceRecord) {
        ws.keys.push(self.key.record.clone());
        self.put(ws, None);
    }

    fn answer(&self) -> Reply {
        let ws = self.written.as_ref();
        match (&self.todo, ws) {
            (Todo::Create, Some(ws)) => envelope::admin_workspace_created(
                &ws.id,
                &self.key.api_key,
                &self.key.record.key_id,
            ),
            (Todo::Patch(_), Some(ws)) => envelope::admin_workspace_updated(ws),
            (Todo::CreateKey, _) => {
                envelope::admin_key_created(&self.key.api_key, &self.key.record.key_id)
            }
            _ => Reply::no_content(),
        }
    }

    /// The audit events of the change just answered, into the written workspace's trail.
    fn audit(&mut self) {
        let Some(ws_id) = self.written.as_ref().map(|w| w.id.clone()) else {
            return;
        };
        let key_id = self.key.record.key_id.as_str();
        let now = self.now;
        let events = match &self.todo {
            Todo::Create => vec![
                AuditEvent::admin("workspace_created", None, now),
                AuditEvent::admin("key_created", Some(key_id), now),
            ],
            Todo::Patch(_) => vec![AuditEvent::admin("workspace_updated", None, now)],
            Todo::CreateKey => vec![AuditEvent::admin("key_created", Some(key_id), now)],
            Todo::Revoke(revoked) => vec![AuditEvent::admin("key_revoked", Some(revoked), now)],
            Todo::Unblock(prefix) => vec![AuditEvent::prefix("prefix_unblocked", prefix, now)],
            Todo::Get | Todo::List(_) | Todo::Fraud => return,
        };
        let io = Io::Audit {
            workspace_id: ws_id,
            events,
            deltas: Vec::new(),
        };
        self.ask(Wait::Audit, io);
    }

    /// A page of the listing: each record as `GET /v1/admin/workspaces/{id}` shows it.
    fn listed(&mut self, mut workspaces: Vec<WorkspaceRecord>, next: Option<String>) {
        if let Todo::List(limit) = self.todo {
            workspaces.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
        }
        let page = WorkspacePage {
            workspaces: workspaces
                .iter()
                .map(WorkspaceRecord::detail_view)
                .collect(),
            next_cursor: next.as_deref(),
        };
        self.q.answer(Ok(envelope::ok(&page)));
    }

    fn loaded(&mut self, mut ws: WorkspaceRecord) {
        match &self.todo {
            Todo::Get => {
                // A read: answered from the record as read, nothing written.
                self.q.answer(Ok(envelope::admin_workspace(&ws)));
                return;
            }
            Todo::Fraud => {
                let io = Io::ReadFraud {
                    workspace_id: ws.id.clone(),
                };
                self.written = Some(ws);
                self.ask(Wait::Fraud, io);
                return;
            }
            Todo::Unblock(prefix) => {
                let io = Io::UnblockPrefix {
                    workspace_id: ws.id.clone(),
                    prefix: prefix.clone(),
                    now: self.now,
                };
                self.written = Some(ws);
                self.ask(Wait::Unblock, io);
                return;
            }
            _ => {}
        }
        let read_at = ws.revision;
        let next = match &self.todo {
            Todo::Patch(body) => ws.patched(body),
            Todo::CreateKey => {
                ws.keys.push(self.key.record.clone());
                Ok(ws)
            }
            Todo::Revoke(key_id) => {
                let hash = ws
                    .keys
                    .iter()
                    .find(|k| &k.key_id == key_id && k.revoked_at.is_none())
                    .map(|k| k.key_hash.clone());
                if ws.revoke(key_id, self.now) {
                    self.unindex = hash;
                    Ok(ws)
                } else {
                    Err(Error::NotFound)
                }
            }
            Todo::Create | Todo::Get | Todo::List(_) | Todo::Fraud | Todo::Unblock(_) => {
                Err(Error::NotFound)
            }
        };
        match next {
            Ok(ws) => self.put(ws, Some(read_at)),
            Err(e) => self.q.answer(Err(e)),
        }
    }

    /// Feeds the outcome of the IO last polled.
    pub fn handle(&mut self, outcome: Outcome) {
        let Some(wait) = self.q.waiting.take() else {
            return;
        };
        match (wait, outcome) {
            (
                Wait::Read,
                Outcome::Workspace {
                    workspace: Some(ws),
                },
            ) => self.loaded(ws),
            (Wait::Read, Outcome::Workspace { workspace: None }) => {
                self.q.answer(Err(Error::NotFound));
            }
            (Wait::Put, Outcome::Done) => match (&self.todo, self.unindex.take()) {
                (Todo::Create | Todo::CreateKey, _) => {
                    let io = Io::IndexKey {
                        key_hash: self.key.record.key_hash.clone(),
                        workspace_id: self
                            .written
                            .as_ref()
                            .map(|w| w.id.clone())
                            .unwrap_or_default(),
                    };
                    self.ask(Wait::Index, io);
                }
                // Revoked once the record says so (every host checks the key is live in the
                // record): answered now; taking the hash out of the index follows, and a stale
                // index entry only leads to that record, which refuses the key.
                (_, Some(key_hash)) => {
                    self.q.answer(Ok(self.answer()));
                    self.ask(Wait::Unindex, Io::UnindexKey { key_hash });
                    self.audit();
                }
                (_, None) => {
                    self.q.answer(Ok(self.answer()));
                    self.audit();
                }
            },
            // Another write came first: read again and re-apply (a new workspace's id is fresh
            // random, so only a patch, a key or a revocation meets one).
            (Wait::Put, Outcome::Conflict)
                if !self.id.is_empty() && self.tries < MAX_WRITE_TRIES =>
            {
                self.unindex = None;
                self.read();
            }
            (Wait::Put, Outcome::Conflict) => self.q.answer(Err(Error::StoreUnavailable)),
            (Wait::Index, Outcome::Done) => {
                self.q.answer(Ok(self.answer()));
                self.audit();
            }
            (Wait::List, Outcome::Workspaces { workspaces, next }) => self.listed(workspaces, next),
            (Wait::Fraud, Outcome::Prefixes { prefixes }) => {
                let Some(ws) = self.written.take() else {
                    self.q.answer(Err(Error::StoreUnavailable));
                    return;
                };
                let guard = &ws.policy.fraud_guard;
                let page = FraudPage {
                    workspace_id: &ws.id,
                    fraud_guard: guard,
                    prefixes: crate::fraud::view(guard, &prefixes, self.now),
                };
                self.q.answer(Ok(envelope::ok(&page)));
            }
            (Wait::Unblock, Outcome::Unblocked { was_blocked: true }) => {
                self.q.answer(Ok(Reply::no_content()));
                self.audit();
            }
            (Wait::Unblock, Outcome::Unblocked { was_blocked: false }) => {
                self.q.answer(Err(Error::NotFound));
            }
            // The store cannot read the cursor: not one it handed out.
            (Wait::List, Outcome::Conflict) => self.q.answer(Err(bad_cursor())),
            // Bookkeeping after the answer: its failure changes nothing.
            (Wait::Unindex | Wait::Audit, _) => {}
            (
                _,
                Outcome::Failed {
                    corrupt,
                    misconfigured,
                },
            ) => self.q.answer(Err(store_error(corrupt, misconfigured))),
            (_, _) => self.q.answer(Err(Error::StoreUnavailable)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that always answers `conflict` (another write lands before every try): the flow
    /// re-reads and re-applies up to [`MAX_WRITE_TRIES`] writes, then answers 503, never a
    /// success it did not write.
    #[test]
    fn endless_conflicts_end_in_store_unavailable() {
        let now = UnixMillis(1_763_800_000_000);
        let id = "ws_5e1f0c2a9b3d4e6f7a8b9c0d";
        let ws = WorkspaceRecord::from_create_json(
            br#"{"name":"Acme","senders":["ACME"]}"#,
            id.into(),
            now,
        )
        .expect("valid");
        let mut flow = AdminFlow::start(
            AdminAction::PatchWorkspace {
                id,
                body: br#"{"senders":["OTHER"]}"#,
            },
            now,
            &[7; ADMIN_RANDOM_BYTES],
        );
        let (mut reads, mut puts) = (0u32, 0u32);
        let answer = loop {
            match flow.poll() {
                Step::Io(Io::ReadWorkspace { .. }) => {
                    reads += 1;
                    let mut current = ws.clone();
                    current.revision = u64::from(reads);
                    flow.handle(Outcome::Workspace {
                        workspace: Some(current),
                    });
                }
                Step::Io(Io::PutWorkspace {
                    workspace,
                    expected,
                }) => {
                    puts += 1;
                    assert_eq!(expected, Some(u64::from(reads)));
                    assert_eq!(workspace.revision, u64::from(reads) + 1);
                    flow.handle(Outcome::Conflict);
                }
                Step::Answer(a) => break a,
                other => panic!("unexpected {other:?}"),
            }
        };
        assert_eq!(answer.err(), Some(Error::StoreUnavailable));
        assert_eq!((reads, puts), (MAX_WRITE_TRIES, MAX_WRITE_TRIES));
    }
}
