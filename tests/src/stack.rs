//! The whole product as processes: the real `api` and `mail-worker` binaries, configured only
//! by their environment, in front of a real SMTP server (`tests/smtp/smtp_sink.py`).

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    time::Duration,
};

use serde_json::Value;
use tokio::io::AsyncBufReadExt;

use crate::{ServiceProcess, poll_until, workspace_binary};

/// Recipients and how often each got mail.
pub fn tally(emails: &[StoredEmail]) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for e in emails {
        *counts.entry(e.rcpt_to()).or_insert(0) += 1;
    }
    counts
}

/// The token of an emailed link (`…?token=<token>`).
pub fn token_of(link: &str) -> String {
    link.split("token=").nth(1).unwrap_or_default().to_owned()
}

/// The most of `times` (sorted) that fall within any window of length `window`.
pub fn most_in_any_window(times: &[chrono::DateTime<chrono::Utc>], window: Duration) -> usize {
    let window = chrono::Duration::from_std(window).unwrap_or(chrono::Duration::MAX);
    let mut most = 0;
    let mut start = 0;
    for (end, t) in times.iter().enumerate() {
        while *t - times[start] >= window {
            start += 1;
        }
        most = most.max(end - start + 1);
    }
    most
}

/// The Prometheus text a service exports at `{base}/metrics`.
pub async fn metrics_text(base: &str) -> String {
    reqwest::get(format!("{base}/metrics"))
        .await
        .expect("metrics endpoint answers")
        .text()
        .await
        .expect("metrics text")
}

/// A worker's `pwrecovery_jobs_total` by outcome, of one job kind or (`None`) all kinds together, from
/// its `/metrics`.
pub async fn job_outcomes(worker_base: &str, kind: Option<&str>) -> HashMap<String, u64> {
    let mut outcomes = HashMap::new();
    for line in metrics_text(worker_base).await.lines() {
        let Some(rest) = line.strip_prefix("pwrecovery_jobs_total{") else {
            continue;
        };
        let (labels, value) = rest.split_once("} ").unwrap_or_default();
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\""))
                .map(|v| v.trim_end_matches('"'))
        };
        if kind.is_some_and(|k| label("kind") != Some(k)) {
            continue;
        }
        if let (Some(outcome), Ok(n)) = (label("outcome"), value.trim().parse::<f64>()) {
            *outcomes.entry(outcome.to_owned()).or_default() += n as u64;
        }
    }
    outcomes
}

/// Jobs (of `kind`, or all) the workers at `bases` decided for good: every outcome but a
/// retry or a wait (for a dependency or a send budget), which put the job back for later. Counted just before the job is acked.
pub async fn settled(bases: &[&str], kind: Option<&str>) -> u64 {
    let mut n = 0;
    for base in bases {
        n += job_outcomes(base, kind)
            .await
            .iter()
            .filter(|(outcome, _)| {
                !matches!(outcome.as_str(), "retried" | "waiting" | "budget_wait")
            })
            .map(|(_, n)| n)
            .sum::<u64>();
    }
    n
}

/// Waits until the workers at `bases` together decided at least `n` jobs (of `kind`, or all)
/// for good; returns how many they decided.
pub async fn wait_settled(bases: &[&str], kind: Option<&str>, n: u64, timeout: Duration) -> u64 {
    poll_until(timeout, || async {
        let done = settled(bases, kind).await;
        (done >= n).then_some(done)
    })
    .await
    .unwrap_or(settled(bases, kind).await)
}

/// Waits until the worker at `base` counted at least `n` jobs with `outcome`; returns the count.
pub async fn wait_outcome(base: &str, outcome: &str, n: u64, timeout: Duration) -> u64 {
    let count = || async {
        job_outcomes(base, None)
            .await
            .get(outcome)
            .copied()
            .unwrap_or(0)
    };
    poll_until(timeout, || async {
        let c = count().await;
        (c >= n).then_some(c)
    })
    .await
    .unwrap_or(count().await)
}

