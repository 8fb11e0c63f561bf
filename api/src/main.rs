//! `api` — serves the HTTP api (and the admin API when `ADMIN_API_BIND` is set); `api migrate`
//! applies pending migrations and exits (`api migrate status` lists them); `api healthcheck`
//! asks the running api's `/healthz` (for container health checks); `api accounts show|revoke-sessions|lock|unlock|
//! remove-factors|recovery|export|erase [ADDRESS…]` are the admin API's operations from the shell (addresses
//! from the arguments, or one per line on standard input); `api users import PATH|-` brings
//! accounts in with their hashes.

use api::{
    accounts::{Act, Connected, Request},
    config::Config,
    startup::Application,
};
use clap::Parser as _;

/// The password-recovery HTTP api. Configured by the environment (and `.env`); every
/// variable is listed in `.env.example`.
#[derive(clap::Parser)]
#[command(version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(clap::Subcommand)]
enum Command {
    /// Serve the api (the default).
    Serve,
    /// Apply pending database migrations (with `MIGRATE_DATABASE_URL` when set) and exit;
    /// `migrate status` prints what is applied, pending, unknown (a newer release's) or failed.
    Migrate {
        #[command(subcommand)]
        command: Option<MigrateCommand>,
    },
    /// Ask the api running with this configuration for `/healthz` on `API_BIND` (a wildcard
    /// address through the loopback): exit status 0 when it answers 200 within 3 s, else 1.
    Healthcheck,
    /// Support staff's tools for one account (audited with the reason and the operator).
    Accounts {
        #[command(subcommand)]
        command: AccountsCommand,
    },
    /// Bringing accounts in.
    Users {
        #[command(subcommand)]
        command: UsersCommand,
    },
}

#[derive(clap::Subcommand)]
enum MigrateCommand {
    /// Print one line per migration, `applied|pending|unknown|failed VERSION DESCRIPTION`
    /// (unknown: applied by a newer release, which this build serves on); exit status 1 when
    /// one failed halfway.
    Status,
}

#[derive(clap::Subcommand)]
enum UsersCommand {
    /// Import accounts with the password hashes they have, from JSON lines
    /// `{"email", "password_hash" (string or null), "email_verified" (default true)}`: refused
    /// lines on standard error as `line N: …`, progress after each batch, the counts as one
    /// JSON line on standard output; exit status 1 when a line was refused. An address that
    /// has an account is skipped, never overwritten.
    Import {
        /// The file, or `-` for standard input.
        path: String,
    },
}

#[derive(clap::Subcommand)]
enum AccountsCommand {
    /// Print the account (JSON, one line per address).
    Show(AccountArgs),
    /// End every session of the account now (needs --reason).
    RevokeSessions(AccountArgs),
    /// Lock the account: sessions revoked, sign-in refused until a reset, a reset email to
    /// its owner (relayed by a running api). Needs --reason.
    Lock(AccountArgs),
    /// Lift the lock mark and clear the address's failed sign-ins (needs --reason).
    Unlock(AccountArgs),
    /// Remove the second factor and the recovery codes of a person who lost both, once you
    /// proved who they are (needs --reason); the owner gets a notice.
    RemoveFactors(AccountArgs),
    /// Print a reset link and its code for you to hand over (JSON); with --send, queue the
    /// ordinary reset email instead.
    Recovery {
        #[command(flatten)]
        args: AccountArgs,
        /// Send the ordinary reset email to the account's address.
        #[arg(long)]
        send: bool,
    },
    /// Print the account and its audit trail (JSON): a person's access request.
    Export(AccountArgs),
    /// Erase the account: it, its sessions, links, codes, queued mail and suppression entry
    /// go, its audit rows keep no address or IP. Needs --reason.
    Erase(AccountArgs),
}

