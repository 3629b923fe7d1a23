//! Analytics (SPEC §3 `GET /otp/analytics`, "Precise rules: Analytics"): what each event adds to a
//! workspace's daily counters, the query, and the answer.
//!
//! Hosts keep two things per workspace and the core decides both:
//! - **counters** per bucket (UTC day of the session's creation, the destination's calling code,
//!   channel, purpose, app), added to by the [`Delta`]s that [`delivered`], [`reused`],
//!   [`delivery_failed`] and [`verified`] return;
//! - **open sessions**: a session is opened when its SMS is accepted and closed when it is
//!   verified or locked. At query time, an open session past its expiry is *expired*, so
//!   `expired = sent − verified − failed − (open and not yet expired)`, exactly and without a timer.
//!
//! Every count is attributed to the day the session was created (a cohort), so
//! `verification_rate = verified / sent` never exceeds 1. Sessions of test numbers are not
//! counted at all. `sms_segments` and the cost count SMS only: the price is per SMS segment and a
//! WhatsApp message is not made of segments.

use crate::error::Error;
use crate::http::envelope::Reply;
use crate::policy::Price;
use crate::session::{Session, VerifyOutcome};
use crate::time::UnixMillis;
use crate::validate::{self, Channel, Purpose};
use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Serialize};

/// Days answered when the query names none.
pub const DEFAULT_DAYS: u32 = 30;
/// Most days one query may ask for; counters are kept this long.
pub const MAX_DAYS: u32 = 90;
const DAY_MS: u64 = 86_400_000;

/// The UTC day number (days since 1970-01-01) of a time.
#[must_use]
pub fn day_of(t: UnixMillis) -> u32 {
    u32::try_from(t.0 / DAY_MS).unwrap_or(u32::MAX)
}

/// The oldest day still kept at `now`: counters of earlier days may be dropped.
#[must_use]
pub fn oldest_kept_day(now: UnixMillis) -> u32 {
    day_of(now).saturating_sub(MAX_DAYS.saturating_sub(1))
}

/// `YYYY-MM-DD` of a day number.
#[must_use]
pub fn date_of(day: u32) -> String {
    UnixMillis(u64::from(day).saturating_mul(DAY_MS)).utc_date()
}

/// Where counts are kept: the session's creation day, the destination's calling code, channel,
/// purpose and app (`""` for none).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Bucket {
    /// UTC day number of the session's creation.
    pub day: u32,
    /// The destination's calling code (`validate::calling_code`, e.g. `"233"`); `""` when it is
    /// not known, and for counters kept before there was a country (answered as `"other"`).
    pub country: String,
    /// Channel.
    pub channel: Channel,
    /// Purpose.
    pub purpose: Purpose,
    /// App label, `""` when the request named none.
    pub app: String,
}

impl Bucket {
    /// The bucket of a session.
    #[must_use]
    pub fn of(session: &Session) -> Bucket {
        let digits = session.dest.strip_prefix('+').unwrap_or(&session.dest);
        Bucket {
            day: day_of(session.created_at),
            country: validate::calling_code(digits).unwrap_or("").to_string(),
            channel: session.channel,
            purpose: session.purpose,
            app: session.app.clone().unwrap_or_default(),
        }
    }

    /// The bucket within its day as one string: `c<country>|channel|purpose|app`
    /// (`c233|sms|LOGIN|`), or `channel|purpose|app` when the country is not known, the format
    /// kept before there was a country, so stored keys of both kinds read back (no channel name
    /// starts with `c`). The app is last: it may contain `|`. Stores that shard by day use it as
    /// a field name.
    #[must_use]
    pub fn key(&self) -> String {
        let (channel, purpose) = (self.channel.as_str(), self.purpose.as_str());
        if self.country.is_empty() {
            format!("{channel}|{purpose}|{}", self.app)
        } else {
            format!("c{}|{channel}|{purpose}|{}", self.country, self.app)
        }
    }

    /// Reads [`Bucket::key`] back (either format); `None` if it is not one.
    #[must_use]
    pub fn parse(day: u32, key: &str) -> Option<Bucket> {
        let (country, rest) = match key.split_once('|') {
            Some((first, rest)) if first.starts_with('c') => {
                let code = first.get(1..)?;
                let digits =
                    (1..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit());
                (digits.then_some(code)?, rest)
            }
            _ => ("", key),
        };
        let mut parts = rest.splitn(3, '|');
        let channel = Channel::parse(parts.next()?)?;
        let purpose = Purpose::parse(parts.next()?)?;
        let app = parts.next()?.to_string();
        Some(Bucket {
            day,
            country: country.to_string(),
            channel,
            purpose,
            app,
        })
    }

    /// The name the answers give its country: the calling code, or `"other"` when not known.
    #[must_use]
    pub fn country_name(&self) -> &str {
        if self.country.is_empty() {
            "other"
        } else {
            &self.country
        }
    }
}

/// Counters of one bucket. Each is a count of sessions except `sms_segments`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Sessions whose message the gateway accepted.
    pub sent: u64,
    /// Requests answered with an existing session.
    pub reused: u64,
    /// Requests whose delivery failed or timed out (no session left).
    pub delivery_failed: u64,
    /// Sessions approved.
    pub verified: u64,
    /// Sessions locked (every attempt used without the right code).
    pub failed: u64,
    /// SMS segments of the messages sent (SMS channel only), resends included.
    pub sms_segments: u64,
    /// Codes sent again for a session (SPEC §7 resend).
    #[serde(default)]
    pub resent: u64,
    /// Sends Fraud Guard refused (SPEC §9).
    #[serde(default)]
    pub fraud_blocked: u64,
    /// The SMS segments those sends would have cost (the money saved, at the workspace price).
    #[serde(default)]
    pub fraud_blocked_segments: u64,
    /// Messages a delivery receipt said were delivered (SPEC §8).
    #[serde(default)]
    pub delivered: u64,
    /// Messages a delivery receipt said were undelivered or failed.
    #[serde(default)]
    pub undelivered: u64,
}

impl Counts {
    /// The counter names, as stored and answered.
    pub const FIELDS: [&'static str; 11] = [
        "sent",
        "reused",
        "delivery_failed",
        "verified",
        "failed",
        "sms_segments",
        "resent",
        "fraud_blocked",
        "fraud_blocked_segments",
        "delivered",
        "undelivered",
    ];

    /// A counter by name.
    #[must_use]
    pub fn get(&self, field: &str) -> Option<u64> {
        Some(match field {
            "sent" => self.sent,
            "reused" => self.reused,
            "delivery_failed" => self.delivery_failed,
            "verified" => self.verified,
            "failed" => self.failed,
            "sms_segments" => self.sms_segments,
            "resent" => self.resent,
            "fraud_blocked" => self.fraud_blocked,
            "fraud_blocked_segments" => self.fraud_blocked_segments,
            "delivered" => self.delivered,
            "undelivered" => self.undelivered,
            _ => return None,
        })
    }

    /// Adds to a counter by name; `false` if there is no such counter.
    pub fn add_to(&mut self, field: &str, n: u64) -> bool {
        let slot = match field {
            "sent" => &mut self.sent,
            "reused" => &mut self.reused,
            "delivery_failed" => &mut self.delivery_failed,
            "verified" => &mut self.verified,
            "failed" => &mut self.failed,
            "sms_segments" => &mut self.sms_segments,
            "resent" => &mut self.resent,
            "fraud_blocked" => &mut self.fraud_blocked,
            "fraud_blocked_segments" => &mut self.fraud_blocked_segments,
            "delivered" => &mut self.delivered,
            "undelivered" => &mut self.undelivered,
            _ => return false,
        };
        *slot = slot.saturating_add(n);
        true
    }

