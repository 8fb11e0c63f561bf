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
            let letters = dlq::list(&config.broker(), &topology()).await?;
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
            let n = dlq::replay(&config.broker(), &topology(), &dlq::Selection::All).await?;
            eprintln!("replayed {n} dead letter(s)");
            Ok(())
        }
        ["dlq", "replay", "--id", id] => {
            let n = dlq::replay(
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
