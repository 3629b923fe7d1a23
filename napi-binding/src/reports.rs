//! The audit log and analytics as the stores hold them: query strings parsed, pages and reports
//! answered from a store's raw rows.

use crate::errors::throw;
use crate::http::Reply;
use crate::ms;
use crate::workspace::Workspace;
use napi::Result;
use napi_derive::napi;
use otpkit_core::analytics::{self, AnalyticsQuery, Counter, WorkspaceCounters};
use otpkit_core::audit::{self, AuditEvent, AuditQuery};

/// The audit page for `query` (the URL's query string) over `lines` (`seq|eventJSON`, newest
/// first, already limited to one workspace) merged with `repeatable` (the workspace's other
/// stream, likewise) into one newest-first order by sequence number.
#[napi]
pub fn audit_reply(
    lines: Vec<String>,
    query: String,
    repeatable: Option<Vec<String>>,
) -> Result<Reply> {
    let q = audit_query(&query)?;
    let lifecycle = lines.iter().filter_map(|l| parse_line(l));
    let repeatable = repeatable.iter().flatten().filter_map(|l| parse_line(l));
    Ok(audit_page(newest_first(lifecycle, repeatable), &q))
}

/// Merges two streams each ordered newest first (sequence numbers descending) into one.
pub(crate) fn newest_first<E>(
    a: impl Iterator<Item = (u64, E)>,
    b: impl Iterator<Item = (u64, E)>,
) -> impl Iterator<Item = (u64, E)> {
    let mut a = a.peekable();
    let mut b = b.peekable();
    std::iter::from_fn(move || match (a.peek(), b.peek()) {
        (Some((x, _)), Some((y, _))) if y > x => b.next(),
        (Some(_), _) => a.next(),
        (None, _) => b.next(),
    })
}

pub(crate) fn audit_query(query: &str) -> Result<AuditQuery> {
    let pairs = query_pairs(query);
    AuditQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| throw(&e))
}

pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .trim_start_matches('?')
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = bytes
                    .get(i + 1..i + 3)
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                if let Some(v) = hex {
                    out.push(v);
                    i += 2;
                } else {
                    out.push(b);
                }
            }
            _ => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_line(line: &str) -> Option<(u64, AuditEvent)> {
    let (seq, json) = line.split_once('|')?;
    Some((seq.parse().ok()?, serde_json::from_str(json).ok()?))
}

/// One page of `events` (newest first): those the query selects, at most `limit`, and the
/// cursor of the next page. Only the page's events are cloned.
pub(crate) fn audit_page<E: std::borrow::Borrow<AuditEvent>>(
    events: impl Iterator<Item = (u64, E)>,
    q: &AuditQuery,
) -> Reply {
    let limit = q.limit as usize;
    let mut page: Vec<(u64, E)> = events
        .filter(|(seq, e)| {
            let e = e.borrow();
            q.cursor.is_none_or(|c| *seq < c)
                && q.since.is_none_or(|s| e.time >= s)
                && q.session_id
                    .as_deref()
                    .is_none_or(|sid| e.session_id == sid)
        })
        .take(limit + 1)
        .collect();
    let more = page.len() > limit;
    page.truncate(limit);
    let next = if more {
        page.last().map(|(s, _)| *s)
    } else {
        None
    };
    let events: Vec<AuditEvent> = page.into_iter().map(|(_, e)| e.borrow().clone()).collect();
    audit::reply(&events, next).into()
}

/// The period an analytics query covers.
#[napi(object)]
#[derive(Debug)]
pub struct AnalyticsPeriod {
    /// First UTC day number (days since 1970-01-01).
    pub first_day: u32,
    /// Today's UTC day number.
    pub last_day: u32,
}

pub(crate) fn analytics_query(query: &str) -> Result<AnalyticsQuery> {
    let pairs = query_pairs(query);
    AnalyticsQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .map_err(|e| throw(&e))
}

/// Checks an analytics query string (400 `VALIDATION_ERROR` with the field) and answers the
/// days it covers, so a store reads only those.
#[napi]
pub fn analytics_period(query: String, now: f64) -> Result<AnalyticsPeriod> {
    let q = analytics_query(&query)?;
    let now = ms(now);
    Ok(AnalyticsPeriod {
        first_day: q.first_day(now),
        last_day: analytics::day_of(now),
    })
}

/// `GET /otp/analytics` from a store's raw rows: `counters` is flat `[day, field, value, …]`
/// with fields `<counter>|<bucket>`, `open` the members of sessions still open and unexpired.
#[napi]
pub fn analytics_reply(
    ws: &Workspace,
    query: String,
    now: f64,
    counters: Vec<String>,
    open: Vec<String>,
) -> Result<Reply> {
    let q = analytics_query(&query)?;
    let rows = counter_rows(&counters);
    let live = open.iter().filter_map(|m| analytics::parse_open_member(m));
    Ok(analytics::report(&q, ms(now), rows, live, &ws.rec.policy.price_per_segment).into())
}

/// One workspace's raw analytics rows for [`admin_analytics_reply`] (as [`analytics_reply`]
/// takes them), with its record for the price.
#[napi(object)]
#[derive(Debug)]
pub struct WorkspaceRows {
    /// The workspace.
    pub workspace_id: String,
    /// Its stored record (JSON), for its price; `null`: SPEC §2's default price.
    pub workspace: Option<String>,
    /// Flat `[day, field, value, …]`, fields `<counter>|<bucket>`.
    pub counters: Vec<String>,
    /// Members of its sessions still open and unexpired.
    pub open: Vec<String>,
}

/// The counters and error counts of flat `[day, field, value, …]` rows
/// ([`analytics::counter_field`] / [`analytics::error_field`]).
fn counter_rows(counters: &[String]) -> impl Iterator<Item = Counter> + '_ {
    counters.chunks_exact(3).filter_map(|c| {
        let [day, field, value] = c else { return None };
        analytics::parse_field(day.parse().ok()?, field, value.parse().ok()?)
    })
}

/// `GET /v1/admin/analytics` from a store's raw rows of every workspace (SPEC §9 "Admin").
#[napi]
pub fn admin_analytics_reply(
    query: String,
    now: f64,
    workspaces: Vec<WorkspaceRows>,
) -> Result<Reply> {
    let q = analytics_query(&query)?;
    let mut all = Vec::with_capacity(workspaces.len());
    for w in &workspaces {
        let price = match w.workspace.as_deref() {
            Some(json) => {
                otpkit_core::workspace::WorkspaceRecord::from_json(json)
                    .map_err(|e| throw(&e))?
                    .policy
                    .price_per_segment
            }
            None => otpkit_core::Policy::default().price_per_segment,
        };
        let (mut counters, mut errors) = (Vec::new(), Vec::new());
        for c in counter_rows(&w.counters) {
            match c {
                Counter::Counts(b, n) => counters.push((b, n)),
                e @ Counter::Error { .. } => errors.push(e),
            }
        }
        all.push(WorkspaceCounters {
            workspace_id: w.workspace_id.clone(),
            price,
            counters,
            errors,
            open: w
                .open
                .iter()
                .filter_map(|m| analytics::parse_open_member(m))
                .collect(),
        });
    }
    Ok(analytics::admin_report(&q, ms(now), &all).into())
}
