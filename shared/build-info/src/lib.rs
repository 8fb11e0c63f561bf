//! The identity of a build, as `pwrecovery_build_info` reports it.

/// The commit the binaries were built from: `GIT_COMMIT` or `SOURCE_COMMIT` when the build
/// had one (container builds have no `.git`), else the first 12 hex digits of `HEAD`, else
/// `unknown`.
pub const COMMIT: &str = env!("PWRECOVERY_BUILD_COMMIT");

#[cfg(test)]
mod tests {
    #[test]
    fn the_commit_is_a_short_name_without_spaces() {
        assert!(!super::COMMIT.is_empty());
        assert!(super::COMMIT.len() <= 40);
        assert!(
            super::COMMIT
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        );
    }
}
