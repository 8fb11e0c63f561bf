//! Planning a job, without I/O: what it needs looked up ([`Planner::lookup`]), what it means
//! given the account found ([`Planner::decide`]), and which plans the suppression list turns
//! into drops ([`drop_suppressed`]). The processor does the lookups (one statement per batch)
//! and carries the plans out (see [`crate::process`]).

use std::net::IpAddr;

use chrono::{DateTime, Utc};
use shared::{
    audit, email, links,
    message::{Envelope, Job, SecurityEvent},
};
use uuid::Uuid;

use crate::{render::EmailContent, send_budget};

/// What the worker needs to know about a recipient.
pub use shared::account::Account as Recipient;

/// What a job asks for, after the lookups.
#[allow(
    clippy::large_enum_variant,
    reason = "a plan lives while its one job is handled; boxing the draft would only add an allocation"
)]
pub enum Plan {
    /// Send this email to `to`.
    Send {
        to: String,
        draft: Draft,
        user: Option<Uuid>,
        /// The account's own languages, most wanted first: they win over the job's (those
        /// of whichever browser caused the email). Empty: the job's.
        languages: Vec<String>,
    },
    /// Send nothing, for this reason.
    Drop {
        reason: audit::Outcome,
        user: Option<Uuid>,
    },
    /// A dependency of ours (the database) could not tell: the job is tried again later,
    /// without spending a delivery attempt.
    DependencyDown(String),
}

impl Plan {
    /// The account the job is about, when known.
    pub fn user(&self) -> Option<Uuid> {
        match self {
            Plan::Send { user, .. } | Plan::Drop { user, .. } => *user,
            Plan::DependencyDown(_) => None,
        }
    }
}

/// The email a job will send, before a link in it is minted.
///
/// Links are minted only once the recipient's budget has let the email through: minting
/// bumps the account's token generation, which kills the links it already holds, and a
/// refused email must not leave its owner with none.
pub enum Draft {
    /// Nothing left to mint.
    Ready(EmailContent),
    /// A reset link for this account.
    PasswordReset {
        recipient: Recipient,
        requested_from_ip: Option<String>,
    },
    /// A verification link for this account.
    EmailVerification { recipient: Recipient },
    /// The password-changed notice, with a "this wasn't me" link for this account.
    PasswordChanged {
        recipient: Recipient,
        changed_at: chrono::DateTime<chrono::Utc>,
        from_ip: Option<String>,
        /// The password version the change made.
        version: i32,
    },
    /// A security notice, with a "this wasn't me" link while the account's password version
    /// is still the event's.
    SecurityNotice {
        recipient: Recipient,
        /// The password version when the event happened.
        version: i32,
        /// When the event happened (the job's creation).
        at: chrono::DateTime<chrono::Utc>,
        from_ip: Option<String>,
        event: SecurityEvent,
    },
}

impl Draft {
    /// Whether the email counts against the recipient's budget (`MAIL_PER_RECIPIENT_PER_HOUR`).
    ///
    /// Counted: what a stranger can make us send to any address at will (verification emails
    /// and account-exists notices through sign-up, no-account notices through forgot-password),
    /// and the new-sign-in notice, which whoever has the password can cause at will (one
    /// sign-in after another from fresh browsers).
    /// Not counted: reset emails, which have their own per-address budget counted by the api
    /// (`RATE_LIMIT_EMAIL_PER_HOUR`), the password-changed notice, which only a completed
    /// reset triggers, and the other security notices (a recovery code spent, a second factor
    /// added or removed, recovery codes replaced), each a deliberate act on the account.
    /// Otherwise a stranger signing up someone's address a few times an hour could crowd out
    /// that person's own reset email, or hide the notice of a reset.
    pub fn counts_against_recipient_budget(&self) -> bool {
        self.send_class() == send_budget::Class::Bulk
    }

    /// The send line the email waits in under the send budgets: the same split as the
    /// recipient's budget (what a stranger can cause waits behind what a person waits for).
    pub fn send_class(&self) -> send_budget::Class {
        match self {
            Draft::SecurityNotice {
                event: SecurityEvent::NewSignIn { .. },
                ..
            }
            | Draft::Ready(_)
            | Draft::EmailVerification { .. } => send_budget::Class::Bulk,
            Draft::PasswordReset { .. }
            | Draft::PasswordChanged { .. }
            | Draft::SecurityNotice { .. } => send_budget::Class::Priority,
        }
    }
}