/// The jobs the worker at `base` holds (`pwrecovery_mail_jobs_held`: received, not yet settled).
pub async fn jobs_held(worker_base: &str) -> Option<f64> {
    metrics_text(worker_base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix("pwrecovery_mail_jobs_held "))
        .and_then(|v| v.trim().parse().ok())
}

/// A running SMTP sink with its control API.
pub struct SmtpSink {
    child: tokio::process::Child,
    pub smtp_port: u16,
    control: String,
    pub dir: PathBuf,
    http: reqwest::Client,
}

/// One email as the SMTP server stored it.
#[derive(Debug, Clone)]
pub struct StoredEmail {
    pub file: PathBuf,
    pub raw: Vec<u8>,
}

impl StoredEmail {
    /// Parses the message.
    pub fn parsed(&self) -> mail_parser::Message<'_> {
        mail_parser::MessageParser::default()
            .parse(&self.raw)
            .expect("a stored email parses")
    }

    /// A header's text value.
    pub fn header(&self, name: &str) -> Option<String> {
        self.parsed()
            .header(name)
            .and_then(|h| h.as_text())
            .map(str::to_owned)
    }

    /// The envelope recipient the server accepted.
    pub fn rcpt_to(&self) -> String {
        self.header("X-Sink-Rcpt-To").unwrap_or_default()
    }

    /// `Message-ID` without angle brackets.
    pub fn message_id(&self) -> String {
        self.parsed().message_id().unwrap_or_default().to_owned()
    }

    pub fn subject(&self) -> String {
        self.parsed().subject().unwrap_or_default().to_owned()
    }

    /// The decoded text/plain part.
    pub fn text(&self) -> String {
        self.parsed()
            .body_text(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }

    /// The decoded text/html part.
    pub fn html(&self) -> String {
        self.parsed()
            .body_html(0)
            .map(|t| t.into_owned())
            .unwrap_or_default()
    }

    /// The message as the sender wrote it: the raw bytes without the sink's own `X-Sink-*`
    /// header lines (which record when and how it arrived).
    pub fn as_sent(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.raw.len());
        let mut rest = self.raw.as_slice();
        while rest.starts_with(b"X-Sink-") {
            let end = rest
                .windows(2)
                .position(|w| w == b"\r\n")
                .map_or(rest.len(), |i| i + 2);
            rest = &rest[end..];
        }
        out.extend_from_slice(rest);
        out
    }

    /// The first link in the text part that starts with `prefix`.
    pub fn link(&self, prefix: &str) -> Option<String> {
        let text = self.text();
        let start = text.find(prefix)?;
        let rest = &text[start..];
        let end = rest
            .find(|c: char| c.is_whitespace() || c == '>' || c == '"')
            .unwrap_or(rest.len());
        Some(rest[..end].to_owned())
    }

    /// When the SMTP test server stored the message (its `X-Sink-Received-At` stamp).
    pub fn received_at(&self) -> Option<chrono::DateTime<chrono::Utc>> {
        let at = self.header("X-Sink-Received-At")?;
        chrono::DateTime::parse_from_rfc3339(&at)
            .ok()
            .map(|t| t.with_timezone(&chrono::Utc))
    }

    /// The one-time code a reset email shows beside its link (a line of its own, "1234 5678"),
    /// without the space.
    pub fn reset_code(&self) -> Option<String> {
        self.text().lines().map(str::trim).find_map(|line| {
            let (a, b) = line.split_once(' ')?;
            let digits = |s: &str| s.len() == 4 && s.bytes().all(|c| c.is_ascii_digit());
            (digits(a) && digits(b)).then(|| format!("{a}{b}"))
        })
    }
}

