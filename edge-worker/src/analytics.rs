//! Analytics in D1 `AUDIT` (schema: migrations/0002_analytics.sql, with the bucket's country from
//! migrations/0006_analytics_country.sql). The core decides every
//! increment ([`otpkit_core::analytics`]); this module turns them into statements, and answers
//! `GET /otp/analytics` from three indexed reads of one workspace's rows (counters, open sessions
//! and provider error counts: migrations/0009_analytics_errors.sql).

use crate::audit::text;
use crate::workspaces;
use otpkit_core::analytics::{
    self, AnalyticsQuery, Bucket, Counter, Counts, Delta, WorkspaceCounters, Write,
};
use otpkit_core::http::envelope::Reply;
use otpkit_core::policy::Policy;
use otpkit_core::workspace::WorkspaceRecord;
use otpkit_core::{Error, UnixMillis};
use serde::Deserialize;
use std::collections::BTreeMap;
use worker::wasm_bindgen::JsValue;
use worker::{D1Database, D1PreparedStatement, Env};

type Statements = worker::Result<Vec<D1PreparedStatement>>;

fn num(n: u64) -> JsValue {
    #[allow(clippy::cast_precision_loss)] // counts and times stay far below 2^53
    JsValue::from_f64(n as f64)
}

/// The statements of one delta: its writes (`otpkit_core::analytics::Write`) as D1 statements.
pub fn statements(db: &D1Database, workspace_id: &str, d: &Delta) -> Statements {
    let key = |b: &Bucket| {
        [
            text(workspace_id),
            num(u64::from(b.day)),
            text(&b.country),
            text(b.channel.as_str()),
            text(b.purpose.as_str()),
            text(&b.app),
        ]
    };
    let mut out = Vec::with_capacity(2);
    for w in d.writes() {
        out.push(match w {
            Write::Add { bucket, counts: c } => {
                let mut args = key(&bucket).to_vec();
                args.extend(
                    [
                        c.sent,
                        c.reused,
                        c.delivery_failed,
                        c.verified,
                        c.failed,
                        c.sms_segments,
                        c.resent,
                        c.fraud_blocked,
                        c.fraud_blocked_segments,
                        c.delivered,
                        c.undelivered,
                    ]
                    .map(num),
                );
                db.prepare(
                    "INSERT INTO analytics_daily (workspace_id, day, country, channel, purpose, \
                     app, sent, reused, delivery_failed, verified, failed, sms_segments, resent, \
                     fraud_blocked, fraud_blocked_segments, delivered, undelivered) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, \
                     ?16, ?17) \
                     ON CONFLICT (workspace_id, day, country, channel, purpose, app) \
                     DO UPDATE SET \
                     sent = sent + excluded.sent, reused = reused + excluded.reused, \
                     delivery_failed = delivery_failed + excluded.delivery_failed, \
                     verified = verified + excluded.verified, failed = failed + excluded.failed, \
                     sms_segments = sms_segments + excluded.sms_segments, \
                     resent = resent + excluded.resent, \
                     fraud_blocked = fraud_blocked + excluded.fraud_blocked, \
                     fraud_blocked_segments = fraud_blocked_segments + \
                     excluded.fraud_blocked_segments, \
                     delivered = delivered + excluded.delivered, \
                     undelivered = undelivered + excluded.undelivered",
                )
                .bind(&args)?
            }
            Write::Open {
                bucket,
                session_id,
                until,
            } => {
                let mut args = key(&bucket).to_vec();
                args.extend([text(session_id), num(until.0)]);
                db.prepare(
                    "INSERT OR REPLACE INTO analytics_open \
                     (workspace_id, day, country, channel, purpose, app, session_id, \
                     expires_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .bind(&args)?
            }
            Write::Close { session_id, .. } => db
                .prepare("DELETE FROM analytics_open WHERE workspace_id = ?1 AND session_id = ?2")
                .bind(&[text(workspace_id), text(session_id)])?,
            Write::Error { bucket, code } => {
                let mut args = key(&bucket).to_vec();
                args.push(text(code));
                db.prepare(
                    "INSERT INTO analytics_errors (workspace_id, day, country, channel, purpose, \
                     app, code, count) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 1) \
                     ON CONFLICT (workspace_id, day, country, channel, purpose, app, code) \
                     DO UPDATE SET count = count + 1",
                )
                .bind(&args)?
            }
        });
    }
    Ok(out)
}

/// When a session is purged: its open row goes, and the workspace's counters older than 90 days
/// (a range on the primary key). Failures are logged and dropped, as audit writes are.
pub async fn purge(env: &Env, workspace_id: &str, session_id: &str, now: UnixMillis) {
    let Ok(db) = env.d1("AUDIT") else { return };
    let outcome = match purge_statements(&db, workspace_id, session_id, now) {
        Ok(statements) => db.batch(statements).await.map(drop),
        Err(e) => Err(e),
    };
    if let Err(err) = outcome {
        worker::console_error!(
            "analytics purge failed: {}",
            err.to_string().chars().take(200).collect::<String>()
        );
    }
}

fn purge_statements(
    db: &D1Database,
    workspace_id: &str,
    session_id: &str,
    now: UnixMillis,
) -> Statements {
    Ok(vec![
        db.prepare("DELETE FROM analytics_open WHERE workspace_id = ?1 AND session_id = ?2")
            .bind(&[text(workspace_id), text(session_id)])?,
        db.prepare("DELETE FROM analytics_daily WHERE workspace_id = ?1 AND day < ?2")
            .bind(&[
                text(workspace_id),
                num(u64::from(analytics::oldest_kept_day(now))),
            ])?,
        db.prepare("DELETE FROM analytics_errors WHERE workspace_id = ?1 AND day < ?2")
            .bind(&[
                text(workspace_id),
                num(u64::from(analytics::oldest_kept_day(now))),
            ])?,
    ])
}

/// The bucket columns every analytics row has, read once for the three tables.
#[derive(Deserialize)]
struct BucketCols {
    workspace_id: String,
    day: f64,
    /// `''` for rows kept before there was a country.
    #[serde(default)]
    country: String,
    channel: String,
    purpose: String,
    app: String,
}

impl BucketCols {
    fn bucket(&self) -> Option<Bucket> {
        let day = u32::try_from(int(self.day)).ok()?;
        let (channel, purpose, app) = (&self.channel, &self.purpose, &self.app);
        let key = if self.country.is_empty() {
            format!("{channel}|{purpose}|{app}")
        } else {
            format!("c{}|{channel}|{purpose}|{app}", self.country)
        };
        Bucket::parse(day, &key)
    }
}

#[derive(Deserialize)]
struct CounterRow {
    #[serde(flatten)]
    at: BucketCols,
    sent: f64,
    reused: f64,
    delivery_failed: f64,
    verified: f64,
    failed: f64,
    sms_segments: f64,
    resent: f64,
    fraud_blocked: f64,
    fraud_blocked_segments: f64,
    #[serde(default)]
    delivered: f64,
    #[serde(default)]
    undelivered: f64,
}

#[derive(Deserialize)]
struct OpenRow {
    #[serde(flatten)]
    at: BucketCols,
    live: f64,
}

#[derive(Deserialize)]
struct ErrorRow {
    #[serde(flatten)]
    at: BucketCols,
    code: String,
    count: f64,
}

fn error(r: &ErrorRow) -> Option<Counter> {
    Some(Counter::Error {
        bucket: r.at.bucket()?,
        code: r.code.clone(),
        count: int(r.count),
    })
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)] // D1 integers come as f64
fn int(x: f64) -> u64 {
    x.max(0.0) as u64
}

