//! HTTP routes, one module per resource. Each module's `router()` registers its handlers
//! together with their OpenAPI description, so the document cannot drift from the routes.

use serde::Serialize;
use utoipa::ToSchema;

pub mod account;
pub mod health;
pub mod pages;
pub mod password;
pub mod sessions;
pub mod users;

/// The body of a `202 Accepted`.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// A human-readable, address-independent message.
    pub message: String,
}
