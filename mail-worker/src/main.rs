//! `mail-worker` — consumes mail jobs from RabbitMQ and delivers them over SMTP.
//!
//! The delivery service is being built; until then this binary only reports that it does
//! not deliver yet, so nobody mistakes it for a working worker.

fn main() -> std::process::ExitCode {
    eprintln!(
        "mail-worker: delivery is not available in this build yet; jobs stay queued in mail.jobs"
    );
    std::process::ExitCode::FAILURE
}