/// What a job needs looked up before it can be planned.
#[allow(
    clippy::large_enum_variant,
    reason = "short-lived like the plan it may hold"
)]
pub enum Lookup {
    /// Decided without the database.
    Ready(Plan),
    /// The account with this address key, if any.
    ByEmailKey(String),
    /// The account with this id, if any.
    ById(Uuid),
}

/// What planning needs to know besides the job and its account.
pub struct Planner<'a> {
    /// `PUBLIC_BASE_URL`, where the links in emails lead.
    pub public_base_url: &'a str,
    /// `NOTIFY_UNKNOWN_RECIPIENTS`: tell an address without an account that someone asked.
    pub notify_unknown_recipients: bool,
    pub now: DateTime<Utc>,
}

impl Planner<'_> {
    /// What `job` needs looked up, or its plan when it needs nothing.
    pub fn lookup(&self, job: &Envelope) -> Lookup {
        if job.is_stale(self.now) {
            // Its link would be dead or its news old; sending it would only confuse.
            return Lookup::Ready(Plan::Drop {
                reason: audit::Outcome::Stale,
                user: None,
            });
        }
        match &job.job {
            Job::PasswordResetRequested {
                email,
                within_budget,
                ..
            } => {
                if !within_budget {
                    return Lookup::Ready(Plan::Drop {
                        reason: audit::Outcome::DroppedOverBudget,
                        user: None,
                    });
                }
                match email::normalize(email) {
                    Ok(address) => Lookup::ByEmailKey(address.key().to_owned()),
                    Err(_) => Lookup::Ready(Plan::Drop {
                        reason: audit::Outcome::DroppedInvalidAddress,
                        user: None,
                    }),
                }
            }
            Job::EmailVerification { user_id, .. }
            | Job::PasswordChanged { user_id, .. }
            | Job::SecurityNotice { user_id, .. } => Lookup::ById(*user_id),
            // The notice goes to the account's stored spelling, never the one the stranger
            // typed (which may differ in case and bounce, and must not decide where the
            // owner's mail goes or whether it is suppressed).
            Job::AccountExistsNotice { email, .. } => match email::normalize(email) {
                Ok(address) => Lookup::ByEmailKey(address.key().to_owned()),
                Err(_) => Lookup::Ready(Plan::Drop {
                    reason: audit::Outcome::DroppedInvalidAddress,
                    user: None,
                }),
            },
        }
    }

    /// The plan of a job that needed an account looked up, given what was found.
    pub fn decide(&self, job: &Envelope, found: Option<&Recipient>) -> Plan {
        match &job.job {
            Job::PasswordResetRequested {
                user_id: Some(expected),
                ..
            } if found.map(|user| user.id) != Some(*expected) => drop_unknown(Some(*expected)),
            Job::PasswordResetRequested { email, ip, .. } => {
                self.reset(email, ip.as_deref(), found)
            }
            Job::EmailVerification { user_id, .. } => verification(*user_id, found),
            Job::PasswordChanged {
                user_id,
                password_version,
                ip,
                ..
            } => {
                let Some(user) = found else {
                    return drop_unknown(Some(*user_id));
                };
                // The notice goes to the address on file now, and only if the change it
                // announces happened: a later change does not make it untrue; an undone one
                // (its version is listed as undone; the undo moved the version forward) does.
                if user.password_version < *password_version
                    || user.undone_password_versions.contains(password_version)
                {
                    return Plan::Drop {
                        reason: audit::Outcome::DroppedRolledBack,
                        user: Some(user.id),
                    };
                }
                send_to(
                    user,
                    Draft::PasswordChanged {
                        recipient: user.clone(),
                        changed_at: job.created_at,
                        from_ip: checked_ip(ip.as_deref()),
                        version: *password_version,
                    },
                )
            }
            Job::AccountExistsNotice { email, .. } => self.account_exists(email, found),
            // True whatever happened to the account since: to the address on file now, while
            // the account exists.
            Job::SecurityNotice {
                user_id,
                ip,
                event,
                password_version,
                ..
            } => match found {
                None => drop_unknown(Some(*user_id)),
                Some(user) => send_to(
                    user,
                    Draft::SecurityNotice {
                        recipient: user.clone(),
                        version: *password_version,
                        at: job.created_at,
                        from_ip: checked_ip(ip.as_deref()),
                        event: checked_event(event),
                    },
                ),
            },
        }
    }

    /// A reset link for an account; for an unknown address nothing, or (with
    /// `NOTIFY_UNKNOWN_RECIPIENTS`) the no-account notice.
    fn reset(&self, email: &str, ip: Option<&str>, found: Option<&Recipient>) -> Plan {
        if let Some(user) = found {
            let requested_from_ip = checked_ip(ip);
            let recipient = user.clone();
            return send_to(
                user,
                Draft::PasswordReset {
                    recipient,
                    requested_from_ip,
                },
            );
        }
        if !self.notify_unknown_recipients {
            return drop_unknown(None);
        }
        match email::normalize(email) {
            Ok(address) => Plan::Send {
                to: address.address().to_owned(),
                draft: Draft::Ready(EmailContent::NoAccount {
                    sign_up_url: format!("{}/", self.public_base_url),
                }),
                user: None,
                languages: Vec::new(),
            },
            Err(_) => Plan::Drop {
                reason: audit::Outcome::DroppedInvalidAddress,
                user: None,
            },
        }
    }

    /// The account-exists notice: to the account's own spelling when it is found; to the
    /// typed one (normalised) only when the account is gone since the attempt (as notices
    /// were sent before). An erasure deletes the notices still in the outbox (see the api's
    /// `admin::Desk::erase`); one already on the broker still goes out.
    fn account_exists(&self, email: &str, found: Option<&Recipient>) -> Plan {
        let base = self.public_base_url;
        Plan::Send {
            to: found.map_or_else(
                || {
                    email::normalize(email)
                        .map_or_else(|_| email.to_owned(), |a| a.address().to_owned())
                },
                |user| user.email.clone(),
            ),
            draft: Draft::Ready(EmailContent::AccountExists {
                sign_in_url: format!("{base}/"),
                forgot_password_url: links::page(base, links::FORGOT_PASSWORD_PATH),
            }),
            user: found.map(|user| user.id),
            languages: found.map(Recipient::languages).unwrap_or_default(),
        }
    }

    /// The plans of `jobs`, given their lookups and the accounts found for all of them
    /// (`Err`: the lookup failed, and every job that needed it waits).
    pub fn plans(
        &self,
        jobs: &[&Envelope],
        lookups: Vec<Lookup>,
        found: Result<&[Recipient], &str>,
    ) -> Vec<Plan> {
        lookups
            .into_iter()
            .zip(jobs)
            .map(|(lookup, job)| {
                let decide = |matches: &dyn Fn(&Recipient) -> bool| match found {
                    Ok(users) => self.decide(job, users.iter().find(|u| matches(u))),
                    Err(e) => Plan::DependencyDown(e.to_owned()),
                };
                match lookup {
                    Lookup::Ready(plan) => plan,
                    Lookup::ByEmailKey(key) => decide(&|u| u.email_key == key),
                    Lookup::ById(id) => decide(&|u| u.id == id),
                }
            })
            .collect()
    }
}