    /// Adds every counter of `other`.
    pub fn add(&mut self, other: &Counts) {
        for f in Counts::FIELDS {
            self.add_to(f, other.get(f).unwrap_or(0));
        }
    }

    /// The non-zero counters, by name.
    pub fn nonzero(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        Counts::FIELDS
            .into_iter()
            .filter_map(|f| self.get(f).filter(|&n| n > 0).map(|n| (f, n)))
    }
}

/// What one event adds: counters of a bucket, and whether the session opens or closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Delta {
    /// The session.
    pub session_id: String,
    /// UTC day number of the bucket.
    pub day: u32,
    /// Bucket key within the day ([`Bucket::key`]).
    pub bucket: String,
    /// What to add.
    pub counts: Counts,
    /// The session is now open, until this time (its expiry).
    pub open_until: Option<UnixMillis>,
    /// The session is now closed (verified or locked): drop it from the open sessions.
    pub close: bool,
    /// The provider's error code of an undelivered or failed message, counted for
    /// `top_errors` (SPEC §8).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
}

impl Delta {
    fn new(session: &Session, counts: Counts) -> Option<Delta> {
        if session.test {
            return None;
        }
        let bucket = Bucket::of(session);
        Some(Delta {
            session_id: session.id.clone(),
            day: bucket.day,
            bucket: bucket.key(),
            counts,
            open_until: None,
            close: false,
            error_code: None,
        })
    }

    /// The open-session entry as one string, `sessionId|day|bucket` (for a sorted set).
    #[must_use]
    pub fn open_member(&self) -> String {
        format!("{}|{}|{}", self.session_id, self.day, self.bucket)
    }
}

impl Bucket {
    /// [`Delta::open_member`] of a session in this bucket.
    #[must_use]
    pub fn open_member(&self, session_id: &str) -> String {
        format!("{session_id}|{}|{}", self.day, self.key())
    }
}

/// Days a day's counters are kept: one more than the longest query ([`MAX_DAYS`]), so that a
/// whole period is always there.
pub const KEEP_DAYS: u32 = MAX_DAYS + 1;

/// One store-neutral write of analytics, derived once from a [`Delta`]: D1, Redis and the
/// memory store each apply these, and none of them decides what a delta means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Write<'a> {
    /// Add `counts` (at least one is non-zero) to the bucket's counters; keep that day's
    /// counters until the end of day `bucket.day + KEEP_DAYS`.
    Add {
        /// The bucket.
        bucket: Bucket,
        /// What to add.
        counts: &'a Counts,
    },
    /// The session is open (sent, not verified or locked) until `until`; past it, it counts as
    /// expired without any further write.
    Open {
        /// The bucket it counts in.
        bucket: Bucket,
        /// The session.
        session_id: &'a str,
        /// Its expiry.
        until: UnixMillis,
    },
    /// The session closed (verified or locked): it no longer counts as open.
    Close {
        /// The bucket it counted in.
        bucket: Bucket,
        /// The session.
        session_id: &'a str,
    },
    /// Add one to the bucket's count of messages refused with the provider's error `code`
    /// (kept as long as the day's counters).
    Error {
        /// The bucket.
        bucket: Bucket,
        /// The provider's error code (`[A-Za-z0-9_.-]{1,32}`).
        code: &'a str,
    },
}

/// One stored counter: a bucket's [`Counts`], or how many of its messages a provider refused
/// with one error code. [`report`] takes either (a `(Bucket, Counts)` pair converts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Counter {
    /// A bucket's counters.
    Counts(Bucket, Counts),
    /// Messages of a bucket refused with `code`.
    Error {
        /// The bucket.
        bucket: Bucket,
        /// The provider's error code.
        code: String,
        /// How many.
        count: u64,
    },
}

impl From<(Bucket, Counts)> for Counter {
    fn from((b, c): (Bucket, Counts)) -> Counter {
        Counter::Counts(b, c)
    }
}

const ERROR_FIELD: &str = "error:";

/// How a store that keeps one day's counters in a map names a counter: `<counter>|<bucket>`
/// (`sent|c233|sms|LOGIN|`).
#[must_use]
pub fn counter_field(name: &str, bucket: &Bucket) -> String {
    format!("{name}|{}", bucket.key())
}

/// [`counter_field`] of a provider error code's count: `error:<code>|<bucket>`.
#[must_use]
pub fn error_field(code: &str, bucket: &Bucket) -> String {
    format!("{ERROR_FIELD}{code}|{}", bucket.key())
}

/// Reads a [`counter_field`] or [`error_field`] of day `day` back, with its value; `None` when
/// it is neither (a counter this version does not know is skipped, not misread).
#[must_use]
pub fn parse_field(day: u32, field: &str, value: u64) -> Option<Counter> {
    let (name, key) = field.split_once('|')?;
    let bucket = Bucket::parse(day, key)?;
    if let Some(code) = name.strip_prefix(ERROR_FIELD) {
        return (!code.is_empty()).then(|| Counter::Error {
            bucket,
            code: code.to_string(),
            count: value,
        });
    }
    let mut counts = Counts::default();
    counts
        .add_to(name, value)
        .then_some(Counter::Counts(bucket, counts))
}

impl Delta {
    /// What storing this delta means, in order (nothing for a bucket that does not parse).
    #[must_use]
    pub fn writes(&self) -> Vec<Write<'_>> {
        let Some(bucket) = Bucket::parse(self.day, &self.bucket) else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(2);
        if self.counts.nonzero().next().is_some() {
            out.push(Write::Add {
                bucket: bucket.clone(),
                counts: &self.counts,
            });
        }
        if let Some(until) = self.open_until {
            out.push(Write::Open {
                bucket: bucket.clone(),
                session_id: &self.session_id,
                until,
            });
        }
        if self.close {
            out.push(Write::Close {
                bucket: bucket.clone(),
                session_id: &self.session_id,
            });
        }
        if let Some(code) = self.error_code.as_deref() {
            out.push(Write::Error { bucket, code });
        }
        out
    }
}

/// The end of the time a day's counters are kept (ms): the end of day `day + KEEP_DAYS`.
#[must_use]
pub fn keep_until(day: u32) -> UnixMillis {
    UnixMillis(u64::from(day.saturating_add(KEEP_DAYS)).saturating_mul(DAY_MS))
}

/// Parses [`Delta::open_member`] back into its bucket.
#[must_use]
pub fn parse_open_member(member: &str) -> Option<Bucket> {
    let mut parts = member.splitn(3, '|');
    let _session = parts.next()?;
    let day = parts.next()?.parse().ok()?;
    Bucket::parse(day, parts.next()?)
}

/// The gateway accepted a session's message.
#[must_use]
pub fn delivered(session: &Session) -> Option<Delta> {
    let sms = sms_segments(session);
    let mut d = Delta::new(
        session,
        Counts {
            sent: 1,
            sms_segments: sms,
            ..Counts::default()
        },
    )?;
    d.open_until = Some(session.expires_at);
    Some(d)
}

/// The SMS segments a session's latest message cost (none on WhatsApp).
fn sms_segments(session: &Session) -> u64 {
    if session.channel == Channel::Sms {
        u64::from(session.segments)
    } else {
        0
    }
}

