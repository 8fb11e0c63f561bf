//! What counts as an acceptable new password.

use crate::error::ApiError;

/// Longest password accepted, in bytes; checked before any hashing so a huge password cannot
/// be used to burn CPU.
pub const MAX_PASSWORD_BYTES: usize = 1024;
/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 10;
/// zxcvbn is super-linear in the input length; longer passwords are judged on this prefix.
const STRENGTH_PREFIX_CHARS: usize = 100;

/// Refuses passwords over the byte limit. Cheap; call it first.
pub fn check_length(password: &str) -> Result<(), ApiError> {
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(ApiError::PasswordTooLong);
    }
    Ok(())
}

/// Full policy for a new password: length limits and a zxcvbn score of at least 3, judged
/// with the account's address as context (so `ann.lee2024!` is weak for ann.lee@…).
pub fn check_new_password(password: &str, email: &str) -> Result<(), ApiError> {
    check_length(password)?;
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::WeakPassword(format!(
            "use at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    let prefix: String = password.chars().take(STRENGTH_PREFIX_CHARS).collect();
    let local = email.split('@').next().unwrap_or(email);
    let inputs = [email, local];
    let estimate = zxcvbn::zxcvbn(&prefix, &inputs);
    if (estimate.score() as u8) < 3 {
        let hint = estimate
            .feedback()
            .and_then(|f| f.suggestions().first().map(ToString::to_string))
            .unwrap_or_else(|| "add more words or characters that are hard to guess".into());
        return Err(ApiError::WeakPassword(hint));
    }
    Ok(())
}

/// [`check_new_password`] on the blocking pool: zxcvbn spends milliseconds of CPU on a long
/// password, which must not stall an async worker thread that answers every other request.
pub async fn judge_new_password(password: &str, email: &str) -> Result<(), ApiError> {
    check_length(password)?;
    let (password, email) = (password.to_owned(), email.to_owned());
    tokio::task::spawn_blocking(move || check_new_password(&password, &email))
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("strength check")))?
}

/// A new password's checks in order: the policy ([`judge_new_password`]), then the
/// breached-password corpus. On a refusal, the error and the audit outcome to record (`None`
/// when the check could not be made).
pub async fn refuse_new_password(
    breached: &crate::breached::BreachedPasswords,
    password: &str,
    email: &str,
) -> Result<(), (ApiError, Option<shared::audit::Outcome>)> {
    use shared::audit::Outcome;
    judge_new_password(password, email)
        .await
        .map_err(|e| (e, Some(Outcome::WeakPassword)))?;
    breached.refuse_breached(password).await.map_err(|e| {
        let outcome = matches!(e, ApiError::BreachedPassword).then_some(Outcome::BreachedPassword);
        (e, outcome)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_short_and_address_based_passwords_are_weak() {
        for weak in [
            "password",
            "password123",
            "qwertyuiop12",
            "aaaaaaaaaaaaaaaa",
            "ann.lee2024",
        ] {
            assert!(
                matches!(
                    check_new_password(weak, "ann.lee@example.org"),
                    Err(ApiError::WeakPassword(_))
                ),
                "{weak} should be weak"
            );
        }
    }

    #[test]
    fn long_unpredictable_passwords_are_accepted() {
        check_new_password("correct horse battery staple 42", "ann@example.org").expect("strong");
        check_new_password("Tr0ub4dor&3-vX9!kq", "ann@example.org").expect("strong");
    }

    #[test]
    fn over_1024_bytes_is_refused_before_anything_else() {
        let long = "x".repeat(MAX_PASSWORD_BYTES + 1);
        assert!(matches!(
            check_new_password(&long, "a@b.co"),
            Err(ApiError::PasswordTooLong)
        ));
        // 1024 bytes of varied text is fine and is judged quickly on its prefix.
        let ok: String = (0..MAX_PASSWORD_BYTES)
            .map(|i| char::from(b'!' + (i * 7 % 90) as u8))
            .collect();
        assert!(check_new_password(&ok, "a@b.co").is_ok());
    }
}
