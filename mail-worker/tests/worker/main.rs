//! The worker's decisions and settlement, in-process against the real PostgreSQL, Redis,
//! RabbitMQ and SMTP test server.
#![allow(
    clippy::disallowed_methods,
    reason = "tests measure real time against real services"
)]

mod helpers;
mod links;
mod outcomes;
mod render_failure;
mod security_notice;
mod send_budget;
mod suppression;
