//! The pages emails link to: the worker builds the links (from `PUBLIC_BASE_URL`, never from
//! a request), the api serves the pages. One definition for both.

/// The page that takes a reset link (`?token=`) and the new password.
pub const RESET_PASSWORD_PATH: &str = "/reset-password";
/// The page that takes a verification link (`?token=`).
pub const VERIFY_EMAIL_PATH: &str = "/verify-email";
/// The page that takes a "this wasn't me" link (`?token=`) and locks the account on a button.
pub const LOCK_ACCOUNT_PATH: &str = "/lock-account";
/// The page that asks for a new reset link.
pub const FORGOT_PASSWORD_PATH: &str = "/forgot-password";

/// `{base}{path}?token={token}` (tokens are URL-safe base64 and dots: nothing to escape).
pub fn with_token(base: &str, path: &str, token: &str) -> String {
    format!("{base}{path}?token={token}")
}

/// `{base}{path}`.
pub fn page(base: &str, path: &str) -> String {
    format!("{base}{path}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_are_the_base_the_path_and_the_token() {
        assert_eq!(
            with_token("https://id.example.com", RESET_PASSWORD_PATH, "a.b.c"),
            "https://id.example.com/reset-password?token=a.b.c"
        );
        assert_eq!(
            page("https://id.example.com", FORGOT_PASSWORD_PATH),
            "https://id.example.com/forgot-password"
        );
    }
}
