//! Fraud Guard (SPEC §9): SMS pumping defence.
//!
//! SMS pumping (toll fraud) is bots requesting codes for numbers in ranges whose termination
//! revenue the attacker shares: many numbers, hardly any verification. A per-destination limit
//! cannot see it (each number is asked a few times); a country list is too coarse. Fraud Guard
//! counts, per (workspace, number prefix), the sends and the approved verifications of a rolling
//! window; once a prefix has at least `minSends` sends in the window and a verification rate
//! under `minConversion`, new sends to it are refused 403 `FRAUD_SUSPECTED` for `blockSeconds`.
//!
//! - The **prefix** is `+`, the calling code and the next `prefixDigits` digits
//!   (`+233 20 2007745` with 3 digits → `+233202`): one operator's number block in most plans.
//! - The **window** is rolling, estimated from two fixed buckets (the current one and the one
//!   before it, weighted by how much of it still overlaps the window), in integers: every store
//!   (a Durable Object, a mutex, a Lua script on doubles) computes the same numbers.
//! - The check runs **before** a send is counted: with `minSends = 20` at most 20 messages go to
//!   a pumped prefix per window before it is blocked. A refused send is not counted.
//! - Test numbers, safe-listed numbers and prefixes (`safeList`), and workspaces with the guard
//!   off (the default) are neither counted nor refused. `minConversion = 0` never blocks
//!   (counting only, for a look at the figures before turning blocks on).
//! - A block ends by itself after `blockSeconds`, or when an operator unblocks the prefix
//!   (which also clears its counts: otherwise the next send would block it again at once).
//!
//! The check is charged with the workspace flood shield and the daily spend cap in one atomic
//! step ([`crate::spend::charge_workspace`]): [`crate::flow::Io::Admit`] carries a
//! [`FraudCharge`]; an approved verification is counted after its answer
//! ([`crate::flow::Io::FraudVerified`]).

use crate::error::Error;
use crate::json::{self, invalid, invalid_owned};
use crate::time::UnixMillis;
use crate::validate;
use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// Most entries in `safeList`.
pub const MAX_SAFE_LIST: usize = 100;

/// A rate in thousandths (`0.1` is 100), written as a JSON number from 0 to 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Permille(pub u32);

impl Serialize for Permille {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(f64::from(self.0) / 1000.0)
    }
}

impl<'de> Deserialize<'de> for Permille {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let x = f64::deserialize(d)?;
        permille(x).ok_or_else(|| serde::de::Error::custom("a rate from 0 to 1"))
    }
}

/// `x` (0–1, at most 3 decimals are kept) in thousandths.
#[must_use]
pub fn permille(x: f64) -> Option<Permille> {
    if !(0.0..=1.0).contains(&x) {
        return None;
    }
    #[allow(
        clippy::cast_possible_truncation,
        clippy::cast_sign_loss,
        reason = "0 ≤ x ≤ 1, so 0 ≤ x × 1000 + 0.5 < 1001"
    )]
    let n = (x * 1000.0 + 0.5) as u32;
    Some(Permille(n))
}

/// Policy `fraudGuard` (SPEC §9). Defaults: off, 3 prefix digits, a 1 h window, 20 sends, 10 %
/// conversion, 1 h blocks, nothing safe-listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FraudGuard {
    /// Sends are counted and refused (off by default: existing workspaces behave as before).
    pub enabled: bool,
    /// Digits after the calling code that make a prefix (1–6).
    pub prefix_digits: u8,
    /// The rolling window (60–86400 s).
    pub window_seconds: u32,
    /// Sends in the window before a prefix may be blocked (1–100000).
    pub min_sends: u32,
    /// Approved verifications per send under which it is blocked (0–1; 0 never blocks).
    pub min_conversion: Permille,
    /// How long a block lasts (60–604800 s).
    pub block_seconds: u32,
    /// Numbers and prefixes (`+` and 1–15 digits) never counted nor refused.
    pub safe_list: Vec<String>,
}

impl Default for FraudGuard {
    fn default() -> Self {
        FraudGuard {
            enabled: false,
            prefix_digits: 3,
            window_seconds: 3600,
            min_sends: 20,
            min_conversion: Permille(100),
            block_seconds: 3600,
            safe_list: Vec::new(),
        }
    }
}

