//! `mail-worker` — consumes and delivers mail jobs;
//! `mail-worker dlq list` / `mail-worker dlq replay (--id ID | --all)` /
//! `mail-worker dlq discard (--id ID | --older-than DAYS)` — the dead letters;
//! `mail-worker suppression list` / `suppression remove [ADDRESS…]` (or addresses on standard
//! input) — the suppression list
//! (these read only the database's and the broker's settings);
//! `mail-worker templates check DIR` — tries a template directory (no settings read);
//! `mail-worker healthcheck` — asks the running worker's `/healthz` (container health checks).

use std::path::{Path, PathBuf};

use clap::Parser as _;
use mail_worker::{
    config::{Config, OperatorConfig},
    dlq, send_test,
    startup::Worker,
    templates,
};

/// The mail worker: consumes mail jobs from RabbitMQ and delivers them over SMTP. Configured by
/// the environment (and `.env`); every variable is listed in `.env.example`.
#[derive(clap::Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Consume and deliver mail jobs (the default).
    Serve,
    /// Ask the worker running with this configuration for `/healthz` on `WORKER_HTTP_BIND`
    /// (a wildcard address through the loopback): exit status 0 when it answers 200 within
    /// 3 s, else 1.
    Healthcheck,
    /// The dead letters, kept in PostgreSQL.
    #[command(subcommand)]
    Dlq(Dlq),
    /// The addresses no mail goes to because their mailbox did not exist.
    #[command(subcommand)]
    Suppression(Suppression),
    /// The email templates.
    #[command(subcommand)]
    Templates(Templates),
    /// Render a real template with sample values and send it through the configured
    /// transport; print the provider's answer. Its links lead nowhere.
    SendTest {
        /// Where to send it.
        #[arg(long)]
        to: String,
        /// Which email.
        #[arg(long, value_enum, default_value_t = send_test::Kind::PasswordReset)]
        kind: send_test::Kind,
        /// In which language (en, zh-CN, es, fr, de, ja, pt-BR).
        #[arg(long, default_value = "en")]
        locale: String,
    },
}

#[derive(clap::Subcommand)]
enum Suppression {
    /// Print every suppressed address as one JSON line.
    List,
    /// Send mail to the addresses again.
    Remove {
        /// The addresses (any spelling: they are normalised); none or `-`: one per line on
        /// standard input (so no address stands in the shell's history or the process list).
        addresses: Vec<String>,
    },
}

#[derive(clap::Subcommand)]
enum Templates {
    /// Render every template of DIR, over the built-in ones, with sample values for every
    /// email, as the worker does at start with MAIL_TEMPLATE_DIR: `ok: N templates`, or each
    /// problem as `FILE:LINE: message` on standard error and exit status 1.
    Check {
        /// Laid out like mail-worker/templates: <locale>/<kind>.{subject,txt,html}.j2.
        dir: PathBuf,
    },
}

