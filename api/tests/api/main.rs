//! HTTP-level integration tests of the api against the real PostgreSQL, Redis and RabbitMQ.
//! Every test builds its own application with its own database, Redis key prefix and broker
//! namespace, so tests run in parallel without seeing each other.
#![allow(
    clippy::disallowed_methods,
    reason = "tests measure real time against real services"
)]
#![allow(clippy::unwrap_used)]

mod admin;
mod attacks;
mod bad_input;
mod breached;
mod forgot;
mod helpers;
mod import;
mod imported;
mod lock;
mod mfa;
mod outage;
mod pages;
mod passkeys;
mod password_change;
mod refusals;
mod reset;
mod reset_code;
mod retention;
mod security;
mod sessions;
mod sessions_list;
mod users;