/// A verification link, only for an unverified account that still exists.
fn verification(user_id: Uuid, found: Option<&Recipient>) -> Plan {
    match found {
        None => drop_unknown(Some(user_id)),
        Some(user) if user.email_verified => Plan::Drop {
            reason: audit::Outcome::DroppedAlreadyVerified,
            user: Some(user.id),
        },
        Some(user) => send_to(
            user,
            Draft::EmailVerification {
                recipient: user.clone(),
            },
        ),
    }
}

/// `draft` to the address on file of `user`.
fn send_to(user: &Recipient, draft: Draft) -> Plan {
    Plan::Send {
        to: user.email.clone(),
        draft,
        user: Some(user.id),
        languages: user.languages(),
    }
}

fn drop_unknown(user: Option<Uuid>) -> Plan {
    Plan::Drop {
        reason: audit::Outcome::DroppedUnknown,
        user,
    }
}

/// The email addresses the accounts of `lookups` are looked up by, and their ids.
pub fn wanted(lookups: &[Lookup]) -> (Vec<&str>, Vec<Uuid>) {
    let mut email_keys = Vec::new();
    let mut ids = Vec::new();
    for lookup in lookups {
        match lookup {
            Lookup::ByEmailKey(key) => email_keys.push(key.as_str()),
            Lookup::ById(id) => ids.push(*id),
            Lookup::Ready(_) => {}
        }
    }
    (email_keys, ids)
}

/// The address key and spelling of every plan that sends (`None` for the others), as the
/// suppression list is asked about them.
pub fn recipients(plans: &[Plan]) -> Vec<Option<(String, String)>> {
    plans
        .iter()
        .map(|plan| match plan {
            Plan::Send { to, .. } => Some((address_key(to), deliverable(to))),
            _ => None,
        })
        .collect()
}