#[derive(clap::Subcommand)]
enum Dlq {
    /// Print every dead letter as one JSON line (looking changes nothing).
    List,
    /// Put dead letters back on the work queue.
    Replay {
        /// The dead letter with this id.
        #[arg(long, conflicts_with = "all", required_unless_present = "all")]
        id: Option<String>,
        /// Every dead letter.
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters for good (audited): mail that must not go out any more.
    Discard {
        /// The dead letter with this id (as `dlq list` shows it).
        #[arg(long, conflicts_with = "older_than", required_unless_present = "older_than",
              value_parser = dlq::parse_id)]
        id: Option<String>,
        /// Every dead letter that died more than DAYS days ago (1 or more).
        #[arg(long, value_name = "DAYS", allow_negative_numbers = true,
              value_parser = clap::value_parser!(u32).range(1..=36500))]
        older_than: Option<u32>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `--help`, `--version` and a wrong command are answered before any configuration is read.
    let cli = Cli::parse();
    // A health check prints one line and sets the exit status: no log setup, so a container
    // runtime that runs it every few seconds keeps no log lines of its own.
    if !matches!(cli.command, Some(Command::Healthcheck)) {
        shared::telemetry::init("mail-worker", "info");
    }
    shared::tls::install_crypto_provider();
    shared::telemetry::exit_code("mail-worker", run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            let config = Config::from_env()?;
            shared::heap::start_trimming(config.common.memory_trim);
            Worker::build(config)
                .await?
                .run_until(shared::telemetry::shutdown_signal())
                .await
        }
        Command::Healthcheck => {
            let config = Config::from_env()?;
            shared::healthcheck::run("WORKER_HTTP_BIND", config.http_bind).await
        }
        Command::Dlq(Dlq::List) => {
            let config = OperatorConfig::from_env()?;
            let db = operator_db(&config).await?;
            let n = dlq::list(&db, &mut std::io::stdout().lock()).await?;
            eprintln!("{n} dead letter(s)");
            Ok(())
        }
        Command::Dlq(Dlq::Replay { id, .. }) => {
            let config = OperatorConfig::from_env()?;
            let db = operator_db(&config).await?;
            let selection = match &id {
                Some(id) => dlq::Selection::Id(id.clone()),
                None => dlq::Selection::All,
            };
            let n = dlq::replay(&db, &config.broker(), &config.topology, &selection).await?;
            if let (0, Some(id)) = (n, &id) {
                anyhow::bail!("no dead letter with id {id}");
            }
            eprintln!("replayed {n} dead letter(s)");
            Ok(())
        }
        Command::Dlq(Dlq::Discard { id, older_than }) => {
            let which = match id {
                Some(id) => dlq::Discard::Id(id),
                None => dlq::Discard::OlderThanDays(older_than.unwrap_or_default()),
            };
            let db = operator_db(&OperatorConfig::from_env()?).await?;
            let n = dlq::discard(&db, &which, &dlq::operator_name()).await?;
            eprintln!("discarded {n} dead letter(s)");
            if let (0, dlq::Discard::Id(id)) = (n, &which) {
                anyhow::bail!("no dead letter with id {id} (mail-worker dlq list shows them)");
            }
            Ok(())
        }
        Command::SendTest { to, kind, locale } => {
            let answer = send_test::send_test(&Config::from_env()?, &to, kind, &locale).await?;
            println!("{answer}");
            Ok(())
        }
        Command::Suppression(Suppression::List) => {
            let db = operator_db(&OperatorConfig::from_env()?).await?;
            let list = shared::suppression::list(&db).await?;
            let mut out = std::io::stdout().lock();
            for entry in &list {
                serde_json::to_writer(&mut out, entry)?;
                std::io::Write::write_all(&mut out, b"\n")?;
            }
            eprintln!("{} suppressed address(es)", list.len());
            Ok(())
        }
        Command::Suppression(Suppression::Remove { addresses }) => unsuppress(addresses).await,
        Command::Templates(Templates::Check { dir }) => check_templates(&dir),
    }
}

/// `templates check DIR`: what the worker would say of `MAIL_TEMPLATE_DIR=DIR` at start.
fn check_templates(dir: &Path) -> anyhow::Result<()> {
    // A sample name: the configured one is checked with the rest of the configuration.
    match templates::load("Example Accounts", Some(dir)) {
        Ok(loaded) => {
            println!(
                "ok: {} templates ({} from {})",
                loaded.templates,
                loaded.from_dir,
                dir.display()
            );
            Ok(())
        }
        Err(problems) => {
            for problem in &problems.0 {
                eprintln!("{problem}");
            }
            anyhow::bail!(
                "{} template problem(s) in {}",
                problems.0.len(),
                dir.display()
            )
        }
    }
}

/// `suppression remove`: mail goes to the addresses again; one line per address, by its
/// position (the address itself is never printed).
async fn unsuppress(addresses: Vec<String>) -> anyhow::Result<()> {
    let addresses = shared::operator::addresses(addresses, std::io::stdin().lock())?;
    anyhow::ensure!(
        !addresses.is_empty(),
        "no address given (as arguments or on standard input)"
    );
    let db = operator_db(&OperatorConfig::from_env()?).await?;
    let mut failed = 0;
    for (n, address) in addresses.iter().enumerate() {
        let n = n + 1;
        let Ok(normalized) = shared::email::normalize(address) else {
            failed += 1;
            eprintln!("{n}: not an email address");
            continue;
        };
        let key = normalized.key();
        let removed = shared::db::pinned(&db, async |c| shared::suppression::remove(c, key).await);
        if removed.await? {
            eprintln!("{n}: removed from the suppression list");
        } else {
            failed += 1;
            eprintln!("{n}: not suppressed");
        }
    }
    anyhow::ensure!(failed == 0, "{failed} address(es) not removed");
    Ok(())
}

/// The database the operator commands work on (one connection).
async fn operator_db(config: &OperatorConfig) -> anyhow::Result<sqlx::PgPool> {
    shared::db::configure(&config.database_url);
    shared::telemetry::connect_db(&config.database_url, 1, &config.tls).await
}
