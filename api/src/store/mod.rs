//! PostgreSQL queries, one module per table.

pub mod audit;
pub mod users;
