//! The daily spend cap (SPEC §9 "Spend cap"): policy `dailySpendLimit` bounds what a workspace
//! spends on messages per UTC day; a send that would take the day's spend past it is refused
//! 429 `SPEND_LIMIT_REACHED` until 00:00 UTC.
//!
//! Money is counted in integer **micro-units** of the workspace currency (the price and the
//! limit have at most 6 decimals), so the count is exact and every store (a Durable Object, one
//! mutex, a Lua script on doubles) adds the same integers.
//!
//! What a send costs: its SMS segments × `pricePerSegment`. A WhatsApp message is not made of
//! SMS segments, so it costs 0 today (as in analytics, [`crate::analytics`]); test numbers are
//! exempt (never charged, never refused).
//!
//! Protocol, as for the flood shield, in the same atomic step (the flow's [`Io::Admit`] carries
//! a [`SpendCharge`] next to `flood_limit`; a host charges both with [`charge_workspace`]):
//! 1. once the destination guard says send, [`charge_workspace`] charges the flood shield and
//!    the spend counter together, or neither;
//! 2. a send that may fall back to another channel (policy `channelFallback`) is charged the
//!    most any of its channels costs; once the gateway accepted it on a channel that costs
//!    less, the flow hands the difference back ([`Io::RefundSpend`], after the answer);
//! 3. a definite delivery failure hands the whole charge back ([`Io::RefundSpend`], before the
//!    answer, right after the destination guard's refund, so a client's retry finds it);
//!    a timeout or a send that went out but was not stored stays charged (the message may
//!    have gone out: it costs).
//!
//! [`Io::Admit`]: crate::flow::Io::Admit
//! [`Io::RefundSpend`]: crate::flow::Io::RefundSpend

pub use crate::analytics::day_of;
use crate::error::{retry_secs_from_millis, Error};
use crate::fraud::{FraudCharge, PrefixCount};
use crate::guard::FloodShield;
use crate::policy::Policy;
use crate::time::UnixMillis;
use crate::validate::Channel;
use serde::{Deserialize, Serialize};

/// A UTC day in milliseconds.
pub const DAY_MS: u64 = 86_400_000;

/// Micro-units per unit of currency (the amounts have at most 6 decimals).
pub const MICROS_PER_UNIT: u64 = 1_000_000;

/// The largest integer every store counts exactly (JavaScript and Lua numbers are doubles):
/// 2⁵³ − 1. A `dailySpendLimit` has at most 9 integer digits, so limits stay below it, and a
/// charge's cost is capped at the limit + 1 (it is refused anyway).
pub const MAX_EXACT: u64 = (1 << 53) - 1;

/// A decimal amount (digits, optionally `.` and 1–6 digits, as policy prices are checked) in
/// micro-units; `None` if it is not one or does not fit in a `u64`.
#[must_use]
pub fn micros(amount: &str) -> Option<u64> {
    let (int, frac) = match amount.split_once('.') {
        Some((_, "")) => return None,
        Some(parts) => parts,
        None => (amount, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || frac.len() > 6 || !digits(int) || !digits(frac) {
        return None;
    }
    let whole: u64 = int.parse().ok()?;
    let mut part: u64 = 0;
    for b in frac.bytes().chain(core::iter::repeat(b'0')).take(6) {
        part = part
            .checked_mul(10)?
            .checked_add(u64::from(b.wrapping_sub(b'0')))?;
    }
    whole.checked_mul(MICROS_PER_UNIT)?.checked_add(part)
}

/// What one send is charged against the daily spend cap ([`crate::flow::Io::Admit`]'s `spend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpendCharge {
    /// The policy's `dailySpendLimit` in micro-units.
    pub limit_micros: u64,
    /// What this send costs (micro-units, > 0; at most `limit_micros + 1`).
    pub cost_micros: u64,
    /// The UTC day it is charged to (days since 1970-01-01, [`day_of`]).
    pub day: u32,
}

/// A send's charge, and what its message costs on SMS: what a flow keeps from the admission to
/// the gateway's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpendPlan {
    /// What [`crate::flow::Io::Admit`] charges.
    pub charge: SpendCharge,
    /// The message's cost on SMS (micro-units, not capped).
    pub sms_micros: u64,
}

