//! A job whose email cannot be rendered: a dead letter with its reason, audited as dead like
//! every other dead letter.

use std::{net::SocketAddr, sync::Arc};

use mail_worker::{render::Renderer, startup::Worker};
use shared::{audit::Outcome, message::Job};

use crate::helpers::{PATIENCE, spawn};

#[tokio::test]
async fn a_job_whose_email_cannot_be_rendered_is_a_dead_letter_with_its_audit_row() {
    let mut w = spawn().await;
    w.add_user("kim@example.org", true).await;
    // The embedded templates render every job, so the test's worker is stopped and another
    // one takes its place on the same database and queues, with a reset subject that names
    // a value no email has.
    w.stop().await;
    let renderer = Renderer::new(&w.config.product_name)
        .expect("templates")
        .with_template("en/password_reset.subject.j2", "{{ no_such_value }}")
        .expect("the template parses");
    let broken = Worker::build_with_clock(w.config.clone(), Arc::new(w.clock.clone()))
        .await
        .expect("the worker starts")
        .with_renderer(renderer);
    let http = broken.http_addr().expect("bound");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(broken.run_until(async {
        let _ = stopped.await;
    }));
    wait_ready(http).await;

    let job = w.job(Job::PasswordResetRequested {
        email: "kim@example.org".into(),
        ip: None,
        within_budget: true,
        user_id: None,
    });
    w.publish(&job).await;

    let dead = w.dead_letters(1).await;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert!(dead[0].0.starts_with("cannot render: "), "{dead:?}");
    assert_eq!(dead[0].1.as_deref(), Some("password_reset_requested"));
    assert_eq!(w.outcome(&job).await, Outcome::Dead);
    assert!(w.sink.emails().is_empty(), "nothing sent");
    let _ = stop.send(());
    running.await.expect("worker task").expect("the worker ran");
}

/// Waits until the worker listening on `http` says ready.
async fn wait_ready(http: SocketAddr) {
    let url = format!("http://{http}/readyz");
    let ready = e2e::poll_until(PATIENCE, || async {
        let r = reqwest::get(&url).await.ok()?;
        r.status().is_success().then_some(())
    })
    .await;
    assert!(ready.is_some(), "the worker did not become ready");
}