/// A session's code sent again (resend): counted, and its segments costed; the session stays
/// open until its new expiry.
#[must_use]
pub fn resent(session: &Session) -> Option<Delta> {
    let sms = sms_segments(session);
    let mut d = Delta::new(
        session,
        Counts {
            resent: 1,
            sms_segments: sms,
            ..Counts::default()
        },
    )?;
    d.open_until = Some(session.expires_at);
    Some(d)
}

/// Fraud Guard refused a send of this (planned or stored) session: counted, with the SMS
/// segments it would have cost (what the block saved).
#[must_use]
pub fn fraud_blocked(session: &Session) -> Option<Delta> {
    Delta::new(
        session,
        Counts {
            fraud_blocked: 1,
            fraud_blocked_segments: sms_segments(session),
            ..Counts::default()
        },
    )
}

/// A request was answered with this active session.
#[must_use]
pub fn reused(session: &Session) -> Option<Delta> {
    Delta::new(
        session,
        Counts {
            reused: 1,
            ..Counts::default()
        },
    )
}

/// A planned session's delivery failed or timed out (it was never stored).
#[must_use]
pub fn delivery_failed(session: &Session) -> Option<Delta> {
    Delta::new(
        session,
        Counts {
            delivery_failed: 1,
            ..Counts::default()
        },
    )
}

/// A delivery receipt moved a session's message to `state`: a final state counts `delivered`
/// or `undelivered` (failed included) once per message (receipts only move forward).
#[must_use]
pub fn receipt(session: &Session, state: crate::delivery::DeliveryState) -> Option<Delta> {
    use crate::delivery::DeliveryState;
    let counts = match state {
        DeliveryState::Delivered => Counts {
            delivered: 1,
            ..Counts::default()
        },
        DeliveryState::Undelivered | DeliveryState::Failed => Counts {
            undelivered: 1,
            ..Counts::default()
        },
        DeliveryState::Accepted | DeliveryState::Sent => return None,
    };
    let mut d = Delta::new(session, counts)?;
    if state.is_failure() {
        d.error_code = session.delivery.as_ref().and_then(|x| x.error_code.clone());
    }
    Some(d)
}

/// A verification answered: approval counts `verified`, the attempt that locks counts `failed`;
/// both close the session. Other outcomes change nothing.
#[must_use]
pub fn verified(session: &Session, outcome: VerifyOutcome) -> Option<Delta> {
    let counts = match outcome {
        VerifyOutcome::Approved => Counts {
            verified: 1,
            ..Counts::default()
        },
        VerifyOutcome::Invalid { attempts_left: 0 } => Counts {
            failed: 1,
            ..Counts::default()
        },
        _ => return None,
    };
    let mut d = Delta::new(session, counts)?;
    d.close = true;
    Some(d)
}

/// A checked analytics query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnalyticsQuery {
    /// Only this app (`None`: every app).
    pub app: Option<String>,
    /// UTC calendar days, today included (1–90).
    pub days: u32,
}

impl AnalyticsQuery {
    /// Reads `app` (≤ 64 characters; empty = every app) and `days` (1–90, default 30).
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<AnalyticsQuery, Error> {
        let mut q = AnalyticsQuery {
            app: None,
            days: DEFAULT_DAYS,
        };
        for (k, v) in pairs {
            match k {
                "app" => {
                    validate::app("app", v)?;
                    q.app = (!v.is_empty()).then(|| v.to_string());
                }
                "days" => {
                    q.days = v
                        .parse::<u32>()
                        .ok()
                        .filter(|n| (1..=MAX_DAYS).contains(n))
                        .ok_or(Error::invalid("days", "must be an integer from 1 to 90"))?;
                }
                _ => {}
            }
        }
        Ok(q)
    }

    /// The first day of the period at `now`.
    #[must_use]
    pub fn first_day(&self, now: UnixMillis) -> u32 {
        day_of(now).saturating_sub(self.days.saturating_sub(1))
    }

    /// Whether a bucket falls in the period and matches the app filter.
    #[must_use]
    pub fn covers(&self, b: &Bucket, now: UnixMillis) -> bool {
        (self.first_day(now)..=day_of(now)).contains(&b.day)
            && self.app.as_deref().is_none_or(|a| a == b.app)
    }
}

/// `amount × n`, exactly, with the amount's decimals (`"0.0075" × 3 = "0.0225"`).
#[must_use]
pub fn times(amount: &str, n: u64) -> String {
    let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
    let mantissa: u128 = format!("{int}{frac}").parse().unwrap_or(0);
    let total = mantissa.saturating_mul(u128::from(n)).to_string();
    if frac.is_empty() {
        return total;
    }
    let scale = frac.len();
    let padded = format!("{total:0>width$}", width = scale.saturating_add(1));
    let (whole, cents) = padded.split_at(padded.len().saturating_sub(scale));
    format!("{whole}.{cents}")
}

/// `verified / sent`, rounded to 4 decimals; 0 when nothing was sent.
#[must_use]
pub fn rate(verified: u64, sent: u64) -> f64 {
    if sent == 0 {
        return 0.0;
    }
    // Rounded half up in integers (no float rounding in core), then scaled.
    let v = u128::from(verified);
    let s = u128::from(sent);
    let e4 = v
        .saturating_mul(20_000)
        .saturating_add(s)
        .checked_div(s.saturating_mul(2))
        .unwrap_or(0);
    #[allow(clippy::cast_precision_loss)] // ≤ 10 000 × verified/sent: exact for any real count
    let r = e4 as f64 / 10_000.0;
    r
}

#[derive(Default, Clone, Copy)]
struct Tally {
    counts: Counts,
    expired: u64,
}

impl Tally {
    fn add(&mut self, other: &Tally) {
        self.counts.add(&other.counts);
        self.expired = self.expired.saturating_add(other.expired);
    }
}

#[derive(Serialize)]
struct Cost<'a> {
    amount: String,
    currency: &'a str,
}

#[derive(Serialize)]
struct CountView<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    date: Option<String>,
    sent: u64,
    reused: u64,
    delivery_failed: u64,
    verified: u64,
    failed: u64,
    expired: u64,
    verification_rate: f64,
    sms_segments: u64,
    resent: u64,
    /// `null` only in the admin report, when workspaces price in more than one currency.
    estimated_cost: Option<Cost<'a>>,
    fraud_blocked: u64,
    /// What the sends Fraud Guard refused would have cost (`null` as `estimated_cost`).
    fraud_saved: Option<Cost<'a>>,
    /// Messages delivery receipts said were delivered, and undelivered or failed (SPEC §8).
    delivered: u64,
    undelivered: u64,
    /// `delivered / (delivered + undelivered)`: of the messages with a final receipt, the share
    /// that arrived (0 when none has one).
    delivery_rate: f64,
}

impl<'a> CountView<'a> {
    fn new(t: &Tally, price: &'a Price, date: Option<String>) -> CountView<'a> {
        let cost = Cost {
            amount: times(&price.amount, t.counts.sms_segments),
            currency: &price.currency,
        };
        let saved = Cost {
            amount: times(&price.amount, t.counts.fraud_blocked_segments),
            currency: &price.currency,
        };
        CountView::priced(t, Some(cost), Some(saved), date)
    }

    fn priced(
        t: &Tally,
        cost: Option<Cost<'a>>,
        saved: Option<Cost<'a>>,
        date: Option<String>,
    ) -> CountView<'a> {
        let c = &t.counts;
        CountView {
            date,
            sent: c.sent,
            reused: c.reused,
            delivery_failed: c.delivery_failed,
            verified: c.verified,
            failed: c.failed,
            expired: t.expired,
            verification_rate: rate(c.verified, c.sent),
            sms_segments: c.sms_segments,
            resent: c.resent,
            estimated_cost: cost,
            fraud_blocked: c.fraud_blocked,
            fraud_saved: saved,
            delivered: c.delivered,
            undelivered: c.undelivered,
            delivery_rate: rate(c.delivered, c.delivered.saturating_add(c.undelivered)),
        }
    }
}