impl SpendPlan {
    /// The charge of a send of `segments` SMS segments on `channels` (the first, then its
    /// fallbacks) under `policy` at `now`: the most any of the channels costs. `None` when
    /// nothing is charged: no `dailySpendLimit`, a test number, or a send that costs nothing
    /// (WhatsApp only, or a price of 0).
    #[must_use]
    pub fn new(
        policy: &Policy,
        test: bool,
        segments: u32,
        channels: &[Channel],
        now: UnixMillis,
    ) -> Option<SpendPlan> {
        let limit = policy.daily_spend_limit.as_ref()?;
        if test {
            return None;
        }
        let limit_micros = micros(&limit.amount)?.min(MAX_EXACT.saturating_sub(1));
        let sms_micros = cost_micros(policy, segments, Channel::Sms);
        let cost = channels
            .iter()
            .map(|c| cost_micros(policy, segments, *c))
            .max()
            .unwrap_or(0);
        (cost > 0).then(|| SpendPlan {
            charge: SpendCharge {
                limit_micros,
                cost_micros: cost.min(limit_micros.saturating_add(1)),
                day: day_of(now),
            },
            sms_micros,
        })
    }

    /// What is handed back once the message went out on `channel` (costing less than the
    /// most of its channels, which was charged): `None` when nothing is.
    #[must_use]
    pub fn unused(&self, channel: Channel) -> Option<u64> {
        let used = match channel {
            Channel::Sms => self.sms_micros,
            Channel::Whatsapp => 0,
        };
        let back = self
            .charge
            .cost_micros
            .saturating_sub(used.min(self.charge.cost_micros));
        (back > 0).then_some(back)
    }
}

/// What a message of `segments` SMS segments costs on `channel`, in micro-units: segments ×
/// `pricePerSegment` on SMS, 0 on WhatsApp (not made of SMS segments).
#[must_use]
pub fn cost_micros(policy: &Policy, segments: u32, channel: Channel) -> u64 {
    match channel {
        Channel::Sms => micros(&policy.price_per_segment.amount)
            .unwrap_or(0)
            .saturating_mul(u64::from(segments)),
        Channel::Whatsapp => 0,
    }
}

/// A workspace's spend on the current UTC day (stored per workspace, next to the flood shield).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct SpendCounter {
    /// The UTC day counted.
    pub day: u32,
    /// Micro-units charged on it.
    pub micros: u64,
}

impl SpendCounter {
    /// Charges one send, or refuses with 429 `SPEND_LIMIT_REACHED` until 00:00 UTC when its
    /// cost would take the day's spend past the limit (nothing charged).
    ///
    /// A later day starts at 0. A charge for an earlier day than the counter's (a request that
    /// read its clock just before midnight and reached the counter after one that opened the
    /// new day) counts in the counter's day: spend is never under-counted.
    pub fn charge(&mut self, c: &SpendCharge, now: UnixMillis) -> Result<(), Error> {
        if c.day > self.day {
            *self = SpendCounter {
                day: c.day,
                micros: 0,
            };
        }
        if c.cost_micros > 0 && self.micros.saturating_add(c.cost_micros) > c.limit_micros {
            let midnight = UnixMillis(u64::from(self.day.saturating_add(1)).saturating_mul(DAY_MS));
            return Err(Error::SpendLimitReached {
                retry_after_secs: retry_secs_from_millis(now.millis_until(midnight)),
            });
        }
        self.micros = self.micros.saturating_add(c.cost_micros);
        Ok(())
    }

    /// Hands `micros` charged to `day` back (a definite delivery failure, or the part of a
    /// charge a cheaper channel did not use). A refund for a day the counter has left is
    /// dropped: that day's spend no longer matters.
    pub fn refund(&mut self, day: u32, micros: u64) {
        if day == self.day {
            self.micros = self.micros.saturating_sub(micros);
        }
    }

    /// Nothing worth keeping at `now` (an earlier day, or nothing spent): a host may drop it.
    #[must_use]
    pub fn is_idle(&self, now: UnixMillis) -> bool {
        self.micros == 0 || self.day < day_of(now)
    }
}

/// A refusal of [`charge_workspace`]: the error to answer, and whether this send's check began a
/// Fraud Guard block (audit `prefix_blocked`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// `FRAUD_SUSPECTED`, `SPEND_LIMIT_REACHED` or `RATE_LIMITED`.
    pub error: Error,
    /// Fraud Guard's block began with this send.
    pub new_block: bool,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        Refusal {
            error,
            new_block: false,
        }
    }
}