#[derive(clap::Args)]
struct AccountArgs {
    /// The accounts' email addresses (any spelling); none or `-`: one per line on standard
    /// input (so no address stands in the shell's history or the process list).
    addresses: Vec<String>,
    /// Why (kept in the audit trail); required by the commands that change the account.
    #[arg(long)]
    reason: Option<String>,
    /// Who acts (kept in the audit trail); defaults to the login name (`USER`, `LOGNAME`).
    #[arg(long)]
    operator: Option<String>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `--help`, `--version` and a wrong command are answered before any configuration is read.
    let cli = Cli::parse();
    // A health check prints one line and sets the exit status: no log setup, so a container
    // runtime that runs it every few seconds keeps no log lines of its own.
    if !matches!(cli.command, Some(Command::Healthcheck)) {
        shared::telemetry::init("api", "info");
    }
    shared::tls::install_crypto_provider();
    shared::telemetry::exit_code("api", run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            shared::heap::start_trimming(config.common.memory_trim);
            Application::build(config)
                .await?
                .run_until(shared::telemetry::shutdown_signal())
                .await
        }
        Command::Migrate { command: None } => {
            let db = api::startup::connect_for_migrations(&config).await?;
            api::migrations::migrate(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Command::Migrate {
            command: Some(MigrateCommand::Status),
        } => {
            let db = api::startup::connect_for_migrations(&config).await?;
            let status = api::migrations::status(&db).await?;
            for line in status.lines() {
                println!("{line}");
            }
            anyhow::ensure!(
                status.failed.is_empty(),
                "a migration failed halfway; repair it before anything migrates again"
            );
            Ok(())
        }
        Command::Healthcheck => shared::healthcheck::run("API_BIND", config.bind).await,
        Command::Users {
            command: UsersCommand::Import { path },
        } => import(&config, &path).await,
        Command::Accounts { command } => accounts(config, command).await,
    }
}

/// `api accounts …` (see [`api::accounts`]): one line per address, by its position (the
/// address itself is printed only by `show` and `export`, whose point is the account).
async fn accounts(config: Config, command: AccountsCommand) -> anyhow::Result<()> {
    let (act, args) = match command {
        AccountsCommand::Show(args) => (Act::Show, args),
        AccountsCommand::RevokeSessions(args) => (Act::RevokeSessions, args),
        AccountsCommand::Lock(args) => (Act::Lock, args),
        AccountsCommand::Unlock(args) => (Act::Unlock, args),
        AccountsCommand::RemoveFactors(args) => (Act::RemoveFactors, args),
        AccountsCommand::Recovery { args, send: false } => (Act::RecoveryLink, args),
        AccountsCommand::Recovery { args, send: true } => (Act::RecoveryEmail, args),
        AccountsCommand::Export(args) => (Act::Export, args),
        AccountsCommand::Erase(args) => (Act::Erase, args),
    };
    let operator = args
        .operator
        .or_else(|| std::env::var("USER").ok())
        .or_else(|| std::env::var("LOGNAME").ok())
        .unwrap_or_else(|| "an unnamed operator".into());
    let addresses = shared::operator::addresses(args.addresses, std::io::stdin().lock())?;
    anyhow::ensure!(
        !addresses.is_empty(),
        "no address given (as arguments or on standard input)"
    );
    let desk = Connected::new(config)?;
    let mut failed = 0;
    for (n, address) in addresses.into_iter().enumerate() {
        let request = Request {
            act,
            address,
            reason: args.reason.clone(),
            operator: operator.clone(),
        };
        match desk.run(&request).await {
            Ok(done) => println!("{}: {done}", n + 1),
            Err(e) => {
                failed += 1;
                eprintln!("{}: {e:#}", n + 1);
            }
        }
    }
    anyhow::ensure!(failed == 0, "{failed} address(es) failed");
    Ok(())
}

/// `api users import PATH|-` (see [`api::import`]).
async fn import(config: &Config, path: &str) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let db = config.database()?;
    // The one hash every account imported without a password holds: of a secret nobody
    // keeps, with the configured parameters.
    let hasher = api::hashing::Hasher::new(config.argon2, 1)?;
    let no_password = api::lock::unusable_hash(&hasher)
        .await
        .map_err(|e| anyhow::anyhow!("hashing: {e}"))?;
    let input: Box<dyn tokio::io::AsyncRead + Unpin> = if path == "-" {
        Box::new(tokio::io::stdin())
    } else {
        Box::new(
            tokio::fs::File::open(path)
                .await
                .with_context(|| format!("opening {path}"))?,
        )
    };
    let input = tokio::io::BufReader::with_capacity(64 * 1024, input);
    let max_verify = config.import_max_verify;
    let summary =
        api::import::run_within(
            &db,
            input,
            &no_password,
            max_verify,
            |report| match report {
                api::import::Report::Refused(refusal) => eprintln!("{refusal}"),
                api::import::Report::Progress(s, lines) => eprintln!(
                    "{lines} lines: {} imported, {} skipped, {} refused",
                    s.imported, s.skipped, s.refused
                ),
            },
        )
        .await?;
    println!("{}", serde_json::to_string(&summary)?);
    anyhow::ensure!(summary.refused == 0, "{} line(s) refused", summary.refused);
    Ok(())
}
