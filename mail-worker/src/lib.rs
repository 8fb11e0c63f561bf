//! The mail-worker service: consumes mail jobs from RabbitMQ, decides what to send, renders
//! text + HTML emails and delivers them over SMTP with retries, backoff and dead letters.

pub mod audit_log;
pub mod config;
pub mod consumer;
pub mod dlq;
mod handler;
pub mod http;
pub mod mailer;
mod mint;
pub mod plan;
pub mod process;
pub mod recipient_budget;
pub mod render;
pub mod retry;
pub mod send_budget;
pub mod send_test;
pub mod settlement;
pub mod smtp;
pub mod startup;
pub mod templates;