#[derive(Serialize)]
struct Report<'a> {
    app: Option<&'a str>,
    period_days: u32,
    from: String,
    to: String,
    totals: CountView<'a>,
    days: Vec<CountView<'a>>,
    by_channel: BTreeMap<&'static str, CountView<'a>>,
    by_purpose: BTreeMap<&'static str, CountView<'a>>,
    /// By the destination's calling code (`"233"`), `"other"` when it is not known.
    by_country: BTreeMap<String, CountView<'a>>,
    /// The provider error codes of the period's undelivered and failed messages, most frequent
    /// first (at most [`TOP_ERRORS`]).
    top_errors: Vec<TopError>,
}

/// How many error codes `top_errors` lists.
pub const TOP_ERRORS: usize = 10;

#[derive(Serialize)]
struct TopError {
    code: String,
    count: u64,
}

/// The most frequent codes first, then by code; at most [`TOP_ERRORS`].
fn top_errors(errors: BTreeMap<String, u64>) -> Vec<TopError> {
    let mut all: Vec<TopError> = errors
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(code, count)| TopError { code, count })
        .collect();
    all.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.code.cmp(&b.code)));
    all.truncate(TOP_ERRORS);
    all
}

/// The answer of `GET /otp/analytics` (second dialect: no envelope).
///
/// `counters`: the workspace's stored counters and error counts (any buckets; those outside the
/// query are ignored, and one bucket may come in several parts). `open`: the bucket of each open
/// session whose expiry is after `now`, once per session.
#[must_use]
pub fn report(
    q: &AnalyticsQuery,
    now: UnixMillis,
    counters: impl IntoIterator<Item = impl Into<Counter>>,
    open: impl IntoIterator<Item = Bucket>,
    price: &Price,
) -> Reply {
    let first = q.first_day(now);
    let today = day_of(now);
    let mut totals = Tally::default();
    let mut days: BTreeMap<u32, Tally> = (first..=today).map(|d| (d, Tally::default())).collect();
    let mut by_channel: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut by_purpose: BTreeMap<&'static str, Tally> = BTreeMap::new();
    let mut by_country: BTreeMap<String, Tally> = BTreeMap::new();
    let (tallied, errors) = tallies(q, now, counters, open);
    for (b, t) in &tallied {
        totals.add(t);
        days.entry(b.day).or_default().add(t);
        by_channel.entry(b.channel.as_str()).or_default().add(t);
        by_purpose.entry(b.purpose.as_str()).or_default().add(t);
        by_country
            .entry(b.country_name().to_string())
            .or_default()
            .add(t);
    }
    let view = |m: BTreeMap<&'static str, Tally>| {
        m.into_iter()
            .map(|(k, t)| (k, CountView::new(&t, price, None)))
            .collect()
    };
    let by_country = by_country
        .into_iter()
        .map(|(k, t)| (k, CountView::new(&t, price, None)))
        .collect();
    let report = Report {
        app: q.app.as_deref(),
        period_days: q.days,
        from: date_of(first),
        to: date_of(today),
        totals: CountView::new(&totals, price, None),
        days: days
            .into_iter()
            .map(|(d, t)| CountView::new(&t, price, Some(date_of(d))))
            .collect(),
        by_channel: view(by_channel),
        by_purpose: view(by_purpose),
        by_country,
        top_errors: top_errors(errors),
    };
    Reply::json(200, &report)
}

/// The counts of each bucket the query covers, with its expired sessions derived (buckets with
/// nothing to count left out), and the count of each provider error code in those buckets.
fn tallies(
    q: &AnalyticsQuery,
    now: UnixMillis,
    counters: impl IntoIterator<Item = impl Into<Counter>>,
    open: impl IntoIterator<Item = Bucket>,
) -> (BTreeMap<Bucket, Tally>, BTreeMap<String, u64>) {
    let mut buckets: BTreeMap<Bucket, (Counts, u64)> = BTreeMap::new();
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    for counter in counters {
        match counter.into() {
            Counter::Counts(b, c) if q.covers(&b, now) => buckets.entry(b).or_default().0.add(&c),
            Counter::Error {
                bucket,
                code,
                count,
            } if q.covers(&bucket, now) => {
                let n = errors.entry(code).or_default();
                *n = n.saturating_add(count);
            }
            Counter::Counts(..) | Counter::Error { .. } => {}
        }
    }
    for b in open {
        if q.covers(&b, now) {
            let live = &mut buckets.entry(b).or_default().1;
            *live = live.saturating_add(1);
        }
    }
    let mut out = BTreeMap::new();
    for (b, (counts, live)) in buckets {
        let c = counts;
        // Sessions neither verified, locked nor still live have reached expiry unverified.
        let expired = c
            .sent
            .saturating_sub(c.verified)
            .saturating_sub(c.failed)
            .saturating_sub(live);
        let t = Tally { counts: c, expired };
        if t.counts == Counts::default() && expired == 0 {
            continue; // only open sessions whose counters are not written yet
        }
        out.insert(b, t);
    }
    (out, errors)
}

/// One workspace's stored analytics, as [`report`] takes them, for [`admin_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceCounters {
    /// The workspace.
    pub workspace_id: String,
    /// Its price per SMS segment (policy `pricePerSegment`).
    pub price: Price,
    /// Its counters (any buckets, as [`report`]'s `counters`).
    pub counters: Vec<(Bucket, Counts)>,
    /// Its open sessions not yet expired (as [`report`]'s `open`).
    pub open: Vec<Bucket>,
    /// Its provider error counts (as [`report`]'s `counters` carry them).
    pub errors: Vec<Counter>,
}

/// Exact sums of money by currency: mantissa and decimals (`"0.0225"` is `(225, 4)`).
#[derive(Debug, Default, Clone)]
struct Money(BTreeMap<String, (u128, u32)>);

fn pow10(n: u32) -> u128 {
    10u128.checked_pow(n).unwrap_or(u128::MAX)
}

impl Money {
    /// Adds a decimal string (as [`times`] writes it) in `currency`.
    fn add_amount(&mut self, currency: &str, amount: &str) {
        let (int, frac) = amount.split_once('.').unwrap_or((amount, ""));
        let m: u128 = format!("{int}{frac}").parse().unwrap_or(0);
        let scale = u32::try_from(frac.len()).unwrap_or(0);
        self.add_exact(currency, m, scale);
    }

    fn add_exact(&mut self, currency: &str, m: u128, scale: u32) {
        let slot = self.0.entry(currency.to_string()).or_insert((0, scale));
        let to = slot.1.max(scale);
        let have = slot.0.saturating_mul(pow10(to.saturating_sub(slot.1)));
        let add = m.saturating_mul(pow10(to.saturating_sub(scale)));
        *slot = (have.saturating_add(add), to);
    }

    fn add(&mut self, other: &Money) {
        for (c, (m, scale)) in &other.0 {
            self.add_exact(c, *m, *scale);
        }
    }

