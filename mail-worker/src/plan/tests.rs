//! Planning per job kind and account state.
#![allow(
    clippy::disallowed_methods,
    reason = "tests compare with the wall clock"
)]

use super::*;
use shared::message::Factor;

#[test]
fn only_mail_a_stranger_can_trigger_at_will_counts_against_the_recipient_budget() {
    let url = || "https://account.example.test/x".to_owned();
    let counted = [
        Draft::Ready(EmailContent::AccountExists {
            sign_in_url: url(),
            forgot_password_url: url(),
        }),
        Draft::Ready(EmailContent::NoAccount { sign_up_url: url() }),
    ];
    assert!(counted.iter().all(Draft::counts_against_recipient_budget));
    let recipient = || Recipient {
        id: Uuid::nil(),
        email_key: "ann@example.org".into(),
        email: "ann@example.org".into(),
        password_version: 1,
        email_verified: false,
        undone_password_versions: Vec::new(),
        locale: None,
    };
    let reset = Draft::PasswordReset {
        recipient: recipient(),
        requested_from_ip: None,
    };
    assert!(!reset.counts_against_recipient_budget());
    let changed = Draft::PasswordChanged {
        recipient: recipient(),
        changed_at: chrono::Utc::now(),
        from_ip: None,
        version: 1,
    };
    assert!(!changed.counts_against_recipient_budget());
    let verification = Draft::EmailVerification {
        recipient: recipient(),
    };
    assert!(verification.counts_against_recipient_budget());
    // Of the security notices, only the new sign-in's: whoever has the password can cause
    // as many as they like. The others go first, like the password-changed notice.
    let security = |event| Draft::SecurityNotice {
        recipient: recipient(),
        version: 1,
        at: chrono::Utc::now(),
        from_ip: None,
        event,
    };
    let sign_in = security(SecurityEvent::NewSignIn {
        device: "Firefox on Linux".into(),
        ip_prefix: None,
    });
    assert!(sign_in.counts_against_recipient_budget());
    assert_eq!(sign_in.send_class(), send_budget::Class::Bulk);
    for event in [
        SecurityEvent::RecoveryCodeUsed { remaining: 3 },
        SecurityEvent::FactorAdded {
            factor: Factor::Passkey,
        },
        SecurityEvent::FactorRemoved {
            factor: Factor::Totp,
            by_support: true,
        },
        SecurityEvent::RecoveryCodesReplaced,
    ] {
        let notice = security(event);
        assert!(!notice.counts_against_recipient_budget());
        assert_eq!(notice.send_class(), send_budget::Class::Priority);
    }
}

const BASE: &str = "https://account.example.test";

fn planner(notify_unknown_recipients: bool) -> Planner<'static> {
    Planner {
        public_base_url: BASE,
        notify_unknown_recipients,
        now: DateTime::parse_from_rfc3339("2026-11-26T10:00:00Z")
            .expect("time")
            .with_timezone(&Utc),
    }
}

fn envelope(job: Job) -> Envelope {
    let at = planner(false).now;
    let trace = shared::message::Trace::default();
    Envelope::new(job, at, chrono::Duration::hours(1), "en", trace)
}

fn reset(email: &str, ip: Option<&str>, within_budget: bool) -> Envelope {
    envelope(Job::PasswordResetRequested {
        email: email.into(),
        ip: ip.map(str::to_owned),
        within_budget,
        user_id: None,
    })
}

fn verification(user_id: Uuid) -> Envelope {
    envelope(Job::EmailVerification {
        user_id,
        email: "typed@example.org".into(),
        ip: None,
    })
}

fn changed(user_id: Uuid, password_version: i32) -> Envelope {
    envelope(Job::PasswordChanged {
        user_id,
        email: "typed@example.org".into(),
        ip: Some("198.51.100.7".into()),
        password_version,
    })
}

