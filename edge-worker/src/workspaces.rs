//! Workspaces and API keys in KV `WORKSPACES`: `ws:<id>` → record JSON, `key:<sha256>` → id.

use otpkit_core::workspace::{self, WorkspaceRecord};
use otpkit_core::Error;
use worker::{kv::KvStore, Env};

fn kv(env: &Env) -> Result<KvStore, Error> {
    env.kv("WORKSPACES").map_err(|_| Error::Misconfigured {
        message: "KV binding WORKSPACES is missing".into(),
    })
}

/// `GET /ready`'s store check: the Durable Object bindings exist and KV `WORKSPACES` (read by
/// every authenticated request) answers a read.
pub async fn ready(env: &Env) -> bool {
    let objects = ["SESSIONS", "DESTINATIONS", "WORKSPACE_OBJECTS"]
        .iter()
        .all(|b| env.durable_object(b).is_ok());
    let Ok(kv) = kv(env) else { return false };
    objects && kv.get("ready:probe").text().await.is_ok()
}

/// Loads a workspace by id.
pub async fn load(env: &Env, id: &str) -> Result<Option<WorkspaceRecord>, Error> {
    if !otpkit_core::validate::is_workspace_id(id) {
        return Ok(None);
    }
    let raw = kv(env)?
        .get(&format!("ws:{id}"))
        .text()
        .await
        .map_err(|_| Error::StoreUnavailable)?;
    raw.map(|s| WorkspaceRecord::from_json(&s)).transpose()
}

/// Stores a workspace record.
pub async fn save(env: &Env, ws: &WorkspaceRecord) -> Result<(), Error> {
    kv(env)?
        .put(&format!("ws:{}", ws.id), ws.to_json())
        .map_err(|_| Error::StoreUnavailable)?
        .execute()
        .await
        .map_err(|_| Error::StoreUnavailable)
}

/// Points a key hash at its workspace.
pub async fn index_key(env: &Env, key_hash: &str, workspace_id: &str) -> Result<(), Error> {
    kv(env)?
        .put(&format!("key:{key_hash}"), workspace_id)
        .map_err(|_| Error::StoreUnavailable)?
        .execute()
        .await
        .map_err(|_| Error::StoreUnavailable)
}

/// Removes a key's index entry (revocation).
pub async fn unindex_key(env: &Env, key_hash: &str) -> Result<(), Error> {
    kv(env)?
        .delete(&format!("key:{key_hash}"))
        .await
        .map_err(|_| Error::StoreUnavailable)
}

/// The workspace of a presented API key and the key's id, or 401. The record is checked too,
/// so a revoked key fails even while its index entry is still propagating.
pub async fn authenticate(
    env: &Env,
    authorization: Option<&str>,
    x_api_key: Option<&str>,
) -> Result<(WorkspaceRecord, String), Error> {
    let key = workspace::presented_api_key(authorization, x_api_key).ok_or(Error::Unauthorized)?;
    let hash = workspace::api_key_hash(key);
    let id = kv(env)?
        .get(&format!("key:{hash}"))
        .text()
        .await
        .map_err(|_| Error::StoreUnavailable)?;
    let ws = match id {
        Some(id) => load(env, &id).await?,
        None => None,
    };
    let key_id = ws
        .as_ref()
        .and_then(|ws| ws.live_key(&hash))
        .map(|k| k.key_id.clone());
    match (ws, key_id) {
        (Some(ws), Some(key_id)) => Ok((ws, key_id)),
        _ => Err(Error::Unauthorized),
    }
}

/// The records in KV after the listing's `cursor` (KV's own: it lists `ws:` keys in key order,
/// so by id), at most `limit`, and the cursor of the next page (`None` at the end). A cursor KV
/// cannot read is `Ok(None)` (answered 400 on `cursor`). A key whose record has gone between
/// the list and its read is left out.
pub async fn list(
    env: &Env,
    cursor: Option<String>,
    limit: u32,
) -> Result<Option<(Vec<WorkspaceRecord>, Option<String>)>, Error> {
    let kv = kv(env)?;
    let given = cursor.is_some();
    let mut list = kv.list().prefix("ws:".into()).limit(u64::from(limit));
    if let Some(c) = cursor {
        list = list.cursor(c);
    }
    let page = match list.execute().await {
        Ok(page) => page,
        Err(_) if given => return Ok(None),
        Err(_) => return Err(Error::StoreUnavailable),
    };
    let reads = page.keys.iter().map(|k| kv.get(&k.name).text());
    let mut records = Vec::with_capacity(page.keys.len());
    for raw in futures_util::future::join_all(reads).await {
        if let Some(json) = raw.map_err(|_| Error::StoreUnavailable)? {
            records.push(WorkspaceRecord::from_json(&json)?);
        }
    }
    let next = if page.list_complete {
        None
    } else {
        page.cursor
    };
    Ok(Some((records, next)))
}