impl SmtpSink {
    /// Starts a sink storing into a fresh temporary directory.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_on(0, None).await
    }

    /// Starts a sink with extra command-line options (e.g. `--no-quickack`).
    pub async fn start_with_args(args: &[&str]) -> anyhow::Result<Self> {
        Self::launch(0, None, args).await
    }

    /// Starts a sink on `port` (0: any) storing into `dir` (None: a fresh one).
    pub async fn start_on(port: u16, dir: Option<PathBuf>) -> anyhow::Result<Self> {
        Self::launch(port, dir, &[]).await
    }

    async fn launch(port: u16, dir: Option<PathBuf>, extra: &[&str]) -> anyhow::Result<Self> {
        let dir = dir.unwrap_or_else(|| {
            std::env::temp_dir().join(format!("pwr-mail-{}", crate::unique_id()))
        });
        std::fs::create_dir_all(&dir)?;
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("smtp/smtp_sink.py");
        let mut child = tokio::process::Command::new(crate::test_python())
            .arg(&script)
            .args(["--port", &port.to_string(), "--dir"])
            .arg(&dir)
            .arg("--exit-on-stdin-eof")
            .args(extra)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start the SMTP sink with {}: {e}",
                    crate::test_python()
                )
            })?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .map_err(|_| {
                anyhow::anyhow!(
                    "the SMTP sink did not start (is aiosmtpd installed? see tests/smtp/README.md)"
                )
            })??
            .ok_or_else(|| {
                anyhow::anyhow!("the SMTP sink exited at start (is aiosmtpd installed?)")
            })?;
        let ports: Value = serde_json::from_str(&line)?;
        let smtp_port = ports["smtp_port"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("bad port line {line}"))? as u16;
        let control_port = ports["control_port"]
            .as_u64()
            .ok_or_else(|| anyhow::anyhow!("bad port line {line}"))?;
        Ok(Self {
            child,
            smtp_port,
            control: format!("http://127.0.0.1:{control_port}"),
            dir,
            http: reqwest::Client::new(),
        })
    }

    /// The sink's process id (its CPU is metered by the benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `smtp://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.smtp_port)
    }

    /// Replaces the fault-injection mode (see tests/smtp/README.md).
    pub async fn set_mode(&self, mode: Value) -> anyhow::Result<()> {
        let r = self
            .http
            .post(format!("{}/mode", self.control))
            .json(&mode)
            .send()
            .await?;
        anyhow::ensure!(
            r.status().is_success(),
            "sink refused mode {mode}: {}",
            r.text().await?
        );
        Ok(())
    }

    /// The sink's counters.
    pub async fn state(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/state", self.control))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Every stored email, in acceptance order.
    pub fn emails(&self) -> Vec<StoredEmail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(&self.dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.extension().is_some_and(|e| e == "eml"));
        files.sort();
        files
            .into_iter()
            .filter_map(|file| {
                std::fs::read(&file)
                    .ok()
                    .map(|raw| StoredEmail { file, raw })
            })
            .collect()
    }

    /// Waits for the `n`th email (counting from 1) that shows a reset code, and returns it.
    pub async fn wait_for_reset_email(&self, n: usize, timeout: Duration) -> Option<StoredEmail> {
        poll_until(timeout, || async {
            let mut resets: Vec<StoredEmail> = self
                .emails()
                .into_iter()
                .filter(|e| e.reset_code().is_some())
                .collect();
            (resets.len() >= n).then(|| resets.swap_remove(n - 1))
        })
        .await
    }

    /// Waits until at least `n` emails are stored.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<StoredEmail> {
        poll_until(timeout, || async {
            let emails = self.emails();
            (emails.len() >= n).then_some(emails)
        })
        .await
        .unwrap_or_else(|| self.emails())
    }

    /// Waits for an email to `rcpt` whose subject contains `subject`.
    pub async fn wait_for_email(
        &self,
        rcpt: &str,
        subject: &str,
        timeout: Duration,
    ) -> Option<StoredEmail> {
        poll_until(timeout, || async {
            self.emails()
                .into_iter()
                .find(|e| e.rcpt_to().eq_ignore_ascii_case(rcpt) && e.subject().contains(subject))
        })
        .await
    }

    /// Stops the server (the SMTP port closes).
    pub async fn stop(&mut self) {
        let _ = self.child.kill().await;
    }
}

