//! PostgreSQL queries, one module per table, and the one-off data tasks.

pub mod maintenance;
pub mod users;
