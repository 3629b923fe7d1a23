//! The audit log in D1 `AUDIT` (schema: migrations/0001_audit.sql). Written after the response
//! with `waitUntil`, in one batch with the analytics counters the same events move
//! ([`crate::analytics`]); queried per workspace, newest first.
//!
//! Retention: rows are never deleted, by count or by time (nothing here or in the alarms deletes
//! from `audit_events`). So, unlike the Node stores' capped lists, no number of the events an end
//! user can repeat without a send (`AuditEvent::is_repeatable`) can push a session's lifecycle
//! events out; the cost is a table that grows with traffic (SECURITY.md §10).

use otpkit_core::analytics::Delta;
use otpkit_core::audit::{AuditEvent, AuditQuery};
use otpkit_core::{Channel, Error, Purpose, UnixMillis};
use serde::Deserialize;
use worker::wasm_bindgen::JsValue;
use worker::Env;

pub(crate) fn text(s: &str) -> JsValue {
    JsValue::from_str(s)
}

fn opt_text(s: Option<&str>) -> JsValue {
    s.map_or(JsValue::NULL, JsValue::from_str)
}

/// Appends events for a workspace and applies their analytics deltas, in one D1 batch (one
/// transaction). Failures are logged (without content) and dropped: neither decides an answer.
pub async fn write(env: &Env, workspace_id: &str, events: &[AuditEvent], deltas: &[Delta]) {
    let Ok(db) = env.d1("AUDIT") else { return };
    let mut statements = Vec::with_capacity(events.len().saturating_add(deltas.len() * 2));
    for e in events {
        let bound = db
            .prepare(
                "INSERT INTO audit_events (workspace_id, time_ms, event, session_id, purpose, app, dest, outcome, status, test, channel, key_id, message_id) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
            )
            .bind(&[
                text(workspace_id),
                JsValue::from_f64(e.time.0 as f64),
                text(&e.event),
                text(&e.session_id),
                // The column predates events without a purpose (admin events): '' for none.
                text(e.purpose.map_or("", Purpose::as_str)),
                opt_text(e.app.as_deref()),
                text(&e.dest),
                text(&e.outcome),
                opt_text(e.status.as_deref()),
                JsValue::from_f64(if e.test { 1.0 } else { 0.0 }),
                opt_text(e.channel.map(Channel::as_str)),
                opt_text(e.key_id.as_deref()),
                opt_text(e.message_id.as_deref()),
            ]);
        match bound {
            Ok(s) => statements.push(s),
            Err(_) => return,
        }
    }
    for d in deltas {
        match crate::analytics::statements(&db, workspace_id, d) {
            Ok(mut s) => statements.append(&mut s),
            Err(_) => return,
        }
    }
    if statements.is_empty() {
        return;
    }
    if let Err(err) = db.batch(statements).await {
        worker::console_error!(
            "audit write failed: {}",
            err.to_string().chars().take(200).collect::<String>()
        );
    }
}

#[derive(Deserialize)]
struct Row {
    seq: f64,
    time_ms: f64,
    event: String,
    session_id: String,
    purpose: String,
    app: Option<String>,
    dest: String,
    outcome: String,
    status: Option<String>,
    test: f64,
    channel: Option<String>,
    key_id: Option<String>,
    message_id: Option<String>,
}

/// One page of a workspace's events, newest first, and the cursor of the next page.
pub async fn query(
    env: &Env,
    workspace_id: &str,
    q: &AuditQuery,
) -> Result<(Vec<AuditEvent>, Option<u64>), Error> {
    let db = env.d1("AUDIT").map_err(|_| Error::Misconfigured {
        message: "D1 binding AUDIT is missing".into(),
    })?;
    let cursor = q.cursor.map_or(f64::MAX, |c| c as f64);
    let since = q.since.map_or(0.0, |t| t.0 as f64);
    let limit = f64::from(q.limit.saturating_add(1));
    let rows: Vec<Row> = db
        .prepare(
            "SELECT seq, time_ms, event, session_id, purpose, app, dest, outcome, status, test, channel, key_id, message_id FROM audit_events \
             WHERE workspace_id = ?1 AND seq < ?2 AND time_ms >= ?3 AND (?4 IS NULL OR session_id = ?4) \
             ORDER BY seq DESC LIMIT ?5",
        )
        .bind(&[text(workspace_id), JsValue::from_f64(cursor), JsValue::from_f64(since), opt_text(q.session_id.as_deref()), JsValue::from_f64(limit)])
        .map_err(|_| Error::StoreUnavailable)?
        .all()
        .await
        .map_err(|_| Error::StoreUnavailable)?
        .results()
        .map_err(|_| Error::StoreUnavailable)?;
    let more = rows.len() > q.limit as usize;
    let page: Vec<&Row> = rows.iter().take(q.limit as usize).collect();
    let next = if more {
        page.last().map(|r| r.seq as u64)
    } else {
        None
    };
    let events = page
        .into_iter()
        .map(|r| AuditEvent {
            time: UnixMillis(r.time_ms as u64),
            event: r.event.clone(),
            session_id: r.session_id.clone(),
            purpose: Purpose::parse(&r.purpose),
            app: r.app.clone(),
            dest: r.dest.clone(),
            outcome: r.outcome.clone(),
            status: r.status.clone(),
            test: r.test != 0.0,
            channel: r.channel.as_deref().and_then(Channel::parse),
            key_id: r.key_id.clone(),
            message_id: r.message_id.clone(),
        })
        .collect();
    Ok((events, next))
}