const KEYS: [&str; 7] = [
    "enabled",
    "prefixDigits",
    "windowSeconds",
    "minSends",
    "minConversion",
    "blockSeconds",
    "safeList",
];

impl FraudGuard {
    /// Applies a `fraudGuard` patch (field `f`, `policy.fraudGuard`): each given key replaces
    /// its value; `null` is the defaults. 400s name `policy.fraudGuard.<key>`.
    pub fn patched(&self, v: &Value, f: &str) -> Result<FraudGuard, Error> {
        let obj = match v {
            Value::Null => return Ok(FraudGuard::default()),
            Value::Object(o) => o,
            _ => return Err(invalid(f, "must be an object (or null for the defaults)")),
        };
        let mut g = self.clone();
        for (key, v) in obj {
            let field = format!("{f}.{key}");
            let k = field.as_str();
            let int = |lo: u64, hi: u64| -> Result<u32, Error> {
                json::int_in(v, k, lo, hi)
                    .and_then(|n| u32::try_from(n).map_err(|_| invalid(k, "out of range")))
            };
            match key.as_str() {
                "enabled" => {
                    g.enabled = v
                        .as_bool()
                        .ok_or_else(|| invalid(k, "must be true or false"))?;
                }
                "prefixDigits" => {
                    g.prefix_digits = u8::try_from(int(1, 6)?)
                        .map_err(|_| invalid(k, "must be an integer from 1 to 6"))?;
                }
                "windowSeconds" => g.window_seconds = int(60, 86_400)?,
                "minSends" => g.min_sends = int(1, 100_000)?,
                "minConversion" => {
                    g.min_conversion = v
                        .as_f64()
                        .and_then(permille)
                        .ok_or_else(|| invalid(k, "must be a number from 0 to 1"))?;
                }
                "blockSeconds" => g.block_seconds = int(60, 604_800)?,
                "safeList" => g.safe_list = safe_list(v, k)?,
                _ => {
                    return Err(invalid_owned(
                        k,
                        format!("is not a key of fraudGuard ({})", KEYS.join(", ")),
                    ))
                }
            }
        }
        Ok(g)
    }

    /// Whether `dest` is on the safe list (the number itself, or a prefix of it).
    #[must_use]
    pub fn safe(&self, dest: &str) -> bool {
        self.safe_list.iter().any(|p| dest.starts_with(p.as_str()))
    }
}

fn safe_list(v: &Value, f: &str) -> Result<Vec<String>, Error> {
    const WHAT: &str = "must be a list of numbers or prefixes: + then 1 to 15 digits";
    let Value::Array(items) = v else {
        return Err(invalid(f, WHAT));
    };
    if items.len() > MAX_SAFE_LIST {
        return Err(invalid(f, "must have at most 100 entries"));
    }
    let mut out: Vec<String> = Vec::with_capacity(items.len());
    for item in items {
        let ok = item.as_str().filter(|s| {
            s.strip_prefix('+').is_some_and(|d| {
                (1..=15).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit())
            })
        });
        match ok {
            Some(s) if !out.iter().any(|o| o == s) => out.push(s.to_string()),
            Some(_) => {}
            None => return Err(invalid(f, WHAT)),
        }
    }
    Ok(out)
}

/// The prefix of a destination: `+`, its calling code and the next `digits` digits (fewer when
/// the number is shorter). A number without an assigned calling code keeps its first 3 digits
/// as the code.
#[must_use]
pub fn prefix_of(dest: &str, digits: u8) -> String {
    let d = dest.strip_prefix('+').unwrap_or(dest);
    let cc = validate::calling_code(d).map_or(3, str::len);
    let end = cc.saturating_add(usize::from(digits)).min(d.len());
    format!("+{}", d.get(..end).unwrap_or(d))
}