fn security(user_id: Uuid, ip: Option<&str>, event: SecurityEvent) -> Envelope {
    envelope(Job::SecurityNotice {
        user_id,
        email: "typed@example.org".into(),
        ip: ip.map(str::to_owned),
        password_version: 1,
        event,
    })
}

fn signed_in(device: &str, ip_prefix: Option<&str>) -> SecurityEvent {
    SecurityEvent::NewSignIn {
        device: device.into(),
        ip_prefix: ip_prefix.map(str::to_owned),
    }
}

fn notice(email: &str) -> Envelope {
    envelope(Job::AccountExistsNotice {
        email: email.into(),
        ip: None,
    })
}

fn account(verified: bool, password_version: i32, undone: &[i32]) -> Recipient {
    Recipient {
        id: Uuid::from_u128(7),
        email_key: "ann@example.org".into(),
        email: "Ann@Example.org".into(),
        password_version,
        email_verified: verified,
        undone_password_versions: undone.to_vec(),
        locale: None,
    }
}

/// A plan in one line: `send <to> <email>`, `drop <reason> <user>`, `down: <why>`.
fn summary(plan: &Plan) -> String {
    let user = |user: &Option<Uuid>| user.map_or("-".to_owned(), |u| u.as_u128().to_string());
    match plan {
        Plan::Send {
            to, draft, user: u, ..
        } => {
            let email = match draft {
                Draft::Ready(EmailContent::NoAccount { .. }) => "no_account".to_owned(),
                Draft::Ready(EmailContent::AccountExists { .. }) => "account_exists".to_owned(),
                Draft::Ready(other) => format!("{other:?}"),
                Draft::PasswordReset {
                    requested_from_ip, ..
                } => format!("reset from {requested_from_ip:?}"),
                Draft::EmailVerification { .. } => "verification".to_owned(),
                Draft::PasswordChanged {
                    version, from_ip, ..
                } => format!("changed v{version} from {from_ip:?}"),
                Draft::SecurityNotice {
                    event, from_ip, at, ..
                } => {
                    let class = format!("{:?}", draft.send_class()).to_lowercase();
                    let at = at.format("%H:%M");
                    format!("security {class} at {at} from {from_ip:?}: {event:?}")
                }
            };
            format!("send {to} {email} {}", user(u))
        }
        Plan::Drop { reason, user: u } => format!("drop {} {}", reason.as_str(), user(u)),
        Plan::DependencyDown(why) => format!("down: {why}"),
    }
}

#[test]
fn what_each_job_needs_looked_up() {
    let p = planner(false);
    let id = Uuid::from_u128(7);
    let lookup = |job: &Envelope| match p.lookup(job) {
        Lookup::Ready(plan) => summary(&plan),
        Lookup::ByEmailKey(key) => format!("by key {key}"),
        Lookup::ById(id) => format!("by id {}", id.as_u128()),
    };
    let mut stale = reset("ann@example.org", None, true);
    stale.not_after = p.now - chrono::Duration::seconds(1);
    let table = [
        (
            reset("Ann@Example.org", None, true),
            "by key ann@example.org",
        ),
        (
            reset("ann@example.org", None, false),
            "drop dropped_over_budget -",
        ),
        (
            reset("not an address", None, true),
            "drop dropped_invalid_address -",
        ),
        (stale, "drop stale -"),
        (verification(id), "by id 7"),
        (changed(id, 2), "by id 7"),
        (notice("ANN@example.org"), "by key ann@example.org"),
        (notice("nope"), "drop dropped_invalid_address -"),
        (
            security(id, None, SecurityEvent::RecoveryCodesReplaced),
            "by id 7",
        ),
    ];
    for (job, expected) in table {
        assert_eq!(lookup(&job), expected, "{:?}", job.job);
    }
}