/// The workspace's side of an admitted send, in one atomic step: Fraud Guard
/// ([`PrefixCount::admit`] of the destination's prefix, with `fraud`), the spend counter
/// ([`SpendCounter::charge`], with `spend`) and the flood shield ([`FloodShield::admit`], with
/// `flood_limit`). Asked in that order (the longest refusal is the one worth naming); a
/// refusal by one leaves the others unchanged.
///
/// A Fraud Guard refusal changes the prefix's count (the refused send is counted as refused,
/// and a new block begins): a host stores the prefix's count after `Err` with
/// `fraud`-refusal as after `Ok`. After any other refusal nothing changed.
pub fn charge_workspace(
    shield: &mut FloodShield,
    flood_limit: Option<u32>,
    counter: &mut SpendCounter,
    spend: Option<&SpendCharge>,
    fraud: Option<(&mut PrefixCount, &FraudCharge)>,
    now: UnixMillis,
) -> Result<(), Refusal> {
    let mut prefix = None;
    if let Some((count, charge)) = fraud {
        let mut p = *count;
        if let Err(r) = p.admit(charge, now) {
            *count = p;
            return Err(Refusal {
                error: Error::FraudSuspected,
                new_block: r.new_block,
            });
        }
        prefix = Some((count, p));
    }
    let mut c = *counter;
    if let Some(charge) = spend {
        c.charge(charge, now)?;
    }
    let mut s = *shield;
    if let Some(limit) = flood_limit {
        s.admit(limit, now)?;
    }
    *counter = c;
    *shield = s;
    if let Some((count, p)) = prefix {
        *count = p;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Price;

    #[test]
    fn micros_of_decimals() {
        assert_eq!(micros("0"), Some(0));
        assert_eq!(micros("1.2"), Some(1_200_000));
        assert_eq!(micros("0.0075"), Some(7_500));
        assert_eq!(micros("12.000001"), Some(12_000_001));
        assert_eq!(micros("999999999999.999999"), Some(999_999_999_999_999_999));
        for bad in ["", ".5", "1.", "1.1234567", "-1", "1e3", "1.2.3", "a"] {
            assert_eq!(micros(bad), None, "{bad:?}");
        }
    }

    fn policy(price: &str, limit: Option<&str>) -> Policy {
        Policy {
            price_per_segment: Price {
                amount: price.into(),
                currency: "USD".into(),
            },
            daily_spend_limit: limit.map(|a| Price {
                amount: a.into(),
                currency: "USD".into(),
            }),
            ..Policy::default()
        }
    }

    /// Price 0.5 per segment, limit 1.20: two 1-segment sends pass, the third is refused until
    /// midnight UTC; a refund lets one more through; the next day starts at 0.
    #[test]
    fn two_sends_pass_the_third_is_refused_until_midnight() {
        let p = policy("0.5", Some("1.20"));
        let day = 20_000u32;
        let now = UnixMillis(u64::from(day) * DAY_MS + 3_600_000); // 01:00 UTC
        let c = SpendPlan::new(&p, false, 1, &[Channel::Sms], now)
            .unwrap()
            .charge;
        assert_eq!(
            c,
            SpendCharge {
                limit_micros: 1_200_000,
                cost_micros: 500_000,
                day
            }
        );
        let mut counter = SpendCounter::default();
        counter.charge(&c, now).unwrap();
        counter.charge(&c, now).unwrap();
        let e = counter.charge(&c, now).unwrap_err();
        assert_eq!(e.code(), "SPEND_LIMIT_REACHED");
        assert_eq!(e.http_status(), 429);
        assert_eq!(e.retry_after_secs(), Some(23 * 3600));
        assert_eq!(counter.micros, 1_000_000, "a refusal charges nothing");
        counter.refund(day, 500_000);
        counter.charge(&c, now).unwrap();
        counter.refund(day - 1, 500_000);
        assert_eq!(
            counter.micros, 1_000_000,
            "a refund for another day is dropped"
        );
        let tomorrow = UnixMillis(now.0 + DAY_MS);
        let c2 = SpendPlan::new(&p, false, 1, &[Channel::Sms], tomorrow)
            .unwrap()
            .charge;
        counter.charge(&c2, tomorrow).unwrap();
        assert_eq!((counter.day, counter.micros), (day + 1, 500_000));
        // A clock that read yesterday counts today (never under-counted).
        counter.charge(&c, tomorrow).unwrap();
        assert_eq!((counter.day, counter.micros), (day + 1, 1_000_000));
        assert!(!counter.is_idle(tomorrow));
        assert!(counter.is_idle(UnixMillis(tomorrow.0 + DAY_MS)));
    }

    #[test]
    fn nothing_is_charged_without_a_limit_a_cost_or_for_a_test_number() {
        let now = UnixMillis(1_763_800_000_000);
        let sms = [Channel::Sms];
        assert_eq!(
            SpendPlan::new(&policy("0.5", None), false, 1, &sms, now),
            None
        );
        assert_eq!(
            SpendPlan::new(&policy("0.5", Some("1")), true, 1, &sms, now),
            None
        );
        assert_eq!(
            SpendPlan::new(&policy("0", Some("1")), false, 1, &sms, now),
            None
        );
        let wa = [Channel::Whatsapp];
        assert_eq!(
            SpendPlan::new(&policy("0.5", Some("1")), false, 2, &wa, now),
            None,
            "a WhatsApp message costs 0 segments"
        );
        // WhatsApp falling back to SMS: charged the SMS cost, the unused part handed back
        // when WhatsApp delivered.
        let p = policy("0.25", Some("10"));
        let both = [Channel::Whatsapp, Channel::Sms];
        let plan = SpendPlan::new(&p, false, 2, &both, now).unwrap();
        assert_eq!(plan.charge.cost_micros, 500_000);
        assert_eq!(plan.unused(Channel::Whatsapp), Some(500_000));
        assert_eq!(plan.unused(Channel::Sms), None);
        // A cost past the limit is capped at limit + 1: refused whatever was spent, and every
        // number stays exact in JavaScript and Lua.
        let p = policy("999999999999", Some("1"));
        let c = SpendPlan::new(&p, false, 3, &sms, now).unwrap().charge;
        assert_eq!(c.cost_micros, 1_000_001);
        assert!(SpendCounter::default().charge(&c, now).is_err());
    }

    /// Policy `dailySpendLimit`: null or `{amount, currency}` in `pricePerSegment`'s currency,
    /// at most 9 integer digits; 400s name the field.
    #[test]
    fn policy_daily_spend_limit() {
        use serde_json::json;
        let p = Policy::default();
        assert_eq!(p.daily_spend_limit, None);
        let capped = p
            .patched(&json!({"dailySpendLimit": {"amount": "1.20", "currency": "USD"}}))
            .unwrap();
        assert_eq!(capped.daily_spend_limit.as_ref().unwrap().amount, "1.20");
        let field = |patch: serde_json::Value| {
            let e = capped.patched(&patch).unwrap_err();
            e.field().map(alloc::string::ToString::to_string)
        };
        assert_eq!(
            field(json!({"dailySpendLimit": {"amount": "1", "currency": "EUR"}})).as_deref(),
            Some("policy.dailySpendLimit.currency")
        );
        assert_eq!(
            field(json!({"pricePerSegment": {"amount": "1", "currency": "EUR"}})).as_deref(),
            Some("policy.dailySpendLimit.currency"),
            "the price's currency cannot leave the limit in another"
        );
        assert_eq!(
            field(json!({"dailySpendLimit": {"amount": "1e3", "currency": "USD"}})).as_deref(),
            Some("policy.dailySpendLimit.amount")
        );
        assert_eq!(
            field(json!({"dailySpendLimit": {"amount": "1000000000", "currency": "USD"}}))
                .as_deref(),
            Some("policy.dailySpendLimit.amount")
        );
        assert_eq!(
            field(json!({"dailySpendLimit": {"amount": "1", "currency": "USD", "x": 1}}))
                .as_deref(),
            Some("policy.dailySpendLimit.x")
        );
        assert_eq!(
            field(json!({"dailySpendLimit": 5})).as_deref(),
            Some("policy.dailySpendLimit")
        );
        let off = capped.patched(&json!({"dailySpendLimit": null})).unwrap();
        assert_eq!(off.daily_spend_limit, None);
        // Stored policies without the key read back as no cap.
        let mut stored = serde_json::to_value(&p).unwrap();
        stored.as_object_mut().unwrap().remove("dailySpendLimit");
        let read: Policy = serde_json::from_value(stored).unwrap();
        assert_eq!(read, p);
    }

    /// The flood shield and the spend counter change together or not at all.
    #[test]
    fn charge_workspace_is_all_or_nothing() {
        let now = UnixMillis(1_763_800_000_000);
        let spend = SpendCharge {
            limit_micros: 1_000,
            cost_micros: 600,
            day: day_of(now),
        };
        let mut shield = FloodShield::default();
        let mut counter = SpendCounter::default();
        charge_workspace(&mut shield, Some(1), &mut counter, Some(&spend), None, now).unwrap();
        assert_eq!((shield.count, counter.micros), (1, 600));
        // The shield is full: the spend is not charged.
        let cheap = SpendCharge {
            cost_micros: 1,
            ..spend
        };
        let e = charge_workspace(&mut shield, Some(1), &mut counter, Some(&cheap), None, now);
        assert_eq!(e.unwrap_err().error.code(), "RATE_LIMITED");
        assert_eq!((shield.count, counter.micros), (1, 600));
        // The cap refuses (and is named first): the shield is not counted.
        let mut roomy = FloodShield::default();
        let e = charge_workspace(&mut roomy, Some(1), &mut counter, Some(&spend), None, now);
        assert_eq!(e.unwrap_err().error.code(), "SPEND_LIMIT_REACHED");
        assert_eq!((roomy.count, counter.micros), (0, 600));
        let e = charge_workspace(&mut shield, Some(1), &mut counter, Some(&spend), None, now);
        assert_eq!(e.unwrap_err().error.code(), "SPEND_LIMIT_REACHED");
    }
}