/// Whether `s` could be a prefix this module made (`+` and 2–18 digits): what the unblock
/// route accepts.
#[must_use]
pub fn is_prefix(s: &str) -> bool {
    s.strip_prefix('+')
        .is_some_and(|d| (2..=18).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

/// What one send asks of Fraud Guard ([`crate::flow::Io::Admit`]'s `fraud`): its prefix and the
/// policy's thresholds, so a store decides without reading the policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FraudCharge {
    /// The destination's prefix ([`prefix_of`]).
    pub prefix: String,
    /// The window (ms).
    pub window_ms: u64,
    /// `minSends`.
    pub min_sends: u32,
    /// `minConversion` in thousandths.
    pub min_conversion: u32,
    /// `blockSeconds` in ms.
    pub block_ms: u64,
}

impl FraudCharge {
    /// The charge of a send to `dest` under `guard`: `None` when Fraud Guard is off, the number
    /// is a test number or is safe-listed.
    #[must_use]
    pub fn new(guard: &FraudGuard, dest: &str, test: bool) -> Option<FraudCharge> {
        if !guard.enabled || test || guard.safe(dest) {
            return None;
        }
        Some(FraudCharge {
            prefix: prefix_of(dest, guard.prefix_digits),
            window_ms: u64::from(guard.window_seconds).saturating_mul(1000),
            min_sends: guard.min_sends,
            min_conversion: guard.min_conversion.0,
            block_ms: u64::from(guard.block_seconds).saturating_mul(1000),
        })
    }
}

/// Where a session's sends were counted ([`crate::session::Session::fraud`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FraudMark {
    /// The prefix.
    pub prefix: String,
    /// The window (ms) it was counted with.
    pub window_ms: u64,
}

impl FraudCharge {
    /// Where this charge counts a send.
    #[must_use]
    pub fn mark(&self) -> FraudMark {
        FraudMark {
            prefix: self.prefix.clone(),
            window_ms: self.window_ms,
        }
    }
}

/// The counts of one prefix (stored per workspace and prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct PrefixCount {
    /// Start of the current bucket (ms).
    pub start: u64,
    /// Sends counted in the current bucket.
    pub sends: u32,
    /// Approved verifications in the current bucket.
    pub verified: u32,
    /// Sends of the bucket before.
    pub prev_sends: u32,
    /// Approved verifications of the bucket before.
    pub prev_verified: u32,
    /// Sends are refused until then (ms; 0: not blocked).
    pub blocked_until: u64,
    /// Sends refused while blocked, since the block began.
    pub refused: u32,
}

/// A refused send ([`PrefixCount::admit`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FraudRefusal {
    /// This send's check began the block (audit `prefix_blocked`); the count changed and must
    /// be stored.
    pub new_block: bool,
}

impl PrefixCount {
    /// Moves the buckets on to `now` for a window of `window_ms`: the current bucket becomes
    /// the one before when `now` is past it, both empty when `now` is two windows on. A clock
    /// behind the bucket's start counts in it.
    pub fn roll(&mut self, window_ms: u64, now: UnixMillis) {
        let w = window_ms.max(1);
        let now = now.0;
        if now < self.start.saturating_add(w) {
            return;
        }
        let aligned = now.saturating_sub(now.checked_rem(w).unwrap_or(0));
        if now < self.start.saturating_add(w.saturating_mul(2)) {
            self.prev_sends = self.sends;
            self.prev_verified = self.verified;
        } else {
            self.prev_sends = 0;
            self.prev_verified = 0;
        }
        self.sends = 0;
        self.verified = 0;
        self.start = aligned;
    }

    /// The rolling window's sends and approved verifications at `now`, in thousandths: the
    /// current bucket, plus the bucket before weighted by the part of it still in the window.
    /// Call [`PrefixCount::roll`] first.
    #[must_use]
    pub fn estimate(&self, window_ms: u64, now: UnixMillis) -> (u64, u64) {
        let w = window_ms.max(1);
        let elapsed = now.0.saturating_sub(self.start).min(w);
        // Thousandths of the bucket before still in the window.
        let weight = w
            .saturating_sub(elapsed)
            .saturating_mul(1000)
            .checked_div(w)
            .unwrap_or(0);
        let est = |cur: u32, prev: u32| {
            u64::from(cur)
                .saturating_mul(1000)
                .saturating_add(u64::from(prev).saturating_mul(weight))
        };
        (
            est(self.sends, self.prev_sends),
            est(self.verified, self.prev_verified),
        )
    }

    /// Whether sends are refused at `now`.
    #[must_use]
    pub fn blocked(&self, now: UnixMillis) -> bool {
        self.blocked_until > now.0
    }