    /// The sum in `currency` as a decimal string (`"0"` when nothing was added).
    fn amount(&self, currency: &str) -> String {
        let Some(&(m, scale)) = self.0.get(currency) else {
            return "0".into();
        };
        let total = m.to_string();
        if scale == 0 {
            return total;
        }
        let scale = usize::try_from(scale).unwrap_or(0);
        let padded = format!("{total:0>width$}", width = scale.saturating_add(1));
        let (whole, cents) = padded.split_at(padded.len().saturating_sub(scale));
        format!("{whole}.{cents}")
    }
}

#[derive(Default, Clone)]
struct Priced {
    tally: Tally,
    money: Money,
    /// What the sends Fraud Guard refused would have cost.
    saved: Money,
}

impl Priced {
    fn add(&mut self, other: &Priced) {
        self.tally.add(&other.tally);
        self.money.add(&other.money);
        self.saved.add(&other.saved);
    }
}

#[derive(Serialize)]
struct CurrencyCost {
    amount: String,
    currency: String,
}

#[derive(Serialize)]
struct WorkspaceTotals<'a> {
    workspace_id: &'a str,
    totals: CountView<'a>,
}

#[derive(Serialize)]
struct AdminReport<'a> {
    #[serde(flatten)]
    report: Report<'a>,
    estimated_costs: Vec<CurrencyCost>,
    workspaces: Vec<WorkspaceTotals<'a>>,
}

