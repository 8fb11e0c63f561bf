//! `mail-worker` — consumes and delivers mail jobs;
//! `mail-worker dlq list` / `mail-worker dlq replay [--id ID | --all]` — the dead letters.

use mail_worker::{config::Config, dlq, startup::Worker};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::telemetry::init("info");
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "mail-worker failed");
            eprintln!("mail-worker: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

const USAGE: &str =
    "usage: mail-worker [serve] | mail-worker dlq list | mail-worker dlq replay (--id ID | --all)";

async fn run() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let config = Config::from_env()?;
    let topology = || config.topology();
    match args.as_slice() {
        [] | ["serve"] => {
            Worker::build(config.clone())
                .await?
                .run_until(shutdown_signal())
                .await
        }
        ["dlq", "list"] => {
            let letters = dlq::list(&config.amqp_url, &topology()).await?;
            for letter in &letters {
                println!("{}", serde_json::to_string(letter)?);
            }
            eprintln!(
                "{} dead letter(s) in {}",
                letters.len(),
                topology().dead_queue()
            );
            Ok(())
        }
        ["dlq", "replay", "--all"] => {
            let n = dlq::replay(&config.amqp_url, &topology(), &dlq::Selection::All).await?;
            eprintln!("replayed {n} dead letter(s)");
            Ok(())
        }
        ["dlq", "replay", "--id", id] => {
            let n = dlq::replay(
                &config.amqp_url,
                &topology(),
                &dlq::Selection::Id((*id).to_owned()),
            )
            .await?;
            if n == 0 {
                anyhow::bail!("no dead letter with id {id}");
            }
            eprintln!("replayed {n} dead letter(s)");
            Ok(())
        }
        _ => anyhow::bail!("{USAGE}"),
    }
}

/// Resolves on SIGTERM (orchestrators) or Ctrl-C.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
