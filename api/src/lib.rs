//! The api service: sign-up, sign-in, forgot-password and reset-password over HTTP, with
//! Redis rate limits, one-time tokens, argon2id hashing, PostgreSQL storage and confirmed
//! publishing of every email to RabbitMQ.

pub mod accounts;
pub mod admin;
pub mod audit;
pub mod breached;
pub mod config;
pub mod devices;
pub mod error;
pub mod extract;
pub mod foreign_hash;
pub mod hashing;
pub mod import;
pub mod lock;
pub mod mfa;
pub mod migrations;
pub mod outbox;
pub mod password_policy;
pub mod publisher;
pub mod rate_limit;
pub mod recovery;
pub mod refusal_floor;
pub mod request_metrics;
pub mod reset_code;
pub mod routes;
pub mod sessions;
pub mod startup;
pub mod state;
pub mod store;
pub mod tokens;
pub mod user_agent;
