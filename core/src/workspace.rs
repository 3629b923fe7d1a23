//! The stored workspace record, API keys, admin bodies and credential checks.

use crate::code::base64url;
use crate::error::Error;
use crate::hash::{ct_eq, sha256, to_hex};
use crate::json::{self, invalid};
use crate::policy::Policy;
use crate::time::UnixMillis;
use crate::validate;
use crate::STATE_VERSION;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// API key prefix.
pub const API_KEY_PREFIX: &str = "otpk_";

/// One API key, stored only as its SHA-256.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApiKeyRecord {
    /// Public id (`key_…`), safe to log.
    pub key_id: String,
    /// Hex SHA-256 of the key.
    pub key_hash: String,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Revocation time, if revoked.
    pub revoked_at: Option<UnixMillis>,
    /// When the key last authenticated a request (to within [`LAST_USED_GRANULARITY_MS`]).
    /// Never part of the stored record: hosts keep it beside the record, per key (no write
    /// per request, no part in the record's revision), fill it in when they answer an admin
    /// read ([`WorkspaceRecord::merge_last_used`]) and take it out before a record is written
    /// ([`WorkspaceRecord::clear_last_used`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<UnixMillis>,
}

/// A key's use is recorded at most once per this long per key (per process or isolate):
/// `lastUsedAt` is exact to within it.
pub const LAST_USED_GRANULARITY_MS: u64 = 3_600_000;

/// Is a key's use at `now` due to be recorded, given when this process last recorded it
/// (`None`: never)? Hosts keep `recorded` in a local cache and write only when this says so.
#[must_use]
pub fn last_used_due(recorded: Option<UnixMillis>, now: UnixMillis) -> bool {
    recorded.is_none_or(|r| now.0.saturating_sub(r.0) >= LAST_USED_GRANULARITY_MS)
}

/// A tenant, as stored (versioned JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WorkspaceRecord {
    /// Format version.
    pub v: u8,
    /// `ws_` + 24 hex digits.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Allowed sender names; the first is the second dialect's default.
    pub senders: Vec<String>,
    /// Policy.
    pub policy: Policy,
    /// Keys, revoked ones included.
    pub keys: Vec<ApiKeyRecord>,
    /// Creation time.
    pub created_at: UnixMillis,
    /// Bumped by every write: a store writes a record only over the revision it was read at
    /// ([`crate::flow::Io::PutWorkspace`]), so concurrent admin writes never lose one another.
    /// Absent in records written before it (read as 0).
    #[serde(default)]
    pub revision: u64,
}

/// A new API key: the key (shown once), its id, and the record to store.
#[derive(Clone)]
pub struct NewApiKey {
    /// `otpk_` + base64url of 32 random bytes. Return it once; never store or log it.
    pub api_key: String,
    /// The stored record.
    pub record: ApiKeyRecord,
}

impl core::fmt::Debug for NewApiKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("NewApiKey")
            .field("api_key", &"<redacted>")
            .field("record", &self.record)
            .finish()
    }
}

/// Makes an API key from 32 host-drawn random bytes.
#[must_use]
pub fn new_api_key(random: &[u8; 32], now: UnixMillis) -> NewApiKey {
    let api_key = alloc::format!("{API_KEY_PREFIX}{}", base64url(random));
    let id_hash = sha256(&[b"otpkit/v1/key-id:".as_slice(), api_key.as_bytes()].concat());
    let key_id = alloc::format!("key_{}", to_hex(id_hash.get(..8).unwrap_or(&[])));
    NewApiKey {
        record: ApiKeyRecord {
            key_id,
            key_hash: api_key_hash(&api_key),
            created_at: now,
            revoked_at: None,
            last_used_at: None,
        },
        api_key,
    }
}

/// The lookup hash of a presented key (hex SHA-256). Keys are 256-bit random, so a fast hash is enough.
#[must_use]
pub fn api_key_hash(api_key: &str) -> String {
    to_hex(&sha256(api_key.as_bytes()))
}