    /// Checks one send and counts it, or refuses it (403 `FRAUD_SUSPECTED`): while blocked, or
    /// when the window holds at least `min_sends` sends and approvals per send are under
    /// `min_conversion` (the block begins: `new_block`). A refusal counts nothing but the
    /// refused send ([`PrefixCount::refused`]).
    pub fn admit(&mut self, c: &FraudCharge, now: UnixMillis) -> Result<(), FraudRefusal> {
        if self.blocked(now) {
            self.refused = self.refused.saturating_add(1);
            return Err(FraudRefusal { new_block: false });
        }
        self.roll(c.window_ms, now);
        let (sends, verified) = self.estimate(c.window_ms, now);
        let enough = sends >= u64::from(c.min_sends).saturating_mul(1000);
        let low = verified.saturating_mul(1000) < u64::from(c.min_conversion).saturating_mul(sends);
        if enough && low {
            self.blocked_until = now.0.saturating_add(c.block_ms);
            self.refused = 1;
            return Err(FraudRefusal { new_block: true });
        }
        self.sends = self.sends.saturating_add(1);
        Ok(())
    }

    /// Hands a counted send back (the flood shield or the spend cap refused it in the same
    /// step, [`crate::spend::charge_workspace`]).
    pub fn uncount(&mut self) {
        self.sends = self.sends.saturating_sub(1);
    }

    /// Counts an approved verification of a send to this prefix.
    pub fn verified(&mut self, window_ms: u64, now: UnixMillis) {
        self.roll(window_ms, now);
        self.verified = self.verified.saturating_add(1);
    }

    /// Ends a block and clears the counts (an operator's unblock; without the clearing the
    /// next send would block the prefix again at once); `false`, and nothing changed, if it
    /// was not blocked at `now`.
    pub fn unblock(&mut self, now: UnixMillis) -> bool {
        if !self.blocked(now) {
            return false;
        }
        *self = PrefixCount::default();
        true
    }

    /// Nothing worth keeping at `now`: not blocked and no count in the last two windows. A
    /// host may drop it.
    #[must_use]
    pub fn is_idle(&self, window_ms: u64, now: UnixMillis) -> bool {
        !self.blocked(now) && now.0 >= self.start.saturating_add(window_ms.saturating_mul(2))
    }
}

/// One prefix in the admin view (`GET /v1/admin/workspaces/{id}/fraud`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PrefixView {
    /// The prefix.
    pub prefix: String,
    /// Sends in the rolling window (rounded down).
    pub sends: u64,
    /// Approved verifications in it (rounded down).
    pub verified: u64,
    /// Approved verifications per send in it (0 when nothing was sent), 4 decimals.
    pub conversion: f64,
    /// Sends are refused now.
    pub blocked: bool,
    /// Until when (RFC 3339), while blocked.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_until: Option<String>,
    /// Sends refused since the block began.
    pub refused: u32,
}

