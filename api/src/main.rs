//! `api` — serves the HTTP api; `api migrate` applies pending migrations and exits.

use api::{config::Config, startup::Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::telemetry::init("info");
    shared::tls::install_crypto_provider();
    shared::telemetry::exit_code("api", run().await)
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            Application::build(config)
                .await?
                .run_until(shared::telemetry::shutdown_signal())
                .await
        }
        Some("migrate") => {
            let db = api::startup::connect_for_migrations(&config).await?;
            api::startup::migrate(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; usage: api [serve|migrate]"),
    }
}
