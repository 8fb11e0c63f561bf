//! Send budgets that protect the sender's reputation, shared by every worker replica through
//! Redis: at most `SMTP_MAX_PER_SECOND` emails to the provider (all domains together) and at
//! most `SMTP_DOMAIN_MAX_PER_MINUTE` to one recipient domain, and a pause for a domain whose
//! mail the provider answers with a throttling code (`421`, enhanced status `4.7.x`).
//!
//! A job over a budget is never dropped and spends no attempt: it gets a place in the
//! budget's line (a time when its turn comes, spaced at the budget's rate after the places
//! already given) and waits in a delay queue until then ([`shared::topology::Topology::budget_wait_queue`]).
//! A burst of thousands therefore comes back one job at a time at the budget's pace, instead of
//! all at once after the same fixed delay (a thundering herd that would be refused again and
//! re-published in a loop).
//!
//! Each budget is a sliding-window log of the sends it allowed plus the line, updated by one
//! script whose keys share one hash tag (valid on Redis Cluster); the domain's keys are named
//! by an HMAC pseudonym of the domain, never the domain or the address. A job allowed by the
//! domain budget and then refused by the provider's is given back to the domain (the grant
//! leaves its log), so a job that waits has consumed no budget. Every SMTP transaction counts:
//! a retried job is another send to the provider.
//!
//! The line is fair: mail a person is waiting for ([`Class::Priority`]: reset emails,
//! password-changed notices and security notices but the new-sign-in one) goes before the kinds
//! a stranger can cause ([`Class::Bulk`]: verification emails, account-exists and no-account
//! notices; also new-sign-in notices, which whoever has the password can cause at will), which
//! wait in a line of their own behind every priority place; and in the bulk line one requester
//! (the client that caused the job, an IPv4 address or IPv6 /48) holds at most a share of the
//! places (`SMTP_REQUESTER_SHARE_PERCENT` of the budget's rate): the rest of its jobs ask again
//! a window later, behind everyone who came meanwhile. So sign-ups of random addresses at one
//! provider can neither push real reset emails past their deadline nor hold the line against
//! other people's sign-ups.

use std::time::Duration;

use rand::Rng as _;
use redis::Script;
use shared::{
    keys::pseudonym,
    redis_pool::{RedisError, RedisPool},
};
use uuid::Uuid;

/// Why a job waits (the `limit` label of `mail_send_budget_waits_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `SMTP_MAX_PER_SECOND`, the provider's rate over all domains.
    Provider,
    /// `SMTP_DOMAIN_MAX_PER_MINUTE`, the rate to one recipient domain.
    Domain,
    /// The domain is paused after a throttling answer (`SMTP_THROTTLE_PAUSE_SECS`).
    Throttled,
}

impl Limit {
    /// Every value, for registering the metrics at 0.
    pub const ALL: [Limit; 3] = [Limit::Provider, Limit::Domain, Limit::Throttled];

    /// Stable label for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Limit::Provider => "provider",
            Limit::Domain => "domain",
            Limit::Throttled => "throttled",
        }
    }
}

/// Which line a job waits in (see the module's notes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Reset emails, password-changed notices and security notices (but the new-sign-in
    /// one): someone is waiting for them.
    Priority,
    /// What a stranger can cause: verification emails, account-exists and no-account notices;
    /// also new-sign-in notices (whoever has the password can cause them at will).
    Bulk,
}

/// The job being counted: its id, its line, who caused it, and its deadline.
#[derive(Debug, Clone, Copy)]
pub struct Ticket<'a> {
    pub job: Uuid,
    pub class: Class,
    /// The pseudonym of the client that caused the job (see [`requester_pseudonym`]), when the
    /// job names one.
    pub requester: Option<&'a str>,
    /// The job's `not_after`.
    pub deadline: chrono::DateTime<chrono::Utc>,
}

/// What the budgets say about one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Within every budget; the send has been counted.
    Send,
    /// Not now: come back after `wait` (the job's turn), because of `limit`.
    Wait { wait: Duration, limit: Limit },
    /// The job's turn would come after its deadline: it cannot be sent in time (it is stale
    /// by then), and it takes no place from the jobs that can.
    TooLate { limit: Limit },
}

/// Why the budgets could not be consulted. The job waits as for any outage of ours; it is
/// never sent unchecked.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    #[error("{0}")]
    Redis(#[from] RedisError),
    #[error("the send budget script answered an unknown verdict {0}")]
    UnknownVerdict(i64),
}