/// Settings every stack process shares (database, namespaces, secrets, URLs).
pub struct StackEnv {
    pub database_url: String,
    pub namespace: String,
    pub public_base_url: String,
    pub vars: Vec<(String, String)>,
}

impl Drop for StackEnv {
    fn drop(&mut self) {
        crate::delete_topology_blocking(&self.topology());
    }
}

impl StackEnv {
    /// A fresh database and namespace with test-friendly settings.
    pub async fn new() -> anyhow::Result<Self> {
        let database_url = crate::create_database().await?;
        let namespace = format!("e2e-{}", crate::unique_id());
        let public_base_url = crate::TEST_PUBLIC_BASE_URL.to_owned();
        let mut vars = crate::test_env(&namespace, &database_url);
        vars.extend(
            [("MAIL_RETRY_SCHEDULE_SECS", "1,1,1"), ("RUST_LOG", "info")]
                .map(|(k, v)| (k.to_owned(), v.to_owned())),
        );
        Ok(Self {
            database_url,
            namespace,
            public_base_url,
            vars,
        })
    }

    /// Sets (or replaces) a variable.
    pub fn set(&mut self, name: &str, value: &str) {
        self.vars.retain(|(k, _)| k != name);
        self.vars.push((name.to_owned(), value.to_owned()));
    }

    /// The broker topology of this stack, read from its variables as the services read it.
    pub fn topology(&self) -> shared::topology::Topology {
        let lookup = |name: &str| self.var(name).map(str::to_owned);
        shared::config::EnvReader::new(&lookup).topology()
    }

    /// The value of a variable of this stack.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Jobs ready in the work queue (not counting those a worker holds), asked of the first
    /// broker of `amqp_urls` (comma-separated) that answers.
    pub async fn ready_jobs_on(&self, amqp_urls: &str) -> anyhow::Result<u32> {
        self.ready_on(amqp_urls, &[self.topology().jobs_queue()])
            .await
    }

    /// Messages ready in `queue` (a delay queue, say), asked of the first broker of
    /// `amqp_urls` (comma-separated) that answers; 0 if there is no such queue.
    pub async fn ready_in_on(&self, amqp_urls: &str, queue: &str) -> anyhow::Result<u32> {
        self.ready_on(amqp_urls, &[queue.to_owned()]).await
    }