/// Is this shaped like one of our keys? (Malformed keys are refused without a lookup.)
#[must_use]
pub fn is_api_key_format(s: &str) -> bool {
    s.strip_prefix(API_KEY_PREFIX).is_some_and(|rest| {
        rest.len() == 43
            && rest
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The API key from `Authorization: Bearer <key>` or `x-api-key: <key>` (Bearer wins if both).
#[must_use]
pub fn presented_api_key<'a>(
    authorization: Option<&'a str>,
    x_api_key: Option<&'a str>,
) -> Option<&'a str> {
    bearer(authorization)
        .or(x_api_key.map(str::trim))
        .filter(|k| is_api_key_format(k))
}

fn bearer(authorization: Option<&str>) -> Option<&str> {
    let v = authorization?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Does `Authorization: Bearer <token>` carry the admin token? Compares SHA-256 digests in
/// constant time, so neither the length nor a prefix of the token leaks through timing.
#[must_use]
pub fn admin_authorized(admin_token: &str, authorization: Option<&str>) -> bool {
    let given = bearer(authorization).unwrap_or("");
    ct_eq(&sha256(admin_token.as_bytes()), &sha256(given.as_bytes())) && !admin_token.is_empty()
}

/// `ws_` + hex of 12 host-drawn random bytes.
#[must_use]
pub fn workspace_id(random: &[u8; 12]) -> String {
    alloc::format!("ws_{}", to_hex(random))
}

fn senders(v: &Value) -> Result<Vec<String>, Error> {
    let Value::Array(items) = v else {
        return Err(invalid("senders", "must be a list of sender names"));
    };
    if items.is_empty() || items.len() > 50 {
        return Err(invalid("senders", "must list 1 to 50 sender names"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let Some(s) = item.as_str() else {
            return Err(invalid("senders", "each sender name must be a string"));
        };
        validate::sender("senders", s)?;
        if !out.iter().any(|o| o == s) {
            out.push(s.to_string());
        }
    }
    Ok(out)
}

impl WorkspaceRecord {
    /// `POST /v1/admin/workspaces` body `{name, senders, policy?}` → a record (without keys;
    /// add the first with [`new_api_key`]).
    pub fn from_create_json(
        body: &[u8],
        id: String,
        now: UnixMillis,
    ) -> Result<WorkspaceRecord, Error> {
        let obj = json::parse_object(body)?;
        let name = json::req_str(&obj, "name")?.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(invalid(
                "name",
                "must be 1 to 100 characters without control characters",
            ));
        }
        let senders =
            senders(json::get(&obj, "senders").ok_or_else(|| invalid("senders", "is required"))?)?;
        let policy = Policy::from_json(obj.get("policy"))?;
        Ok(WorkspaceRecord {
            v: STATE_VERSION,
            id,
            name: name.to_string(),
            senders,
            policy,
            keys: Vec::new(),
            created_at: now,
            revision: 1,
        })
    }

    /// `PATCH /v1/admin/workspaces/{id}` body `{senders?, policy?}`: `senders` replaces the
    /// list, `policy` keys are merged. Nothing changes unless everything is valid.
    pub fn patched(&self, body: &[u8]) -> Result<WorkspaceRecord, Error> {
        let obj = json::parse_object(body)?;
        if let Some(k) = obj
            .keys()
            .find(|k| !matches!(k.as_str(), "senders" | "policy" | "name"))
        {
            return Err(json::invalid_owned(
                k,
                "is not a workspace field (senders, policy, name)".into(),
            ));
        }
        let mut next = self.clone();
        if let Some(name) = json::opt_str(&obj, "name")? {
            let name = name.trim();
            if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
                return Err(invalid(
                    "name",
                    "must be 1 to 100 characters without control characters",
                ));
            }
            next.name = name.to_string();
        }
        if let Some(v) = json::get(&obj, "senders") {
            next.senders = senders(v)?;
        }
        if let Some(v) = json::get(&obj, "policy") {
            next.policy = self.policy.patched(v)?;
        }
        Ok(next)
    }

    /// The live (unrevoked) key with this hash, if any.
    #[must_use]
    pub fn live_key(&self, key_hash: &str) -> Option<&ApiKeyRecord> {
        self.keys
            .iter()
            .find(|k| k.revoked_at.is_none() && ct_eq(k.key_hash.as_bytes(), key_hash.as_bytes()))
    }

    /// Fills in each key's `lastUsedAt` from the side store (`used`: key id → time; a key it
    /// has no time for shows none).
    pub fn merge_last_used(&mut self, used: impl Fn(&str) -> Option<UnixMillis>) {
        for k in &mut self.keys {
            k.last_used_at = used(&k.key_id);
        }
    }

    /// Takes every `lastUsedAt` out (before the record is written: it is kept beside it).
    pub fn clear_last_used(&mut self) {
        for k in &mut self.keys {
            k.last_used_at = None;
        }
    }

    /// Revokes a key by id; `false` if there is no such live key.
    pub fn revoke(&mut self, key_id: &str, now: UnixMillis) -> bool {
        match self
            .keys
            .iter_mut()
            .find(|k| k.key_id == key_id && k.revoked_at.is_none())
        {
            Some(k) => {
                k.revoked_at = Some(now);
                true
            }
            None => false,
        }
    }

    /// What the admin API shows: no key hashes.
    #[must_use]
    pub fn public_view(&self) -> WorkspaceView<'_> {
        WorkspaceView {
            workspace_id: &self.id,
            name: &self.name,
            senders: &self.senders,
            policy: &self.policy,
            key_ids: self
                .keys
                .iter()
                .filter(|k| k.revoked_at.is_none())
                .map(|k| k.key_id.as_str())
                .collect(),
        }
    }

    /// `GET /v1/admin/workspaces/{id}` (SPEC §9): the public view plus every key, revoked ones
    /// included, by id and times — never a key or its hash.
    #[must_use]
    pub fn detail_view(&self) -> WorkspaceDetail<'_> {
        WorkspaceDetail {
            view: self.public_view(),
            created_at: self.created_at.to_rfc3339(),
            keys: self
                .keys
                .iter()
                .map(|k| KeyView {
                    key_id: &k.key_id,
                    created_at: k.created_at.to_rfc3339(),
                    revoked_at: k.revoked_at.map(UnixMillis::to_rfc3339),
                    last_used_at: k.last_used_at.map(UnixMillis::to_rfc3339),
                })
                .collect(),
        }
    }

    /// Stored JSON.
    #[must_use]
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Reads stored JSON back ([`Error::CorruptState`] on anything else).
    pub fn from_json(s: &str) -> Result<WorkspaceRecord, Error> {
        let w: WorkspaceRecord = serde_json::from_str(s).map_err(|_| Error::CorruptState {
            message: "stored workspace is not valid JSON of version 1".into(),
        })?;
        if w.v != STATE_VERSION || !validate::is_workspace_id(&w.id) {
            return Err(Error::CorruptState {
                message: "stored workspace has an unknown version or id".into(),
            });
        }
        w.policy.check().map_err(|_| Error::CorruptState {
            message: "stored workspace policy is inconsistent".into(),
        })?;
        Ok(w)
    }
}

