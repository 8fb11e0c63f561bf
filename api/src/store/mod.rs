//! PostgreSQL queries, one module per table.

pub mod users;
