//! PostgreSQL queries, one module per table, and the one-off data tasks.

pub mod factors;
pub mod maintenance;
pub mod users;