/// Turns the plans that would mail a suppressed address into drops, given the
/// [`recipients`] of the plans and the suppressed spellings among them. When the list
/// could not be read (`Err`), those plans wait: mail to an address that may be suppressed is
/// not sent unchecked.
pub fn drop_suppressed(
    plans: Vec<Plan>,
    recipients: Vec<Option<(String, String)>>,
    suppressed: Result<&[String], &str>,
) -> Vec<Plan> {
    plans
        .into_iter()
        .zip(recipients)
        .map(|(plan, recipient)| match (plan, recipient, suppressed) {
            (Plan::Send { user, .. }, Some((_, to)), Ok(list)) if list.contains(&to) => {
                Plan::Drop {
                    reason: audit::Outcome::DroppedSuppressed,
                    user,
                }
            }
            (_, Some(_), Err(e)) => Plan::DependencyDown(e.to_owned()),
            (plan, ..) => plan,
        })
        .collect()
}

/// The spelling mail to `to` goes out with (and is suppressed under): normalised, the domain
/// in lower-case ASCII, the local part as it is.
pub fn deliverable(to: &str) -> String {
    email::normalize(to).map_or_else(|_| to.to_owned(), |a| a.address().to_owned())
}

/// The key an address is suppressed under (see [`shared::email`]); an address that does not
/// parse is keyed by its lower-cased text.
pub fn address_key(to: &str) -> String {
    email::normalize(to).map_or_else(|_| to.to_lowercase(), |a| a.key().to_owned())
}

/// An IP from the job, only if it really is one: the text part shows it verbatim, so a
/// forged job must not be able to add lines to the email.
fn checked_ip(ip: Option<&str>) -> Option<String> {
    ip.and_then(|ip| ip.parse::<IpAddr>().ok())
        .map(|ip| ip.to_string())
}

/// The event with what the email shows verbatim made safe: the device's name on one line of
/// printable characters and at most [`MAX_DEVICE_CHARS`] (the api names it from the
/// User-Agent, which the client chooses), the network only if it really is one.
fn checked_event(event: &SecurityEvent) -> SecurityEvent {
    match event {
        SecurityEvent::NewSignIn { device, ip_prefix } => SecurityEvent::NewSignIn {
            device: checked_device(device),
            ip_prefix: ip_prefix.as_deref().and_then(checked_prefix),
        },
        other => other.clone(),
    }
}

/// Longest device name an email shows.
const MAX_DEVICE_CHARS: usize = 60;

/// `device` without control characters or invisible ones (zero-width, bidirectional
/// overrides: they could make the name read as something else), its whitespace runs one
/// space, cut to [`MAX_DEVICE_CHARS`] (empty: the email names no device).
fn checked_device(device: &str) -> String {
    let invisible = |c: char| {
        c.is_control()
            || matches!(
                c,
                '\u{200b}'..='\u{200f}'
                    | '\u{202a}'..='\u{202e}'
                    | '\u{2060}'..='\u{2069}'
                    | '\u{feff}'
            )
    };
    let words: Vec<String> = (device.split_whitespace())
        .map(|word| word.chars().filter(|&c| !invisible(c)).collect::<String>())
        .filter(|word| !word.is_empty())
        .collect();
    let line = words.join(" ");
    match line.char_indices().nth(MAX_DEVICE_CHARS) {
        Some((end, _)) => format!("{}…", line[..end].trim_end()),
        None => line,
    }
}

/// A network (`203.0.113.0/24`, `2001:db8::/64`) in its canonical spelling, only if it is
/// one: an address and a prefix length its family allows. Never narrower than a /24 or a
/// /64, host bits cleared: a notice names the network, never the address.
fn checked_prefix(prefix: &str) -> Option<String> {
    let (address, length) = prefix.split_once('/')?;
    let address = address.parse::<IpAddr>().ok()?;
    let length = length.parse::<u8>().ok()?;
    let (max, widest_shown) = if address.is_ipv4() {
        (32, 24)
    } else {
        (128, 64)
    };
    if length > max {
        return None;
    }
    let length = length.min(widest_shown);
    let bits = if address.is_ipv4() { 32 } else { 128 };
    let network = match address {
        IpAddr::V4(v4) => {
            let mask = u32::MAX.checked_shl(bits - u32::from(length)).unwrap_or(0);
            IpAddr::V4((u32::from(v4) & mask).into())
        }
        IpAddr::V6(v6) => {
            let mask = u128::MAX.checked_shl(bits - u32::from(length)).unwrap_or(0);
            IpAddr::V6((u128::from(v6) & mask).into())
        }
    };
    Some(format!("{network}/{length}"))
}

#[cfg(test)]
mod tests;
