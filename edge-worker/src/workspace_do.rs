//! `WorkspaceObject`: one Durable Object per workspace (named by its id).
//!
//! It keeps what must be exact per workspace and that KV (last writer wins, eventually
//! consistent) cannot keep exact (issue 19):
//! - the flood shield (`sendsPerWorkspacePerMinute`) and the day's spend (`dailySpendLimit`,
//!   `otpkit_core::spend`), charged together in one call: read–decide–write on this object's
//!   storage with no other await in between, so input gates make a burst admit exactly the
//!   limits;
//! - writes of the workspace record: compare-and-set on its `revision`, one at a time, each
//!   followed by its copy to KV `WORKSPACES` (which authentication reads), so concurrent admin
//!   writes never lose one another and KV ends at the latest record.
//!
//! A workspace created before this object existed is read from KV on first use.

use crate::http;
use crate::workspaces;
use futures_channel::oneshot;
use otpkit_core::flow::Admitted;
use otpkit_core::guard::FloodShield;
use otpkit_core::spend::{charge_workspace, SpendCharge, SpendCounter};
use otpkit_core::workspace::WorkspaceRecord;
use otpkit_core::{Error, UnixMillis};
use serde::{Deserialize, Serialize};
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use worker::{durable_object, DurableObject, Env, Request, Response, Result, State};

const FLOOD: &str = "flood";
const SPEND: &str = "spend";
const RECORD: &str = "workspace";

/// Worker → WorkspaceObject.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum WorkspaceCall {
    /// Count one send in the flood shield (with `limit`) and charge it to the day's spend
    /// (with `spend`), both or neither (`otpkit_core::spend::charge_workspace`): 200 `null`,
    /// or 200 with the refusal as the flow's admission (`floodRefused` / `spendRefused`,
    /// `admitted: true`: the Worker calls once the destination guard recorded the send).
    /// `now` is the request's.
    Flood {
        limit: Option<u32>,
        #[serde(default)]
        spend: Option<SpendCharge>,
        now: UnixMillis,
    },
    /// Hand spend charged to `day` back (a definite delivery failure): 200.
    RefundSpend { day: u32, micros: u64 },
    /// The record: 200 with its JSON, or 404.
    Read { workspace_id: String },
    /// Store the record (JSON) if the stored one is at revision `expected` (`None`: none is
    /// stored): 200, or 409 when another write came first.
    Put {
        workspace: String,
        expected: Option<u64>,
    },
}

#[durable_object]
pub struct WorkspaceObject {
    state: State,
    env: Env,
    /// One record write at a time, KV copy included (KV keeps the last write to arrive).
    writing: Cell<bool>,
    queue: RefCell<VecDeque<oneshot::Sender<()>>>,
}

/// Holds the object's write turn until dropped (also when a request is abandoned).
struct Turn<'a>(&'a WorkspaceObject);

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        // Hand the turn to the next waiter still waiting, or free it.
        while let Some(next) = self.0.queue.borrow_mut().pop_front() {
            if next.send(()).is_ok() {
                return;
            }
        }
        self.0.writing.set(false);
    }
}