/// The settings of the send budgets and their scripts.
pub struct SendBudget {
    /// Sends per second to the provider; 0: no limit.
    provider_per_second: u32,
    /// Sends per minute to one recipient domain; 0: no limit.
    domain_per_minute: u32,
    /// The first pause of a domain after a throttling answer; zero: no pause (a throttling
    /// answer is an ordinary transient failure).
    throttle_pause: Duration,
    /// The share of a budget's rate one requester's bulk jobs may hold places for, in percent
    /// (100: no cap).
    requester_share_percent: u32,
    /// The domain budget's window: a minute (shorter only in tests).
    domain_window: Duration,
    take: Script,
    refund: Script,
    throttle: Script,
}

/// How many times a throttling pause may double (16 × the first pause at most).
const MAX_DOUBLINGS: u32 = 4;

/// The shortest wait a job is parked for: below it, re-publishing would cost more than the
/// wait and a budget whose turn is a millisecond away would make jobs spin.
const MIN_WAIT: Duration = Duration::from_millis(20);

const PROVIDER_WINDOW: Duration = Duration::from_secs(1);
/// One requester's share of a budget's bulk places, unless configured.
pub const DEFAULT_REQUESTER_SHARE_PERCENT: u32 = 25;
const DOMAIN_WINDOW: Duration = Duration::from_secs(60);

impl SendBudget {
    pub fn new(provider_per_second: u32, domain_per_minute: u32, throttle_pause: Duration) -> Self {
        Self {
            provider_per_second,
            domain_per_minute,
            throttle_pause,
            requester_share_percent: DEFAULT_REQUESTER_SHARE_PERCENT,
            domain_window: DOMAIN_WINDOW,
            take: Script::new(include_str!("send_budget.lua")),
            refund: Script::new(include_str!("send_budget_refund.lua")),
            throttle: Script::new(include_str!("throttle.lua")),
        }
    }

    /// With one requester's bulk jobs holding places for at most `percent` of a budget's rate
    /// (100: no cap).
    pub fn with_requester_share(mut self, percent: u32) -> Self {
        self.requester_share_percent = percent.clamp(1, 100);
        self
    }

    /// With the domain budget counted over `window` instead of a minute (tests only: the rate
    /// is still `SMTP_DOMAIN_MAX_PER_MINUTE` per window).
    pub fn with_domain_window(mut self, window: Duration) -> Self {
        self.domain_window = window;
        self
    }

    /// The places one requester may hold in a bulk line of a budget of `limit` per window; 0
    /// (no cap) at 100 %.
    fn requester_cap(&self, limit: u32) -> u32 {
        if self.requester_share_percent >= 100 {
            return 0;
        }
        (limit * self.requester_share_percent).div_ceil(100).max(1)
    }

    /// The places `ticket`'s requester may hold in the bulk line of the budget with `keys` and
    /// `limit` (0: no cap), and the key of those it holds. Priority jobs and jobs that name no
    /// requester (they cannot be told apart) are not capped.
    fn requester_places(
        &self,
        redis: &RedisPool,
        keys: &[String; 4],
        ticket: &Ticket<'_>,
        limit: u32,
    ) -> (u32, String) {
        match ticket.requester {
            Some(requester) if ticket.class == Class::Bulk => (
                self.requester_cap(limit),
                redis.keys().send_requester(keys, requester),
            ),
            _ => (0, redis.keys().send_requester(keys, "-")),
        }
    }

    /// Whether a throttling answer pauses its domain.
    pub fn pauses_on_throttling(&self) -> bool {
        !self.throttle_pause.is_zero()
    }