    /// Messages ready in `queues` together, asked of the first broker of `amqp_urls` that
    /// answers.
    async fn ready_on(&self, amqp_urls: &str, queues: &[String]) -> anyhow::Result<u32> {
        use lapin::options::QueueDeclareOptions;
        let urls = amqp_urls.split(',').map(|u| u.trim().to_owned()).collect();
        let broker = shared::amqp::Broker::new(urls, shared::tls::Trust::default());
        let connection = broker.connect("e2e-count").await?;
        let mut ready = 0;
        for queue in queues {
            // A channel per queue: a queue that does not exist closes its channel.
            let channel = connection.create_channel().await?;
            if let Ok(q) = channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        passive: true,
                        ..QueueDeclareOptions::default()
                    },
                    lapin::types::FieldTable::default(),
                )
                .await
            {
                ready += q.message_count();
                let _ = channel.close(200, "counted".into()).await;
            }
        }
        let _ = connection.close(200, "counted".into()).await;
        Ok(ready)
    }

    /// Waits until nothing is left to do: no job waits in the work queue or a delay queue,
    /// and the workers at `worker_bases` hold none (`pwrecovery_mail_jobs_held`), seen twice in a row
    /// (a job moving from a delay queue to the work queue is briefly in neither).
    pub async fn wait_idle(&self, worker_bases: &[&str]) -> anyhow::Result<()> {
        let idle_now = || async {
            for base in worker_bases {
                if jobs_held(base).await.unwrap_or(0.0) != 0.0 {
                    return false;
                }
            }
            self.ready_anywhere().await.is_ok_and(|n| n == 0)
        };
        let idle = poll_until(Duration::from_secs(60), || async {
            (idle_now().await && idle_now().await).then_some(())
        })
        .await;
        anyhow::ensure!(idle.is_some(), "the workers never became idle");
        Ok(())
    }

    /// [`Self::wait_idle`] for one worker, then stops it (SIGTERM): from then on nothing more
    /// is sent, so what the SMTP server holds is final. Fails if a job was left behind.
    pub async fn stop_when_idle(
        &self,
        worker: &mut ServiceProcess,
        worker_base: &str,
    ) -> anyhow::Result<()> {
        self.wait_idle(&[worker_base]).await?;
        let status = worker.terminate(Duration::from_secs(60)).await?;
        anyhow::ensure!(status.success(), "the worker exited with {status:?}");
        let left = self.ready_anywhere().await?;
        anyhow::ensure!(left == 0, "{left} job(s) left after the worker stopped");
        Ok(())
    }

    /// Jobs ready in the work queue and the delay queues together.
    async fn ready_anywhere(&self) -> anyhow::Result<u32> {
        let topology = self.topology();
        let mut queues = topology.queues();
        queues.retain(|q| *q != topology.dead_queue());
        self.ready_on(self.var("AMQP_URL").unwrap_or_default(), &queues)
            .await
    }

    /// Runs `api migrate` and starts the api; returns it with its base URL.
    pub async fn start_api(&self) -> anyhow::Result<(ServiceProcess, String)> {
        self.migrate().await?;
        let process = ServiceProcess::spawn(&workspace_binary("api"), &[], &self.vars)?;
        let addr = process
            .wait_for_log_field("api listening", "addr", Duration::from_secs(60))
            .await
            .ok_or_else(|| anyhow::anyhow!("api did not start: {:?}", process.output()))?;
        Ok((process, format!("http://{addr}")))
    }

    /// Runs `api migrate` (the schema both services use; idempotent).
    pub async fn migrate(&self) -> anyhow::Result<()> {
        let mut migrate =
            ServiceProcess::spawn(&workspace_binary("api"), &["migrate"], &self.vars)?;
        let status = migrate.wait_exit(Duration::from_secs(60)).await?;
        anyhow::ensure!(
            status.success(),
            "api migrate failed: {:?}",
            migrate.output()
        );
        Ok(())
    }

    /// The base URL of a started api's metrics listener (`API_METRICS_BIND`).
    pub async fn api_metrics_base(api: &ServiceProcess) -> anyhow::Result<String> {
        let addr = api
            .wait_for_log_field("api metrics listening", "addr", Duration::from_secs(10))
            .await
            .ok_or_else(|| anyhow::anyhow!("api logged no metrics address: {:?}", api.output()))?;
        Ok(format!("http://{addr}"))
    }

    /// Signs `email` up through the api at `sign_up_base`, reads the verification link the
    /// worker delivered to `sink`, and confirms the address with it and `password` through the
    /// api at `verify_base` (the same process or another one).
    pub async fn sign_up_and_verify(
        &self,
        sign_up_base: &str,
        verify_base: &str,
        sink: &SmtpSink,
        email: &str,
        password: &str,
    ) -> anyhow::Result<()> {
        let http = reqwest::Client::new();
        let body = serde_json::json!({ "email": email, "password": password });
        let r = http
            .post(format!("{sign_up_base}/v1/users"))
            .json(&body)
            .send()
            .await?;
        anyhow::ensure!(r.status() == 202, "sign-up answered {}", r.status());
        let verification = sink
            .wait_for_email(email, "Confirm", Duration::from_secs(60))
            .await
            .ok_or_else(|| anyhow::anyhow!("no verification email for {email}"))?;
        let link = verification
            .link(&shared::links::with_token(
                &self.public_base_url,
                shared::links::VERIFY_EMAIL_PATH,
                "",
            ))
            .ok_or_else(|| anyhow::anyhow!("no link in:\n{}", verification.text()))?;
        let r = http
            .post(format!("{verify_base}/v1/email/verify"))
            .json(&serde_json::json!({ "token": token_of(&link), "password": password }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 204, "verification answered {}", r.status());
        Ok(())
    }

    /// Asks the api at `base` for a reset link for `email` and returns the token of the link
    /// the worker delivered to `sink`.
    pub async fn reset_token(
        &self,
        base: &str,
        sink: &SmtpSink,
        email: &str,
    ) -> anyhow::Result<String> {
        let r = reqwest::Client::new()
            .post(format!("{base}/v1/password/forgot"))
            .json(&serde_json::json!({ "email": email }))
            .send()
            .await?;
        anyhow::ensure!(r.status() == 202, "forgot-password answered {}", r.status());
        let email = sink
            .wait_for_email(email, "Reset", Duration::from_secs(60))
            .await
            .ok_or_else(|| anyhow::anyhow!("no reset email for {email}"))?;
        let link = email
            .link(&shared::links::with_token(
                &self.public_base_url,
                shared::links::RESET_PASSWORD_PATH,
                "",
            ))
            .ok_or_else(|| anyhow::anyhow!("no link in:\n{}", email.text()))?;
        Ok(token_of(&link))
    }

    /// Starts a worker delivering to `smtp_url`; returns it with its HTTP base URL once it
    /// consumes.
    pub async fn start_worker(&self, smtp_url: &str) -> anyhow::Result<(ServiceProcess, String)> {
        self.start_worker_with(&[
            ("MAIL_TRANSPORT", "smtp"),
            ("SMTP_URL", smtp_url),
            ("SMTP_TIMEOUT_SECS", "5"),
        ])
        .await
    }

    /// Starts a worker with extra variables (they win over the stack's).
    pub async fn start_worker_with(
        &self,
        extra: &[(&str, &str)],
    ) -> anyhow::Result<(ServiceProcess, String)> {
        self.migrate().await?;
        let mut vars = self.vars.clone();
        vars.retain(|(k, _)| !extra.iter().any(|(name, _)| name == k));
        vars.extend(
            extra
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned())),
        );
        let process = ServiceProcess::spawn(&workspace_binary("mail-worker"), &[], &vars)?;
        let addr = process
            .wait_for_log_field("mail-worker listening", "addr", Duration::from_secs(60))
            .await
            .ok_or_else(|| anyhow::anyhow!("worker did not start: {:?}", process.output()))?;
        let base = format!("http://{addr}");
        let client = reqwest::Client::new();
        let ready = poll_until(Duration::from_secs(30), || async {
            let r = client.get(format!("{base}/readyz")).send().await.ok()?;
            r.status().is_success().then_some(())
        })
        .await;
        anyhow::ensure!(
            ready.is_some(),
            "worker never ready: {:?}",
            process.output()
        );
        Ok((process, base))
    }

    /// Runs `mail-worker <args>` to completion and returns (success, stdout+stderr lines).
    pub async fn worker_command(&self, args: &[&str]) -> anyhow::Result<(bool, Vec<String>)> {
        self.command("mail-worker", args).await
    }

    /// Runs `api <args>` to completion and returns (success, stdout+stderr lines).
    pub async fn api_command(&self, args: &[&str]) -> anyhow::Result<(bool, Vec<String>)> {
        self.command("api", args).await
    }

    /// Runs `api <args>` with `input` on its standard input, to completion; (success,
    /// stdout+stderr lines).
    pub async fn api_command_with_input(
        &self,
        args: &[&str],
        input: &str,
    ) -> anyhow::Result<(bool, Vec<String>)> {
        let binary = workspace_binary("api");
        let input = Some(input.as_bytes().to_vec());
        let mut process = ServiceProcess::spawn_with_input(&binary, args, &self.vars, input)?;
        let status = process.wait_exit(Duration::from_secs(60)).await?;
        Ok((status.success(), process.output()))
    }

    async fn command(&self, binary: &str, args: &[&str]) -> anyhow::Result<(bool, Vec<String>)> {
        let mut process = ServiceProcess::spawn(&workspace_binary(binary), args, &self.vars)?;
        let status = process.wait_exit(Duration::from_secs(60)).await?;
        Ok((status.success(), process.output()))
    }
}
