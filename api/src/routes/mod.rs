//! HTTP routes, one module per resource. Each module's `router()` registers its handlers
//! together with their OpenAPI description, so the document cannot drift from the routes.

use serde::Serialize;
use utoipa::ToSchema;

pub mod account;
pub mod health;
pub mod mfa;
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

/// `response` with the device cookie for the account `proven` (whoever just proved the
/// mailbox, or the password, on this browser is its owner; see [`crate::devices`]).
pub fn with_device(
    state: &crate::state::AppState,
    headers: &axum::http::HeaderMap,
    proven: &crate::devices::Proven,
    mut response: axum::response::Response,
) -> axum::response::Response {
    let cookie = (state.devices).issue(headers, &proven.email_key, proven.password_version);
    (response.headers_mut()).append(axum::http::header::SET_COOKIE, cookie);
    response
}

/// The errors every `/v1/` operation can answer, added to the OpenAPI document once rather than
/// repeated on each handler: `503 unavailable` everywhere (a store or the broker is down),
/// and for an operation with a JSON body what its extractor ([`crate::extract::AppJson`])
/// refuses: `400 malformed_json`, `413 payload_too_large`, `415 unsupported_media_type`,
/// `422 invalid_body`. A handler documents only its own codes; when it lists one of these
/// statuses, the common code is added to its description.
pub struct CommonResponses;

impl CommonResponses {
    const EVERY: &[(&str, &str)] = &[("503", "`unavailable`")];
    const WITH_BODY: &[(&str, &str)] = &[
        ("400", "`malformed_json`"),
        ("413", "`payload_too_large`"),
        ("415", "`unsupported_media_type`"),
        ("422", "`invalid_body`"),
    ];
}

impl utoipa::Modify for CommonResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Content, Ref, RefOr, Response};
        let paths = openapi.paths.paths.iter_mut();
        for (_, item) in paths.filter(|(path, _)| path.starts_with("/v1/")) {
            let operations = [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
            ];
            for operation in operations.into_iter().flatten() {
                let with_body = operation.request_body.is_some();
                let common = Self::EVERY
                    .iter()
                    .chain(Self::WITH_BODY.iter().filter(|_| with_body));
                for (status, code) in common {
                    let responses = &mut operation.responses.responses;
                    match responses.get_mut(*status) {
                        Some(RefOr::T(response)) => {
                            response.description = format!("{}; {code}", response.description);
                        }
                        Some(RefOr::Ref(_)) => {}
                        None => {
                            let body = Content::new(Some(Ref::from_schema_name("ErrorBody")));
                            let mut response = Response::new(*code);
                            (response.content).insert("application/json".into(), RefOr::T(body));
                            responses.insert((*status).to_owned(), RefOr::T(response));
                        }
                    }
                }
            }
        }
    }
}