    /// Counts one send of `ticket`'s job to the domain whose [`domain_pseudonym`] is `domain`
    /// against the domain's budget and the provider's, or says how long the job waits for its
    /// turn.
    pub async fn take(
        &self,
        redis: &RedisPool,
        domain: &str,
        ticket: Ticket<'_>,
    ) -> Result<Decision, BudgetError> {
        let job = ticket.job;
        let domain_keys = redis.keys().send_domain(domain);
        let mut domain_grant = None;
        // The domain first: its pause and its budget need one call; with neither configured
        // (no per-domain limit, pauses off) nothing is asked.
        if self.domain_per_minute > 0 || self.pauses_on_throttling() {
            let grant = Uuid::new_v4();
            match self
                .run_take(redis, &domain_keys, Limit::Domain, &ticket, grant)
                .await?
            {
                Decision::Send if self.domain_per_minute > 0 => domain_grant = Some(grant),
                Decision::Send => {}
                other => return Ok(other),
            }
        }
        if self.provider_per_second == 0 {
            return Ok(Decision::Send);
        }
        let provider_keys = redis.keys().send_provider();
        let decision = self
            .run_take(
                redis,
                &provider_keys,
                Limit::Provider,
                &ticket,
                Uuid::new_v4(),
            )
            .await;
        let back_ms: i64 = match &decision {
            Ok(Decision::Send) => return decision,
            // Its place in the domain's line: when it comes back for the provider's turn.
            Ok(Decision::Wait { wait, .. }) => i64::try_from(wait.as_millis()).unwrap_or(i64::MAX),
            Ok(Decision::TooLate { .. }) | Err(_) => -1,
        };
        if let Some(grant) = domain_grant {
            // The domain allowed a send that does not happen now: give it back, so that a
            // waiting job has consumed no budget.
            let script = &self.refund;
            let keys = &domain_keys;
            let window_ms = millis(self.domain_window);
            let bulk = u8::from(ticket.class == Class::Bulk);
            let (cap, held) = self.requester_places(redis, keys, &ticket, self.domain_per_minute);
            let (capped, held) = (u8::from(cap > 0), &held);
            redis
                .run(|mut c| async move {
                    script
                        .key(&keys[0])
                        .key(&keys[1])
                        .key(&keys[2])
                        .key(&keys[3])
                        .key(held)
                        .arg(grant.to_string())
                        .arg(job.to_string())
                        .arg(window_ms)
                        .arg(back_ms)
                        .arg(bulk)
                        .arg(capped)
                        .invoke_async::<i64>(&mut c)
                        .await
                })
                .await?;
        }
        decision
    }

