//! Finds the commit for `build_info::COMMIT`.
//!
//! Cargo runs this again only when `GIT_COMMIT` or `SOURCE_COMMIT` changes, or when the
//! checkout moves to another commit (the `HEAD` file and the branch it names are watched);
//! a rebuild then compiles this crate and the two services that print it, nothing else.

use std::{path::PathBuf, process::Command};

/// Names the build may be given from outside (container builds have no `.git`).
const OVERRIDES: [&str; 2] = ["GIT_COMMIT", "SOURCE_COMMIT"];

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for name in OVERRIDES {
        println!("cargo::rerun-if-env-changed={name}");
    }
    let given = OVERRIDES
        .iter()
        .find_map(|name| std::env::var(name).ok().and_then(|v| clean(&v)));
    let commit = given
        .or_else(from_git)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo::rustc-env=PWRECOVERY_BUILD_COMMIT={commit}");
}

/// A commit name safe for a label value and a log line: letters, digits, `.`, `_` and `-`,
/// at most 40 characters; `None` when nothing is left.
fn clean(value: &str) -> Option<String> {
    let kept: String = value
        .trim()
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || "._-".contains(*c))
        .take(40)
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// `git rev-parse --short=12 HEAD`, watching the files that change when `HEAD` moves.
fn from_git() -> Option<String> {
    let commit = git(&["rev-parse", "--short=12", "HEAD"]).and_then(|c| clean(&c))?;
    // A worktree keeps its own HEAD and shares the branches of the main checkout: ask git
    // where each file is rather than assuming `.git/`.
    let mut watched = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(branch);
    }
    for name in watched {
        let Some(path) = git(&["rev-parse", "--path-format=absolute", "--git-path", &name]) else {
            continue;
        };
        // A file that does not exist would make cargo run this on every build.
        if PathBuf::from(&path).is_file() {
            println!("cargo::rerun-if-changed={path}");
        }
    }
    Some(commit)
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(std::env::var_os("CARGO_MANIFEST_DIR")?)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
        .filter(|s| !s.is_empty())
}
