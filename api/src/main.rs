//! `api` — serves the HTTP api; `api migrate` applies pending migrations and exits.

use api::{config::Config, startup::Application};
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
    /// Apply pending database migrations (with `MIGRATE_DATABASE_URL` when set) and exit.
    Migrate,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    // `--help`, `--version` and a wrong command are answered before any configuration is read.
    let cli = Cli::parse();
    shared::telemetry::init("info");
    shared::tls::install_crypto_provider();
    shared::telemetry::exit_code("api", run(cli).await)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => {
            Application::build(config)
                .await?
                .run_until(shared::telemetry::shutdown_signal())
                .await
        }
        Command::Migrate => {
            let db = api::startup::connect_for_migrations(&config).await?;
            api::startup::migrate(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
    }
}