    async fn run_take(
        &self,
        redis: &RedisPool,
        keys: &[String; 4],
        which: Limit,
        ticket: &Ticket<'_>,
        grant: Uuid,
    ) -> Result<Decision, BudgetError> {
        let (limit, window) = if which == Limit::Provider {
            (self.provider_per_second, PROVIDER_WINDOW)
        } else {
            (self.domain_per_minute, self.domain_window)
        };
        let bulk = ticket.class == Class::Bulk;
        let (cap, held) = self.requester_places(redis, keys, ticket, limit);
        let script = &self.take;
        let window_ms = millis(window);
        let (job, deadline_ms) = (ticket.job, ticket.deadline.timestamp_millis());
        let held = &held;
        let (code, ms, pause_ms): (i64, i64, i64) = redis
            .run(|mut c| async move {
                script
                    .key(&keys[0])
                    .key(&keys[1])
                    .key(&keys[2])
                    .key(&keys[3])
                    .key(held)
                    .arg(window_ms)
                    .arg(limit)
                    .arg(job.to_string())
                    .arg(grant.to_string())
                    .arg(deadline_ms)
                    .arg(u8::from(bulk))
                    .arg(cap)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let ms = u64::try_from(ms).unwrap_or(0);
        match code {
            1 => Ok(Decision::Send),
            0 => Ok(Decision::Wait {
                wait: at_least_min(Duration::from_millis(ms)),
                limit: which,
            }),
            2 => Ok(Decision::Wait {
                wait: after_pause(
                    Duration::from_millis(ms),
                    Duration::from_millis(u64::try_from(pause_ms).unwrap_or(0)),
                ),
                limit: Limit::Throttled,
            }),
            3 => Ok(Decision::TooLate { limit: which }),
            other => Err(BudgetError::UnknownVerdict(other)),
        }
    }

    /// The provider answered a throttling code for mail to `domain`: pause the domain for every
    /// replica (longer each time it happens again soon after). Returns how long the job that
    /// got the answer waits.
    pub async fn throttled(&self, redis: &RedisPool, domain: &str) -> Result<Duration, RedisError> {
        let keys = redis.keys().send_domain(domain);
        let script = &self.throttle;
        let first_ms = millis(self.throttle_pause);
        let (left_ms, _level): (i64, i64) = redis
            .run(|mut c| async move {
                script
                    .key(&keys[2])
                    .arg(first_ms)
                    .arg(MAX_DOUBLINGS)
                    .invoke_async(&mut c)
                    .await
            })
            .await?;
        let left = Duration::from_millis(u64::try_from(left_ms).unwrap_or(0));
        Ok(after_pause(left, left))
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn at_least_min(wait: Duration) -> Duration {
    wait.max(MIN_WAIT)
}

/// When a job that met a paused domain comes back: after the pause, at a random moment within
/// one more pause length, so the jobs held by a pause do not all return in the same instant
/// (with a domain budget they then queue in its line as well).
pub fn after_pause(left: Duration, pause: Duration) -> Duration {
    let spread_ms = millis(pause).max(1);
    at_least_min(left + Duration::from_millis(rand::rng().random_range(0..spread_ms)))
}

/// The pseudonym of the client that caused a job (its IP as the api saw it: the address for
/// IPv4, the /48 for IPv6, since one subscriber may hold 65,536 /64s), for its share of a bulk
/// line; `None` without a readable IP.
pub fn requester_pseudonym(secret: &[u8], ip: Option<&str>) -> Option<String> {
    let ip: std::net::IpAddr = ip?.parse().ok()?;
    let subject = match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let network = std::net::Ipv6Addr::from(u128::from(v6) & (u128::MAX << 80));
            format!("{network}/48")
        }
    };
    Some(pseudonym(secret, "requester", &subject))
}

/// The pseudonym naming a recipient domain's budget: an HMAC, because a personal domain names
/// a person as surely as an address does.
pub fn domain_pseudonym(secret: &[u8], domain: &str) -> String {
    pseudonym(secret, "domain", domain)
}

/// The recipient domain of `to` (an address as the email will be addressed, after
/// normalisation: its domain is lower-case ASCII), lower-cased.
pub fn recipient_domain(to: &str) -> String {
    to.rsplit_once('@')
        .map_or("", |(_, domain)| domain)
        .trim()
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// The `domain_class` metrics label: one of a few large mailbox providers, or `other`. A fixed,
/// small set, so the label's cardinality stays bounded whatever the recipients.
pub const DOMAIN_CLASSES: [&str; 8] = [
    "gmail",
    "microsoft",
    "yahoo",
    "apple",
    "proton",
    "qq",
    "netease",
    "other",
];

/// The class of a recipient domain (see [`DOMAIN_CLASSES`]).
pub fn domain_class(domain: &str) -> &'static str {
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    // The first label decides for providers with a domain per country (hotmail.co.uk,
    // yahoo.co.jp, outlook.fr).
    let first = domain.split('.').next().unwrap_or("");
    match (domain.as_str(), first) {
        ("gmail.com" | "googlemail.com", _) => "gmail",
        (_, "hotmail" | "outlook" | "live")
        | ("msn.com" | "windowslive.com" | "passport.com", _) => "microsoft",
        (_, "yahoo") | ("ymail.com" | "rocketmail.com" | "aol.com" | "aim.com", _) => "yahoo",
        ("icloud.com" | "me.com" | "mac.com", _) => "apple",
        ("proton.me" | "protonmail.com" | "protonmail.ch" | "pm.me", _) => "proton",
        ("qq.com" | "foxmail.com", _) => "qq",
        ("163.com" | "126.com" | "yeah.net" | "188.com", _) => "netease",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    #![allow(
        clippy::disallowed_methods,
        reason = "tests compare with the wall clock"
    )]

    use shared::keys::Keys;

    use super::*;

    #[test]
    fn big_providers_have_a_class_and_everything_else_is_other() {
        for (domain, class) in [
            ("gmail.com", "gmail"),
            ("GoogleMail.com.", "gmail"),
            ("hotmail.co.uk", "microsoft"),
            ("outlook.fr", "microsoft"),
            ("live.com", "microsoft"),
            ("msn.com", "microsoft"),
            ("yahoo.co.jp", "yahoo"),
            ("aol.com", "yahoo"),
            ("icloud.com", "apple"),
            ("me.com", "apple"),
            ("proton.me", "proton"),
            ("qq.com", "qq"),
            ("163.com", "netease"),
            ("example.org", "other"),
            ("gmail.com.evil.example", "other"),
            ("mail.hotmail-lookalike.example", "other"),
            ("", "other"),
        ] {
            assert_eq!(domain_class(domain), class, "{domain}");
            assert!(DOMAIN_CLASSES.contains(&domain_class(domain)));
        }
    }

    #[test]
    fn a_requester_is_an_ipv4_address_or_an_ipv6_48() {
        let p = |ip: &str| requester_pseudonym(b"k", Some(ip));
        assert_eq!(p("2001:db8:1:2::1"), p("2001:db8:1:ffff:9::7"));
        assert_ne!(p("2001:db8:1::1"), p("2001:db8:2::1"));
        assert_ne!(p("192.0.2.1"), p("192.0.2.2"));
        assert_eq!(p("not an ip"), None);
        assert_eq!(requester_pseudonym(b"k", None), None);
    }

    #[test]
    fn the_recipient_domain_is_the_part_after_the_last_at() {
        assert_eq!(recipient_domain("ann@Example.ORG"), "example.org");
        assert_eq!(
            recipient_domain("\"a@b\"@xn--bcher-kva.de"),
            "xn--bcher-kva.de"
        );
        assert_eq!(recipient_domain("no-domain"), "");
    }

    #[test]
    fn a_pause_sends_its_jobs_back_spread_over_one_more_pause() {
        let pause = Duration::from_secs(60);
        let left = Duration::from_secs(40);
        let waits: Vec<Duration> = (0..500).map(|_| after_pause(left, pause)).collect();
        assert!(waits.iter().all(|w| *w >= left && *w < left + pause));
        let early = waits.iter().filter(|w| **w < left + pause / 2).count();
        assert!(
            (150..350).contains(&early),
            "{early} of 500 in the first half"
        );
        assert_eq!(after_pause(Duration::ZERO, Duration::ZERO), MIN_WAIT);
    }

    // The scripts against the real Redis (TEST_REDIS_URL), one key namespace per test.

    fn pool() -> RedisPool {
        RedisPool::new(
            &e2e::redis_url(),
            Keys::new(format!("send-{}:", e2e::unique_id())),
        )
        .unwrap()
    }

    fn waited(d: Decision) -> Option<(Duration, Limit)> {
        match d {
            Decision::Send => None,
            Decision::Wait { wait, limit } => Some((wait, limit)),
            Decision::TooLate { .. } => panic!("no deadline was near"),
        }
    }

    /// A priority job's ticket (no requester).
    fn priority(job: Uuid, deadline: chrono::DateTime<chrono::Utc>) -> Ticket<'static> {
        Ticket {
            job,
            class: Class::Priority,
            requester: None,
            deadline,
        }
    }