#[test]
fn each_job_kind_is_planned_by_the_state_of_its_account() {
    let id = Uuid::from_u128(7);
    let unverified = account(false, 2, &[]);
    let verified = account(true, 2, &[]);
    let undone = account(true, 3, &[2]);
    let totp = Factor::Totp;
    let passkey = Factor::Passkey;
    #[rustfmt::skip]
    let table: [(Envelope, Option<&Recipient>, bool, &str); 27] = [
        // Forgot-password: the account's own spelling; the IP shown only if it is one.
        (reset("ann@example.org", Some("203.0.113.9"), true), Some(&verified), false,
            "send Ann@Example.org reset from Some(\"203.0.113.9\") 7"),
        (reset("ann@example.org", Some("1.2.3.4\nBcc: x"), true), Some(&unverified), false,
            "send Ann@Example.org reset from None 7"),
        (reset("nobody@example.org", None, true), None, false, "drop dropped_unknown -"),
        (reset("Nobody@EXAMPLE.org", None, true), None, true,
            "send Nobody@example.org no_account -"),
        // Verification: only an unverified account that still exists.
        (verification(id), Some(&unverified), false, "send Ann@Example.org verification 7"),
        (verification(id), Some(&verified), false, "drop dropped_already_verified 7"),
        (verification(id), None, false, "drop dropped_unknown 7"),
        // Password changed: true of this version and later ones, not of an undone one.
        (changed(id, 2), Some(&verified), false,
            "send Ann@Example.org changed v2 from Some(\"198.51.100.7\") 7"),
        (changed(id, 1), Some(&verified), false,
            "send Ann@Example.org changed v1 from Some(\"198.51.100.7\") 7"),
        (changed(id, 3), Some(&verified), false, "drop dropped_rolled_back 7"),
        (changed(id, 2), Some(&undone), false, "drop dropped_rolled_back 7"),
        (changed(id, 2), None, false, "drop dropped_unknown 7"),
        // Account exists: to the owner's spelling, the typed one only if the account is gone.
        (notice("ANN@example.org"), Some(&verified), false,
            "send Ann@Example.org account_exists 7"),
        (notice("ANN@EXAMPLE.org"), None, false, "send ANN@example.org account_exists -"),
        (notice("ann@example.org"), Some(&unverified), true,
            "send Ann@Example.org account_exists 7"),
        (reset("ann@example.org", None, true), Some(&verified), true,
            "send Ann@Example.org reset from None 7"),
        // Security notices: to the address on file whatever the account's state, while it
        // exists; a new sign-in in the bulk line, every other event first. The time is the
        // job's, the IP shown only if it is one, the device on one line, the network only if
        // it is one.
        (security(id, Some("198.51.100.7"), signed_in("Firefox on Linux", Some("203.0.113.0/24"))),
            Some(&verified), false,
            "send Ann@Example.org security bulk at 10:00 from Some(\"198.51.100.7\"): \
             NewSignIn { device: \"Firefox on Linux\", ip_prefix: Some(\"203.0.113.0/24\") } 7"),
        (security(id, Some("1.2.3.4\nBcc: x"),
            signed_in("Evil\r\nBcc: x\u{7}  on\tLinux", Some("2001:DB8:1:2::/64"))),
            Some(&undone), false,
            "send Ann@Example.org security bulk at 10:00 from None: \
             NewSignIn { device: \"Evil Bcc: x on Linux\", \
             ip_prefix: Some(\"2001:db8:1:2::/64\") } 7"),
        (security(id, None, signed_in("", Some("203.0.113.0/33"))), Some(&unverified), false,
            "send Ann@Example.org security bulk at 10:00 from None: \
             NewSignIn { device: \"\", ip_prefix: None } 7"),
        (security(id, None, signed_in("Chrome", Some("see http://x.test/24"))), Some(&verified),
            false,
            "send Ann@Example.org security bulk at 10:00 from None: \
             NewSignIn { device: \"Chrome\", ip_prefix: None } 7"),
        (security(id, Some("2001:db8::1"), SecurityEvent::RecoveryCodeUsed { remaining: 0 }),
            Some(&verified), false,
            "send Ann@Example.org security priority at 10:00 from Some(\"2001:db8::1\"): \
             RecoveryCodeUsed { remaining: 0 } 7"),
        (security(id, None, SecurityEvent::FactorAdded { factor: totp }), Some(&verified), false,
            "send Ann@Example.org security priority at 10:00 from None: \
             FactorAdded { factor: Totp } 7"),
        (security(id, None, SecurityEvent::FactorRemoved { factor: passkey, by_support: true }),
            Some(&verified), false,
            "send Ann@Example.org security priority at 10:00 from None: \
             FactorRemoved { factor: Passkey, by_support: true } 7"),
        (security(id, None, SecurityEvent::FactorRemoved { factor: totp, by_support: false }),
            Some(&verified), true,
            "send Ann@Example.org security priority at 10:00 from None: \
             FactorRemoved { factor: Totp, by_support: false } 7"),
        (security(id, None, SecurityEvent::RecoveryCodesReplaced), Some(&verified), false,
            "send Ann@Example.org security priority at 10:00 from None: RecoveryCodesReplaced 7"),
        // Gone (erased): nothing, whatever the event.
        (security(id, Some("198.51.100.7"), signed_in("Firefox on Linux", None)), None, false,
            "drop dropped_unknown 7"),
        (security(id, None, SecurityEvent::RecoveryCodeUsed { remaining: 2 }), None, true,
            "drop dropped_unknown 7"),
    ];
    for (job, found, notify, expected) in table {
        let plan = planner(notify).decide(&job, found);
        assert_eq!(summary(&plan), expected, "{:?} with {found:?}", job.job);
    }
}

