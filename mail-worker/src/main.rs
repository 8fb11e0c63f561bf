//! `mail-worker` — consumes and delivers mail jobs;
//! `mail-worker dlq list` / `mail-worker dlq replay [--id ID | --all]` — the dead letters.

use mail_worker::{config::Config, dlq, startup::Worker};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shared::telemetry::init("info");
    shared::tls::install_crypto_provider();
    shared::telemetry::exit_code("mail-worker", run().await)
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
                .run_until(shared::telemetry::shutdown_signal())
                .await
        }
        ["dlq", "list"] => {
            let db = dead_letter_db(&config).await?;
            let n = dlq::list(&db, &mut std::io::stdout().lock()).await?;
            eprintln!("{n} dead letter(s)");
            Ok(())
        }
        ["dlq", "replay", "--all"] => {
            let db = dead_letter_db(&config).await?;
            let n = dlq::replay(&db, &config.broker(), &topology(), &dlq::Selection::All).await?;
            eprintln!("replayed {n} dead letter(s)");
            Ok(())
        }
        ["dlq", "replay", "--id", id] => {
            let db = dead_letter_db(&config).await?;
            let n = dlq::replay(
                &db,
                &config.broker(),
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

/// The database the dead letters are kept in (one connection).
async fn dead_letter_db(config: &Config) -> anyhow::Result<sqlx::PgPool> {
    shared::db::configure(&config.database_url);
    shared::telemetry::connect_db(&config.database_url, 1, &config.tls).await
}