/// The admin view of a workspace's prefixes at `now`, busiest first (blocked ones before
/// them), without idle ones.
#[must_use]
pub fn view(
    guard: &FraudGuard,
    prefixes: &[(String, PrefixCount)],
    now: UnixMillis,
) -> Vec<PrefixView> {
    let w = u64::from(guard.window_seconds).saturating_mul(1000);
    let mut out: Vec<PrefixView> = prefixes
        .iter()
        .filter(|(_, c)| !c.is_idle(w, now))
        .map(|(p, c)| {
            let mut c = *c;
            c.roll(w, now);
            let (s, v) = c.estimate(w, now);
            let blocked = c.blocked(now);
            PrefixView {
                prefix: p.clone(),
                sends: s / 1000,
                verified: v / 1000,
                conversion: crate::analytics::rate(v, s),
                blocked,
                blocked_until: blocked.then(|| UnixMillis(c.blocked_until).to_rfc3339()),
                refused: if blocked { c.refused } else { 0 },
            }
        })
        .collect();
    out.sort_by(|a, b| {
        b.blocked
            .cmp(&a.blocked)
            .then(b.sends.cmp(&a.sends))
            .then(a.prefix.cmp(&b.prefix))
    });
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn charge() -> FraudCharge {
        FraudCharge::new(
            &FraudGuard {
                enabled: true,
                ..FraudGuard::default()
            },
            "+233202007745",
            false,
        )
        .unwrap()
    }

    #[test]
    fn prefixes() {
        assert_eq!(prefix_of("+233202007745", 3), "+233202");
        assert_eq!(prefix_of("+14155550100", 3), "+1415");
        assert_eq!(prefix_of("+447700900123", 2), "+4477");
        assert_eq!(prefix_of("+4412", 6), "+4412");
        assert!(is_prefix("+233202") && !is_prefix("233202") && !is_prefix("+2"));
        assert_eq!(charge().prefix, "+233202");
    }

    /// A pumping run: 20 sends with no verification pass, the 21st is refused and begins the
    /// block; sends stay refused until `blockSeconds` have passed. A refused send is not
    /// counted.
    #[test]
    fn a_pumped_prefix_is_blocked_after_min_sends() {
        let c = charge();
        let t0 = UnixMillis(1_000_000_000);
        let mut p = PrefixCount::default();
        for i in 0..20 {
            p.admit(&c, UnixMillis(t0.0 + i)).unwrap();
        }
        assert_eq!(
            p.admit(&c, t0.plus_secs(1)),
            Err(FraudRefusal { new_block: true })
        );
        assert_eq!(
            p.admit(&c, t0.plus_secs(2)),
            Err(FraudRefusal { new_block: false })
        );
        assert_eq!((p.sends, p.refused), (20, 2));
        assert!(p.blocked(t0.plus_secs(3600)));
        assert!(!p.blocked(t0.plus_secs(3602)));
        // After the block and two windows, the counts are gone: sends pass again.
        let later = t0.plus_secs(3 * 3600);
        p.admit(&c, later).unwrap();
        assert_eq!((p.sends, p.prev_sends), (1, 0));
    }

    /// Legitimate traffic that verifies (here one in two) is never blocked however much it sends.
    #[test]
    fn a_converting_prefix_is_never_blocked() {
        let c = charge();
        let mut p = PrefixCount::default();
        let t0 = UnixMillis(5_000_000_000);
        for i in 0..500u64 {
            let now = UnixMillis(t0.0 + i * 20_000); // 500 sends over ~2.8 h
            p.admit(&c, now).unwrap();
            if i % 2 == 0 {
                p.verified(c.window_ms, now);
            }
        }
    }

    /// The conversion rule at its edge: 20 sends and 2 approvals is 10 % (not under it); 1 is.
    #[test]
    fn the_conversion_threshold_is_strict() {
        let c = charge();
        let t0 = UnixMillis(7_200_000); // a bucket start: nothing from the bucket before
        let mut ok = PrefixCount::default();
        let mut low = PrefixCount::default();
        for _ in 0..20 {
            ok.admit(&c, t0).unwrap();
            low.admit(&c, t0).unwrap();
        }
        ok.verified(c.window_ms, t0);
        ok.verified(c.window_ms, t0);
        low.verified(c.window_ms, t0);
        assert!(ok.admit(&c, t0).is_ok());
        assert!(low.admit(&c, t0).is_err());
        // minConversion 0 only counts.
        let never = FraudCharge {
            min_conversion: 0,
            ..c.clone()
        };
        let mut p = PrefixCount::default();
        for _ in 0..1000 {
            p.admit(&never, t0).unwrap();
        }
    }

    /// The bucket before counts by its overlap with the window: half-way into the next bucket,
    /// 40 earlier sends count as 20.
    #[test]
    fn the_window_rolls() {
        let c = charge();
        let w = c.window_ms;
        let mut p = PrefixCount {
            start: 0,
            sends: 40,
            verified: 4,
            ..PrefixCount::default()
        };
        let half = UnixMillis(w + w / 2);
        p.roll(w, half);
        assert_eq!(p.estimate(w, half), (20_000, 2_000));
        assert_eq!((p.start, p.prev_sends, p.sends), (w, 40, 0));
        p.roll(w, UnixMillis(3 * w));
        assert_eq!((p.start, p.prev_sends, p.sends), (3 * w, 0, 0));
    }

    #[test]
    fn unblock_clears_the_counts() {
        let c = charge();
        let t0 = UnixMillis(1_000_000_000);
        let mut p = PrefixCount::default();
        for _ in 0..21 {
            let _ = p.admit(&c, t0);
        }
        assert!(p.blocked(t0));
        assert!(p.unblock(t0));
        assert!(p.admit(&c, t0).is_ok());
        let before = p;
        assert!(!p.unblock(t0), "not blocked");
        assert_eq!(
            p, before,
            "an unblock of a prefix that is not blocked changes nothing"
        );
        assert!(PrefixCount::default().is_idle(c.window_ms, t0));
    }

    #[test]
    fn exempt_sends_are_not_charged() {
        let on = FraudGuard {
            enabled: true,
            safe_list: alloc::vec!["+23320".into(), "+14155550100".into()],
            ..FraudGuard::default()
        };
        assert!(FraudCharge::new(&FraudGuard::default(), "+447700900123", false).is_none());
        assert!(FraudCharge::new(&on, "+447700900123", true).is_none());
        assert!(FraudCharge::new(&on, "+233202007745", false).is_none());
        assert!(FraudCharge::new(&on, "+14155550100", false).is_none());
        assert!(FraudCharge::new(&on, "+14155550101", false).is_some());
    }

    /// Policy `fraudGuard`: SPEC §9's defaults, bounds with 400s naming the key, stored
    /// policies without it read back as off.
    #[test]
    fn policy_fraud_guard() {
        use crate::policy::Policy;
        let p = Policy::default();
        assert_eq!(
            serde_json::to_value(&p.fraud_guard).unwrap(),
            json!({"enabled": false, "prefixDigits": 3, "windowSeconds": 3600, "minSends": 20,
                   "minConversion": 0.1, "blockSeconds": 3600, "safeList": []})
        );
        let on = p
            .patched(&json!({"fraudGuard": {"enabled": true, "minConversion": 0.25}}))
            .unwrap();
        assert!(on.fraud_guard.enabled);
        assert_eq!(on.fraud_guard.min_conversion, Permille(250));
        assert_eq!(on.fraud_guard.min_sends, 20, "other keys kept");
        let field = |patch: serde_json::Value| {
            on.patched(&patch)
                .unwrap_err()
                .field()
                .map(ToString::to_string)
        };
        for (patch, f) in [
            (
                json!({"fraudGuard": {"prefixDigits": 7}}),
                "policy.fraudGuard.prefixDigits",
            ),
            (
                json!({"fraudGuard": {"minConversion": 1.5}}),
                "policy.fraudGuard.minConversion",
            ),
            (
                json!({"fraudGuard": {"windowSeconds": 10}}),
                "policy.fraudGuard.windowSeconds",
            ),
            (
                json!({"fraudGuard": {"safeList": ["233"]}}),
                "policy.fraudGuard.safeList",
            ),
            (json!({"fraudGuard": {"x": 1}}), "policy.fraudGuard.x"),
            (json!({"fraudGuard": 5}), "policy.fraudGuard"),
        ] {
            assert_eq!(field(patch).as_deref(), Some(f));
        }
        let reset = on.patched(&json!({"fraudGuard": null})).unwrap();
        assert_eq!(reset.fraud_guard, FraudGuard::default());
        let mut stored = serde_json::to_value(&p).unwrap();
        stored.as_object_mut().unwrap().remove("fraudGuard");
        let read: Policy = serde_json::from_value(stored).unwrap();
        assert_eq!(read, p);
        // Round trip of the rate.
        let back: Policy = serde_json::from_value(serde_json::to_value(&on).unwrap()).unwrap();
        assert_eq!(back, on);
    }

    #[test]
    fn the_view_lists_busy_and_blocked_prefixes() {
        let g = FraudGuard {
            enabled: true,
            ..FraudGuard::default()
        };
        let c = charge();
        let t0 = UnixMillis(1_000_000_000);
        let mut pumped = PrefixCount::default();
        for _ in 0..21 {
            let _ = pumped.admit(&c, t0);
        }
        let mut fine = PrefixCount::default();
        for _ in 0..4 {
            fine.admit(&c, t0).unwrap();
            fine.verified(c.window_ms, t0);
        }
        let rows = [
            ("+447700".to_string(), fine),
            ("+233202".to_string(), pumped),
            ("+1415".to_string(), PrefixCount::default()),
        ];
        let v = view(&g, &rows, t0);
        assert_eq!(v.len(), 2);
        assert_eq!(
            (v[0].prefix.as_str(), v[0].blocked, v[0].sends, v[0].refused),
            ("+233202", true, 20, 1)
        );
        assert_eq!(
            (v[1].prefix.as_str(), v[1].sends, v[1].conversion),
            ("+447700", 4, 1.0)
        );
    }
}