/// `GET /v1/admin/analytics` (SPEC §9 "Admin"): [`report`]'s shape over every workspace given
/// (their counts summed, each bucket's cost at its own workspace's price), plus
/// `estimated_costs` (the period's cost per currency) and `workspaces` (each workspace with
/// activity in the period and its totals, exactly as its own report's, by id). Every
/// `estimated_cost` is `null` when the workspaces price in more than one currency (the
/// per-currency sums are in `estimated_costs`).
#[must_use]
pub fn admin_report(
    q: &AnalyticsQuery,
    now: UnixMillis,
    workspaces: &[WorkspaceCounters],
) -> Reply {
    // Only the workspaces with something to count in the period (and app) take part.
    let mut errors: BTreeMap<String, u64> = BTreeMap::new();
    let active: Vec<(&WorkspaceCounters, BTreeMap<Bucket, Tally>)> = workspaces
        .iter()
        .filter_map(|w| {
            let counters = w
                .counters
                .iter()
                .cloned()
                .map(Counter::from)
                .chain(w.errors.iter().cloned());
            let (t, e) = tallies(q, now, counters, w.open.iter().cloned());
            for (code, n) in e {
                let sum = errors.entry(code).or_default();
                *sum = sum.saturating_add(n);
            }
            (!t.is_empty()).then_some((w, t))
        })
        .collect();
    let mut currencies: Vec<&str> = active
        .iter()
        .map(|(w, _)| w.price.currency.as_str())
        .collect();
    currencies.sort_unstable();
    currencies.dedup();
    // One currency: every view is priced in it ("USD", SPEC §2's default, when none is known).
    let single: Option<&str> = match currencies.as_slice() {
        [] => Some("USD"),
        [one] => Some(one),
        _ => None,
    };
    let first = q.first_day(now);
    let today = day_of(now);
    let mut totals = Priced::default();
    let mut days: BTreeMap<u32, Priced> = (first..=today).map(|d| (d, Priced::default())).collect();
    let mut by_channel: BTreeMap<&'static str, Priced> = BTreeMap::new();
    let mut by_purpose: BTreeMap<&'static str, Priced> = BTreeMap::new();
    let mut by_country: BTreeMap<String, Priced> = BTreeMap::new();
    let mut per_ws = Vec::new();
    for (w, buckets) in &active {
        let mut own = Tally::default();
        for (b, t) in buckets {
            let mut p = Priced {
                tally: *t,
                money: Money::default(),
                saved: Money::default(),
            };
            let cost = times(&w.price.amount, t.counts.sms_segments);
            p.money.add_amount(&w.price.currency, &cost);
            let saved = times(&w.price.amount, t.counts.fraud_blocked_segments);
            p.saved.add_amount(&w.price.currency, &saved);
            own.add(t);
            totals.add(&p);
            days.entry(b.day).or_default().add(&p);
            by_channel.entry(b.channel.as_str()).or_default().add(&p);
            by_purpose.entry(b.purpose.as_str()).or_default().add(&p);
            by_country
                .entry(b.country_name().to_string())
                .or_default()
                .add(&p);
        }
        per_ws.push(WorkspaceTotals {
            workspace_id: &w.workspace_id,
            totals: CountView::new(&own, &w.price, None),
        });
    }
    let view = |p: &Priced, date: Option<String>| {
        let cost = single.map(|c| Cost {
            amount: p.money.amount(c),
            currency: c,
        });
        let saved = single.map(|c| Cost {
            amount: p.saved.amount(c),
            currency: c,
        });
        CountView::priced(&p.tally, cost, saved, date)
    };
    let keyed = |m: &BTreeMap<&'static str, Priced>| {
        m.iter()
            .map(|(k, p)| (*k, view(p, None)))
            .collect::<BTreeMap<_, _>>()
    };
    let report = AdminReport {
        report: Report {
            app: q.app.as_deref(),
            period_days: q.days,
            from: date_of(first),
            to: date_of(today),
            totals: view(&totals, None),
            days: days
                .iter()
                .map(|(d, p)| view(p, Some(date_of(*d))))
                .collect(),
            by_channel: keyed(&by_channel),
            by_purpose: keyed(&by_purpose),
            by_country: by_country
                .iter()
                .map(|(k, p)| (k.clone(), view(p, None)))
                .collect(),
            top_errors: top_errors(errors),
        },
        estimated_costs: totals
            .money
            .0
            .keys()
            .map(|c| CurrencyCost {
                amount: totals.money.amount(c),
                currency: c.clone(),
            })
            .collect(),
        workspaces: per_ws,
    };
    Reply::json(200, &report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::code::Entropy;
    use crate::delivery::DeliveryState;
    use crate::http::request::IssueRequest;
    use crate::policy::Policy;
    use crate::secret::Pepper;
    use crate::session::plan_issue;
    use serde_json::{json, Value};

    const DAY: u64 = DAY_MS;
    // 2026-11-22T12:00:00Z
    const NOW: UnixMillis = UnixMillis(1_795_348_800_000);

    fn session(app: Option<&str>, channel: &str, at: UnixMillis) -> Session {
        static SEED: core::sync::atomic::AtomicU8 = core::sync::atomic::AtomicU8::new(0);
        let seed = SEED.fetch_add(1, core::sync::atomic::Ordering::Relaxed);
        let mut body = json!({"dest": "+233201234567", "src": "otpkit", "purpose": "LOGIN", "channel": channel});
        if let Some(a) = app {
            body["app"] = json!(a);
        }
        let req = IssueRequest::from_v1_json(body.to_string().as_bytes()).unwrap();
        let pepper = Pepper::new("p".repeat(32).as_bytes()).unwrap();
        let plan = plan_issue(
            &req,
            "ws_1",
            &["otpkit".into()],
            &Policy::default(),
            at,
            &Entropy::from_bytes(&[seed; 48]),
            &pepper,
        )
        .unwrap();
        plan.session
    }

    fn price(amount: &str) -> Price {
        Price {
            amount: amount.into(),
            currency: "USD".into(),
        }
    }

    fn query(s: &str) -> Result<AnalyticsQuery, Error> {
        AnalyticsQuery::from_pairs(
            s.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| p.split_once('=').unwrap_or((p, ""))),
        )
    }

    /// Applies deltas the way a store does: counters added, open sessions kept until closed.
    fn run(deltas: &[Option<Delta>], q: &AnalyticsQuery, now: UnixMillis, p: &Price) -> Value {
        let mut counters = Vec::new();
        let mut open: BTreeMap<String, (Bucket, UnixMillis)> = BTreeMap::new();
        for d in deltas.iter().flatten() {
            let b = Bucket::parse(d.day, &d.bucket).unwrap();
            counters.push((b.clone(), d.counts));
            if let Some(until) = d.open_until {
                open.insert(d.session_id.clone(), (b, until));
            }
            if d.close {
                open.remove(&d.session_id);
            }
        }
        let live = open
            .into_values()
            .filter(|(_, until)| *until > now)
            .map(|(b, _)| b);
        serde_json::from_str(&report(q, now, counters, live, p).body).unwrap()
    }

    #[test]
    fn counts_by_cohort_with_expired_derived_from_open_sessions() {
        let sms = session(Some("Shop"), "sms", NOW);
        let wa = session(Some("Shop"), "whatsapp", NOW);
        let locked = session(Some("Shop"), "sms", NOW);
        let other_app = session(Some("Blog"), "sms", NOW);
        let deltas = [
            delivered(&sms),
            delivered(&wa),
            reused(&sms),
            verified(&sms, VerifyOutcome::Approved),
            delivery_failed(&session(Some("Shop"), "sms", NOW)),
            delivered(&locked),
            verified(&locked, VerifyOutcome::Invalid { attempts_left: 1 }),
            verified(&locked, VerifyOutcome::Invalid { attempts_left: 0 }),
            delivered(&other_app),
        ];
        let q = query("app=Shop&days=7").unwrap();
        let p = price("0.05");
        // While the WhatsApp session is live, it is neither verified nor expired.
        let j = run(&deltas, &q, NOW.plus_secs(10), &p);
        assert_eq!(j["app"], "Shop");
        assert_eq!(j["period_days"], 7);
        assert_eq!(j["to"], "2026-11-22");
        assert_eq!(j["from"], "2026-11-16");
        let t = &j["totals"];
        assert_eq!(
            (
                t["sent"].as_u64(),
                t["reused"].as_u64(),
                t["delivery_failed"].as_u64()
            ),
            (Some(3), Some(1), Some(1))
        );
        assert_eq!(
            (
                t["verified"].as_u64(),
                t["failed"].as_u64(),
                t["expired"].as_u64()
            ),
            (Some(1), Some(1), Some(0))
        );
        assert_eq!(t["verification_rate"], 0.3333);
        assert_eq!(
            t["sms_segments"], 2,
            "the WhatsApp message has no SMS segments"
        );
        assert_eq!(
            t["estimated_cost"],
            json!({"amount": "0.10", "currency": "USD"})
        );
        assert_eq!(j["days"].as_array().unwrap().len(), 7);
        assert_eq!(j["days"][6]["date"], "2026-11-22");
        assert_eq!(j["days"][6]["sent"], 3);
        assert_eq!(j["days"][0]["sent"], 0);
        assert_eq!(j["by_channel"]["whatsapp"]["sent"], 1);
        assert_eq!(j["by_channel"]["sms"]["sent"], 2);
        assert_eq!(j["by_purpose"]["LOGIN"]["verified"], 1);
        // After its expiry it is expired; nothing else moves.
        let j = run(&deltas, &q, NOW.plus_secs(301), &p);
        assert_eq!(j["totals"]["expired"], 1);
        assert_eq!(j["by_channel"]["whatsapp"]["expired"], 1);
        assert_eq!(j["totals"]["verified"], 1);
        // Every app: the other app's session is counted too.
        let all = run(&deltas, &query("").unwrap(), NOW.plus_secs(301), &p);
        assert_eq!(all["app"], Value::Null);
        assert_eq!(all["period_days"], 30);
        assert_eq!(all["totals"]["sent"], 4);
        assert_eq!(all["totals"]["expired"], 2);
    }

    /// The counters and open sessions a store keeps for these deltas.
    fn stored(deltas: &[Option<Delta>]) -> (Vec<(Bucket, Counts)>, Vec<Bucket>) {
        let mut counters = Vec::new();
        let mut open: BTreeMap<String, Bucket> = BTreeMap::new();
        for d in deltas.iter().flatten() {
            let b = Bucket::parse(d.day, &d.bucket).unwrap();
            counters.push((b.clone(), d.counts));
            if d.open_until.is_some() {
                open.insert(d.session_id.clone(), b);
            }
            if d.close {
                open.remove(&d.session_id);
            }
        }
        (counters, open.into_values().collect())
    }

    fn ws(id: &str, amount: &str, currency: &str, deltas: &[Option<Delta>]) -> WorkspaceCounters {
        let (counters, open) = stored(deltas);
        WorkspaceCounters {
            workspace_id: id.into(),
            price: Price {
                amount: amount.into(),
                currency: currency.into(),
            },
            counters,
            open,
            errors: Vec::new(),
        }
    }

    #[test]
    fn admin_report_sums_workspaces_each_at_its_own_price() {
        let a1 = session(None, "sms", NOW);
        let a2 = session(Some("Shop"), "whatsapp", NOW);
        let b1 = session(None, "sms", UnixMillis(NOW.0 - DAY));
        let a = ws(
            "ws_a",
            "0.05",
            "USD",
            &[
                delivered(&a1),
                delivered(&a2),
                verified(&a1, VerifyOutcome::Approved),
            ],
        );
        let b = ws("ws_b", "0.0075", "USD", &[delivered(&b1), reused(&b1)]);
        // Idle in the period: neither listed nor deciding the currency.
        let idle = ws("ws_c", "1", "EUR", &[]);
        let q = query("days=7").unwrap();
        let at = NOW.plus_secs(10);
        let all: Value =
            serde_json::from_str(&admin_report(&q, at, &[a.clone(), b.clone(), idle]).body)
                .unwrap();
        let own = |w: &WorkspaceCounters| -> Value {
            let r = report(&q, at, w.counters.clone(), w.open.clone(), &w.price);
            serde_json::from_str(&r.body).unwrap()
        };
        let (ra, rb) = (own(&a), own(&b));
        for f in [
            "sent",
            "reused",
            "verified",
            "failed",
            "expired",
            "sms_segments",
        ] {
            let sum = ra["totals"][f].as_u64().unwrap() + rb["totals"][f].as_u64().unwrap();
            assert_eq!(all["totals"][f], sum, "{f}");
        }
        assert_eq!(all["totals"]["sent"], 3);
        // 1 segment at 0.05 and 1 at 0.0075: summed exactly, in the finer scale.
        assert_eq!(
            all["totals"]["estimated_cost"],
            json!({"amount": "0.0575", "currency": "USD"})
        );
        assert_eq!(
            all["estimated_costs"],
            json!([{"amount": "0.0575", "currency": "USD"}])
        );
        assert_eq!(all["period_days"], 7);
        assert_eq!(all["days"].as_array().unwrap().len(), 7);
        assert_eq!(all["days"][5]["sent"], 1);
        assert_eq!(all["days"][6]["sent"], 2);
        assert_eq!(all["by_channel"]["sms"]["sent"], 2);
        assert_eq!(all["by_channel"]["whatsapp"]["sent"], 1);
        // Each workspace with activity, with its totals exactly as its own report's; none idle.
        let listed = all["workspaces"].as_array().unwrap();
        assert_eq!(listed.len(), 2);
        assert_eq!(listed[0]["workspace_id"], "ws_a");
        assert_eq!(listed[0]["totals"], ra["totals"]);
        assert_eq!(listed[1]["workspace_id"], "ws_b");
        assert_eq!(listed[1]["totals"], rb["totals"]);
        // Two currencies: no single cost, one sum per currency.
        let eur = ws(
            "ws_e",
            "0.10",
            "EUR",
            &[delivered(&session(None, "sms", NOW))],
        );
        let mixed: Value = serde_json::from_str(&admin_report(&q, at, &[a, eur]).body).unwrap();
        assert_eq!(mixed["totals"]["estimated_cost"], Value::Null);
        assert_eq!(mixed["days"][6]["estimated_cost"], Value::Null);
        assert_eq!(
            mixed["estimated_costs"],
            json!([{"amount": "0.10", "currency": "EUR"}, {"amount": "0.05", "currency": "USD"}])
        );
        // No workspace at all: zeros, priced in SPEC §2's default currency.
        let none: Value = serde_json::from_str(&admin_report(&q, at, &[]).body).unwrap();
        assert_eq!(none["totals"]["sent"], 0);
        assert_eq!(
            none["totals"]["estimated_cost"],
            json!({"amount": "0", "currency": "USD"})
        );
        assert_eq!(none["workspaces"], json!([]));
    }

    #[test]
    fn days_outside_the_period_and_test_numbers_are_not_counted() {
        let old = session(None, "sms", UnixMillis(NOW.0 - 3 * DAY));
        let q = query("days=3").unwrap();
        let j = run(&[delivered(&old)], &q, NOW, &price("1"));
        assert_eq!(j["totals"]["sent"], 0);
        let j = run(
            &[delivered(&old)],
            &query("days=4").unwrap(),
            NOW,
            &price("1"),
        );
        assert_eq!(j["totals"]["sent"], 1);
        assert_eq!(j["totals"]["estimated_cost"]["amount"], "1");
        assert_eq!(j["days"][0]["date"], "2026-11-19");
        let mut test = session(None, "sms", NOW);
        test.test = true;
        assert!(delivered(&test).is_none() && reused(&test).is_none());
        assert!(verified(&test, VerifyOutcome::Approved).is_none());
    }

    #[test]
    fn only_approval_and_the_locking_attempt_close_a_session() {
        let s = session(None, "sms", NOW);
        for o in [
            VerifyOutcome::NotFound,
            VerifyOutcome::AlreadyUsed,
            VerifyOutcome::Expired,
            VerifyOutcome::MaxAttemptsReached,
            VerifyOutcome::Invalid { attempts_left: 2 },
        ] {
            assert!(verified(&s, o).is_none(), "{o:?}");
        }
        assert!(verified(&s, VerifyOutcome::Approved).unwrap().close);
        let d = delivered(&s).unwrap();
        assert_eq!(d.open_until, Some(s.expires_at));
        assert_eq!(parse_open_member(&d.open_member()), Some(Bucket::of(&s)));
    }

    #[test]
    fn bucket_keys_round_trip_even_with_bars_in_the_app() {
        // No country known: the format kept before there was one, still read.
        let old = Bucket {
            day: 20_000,
            country: String::new(),
            channel: Channel::Whatsapp,
            purpose: Purpose::KycVerification,
            app: "a|b".into(),
        };
        assert_eq!(old.key(), "whatsapp|KYC_VERIFICATION|a|b");
        assert_eq!(Bucket::parse(20_000, &old.key()), Some(old.clone()));
        assert_eq!(old.country_name(), "other");
        // A known country: a first field no channel name can be.
        let b = Bucket {
            country: "233".into(),
            ..old
        };
        assert_eq!(b.key(), "c233|whatsapp|KYC_VERIFICATION|a|b");
        assert_eq!(Bucket::parse(20_000, &b.key()), Some(b.clone()));
        assert_eq!(b.country_name(), "233");
        let one = Bucket {
            country: "1".into(),
            channel: Channel::Sms,
            app: String::new(),
            ..b
        };
        assert_eq!(one.key(), "c1|sms|KYC_VERIFICATION|");
        assert_eq!(Bucket::parse(20_000, "c1|sms|KYC_VERIFICATION|"), Some(one));
        for bad in [
            "fax|LOGIN|",
            "c|sms|LOGIN|",
            "c2333|sms|LOGIN|",
            "cx|sms|LOGIN|",
            "c233|fax|LOGIN|",
            "c233|sms|LOGIN",
            "c233",
        ] {
            assert_eq!(Bucket::parse(1, bad), None, "{bad}");
        }
        for c in [Channel::Sms, Channel::Whatsapp] {
            assert!(!c.as_str().starts_with('c'), "{c:?}");
        }
    }

    #[test]
    fn bucket_country_is_the_destinations_calling_code() {
        let gh = session(None, "sms", NOW);
        assert_eq!(Bucket::of(&gh).country, "233");
        assert!(delivered(&gh)
            .unwrap()
            .bucket
            .starts_with("c233|sms|LOGIN|"));
        let mut uk = session(None, "sms", NOW);
        uk.dest = "+447700900123".into();
        assert_eq!(Bucket::of(&uk).country, "44");
        let mut us = session(None, "sms", NOW);
        us.dest = "+12025550123".into();
        assert_eq!(Bucket::of(&us).country, "1");
        // Open and close name the same bucket, so `expired` is right per country.
        let d = delivered(&uk).unwrap();
        let close = verified(&uk, VerifyOutcome::Approved).unwrap();
        assert_eq!(parse_open_member(&d.open_member()), Some(Bucket::of(&uk)));
        match (&d.writes()[1], &close.writes()[1]) {
            (Write::Open { bucket: a, .. }, Write::Close { bucket: b, .. }) => {
                assert_eq!(a, b);
                assert_eq!(a.country, "44");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn by_country_in_both_reports_old_counters_under_other() {
        let gh = session(None, "sms", NOW);
        let gh_open = session(None, "sms", NOW);
        let mut uk = session(None, "sms", NOW);
        uk.dest = "+447700900123".into();
        let mut uk2 = session(None, "whatsapp", NOW);
        uk2.dest = "+447700900124".into();
        let deltas = [
            delivered(&gh),
            verified(&gh, VerifyOutcome::Approved),
            delivered(&gh_open),
            delivered(&uk),
            resent(&uk),
            verified(&uk, VerifyOutcome::Invalid { attempts_left: 0 }),
            delivered(&uk2),
        ];
        let q = query("days=7").unwrap();
        let p = price("0.05");
        let at = NOW.plus_secs(400);
        let j = run(&deltas, &q, NOW.plus_secs(10), &p);
        let (c, u) = (&j["by_country"]["233"], &j["by_country"]["44"]);
        assert_eq!(
            (c["sent"].as_u64(), c["verified"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(
            (c["expired"].as_u64(), c["verification_rate"].as_f64()),
            (Some(0), Some(0.5))
        );
        assert_eq!(
            c["estimated_cost"],
            json!({"amount": "0.10", "currency": "USD"})
        );
        assert_eq!(
            (u["sent"].as_u64(), u["failed"].as_u64()),
            (Some(2), Some(1))
        );
        assert_eq!(
            (u["resent"].as_u64(), u["sms_segments"].as_u64()),
            (Some(1), Some(2))
        );
        assert_eq!(
            u["estimated_cost"],
            json!({"amount": "0.10", "currency": "USD"})
        );
        assert_eq!(u["expired"], 0, "the WhatsApp session is still live");
        let j = run(&deltas, &q, at, &p);
        assert_eq!(j["by_country"]["233"]["expired"], 1);
        assert_eq!(j["by_country"]["44"]["expired"], 1);
        // A counter kept before there was a country (old key) is answered under "other".
        let old = Bucket::parse(day_of(NOW), "sms|LOGIN|").unwrap();
        let (mut counters, open) = stored(&deltas);
        counters.push((
            old.clone(),
            Counts {
                sent: 2,
                verified: 1,
                sms_segments: 2,
                ..Counts::default()
            },
        ));
        let own: Value =
            serde_json::from_str(&report(&q, at, counters.clone(), open.clone(), &p).body).unwrap();
        let keys: Vec<&String> = own["by_country"].as_object().unwrap().keys().collect();
        assert_eq!(keys, ["233", "44", "other"]);
        assert_eq!(own["by_country"]["other"]["sent"], 2);
        assert_eq!(own["by_country"]["other"]["expired"], 1);
        assert_eq!(own["totals"]["sent"], 6);
        // The admin report: the same by_country, each at its workspace's price.
        let w = WorkspaceCounters {
            workspace_id: "ws_1".into(),
            price: p.clone(),
            counters,
            open,
            errors: Vec::new(),
        };
        let all: Value = serde_json::from_str(&admin_report(&q, at, &[w]).body).unwrap();
        assert_eq!(all["by_country"], own["by_country"]);
    }

    #[test]
    fn query_bounds() {
        assert_eq!(
            query("").unwrap(),
            AnalyticsQuery {
                app: None,
                days: 30
            }
        );
        assert_eq!(query("app=&days=90").unwrap().days, 90);
        for bad in ["days=0", "days=91", "days=x", "days=-1", "days=1.5"] {
            assert_eq!(query(bad).unwrap_err().field(), Some("days"), "{bad}");
        }
        assert_eq!(
            query(&format!("app={}", "a".repeat(65)))
                .unwrap_err()
                .field(),
            Some("app")
        );
    }

    /// A store that keeps a day's counters in one map: every write of the deltas as fields
    /// (`counter_field` / `error_field`), read back with `parse_field`.
    fn as_fields(deltas: &[Delta]) -> Vec<Counter> {
        let mut fields: BTreeMap<(u32, String), u64> = BTreeMap::new();
        for d in deltas {
            for w in d.writes() {
                match w {
                    Write::Add { bucket, counts } => {
                        for (name, n) in counts.nonzero() {
                            *fields
                                .entry((bucket.day, counter_field(name, &bucket)))
                                .or_default() += n;
                        }
                    }
                    Write::Error { bucket, code } => {
                        *fields
                            .entry((bucket.day, error_field(code, &bucket)))
                            .or_default() += 1;
                    }
                    Write::Open { .. } | Write::Close { .. } => {}
                }
            }
        }
        fields
            .into_iter()
            .map(|((day, f), n)| parse_field(day, &f, n).unwrap())
            .collect()
    }

    fn refused(s: &Session, state: DeliveryState, code: Option<&str>) -> Delta {
        let mut s = s.clone();
        s.delivery = Some(crate::delivery::Delivery {
            state,
            message_id: Some("SM1".into()),
            error_code: code.map(Into::into),
        });
        receipt(&s, state).unwrap()
    }

    #[test]
    fn top_errors_count_each_refusal_by_code() {
        let p = Price {
            amount: "0.05".into(),
            currency: "USD".into(),
        };
        let q = query("days=7").unwrap();
        let sessions: Vec<Session> = (0..6).map(|_| session(None, "sms", NOW)).collect();
        let mut deltas: Vec<Delta> = sessions.iter().filter_map(delivered).collect();
        deltas.extend([
            refused(&sessions[0], DeliveryState::Undelivered, Some("30003")),
            refused(&sessions[1], DeliveryState::Failed, Some("30007")),
            refused(&sessions[2], DeliveryState::Undelivered, Some("30003")),
            refused(&sessions[3], DeliveryState::Undelivered, None),
            refused(&sessions[4], DeliveryState::Delivered, Some("ignored")),
        ]);
        // A delivered message carries no error code, whatever the receipt said.
        assert_eq!(deltas.last().unwrap().error_code, None);
        // An old day's refusals are outside the period.
        let old = session(None, "sms", UnixMillis(NOW.0 - 10 * DAY));
        deltas.push(refused(&old, DeliveryState::Undelivered, Some("30008")));
        let counters = as_fields(&deltas);
        let j: Value =
            serde_json::from_str(&report(&q, NOW, counters.clone(), Vec::new(), &p).body).unwrap();
        assert_eq!(
            j["top_errors"],
            json!([{"code": "30003", "count": 2}, {"code": "30007", "count": 1}])
        );
        assert_eq!(j["totals"]["undelivered"], 4);
        assert_eq!(j["totals"]["delivered"], 1);
        assert_eq!(j["totals"]["sent"], 6);
        // The admin report sums the codes of every workspace.
        let (errors, counts): (Vec<Counter>, Vec<Counter>) = counters
            .into_iter()
            .partition(|c| matches!(c, Counter::Error { .. }));
        let counts: Vec<(Bucket, Counts)> = counts
            .into_iter()
            .filter_map(|c| match c {
                Counter::Counts(b, c) => Some((b, c)),
                Counter::Error { .. } => None,
            })
            .collect();
        let w = |id: &str| WorkspaceCounters {
            workspace_id: id.into(),
            price: p.clone(),
            counters: counts.clone(),
            open: Vec::new(),
            errors: errors.clone(),
        };
        let all: Value =
            serde_json::from_str(&admin_report(&q, NOW, &[w("ws_1"), w("ws_2")]).body).unwrap();
        assert_eq!(
            all["top_errors"],
            json!([{"code": "30003", "count": 4}, {"code": "30007", "count": 2}])
        );
        // At most ten codes, the most frequent first, ties by code.
        let many: Vec<Counter> = (0..12u64)
            .map(|i| Counter::Error {
                bucket: Bucket::of(&sessions[0]),
                code: format!("E{i:02}"),
                count: 1 + i % 3,
            })
            .collect();
        let j: Value = serde_json::from_str(&report(&q, NOW, many, Vec::new(), &p).body).unwrap();
        let codes: Vec<&str> = j["top_errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["code"].as_str().unwrap())
            .collect();
        assert_eq!(
            codes,
            ["E02", "E05", "E08", "E11", "E01", "E04", "E07", "E10", "E00", "E03"]
        );
        // Fields this version does not know are skipped.
        assert_eq!(parse_field(1, "nosuch|sms|LOGIN|", 1), None);
        assert_eq!(parse_field(1, "error:|sms|LOGIN|", 1), None);
    }

    #[test]
    fn exact_costs_and_rates() {
        assert_eq!(times("0.05", 2), "0.10");
        assert_eq!(times("0.0075", 3), "0.0225");
        assert_eq!(times("0.0075", 0), "0.0000");
        assert_eq!(times("12", 3), "36");
        assert_eq!(times("0", 5), "0");
        assert_eq!(times("1.5", 1_000_000), "1500000.0");
        assert!((rate(1, 3) - 0.3333).abs() < 1e-12);
        assert!((rate(2, 3) - 0.6667).abs() < 1e-12);
        assert!((rate(0, 0)).abs() < 1e-12);
        assert!((rate(5, 5) - 1.0).abs() < 1e-12);
    }
}
