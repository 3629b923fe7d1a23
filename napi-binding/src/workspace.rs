//! The `Workspace` class: a tenant's sender names, policy and keys (the core's
//! `WorkspaceRecord`), read from a store, created by the admin API, or built by the library.

use crate::errors::throw;
use crate::{ms, random};
use napi::bindgen_prelude::Buffer;
use napi::Result;
use napi_derive::napi;
use otpkit_core::workspace::{self, WorkspaceRecord};
use otpkit_core::Error;
use std::sync::Arc;

/// Is a key's use at `now` due to be recorded (`lastUsedAt`), given when this process last
/// recorded it (`recorded`: ms, or null for never)? At most once an hour per key
/// (`otpkit_core::workspace::last_used_due`).
#[napi]
pub fn last_used_due(recorded: Option<f64>, now: f64) -> bool {
    workspace::last_used_due(recorded.map(ms), ms(now))
}

/// A tenant: sender names, policy and keys (the core's `WorkspaceRecord`).
#[napi]
#[derive(Debug, Clone)]
pub struct Workspace {
    /// Shared: a flow step on the tokio runtime (the Redis store) holds it without a copy.
    pub(crate) rec: Arc<WorkspaceRecord>,
    /// The library's default workspace without a sender list accepts any valid sender name.
    pub(crate) any_sender: bool,
}

#[napi]
impl Workspace {
    /// Reads a stored record.
    #[napi(factory)]
    pub fn from_json(json: String) -> Result<Workspace> {
        Ok(Workspace {
            rec: Arc::new(WorkspaceRecord::from_json(&json).map_err(|e| throw(&e))?),
            any_sender: false,
        })
    }

    /// `POST /v1/admin/workspaces` body → a new workspace with a fresh id (no key yet).
    #[napi(factory)]
    pub fn create(body: Buffer, now: f64) -> Result<Workspace> {
        let id = workspace::workspace_id(&random::<12>()?);
        Ok(Workspace {
            rec: Arc::new(
                WorkspaceRecord::from_create_json(&body, id, ms(now)).map_err(|e| throw(&e))?,
            ),
            any_sender: false,
        })
    }

    /// The library's workspace: `id`, optional `senders` (absent: any valid sender name is
    /// accepted) and `policy` JSON (validated as the admin API does).
    #[napi(factory)]
    pub fn library(
        id: String,
        senders: Option<Vec<String>>,
        policy: Option<String>,
        now: f64,
    ) -> Result<Workspace> {
        if !otpkit_core::validate::is_workspace_id(&id) {
            return Err(throw(&Error::invalid(
                "workspaceId",
                "must be 1 to 64 characters of A-Z a-z 0-9 _ -",
            )));
        }
        let policy_value: serde_json::Value = match policy.as_deref() {
            Some(p) => serde_json::from_str(p)
                .map_err(|_| throw(&Error::invalid("policy", "must be an object")))?,
            None => serde_json::Value::Null,
        };
        let any_sender = senders.is_none();
        let body = serde_json::json!({
            "name": id,
            // Without a list, any valid sender name is accepted; "otpkit" is the default sender.
            "senders": senders.unwrap_or_else(|| vec!["otpkit".to_string()]),
            "policy": policy_value,
        });
        let rec = WorkspaceRecord::from_create_json(body.to_string().as_bytes(), id, ms(now))
            .map_err(|e| throw(&e))?;
        Ok(Workspace {
            rec: Arc::new(rec),
            any_sender,
        })
    }

    /// Workspace id.
    #[napi(getter)]
    pub fn id(&self) -> String {
        self.rec.id.clone()
    }

    /// `sendsPerWorkspacePerMinute`.
    #[napi(getter)]
    pub fn flood_limit(&self) -> u32 {
        self.rec.policy.sends_per_workspace_per_minute
    }

    /// Whether reuse is on.
    #[napi(getter)]
    pub fn reuse(&self) -> bool {
        self.rec.policy.reuse
    }

    /// Stored JSON.
    #[napi]
    pub fn to_json(&self) -> String {
        self.rec.to_json()
    }

    /// Does this workspace hold a live key with this hash?
    #[napi]
    pub fn live_key(&self, key_hash: String) -> bool {
        self.rec.live_key(&key_hash).is_some()
    }

    /// The id of the live key with this hash, if any (for its `lastUsedAt`).
    #[napi]
    pub fn live_key_id(&self, key_hash: String) -> Option<String> {
        self.rec.live_key(&key_hash).map(|k| k.key_id.clone())
    }

    /// `PATCH` body → the updated workspace (nothing changes unless all of it is valid).
    #[napi]
    pub fn patched(&self, body: Buffer) -> Result<Workspace> {
        Ok(Workspace {
            rec: Arc::new(self.rec.patched(&body).map_err(|e| throw(&e))?),
            any_sender: self.any_sender,
        })
    }
}