/// The query's app filter as a D1 argument (`NULL`: every app).
fn app_filter(q: &AnalyticsQuery) -> JsValue {
    q.app.as_deref().map_or(JsValue::NULL, JsValue::from_str)
}

fn counter(r: &CounterRow) -> Option<(Bucket, Counts)> {
    let b = r.at.bucket()?;
    let c = Counts {
        sent: int(r.sent),
        reused: int(r.reused),
        delivery_failed: int(r.delivery_failed),
        verified: int(r.verified),
        failed: int(r.failed),
        sms_segments: int(r.sms_segments),
        resent: int(r.resent),
        fraud_blocked: int(r.fraud_blocked),
        fraud_blocked_segments: int(r.fraud_blocked_segments),
        delivered: int(r.delivered),
        undelivered: int(r.undelivered),
    };
    Some((b, c))
}

/// The bucket of a row of live sessions, once per session.
fn live(r: &OpenRow) -> impl Iterator<Item = Bucket> {
    let b = r.at.bucket();
    let n = usize::try_from(int(r.live)).unwrap_or(0);
    std::iter::repeat_n(b, n).flatten()
}

type Rows = (Vec<CounterRow>, Vec<OpenRow>, Vec<ErrorRow>);

/// The period's rows of workspace `ws` (`None`: of every workspace) in one D1 batch: counters,
/// live sessions and provider error counts. With a workspace each read is on the
/// `(workspace_id, …)` keys: no other workspace's rows are touched.
async fn rows(
    env: &Env,
    ws: Option<&str>,
    q: &AnalyticsQuery,
    now: UnixMillis,
) -> Result<Rows, Error> {
    let db = env.d1("AUDIT").map_err(|_| Error::Misconfigured {
        message: "D1 binding AUDIT is missing".into(),
    })?;
    let unavailable = |_| Error::StoreUnavailable;
    // ?1 the workspace, ?2 the period's first day, ?3 the app filter (NULL: every app).
    let scope = if ws.is_some() {
        "workspace_id = ?1"
    } else {
        "?1 IS NULL"
    };
    let cols = "workspace_id, day, country, channel, purpose, app";
    let period = "day >= ?2 AND (?3 IS NULL OR app = ?3)";
    let args = [
        ws.map_or(JsValue::NULL, JsValue::from_str),
        num(u64::from(q.first_day(now))),
        app_filter(q),
    ];
    let counters = db
        .prepare(format!(
            "SELECT {cols}, sent, reused, delivery_failed, verified, failed, sms_segments, resent, \
             fraud_blocked, fraud_blocked_segments, delivered, undelivered FROM analytics_daily \
             WHERE {scope} AND {period}"
        ))
        .bind(&args)
        .map_err(unavailable)?;
    let mut open_args = args.to_vec();
    open_args.push(num(now.0));
    let open = db
        .prepare(format!(
            "SELECT {cols}, COUNT(*) AS live FROM analytics_open \
             WHERE {scope} AND {period} AND expires_at > ?4 GROUP BY {cols}"
        ))
        .bind(&open_args)
        .map_err(unavailable)?;
    let errors = db
        .prepare(format!(
            "SELECT {cols}, code, count FROM analytics_errors WHERE {scope} AND {period}"
        ))
        .bind(&args)
        .map_err(unavailable)?;
    let results = db
        .batch(vec![counters, open, errors])
        .await
        .map_err(unavailable)?;
    let (Some(counters), Some(open), Some(errors)) =
        (results.first(), results.get(1), results.get(2))
    else {
        return Err(Error::StoreUnavailable);
    };
    Ok((
        counters.results().map_err(unavailable)?,
        open.results().map_err(unavailable)?,
        errors.results().map_err(unavailable)?,
    ))
}