    /// A deadline no test reaches.
    fn far() -> chrono::DateTime<chrono::Utc> {
        chrono::Utc::now() + chrono::Duration::hours(1)
    }

    #[tokio::test]
    async fn a_burst_over_the_domain_budget_gets_places_spaced_at_its_rate() {
        let redis = pool();
        let budget = SendBudget::new(0, 6, Duration::ZERO);
        let mut sent = 0;
        let mut waits = Vec::new();
        for _ in 0..10 {
            match waited(
                budget
                    .take(&redis, "dom", priority(Uuid::new_v4(), far()))
                    .await
                    .unwrap(),
            ) {
                None => sent += 1,
                Some((wait, limit)) => {
                    assert_eq!(limit, Limit::Domain);
                    waits.push(wait);
                }
            }
        }
        assert_eq!(sent, 6, "the budget's worth goes at once");
        // The first waiter's turn is when the first send leaves the minute; each next one
        // 60 s / 6 = 10 s later.
        assert!(
            waits[0] > Duration::from_secs(58) && waits[0] <= Duration::from_secs(60),
            "{waits:?}"
        );
        // (Each wait is measured from its own call, so a slow machine shortens the gaps by
        // the time between the calls.)
        for pair in waits.windows(2) {
            let gap = pair[1].saturating_sub(pair[0]);
            assert!(
                gap >= Duration::from_millis(8_000) && gap <= Duration::from_millis(10_100),
                "{waits:?}"
            );
        }
        // Another domain has its own budget.
        assert_eq!(
            budget
                .take(&redis, "other", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
            Decision::Send
        );
    }

    #[tokio::test]
    async fn a_waiting_job_keeps_its_place_and_is_counted_once_when_its_turn_comes() {
        let redis = pool();
        // 5 per second to the provider: a window of one second, places 200 ms apart.
        let budget = SendBudget::new(5, 0, Duration::ZERO);
        for _ in 0..5 {
            assert_eq!(
                budget
                    .take(&redis, "d", priority(Uuid::new_v4(), far()))
                    .await
                    .unwrap(),
                Decision::Send
            );
        }
        let job = Uuid::new_v4();
        let (first, limit) = waited(
            budget
                .take(&redis, "d", priority(job, far()))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(limit, Limit::Provider);
        // Asking again before its turn gives the same turn, not a new place at the back.
        let (again, _) = waited(
            budget
                .take(&redis, "d", priority(job, far()))
                .await
                .unwrap(),
        )
        .unwrap();
        assert!(again <= first, "{again:?} after {first:?}");
        // A newcomer queues behind it.
        let (behind, _) = waited(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
        )
        .unwrap();
        assert!(behind > first, "{behind:?} vs {first:?}");
        tokio::time::sleep(first + Duration::from_millis(30)).await;
        assert_eq!(
            budget
                .take(&redis, "d", priority(job, far()))
                .await
                .unwrap(),
            Decision::Send
        );
    }

    #[tokio::test]
    async fn a_job_the_provider_refuses_gives_its_domain_send_back() {
        let redis = pool();
        let budget = SendBudget::new(1, 2, Duration::ZERO);
        assert_eq!(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
            Decision::Send
        );
        // The domain has room for one more, the provider has none this second.
        let job = Uuid::new_v4();
        let (_, limit) = waited(
            budget
                .take(&redis, "d", priority(job, far()))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(limit, Limit::Provider);
        let log = redis.keys().send_domain("d")[0].clone();
        let logged: u64 = redis
            .run(|mut c| async move { redis::cmd("ZCARD").arg(&log).query_async(&mut c).await })
            .await
            .unwrap();
        assert_eq!(logged, 1, "the refused job holds no domain send");
        // Once the provider's second has passed, the job goes and the domain is full.
        let sent = e2e::poll_until(Duration::from_secs(5), || async {
            (budget
                .take(&redis, "d", priority(job, far()))
                .await
                .unwrap()
                == Decision::Send)
                .then_some(())
        })
        .await;
        assert!(sent.is_some());
        let (_, limit) = waited(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(limit, Limit::Domain);
    }

    #[tokio::test]
    async fn a_turn_after_the_jobs_deadline_takes_no_place() {
        let redis = pool();
        let budget = SendBudget::new(0, 1, Duration::ZERO);
        let soon = chrono::Utc::now() + chrono::Duration::seconds(5);
        assert_eq!(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), soon))
                .await
                .unwrap(),
            Decision::Send
        );
        // The next turn is a minute away: past a deadline 5 s away.
        assert_eq!(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), soon))
                .await
                .unwrap(),
            Decision::TooLate {
                limit: Limit::Domain
            }
        );
        let line = redis.keys().send_domain("d")[1].clone();
        let places: u64 = redis
            .run(|mut c| async move { redis::cmd("ZCARD").arg(&line).query_async(&mut c).await })
            .await
            .unwrap();
        assert_eq!(places, 0, "no place taken");
        // A job that can wait gets the first turn, not one behind the job that could not.
        let (wait, _) = waited(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
        )
        .unwrap();
        assert!(wait <= Duration::from_secs(60), "{wait:?}");
    }

    #[tokio::test]
    async fn a_throttling_answer_pauses_the_domain_and_doubles_when_it_comes_again() {
        let redis = pool();
        let budget = SendBudget::new(0, 0, Duration::from_millis(1_000));
        assert_eq!(
            budget
                .take(&redis, "slow", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
            Decision::Send
        );
        let wait = budget.throttled(&redis, "slow").await.unwrap();
        assert!(
            wait >= Duration::from_millis(900) && wait < Duration::from_millis(2_000),
            "{wait:?}"
        );
        let (wait, limit) = waited(
            budget
                .take(&redis, "slow", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
        )
        .unwrap();
        assert_eq!(limit, Limit::Throttled);
        assert!(wait >= Duration::from_millis(500), "{wait:?}");
        // Other domains are not paused.
        assert_eq!(
            budget
                .take(&redis, "fast", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
            Decision::Send
        );
        // A second answer during the pause does not lengthen it.
        let again = budget.throttled(&redis, "slow").await.unwrap();
        assert!(again < Duration::from_millis(2_000), "{again:?}");
        // After the pause the domain sends again; throttled again soon after, it pauses twice
        // as long.
        // (The state outlives a pause by one more pause: a second of slack.)
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        assert_eq!(
            budget
                .take(&redis, "slow", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
            Decision::Send
        );
        let keys = redis.keys().send_domain("slow");
        budget.throttled(&redis, "slow").await.unwrap();
        let throttle = keys[2].clone();
        let (pause, level): (u64, u64) = redis
            .run(|mut c| async move {
                redis::cmd("HMGET")
                    .arg(&throttle)
                    .arg("pause")
                    .arg("level")
                    .query_async(&mut c)
                    .await
            })
            .await
            .unwrap();
        assert_eq!((pause, level), (2_000, 2));
        assert!(!keys[2].contains("slow@"), "{}", keys[2]);
    }

    #[tokio::test]
    async fn without_budgets_or_pauses_nothing_is_asked_of_redis() {
        // An unreachable Redis: any call would fail.
        let redis = RedisPool::new("redis://127.0.0.1:1", Keys::new("x:")).unwrap();
        let budget = SendBudget::new(0, 0, Duration::ZERO);
        assert_eq!(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), far()))
                .await
                .unwrap(),
            Decision::Send
        );
        let budget = SendBudget::new(0, 10, Duration::ZERO);
        assert!(
            budget
                .take(&redis, "d", priority(Uuid::new_v4(), far()))
                .await
                .is_err()
        );
    }

    /// Serves `jobs` as the workers would: each asks at its turn (its next try), a wait sends
    /// it back for its turn, until `sends` were allowed; the order they were sent in.
    async fn serve(
        redis: &RedisPool,
        budget: &SendBudget,
        jobs: &[(&str, Ticket<'_>)],
        sends: usize,
    ) -> Vec<String> {
        let start = tokio::time::Instant::now();
        let mut next: Vec<Option<tokio::time::Instant>> = vec![Some(start); jobs.len()];
        let mut order = Vec::new();
        while order.len() < sends {
            let Some((i, at)) = next
                .iter()
                .enumerate()
                .filter_map(|(i, at)| at.map(|at| (i, at)))
                .min_by_key(|(_, at)| *at)
            else {
                break;
            };
            tokio::time::sleep_until(at).await;
            let (name, ticket) = jobs[i];
            match budget.take(redis, "gmail", ticket).await.unwrap() {
                Decision::Send => {
                    order.push(name.to_owned());
                    next[i] = None;
                }
                Decision::Wait { wait, .. } => next[i] = Some(tokio::time::Instant::now() + wait),
                Decision::TooLate { .. } => next[i] = None,
            }
            assert!(start.elapsed() < Duration::from_secs(30), "{order:?}");
        }
        order
    }

    #[tokio::test]
    async fn reset_emails_go_before_a_flood_of_sign_ups_and_no_requester_holds_the_bulk_line() {
        let redis = pool();
        // 20 a window (a short one, so the test is quick), one requester 25 % of it.
        let budget = SendBudget::new(0, 20, Duration::ZERO)
            .with_domain_window(Duration::from_millis(1000))
            .with_requester_share(25);
        let ticket = |class, requester| Ticket {
            job: Uuid::new_v4(),
            class,
            requester,
            deadline: far(),
        };
        // 200 sign-ups from one client fill the first window and queue behind it...
        let flood: Vec<(&str, Ticket<'_>)> = (0..200)
            .map(|_| ("flood", ticket(Class::Bulk, Some("client-a"))))
            .collect();
        let first = serve(&redis, &budget, &flood[..20], 20).await;
        assert_eq!(first.len(), 20);
        // ... then three sign-ups from someone else and five reset emails come in.
        let mut jobs = flood[20..].to_vec();
        jobs.extend((0..3).map(|_| ("other", ticket(Class::Bulk, Some("client-b")))));
        jobs.extend((0..5).map(|_| ("reset", ticket(Class::Priority, None))));
        let order = serve(&redis, &budget, &jobs, 13).await;
        assert_eq!(
            &order[..5],
            ["reset"; 5],
            "the reset emails go first: {order:?}"
        );
        let others = order[5..].iter().filter(|o| *o == "other").count();
        assert_eq!(
            others, 3,
            "the other client's sign-ups are not held behind the flood: {order:?}"
        );
    }
}
