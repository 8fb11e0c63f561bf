//! HTTP routes, one module per resource.

pub mod health;
pub mod password;
pub mod sessions;
pub mod users;