/// The admin view of a workspace.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceView<'a> {
    /// Id.
    pub workspace_id: &'a str,
    /// Name.
    pub name: &'a str,
    /// Sender names.
    pub senders: &'a [String],
    /// Policy.
    pub policy: &'a Policy,
    /// Ids of live keys.
    pub key_ids: Vec<&'a str>,
}

/// The admin detail of a workspace ([`WorkspaceRecord::detail_view`]).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkspaceDetail<'a> {
    /// What PATCH answers too.
    #[serde(flatten)]
    pub view: WorkspaceView<'a>,
    /// RFC 3339.
    pub created_at: String,
    /// Every key, oldest first (no key, no hash).
    pub keys: Vec<KeyView<'a>>,
}

/// One API key as the admin API shows it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeyView<'a> {
    /// Public id.
    pub key_id: &'a str,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339, or null while live.
    pub revoked_at: Option<String>,
    /// RFC 3339 (to within an hour: [`LAST_USED_GRANULARITY_MS`]), or null if never used.
    pub last_used_at: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_used_is_due_once_per_granularity() {
        let t = UnixMillis(1_800_000_000_000);
        assert!(last_used_due(None, t));
        assert!(!last_used_due(Some(t), t));
        assert!(!last_used_due(
            Some(t),
            UnixMillis(t.0 + LAST_USED_GRANULARITY_MS - 1)
        ));
        assert!(last_used_due(
            Some(t),
            UnixMillis(t.0 + LAST_USED_GRANULARITY_MS)
        ));
        // A clock that went back never makes it due.
        assert!(!last_used_due(Some(t), UnixMillis(t.0 - 1)));
    }

    #[test]
    fn last_used_is_shown_merged_and_never_stored() {
        let key = new_api_key(&[7; 32], UnixMillis(1_000));
        let mut ws = WorkspaceRecord::from_create_json(
            br#"{"name":"a","senders":["Acme"]}"#,
            "ws_000000000000000000000001".into(),
            UnixMillis(1_000),
        )
        .unwrap();
        ws.keys.push(key.record.clone());
        let detail = serde_json::to_value(ws.detail_view()).unwrap();
        assert_eq!(detail["keys"][0]["lastUsedAt"], Value::Null);
        assert!(!ws.to_json().contains("lastUsedAt"));
        let id = key.record.key_id.clone();
        ws.merge_last_used(|k| (k == id).then_some(UnixMillis(1_700_000_000_000)));
        let detail = serde_json::to_value(ws.detail_view()).unwrap();
        assert_eq!(detail["keys"][0]["lastUsedAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(
            WorkspaceRecord::from_json(&ws.to_json()).unwrap().keys[0].last_used_at,
            Some(UnixMillis(1_700_000_000_000))
        );
        ws.clear_last_used();
        assert!(!ws.to_json().contains("lastUsedAt"));
    }
}