impl WorkspaceObject {
    async fn turn(&self) -> Turn<'_> {
        if self.writing.replace(true) {
            let (tx, rx) = oneshot::channel();
            self.queue.borrow_mut().push_back(tx);
            let _ = rx.await;
        }
        Turn(self)
    }

    async fn stored(&self) -> std::result::Result<Option<WorkspaceRecord>, Error> {
        let raw: Option<String> = self
            .state
            .storage()
            .get(RECORD)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        raw.map(|s| WorkspaceRecord::from_json(&s)).transpose()
    }

    /// The record: this object's copy, else KV's (a workspace older than this object).
    async fn record(&self, id: &str) -> std::result::Result<Option<WorkspaceRecord>, Error> {
        match self.stored().await? {
            Some(ws) => Ok(Some(ws)),
            None => workspaces::load(&self.env, id).await,
        }
    }

    async fn read<T: serde::de::DeserializeOwned + Default>(
        &self,
        key: &str,
    ) -> std::result::Result<T, Error> {
        let raw: Option<String> = self
            .state
            .storage()
            .get(key)
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        Ok(raw
            .and_then(|s| serde_json::from_str(&s).ok())
            .unwrap_or_default())
    }

    async fn write<T: Serialize>(&self, key: &str, value: &T) -> std::result::Result<(), Error> {
        self.state
            .storage()
            .put(key, serde_json::to_string(value).unwrap_or_default())
            .await
            .map_err(|_| Error::StoreUnavailable)
    }

    async fn flood(
        &self,
        limit: Option<u32>,
        spend: Option<SpendCharge>,
        now: UnixMillis,
    ) -> std::result::Result<Option<Admitted>, Error> {
        // Both reads, the decision, then both writes: no other request's step runs in between
        // (input gates hold deliveries while storage operations are in flight).
        let mut shield: FloodShield = self.read(FLOOD).await?;
        let mut counter: SpendCounter = match spend {
            Some(_) => self.read(SPEND).await?,
            None => SpendCounter::default(),
        };
        if let Err(e) = charge_workspace(&mut shield, limit, &mut counter, spend.as_ref(), now) {
            return Ok(Some(Admitted::workspace_refused(&e, true)));
        }
        if limit.is_some() {
            self.write(FLOOD, &shield).await?;
        }
        if spend.is_some() {
            self.write(SPEND, &counter).await?;
        }
        Ok(None)
    }

    async fn refund_spend(&self, day: u32, micros: u64) -> std::result::Result<(), Error> {
        let mut counter: SpendCounter = self.read(SPEND).await?;
        counter.refund(day, micros);
        self.write(SPEND, &counter).await
    }

    async fn put(&self, json: &str, expected: Option<u64>) -> std::result::Result<bool, Error> {
        let ws = WorkspaceRecord::from_json(json)?;
        let _turn = self.turn().await;
        let current = self.record(&ws.id).await?;
        if current.as_ref().map(|c| c.revision) != expected {
            return Ok(false);
        }
        self.state
            .storage()
            .put(RECORD, ws.to_json())
            .await
            .map_err(|_| Error::StoreUnavailable)?;
        workspaces::save(&self.env, &ws).await?;
        Ok(true)
    }

    async fn handle(&self, call: WorkspaceCall) -> std::result::Result<Response, Error> {
        let reply = |body: String, status: u16| {
            Response::ok(body)
                .map(|r| r.with_status(status))
                .map_err(|_| Error::StoreUnavailable)
        };
        match call {
            WorkspaceCall::Flood { limit, spend, now } => {
                let refused = self.flood(limit, spend, now).await?;
                reply(serde_json::to_string(&refused).unwrap_or_default(), 200)
            }
            WorkspaceCall::RefundSpend { day, micros } => {
                self.refund_spend(day, micros).await?;
                reply(String::new(), 200)
            }
            WorkspaceCall::Read { workspace_id } => match self.record(&workspace_id).await? {
                Some(ws) => reply(ws.to_json(), 200),
                None => reply(String::new(), 404),
            },
            WorkspaceCall::Put {
                workspace,
                expected,
            } => match self.put(&workspace, expected).await? {
                true => reply(String::new(), 200),
                false => reply(String::new(), 409),
            },
        }
    }
}

impl DurableObject for WorkspaceObject {
    fn new(state: State, env: Env) -> Self {
        WorkspaceObject {
            state,
            env,
            writing: Cell::new(false),
            queue: RefCell::new(VecDeque::new()),
        }
    }

    async fn fetch(&self, mut req: Request) -> Result<Response> {
        let call: WorkspaceCall = match req.json().await {
            Ok(c) => c,
            Err(_) => return http::error(&Error::invalid("", "bad internal call")),
        };
        match self.handle(call).await {
            Ok(r) => Ok(r),
            Err(e) => http::error(&e),
        }
    }
}

impl std::fmt::Debug for WorkspaceObject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WorkspaceObject")
    }
}
