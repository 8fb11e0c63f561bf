#!/usr/bin/env bash
# The lint gate every commit is held to, CI's first step: formatting, and clippy with warnings
# as errors (the workspace's lints in Cargo.toml, the disallowed methods in clippy.toml). Needs
# only the Rust toolchain: no services, no packages, no network beyond crates.io.
set -euo pipefail
cd "$(dirname "$0")/../.."

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
