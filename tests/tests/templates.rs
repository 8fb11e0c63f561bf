//! Email templates from a directory, through the real binary: `mail-worker templates check
//! DIR` (what an operator runs before pointing `MAIL_TEMPLATE_DIR` at DIR), and the worker
//! refusing to start on a template that does not render. No service is needed: both stop
//! before anything connects.
#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

/// A directory of its own under the system's temporary one, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("templates-e2e-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    /// Writes `source` to `name` (`<locale>/<file>`) and returns its path.
    fn write(&self, name: &str, source: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, source).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `mail-worker <args>` in `dir` with only `vars` set (no `.env` of the workspace), to
/// completion or for at most a minute.
async fn mail_worker(dir: &Path, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = tokio::process::Command::new(e2e::workspace_binary("mail-worker"));
    command
        .args(args)
        .current_dir(dir)
        .env_clear()
        .envs(vars.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let running = command.spawn().unwrap().wait_with_output();
    tokio::time::timeout(Duration::from_secs(60), running)
        .await
        .expect("mail-worker ends within a minute")
        .unwrap()
}

const BROKEN: &str =
    "{% extends \"en/layout.txt.j2\" %}\n{% block body %}\nHello,\n\n{{ link }\n{% endblock %}\n";
const FIXED: &str = "{% extends \"en/layout.txt.j2\" %}\n{% block body %}\nHello,\n\n{{ link }}\n\n{{ code }} {{ code_url }}\n{% endblock %}\n";

#[tokio::test]
async fn templates_check_names_the_file_and_line_of_a_broken_template_and_exits_1() {
    let dir = TempDir::new();
    let broken = dir.write("en/password_reset.txt.j2", BROKEN);
    let dir_arg = dir.0.to_str().unwrap();

    let out = mail_worker(&dir.0, &["templates", "check", dir_arg], &[]).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("{}:5: syntax error", broken.display());
    assert!(
        stderr.lines().any(|line| line.starts_with(&expected)),
        "no line starting with {expected:?} in\n{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("ok:"));

    // Mended, the same directory passes: the built-in templates and the one from the directory.
    std::fs::write(&broken, FIXED).unwrap();
    let out = mail_worker(&dir.0, &["templates", "check", dir_arg], &[]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(&format!("ok: 147 templates (1 from {dir_arg})")),
        "{stdout}"
    );
}

#[tokio::test]
async fn templates_check_refuses_a_misspelt_file_name() {
    let dir = TempDir::new();
    let typo = dir.write("fr/pasword_reset.subject.j2", "Réinitialisation\n");
    let out = mail_worker(
        &dir.0,
        &["templates", "check", dir.0.to_str().unwrap()],
        &[],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("{}: not a template name", typo.display());
    assert!(
        stderr.lines().any(|line| line.starts_with(&expected)),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_worker_does_not_start_on_a_template_that_does_not_render() {
    let dir = TempDir::new();
    let broken = dir.write(
        "de/password_changed.txt.j2",
        "{% extends \"de/layout.txt.j2\" %}\n{% block body %}\n{{ forgot_password_url }}\n{{ changed_at }} {{ lock_link }}\n{% endblock %}\n",
    );
    let vars = [
        // Nothing listens there: the start must stop before it would connect.
        ("DATABASE_URL", "postgres://worker@127.0.0.1:9/none"),
        ("REDIS_URL", "redis://127.0.0.1:9"),
        ("AMQP_URL", "amqp://127.0.0.1:9"),
        ("PUBLIC_BASE_URL", "https://accounts.example.com"),
        (
            "TOKEN_SECRETS",
            "a3a106852adf349f20bae220b71274866bcb55b00e1d993542179e43f0d7fd2e",
        ),
        ("WORKER_HTTP_BIND", "127.0.0.1:0"),
        ("MAIL_TEMPLATE_DIR", dir.0.to_str().unwrap()),
    ];
    let out = mail_worker(&dir.0, &[], &vars).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let expected = format!("{}:4: undefined value", broken.display());
    assert!(
        stderr.lines().any(|line| line == expected),
        "no line {expected:?} in\n{stderr}"
    );
}
