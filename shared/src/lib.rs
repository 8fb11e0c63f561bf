//! Pieces both services agree on: tokens, job messages, broker topology, Redis key names,
//! address normalisation and logging setup.

pub mod account;
pub mod amqp;
pub mod audit;
pub mod clock;
pub mod config;
pub mod db;
pub mod email;
pub mod healthcheck;
pub mod heap;
pub mod html;
pub mod keys;
pub mod links;
pub mod locale;
pub mod message;
pub mod mint;
pub mod operator;
pub mod otel;
pub mod process_metrics;
pub mod redis_pool;
pub mod reset_code;
pub mod suppression;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod topology;