/// `GET /v1/admin/analytics` (SPEC §9): the same reads as [`report`] without the workspace
/// filter (every workspace's rows of the period), then each workspace's price from its record
/// (KV), and the core's [`analytics::admin_report`].
pub async fn admin_report(env: &Env, q: &AnalyticsQuery, now: UnixMillis) -> Result<Reply, Error> {
    let (counters, open, errors) = rows(env, None, q, now).await?;
    // Workspace id → its counters, its live sessions' buckets and its error counts.
    type ByWorkspace = (Vec<(Bucket, Counts)>, Vec<Bucket>, Vec<Counter>);
    let mut by_ws: BTreeMap<&str, ByWorkspace> = BTreeMap::new();
    for r in &counters {
        if let Some(c) = counter(r) {
            by_ws.entry(&r.at.workspace_id).or_default().0.push(c);
        }
    }
    for r in &open {
        by_ws
            .entry(&r.at.workspace_id)
            .or_default()
            .1
            .extend(live(r));
    }
    for r in &errors {
        by_ws
            .entry(&r.at.workspace_id)
            .or_default()
            .2
            .extend(error(r));
    }
    let mut workspaces = Vec::with_capacity(by_ws.len());
    for (id, (counters, open, errors)) in by_ws {
        // Each bucket is costed at its workspace's price (SPEC §2's default if it is gone).
        let price = match workspaces::load(env, id).await? {
            Some(ws) => ws.policy.price_per_segment,
            None => Policy::default().price_per_segment,
        };
        workspaces.push(WorkspaceCounters {
            workspace_id: id.to_string(),
            price,
            counters,
            open,
            errors,
        });
    }
    Ok(analytics::admin_report(q, now, &workspaces))
}

/// `GET /otp/analytics`: the workspace's counters of the period, its live sessions and its error
/// counts ([`rows`]), summed by the core's [`analytics::report`].
pub async fn report(
    env: &Env,
    ws: &WorkspaceRecord,
    q: &AnalyticsQuery,
    now: UnixMillis,
) -> Result<Reply, Error> {
    let (counters, open, errors) = rows(env, Some(&ws.id), q, now).await?;
    let counters = counters
        .iter()
        .filter_map(counter)
        .map(Counter::from)
        .chain(errors.iter().filter_map(error));
    let live = open.iter().flat_map(live);
    Ok(analytics::report(
        q,
        now,
        counters,
        live,
        &ws.policy.price_per_segment,
    ))
}
