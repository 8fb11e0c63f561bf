//! `api` — serves the HTTP api; `api migrate` applies pending migrations and exits.

use api::{config::Config, startup::Application};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::telemetry::init("info");
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "api failed");
            eprintln!("api: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            Application::build(config)
                .await?
                .run_until(shutdown_signal())
                .await
        }
        Some("migrate") => {
            let db = api::startup::connect_db(&config.database_url).await?;
            api::startup::MIGRATOR.run(&db).await?;
            tracing::info!("migrations applied");
            Ok(())
        }
        Some(other) => anyhow::bail!("unknown command {other:?}; usage: api [serve|migrate]"),
    }
}

/// Resolves on SIGTERM (orchestrators) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