#[test]
fn a_failed_lookup_makes_every_job_that_needed_it_wait() {
    let p = planner(false);
    let jobs = [
        reset("ann@example.org", None, true),
        reset("ann@example.org", None, false),
        verification(Uuid::from_u128(7)),
    ];
    let jobs: Vec<&Envelope> = jobs.iter().collect();
    let lookups = || jobs.iter().map(|job| p.lookup(job)).collect::<Vec<_>>();
    let looked_up = lookups();
    let (keys, ids) = wanted(&looked_up);
    assert_eq!(keys, ["ann@example.org"]);
    assert_eq!(ids, [Uuid::from_u128(7)]);

    let down: Vec<String> = p
        .plans(&jobs, lookups(), Err("database: gone"))
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        down,
        [
            "down: database: gone",
            "drop dropped_over_budget -",
            "down: database: gone"
        ]
    );
    let found = [account(false, 1, &[])];
    let planned: Vec<String> = p
        .plans(&jobs, lookups(), Ok(&found))
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        planned,
        [
            "send Ann@Example.org reset from None 7",
            "drop dropped_over_budget -",
            "send Ann@Example.org verification 7"
        ]
    );
}

#[test]
fn a_suppressed_address_is_dropped_and_an_unreadable_list_makes_senders_wait() {
    let plans = || {
        vec![
            Plan::Send {
                to: "Ann@Example.ORG".into(),
                draft: Draft::Ready(EmailContent::NoAccount {
                    sign_up_url: BASE.into(),
                }),
                user: None,
                languages: Vec::new(),
            },
            Plan::Send {
                to: "bob@example.org".into(),
                draft: Draft::Ready(EmailContent::NoAccount {
                    sign_up_url: BASE.into(),
                }),
                user: None,
                languages: Vec::new(),
            },
            Plan::Drop {
                reason: audit::Outcome::Stale,
                user: None,
            },
        ]
    };
    let asked = recipients(&plans());
    assert_eq!(
        asked,
        [
            Some(("ann@example.org".to_owned(), "Ann@example.org".to_owned())),
            Some(("bob@example.org".to_owned(), "bob@example.org".to_owned())),
            None
        ]
    );
    let suppressed = ["Ann@example.org".to_owned()];
    let checked: Vec<String> = drop_suppressed(plans(), asked.clone(), Ok(&suppressed))
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        checked,
        [
            "drop dropped_suppressed -",
            "send bob@example.org no_account -",
            "drop stale -"
        ]
    );
    let unread: Vec<String> = drop_suppressed(plans(), asked, Err("suppression list: gone"))
        .iter()
        .map(summary)
        .collect();
    assert_eq!(
        unread,
        [
            "down: suppression list: gone",
            "down: suppression list: gone",
            "drop stale -"
        ]
    );
}

#[test]
fn an_account_with_languages_gets_its_emails_in_them_whoever_caused_them() {
    let planner = planner(false);
    let french = Recipient {
        locale: Some("it-ch, fr".into()),
        ..account(true, 3, &[])
    };
    let jobs = [
        reset("ann@example.org", None, true),
        changed(french.id, 3),
        notice("ann@example.org"),
        security(french.id, None, signed_in("Safari on iOS", None)),
    ];
    for job in &jobs {
        match planner.decide(job, Some(&french)) {
            Plan::Send { languages, .. } => assert_eq!(languages, ["it-ch", "fr"], "{job:?}"),
            _ => panic!("expected a send for {job:?}"),
        }
        match planner.decide(job, Some(&account(true, 3, &[]))) {
            Plan::Send { languages, .. } => assert!(languages.is_empty(), "{job:?}"),
            _ => panic!("expected a send for {job:?}"),
        }
    }
}

#[test]
fn a_reset_email_for_a_known_account_goes_to_that_account_only() {
    let planner = planner(false);
    let ann = account(true, 1, &[]);
    let for_ann = |user_id| {
        envelope(Job::PasswordResetRequested {
            email: "ann@example.org".into(),
            ip: None,
            within_budget: true,
            user_id: Some(user_id),
        })
    };
    assert!(
        summary(&planner.decide(&for_ann(ann.id), Some(&ann)))
            .starts_with("send Ann@Example.org reset")
    );
    // Erased, or erased and signed up again as a new account: nothing, and no trace.
    let erased = Uuid::from_u128(99);
    for found in [None, Some(&ann)] {
        let plan = planner.decide(&for_ann(erased), found);
        assert_eq!(summary(&plan), "drop dropped_unknown 99");
    }
}

#[test]
fn a_long_device_name_is_cut_to_one_short_line() {
    let long = format!("Firefox {} on Linux", "x".repeat(200));
    let shown = checked_device(&long);
    assert_eq!(shown.chars().count(), MAX_DEVICE_CHARS + 1, "{shown}");
    assert!(
        shown.starts_with("Firefox xxx") && shown.ends_with("x…"),
        "{shown}"
    );
    assert_eq!(
        checked_device(" \u{202e}Edge\u{0} on\n\nWindows "),
        "Edge on Windows"
    );
    assert_eq!(checked_device("Ünïcødé 浏览器"), "Ünïcødé 浏览器");
    for (prefix, shown) in [
        ("203.0.113.0/24", Some("203.0.113.0/24")),
        ("2001:DB8::/48", Some("2001:db8::/48")),
        ("203.0.113.0/40", None),
        // Never an address: host bits cleared, no narrower than a /24 or a /64.
        ("203.0.113.77/24", Some("203.0.113.0/24")),
        ("203.0.113.77/32", Some("203.0.113.0/24")),
        ("2001:db8:1:2:3:4:5:6/128", Some("2001:db8:1:2::/64")),
        ("10.0.0.0/8", Some("10.0.0.0/8")),
        ("0.0.0.0/0", Some("0.0.0.0/0")),
        ("203.0.113.0", None),
        ("/24", None),
        ("203.0.113.0/24\nBcc: x", None),
    ] {
        assert_eq!(checked_prefix(prefix).as_deref(), shown, "{prefix:?}");
    }
}
