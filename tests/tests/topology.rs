//! The broker topology on the machine's RabbitMQ: every queue is a quorum queue and the
//! broker's own dead-lettering is at-least-once; a work queue that an earlier version declared
//! with other arguments does not keep the services from starting.
#![allow(clippy::unwrap_used)]

use lapin::{
    Connection, ConnectionProperties,
    options::QueueDeclareOptions,
    types::{AMQPValue, FieldTable},
};
use shared::topology::Topology;

fn topology() -> Topology {
    Topology::new(format!("topo-{}.", e2e::unique_id()), &[1, 5]).expiring(60_000)
}

/// `rabbitmqctl list_queues name type arguments` lines of the queues named `prefix…`.
fn queues(prefix: &str) -> Vec<String> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_queues",
            "--no-table-headers",
            "name",
            "type",
            "arguments",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn every_queue_is_a_quorum_queue_and_dead_letters_at_least_once() {
    let topology = topology();
    let connection = Connection::connect(&e2e::amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    topology.declare(&connection).await.unwrap();
    // Twice: a redeclaration with the same arguments is a no-op.
    topology.declare(&connection).await.unwrap();
    let prefix = topology
        .jobs_queue()
        .replace(shared::topology::JOBS_QUEUE, "");
    let lines = queues(&prefix);
    // The work queue, the dead letters, the delay queues of the retry schedule (1, 5) and
    // the waiting queues of the send budgets.
    let waiting = shared::topology::BUDGET_WAIT_STEPS_MS.len();
    assert_eq!(lines.len(), 4 + waiting, "{lines:?}");
    for line in &lines {
        assert!(line.contains("\tquorum\t"), "{line}");
    }
    for name in [
        topology.jobs_queue(),
        topology.retry_queue(1),
        topology.retry_queue(5),
        topology.budget_wait_queue(250),
        topology.budget_wait_queue(1_024_000),
    ] {
        let line = lines
            .iter()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap();
        assert!(line.contains("at-least-once"), "{line}");
        assert!(line.contains("reject-publish"), "{line}");
    }
}

#[tokio::test]
async fn a_work_queue_declared_with_older_arguments_is_used_as_it_is() {
    let topology = topology();
    let connection = Connection::connect(&e2e::amqp_url(), ConnectionProperties::default())
        .await
        .unwrap();
    // The work queue as an earlier version declared it: quorum, without the at-least-once
    // dead-lettering.
    let channel = connection.create_channel().await.unwrap();
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("quorum".into()),
    );
    args.insert("x-expires".into(), AMQPValue::LongLongInt(60_000));
    channel
        .queue_declare(
            topology.jobs_queue().as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .unwrap();
    topology.declare(&connection).await.unwrap();
    let prefix = topology
        .jobs_queue()
        .replace(shared::topology::JOBS_QUEUE, "");
    let lines = queues(&prefix);
    assert_eq!(
        lines.len(),
        topology.queues().len(),
        "the other queues are declared too: {lines:?}"
    );
    let jobs = lines
        .iter()
        .find(|l| l.starts_with(&format!("{}\t", topology.jobs_queue())))
        .unwrap();
    assert!(!jobs.contains("at-least-once"), "kept as it was: {jobs}");
}

/// `rabbitmqctl list_connections client_properties frame_max`: the frame size the broker
/// agreed to with the connection that named itself `name` (its `connection_name`).
fn broker_frame_max(name: &str) -> Option<u32> {
    let out = std::process::Command::new("rabbitmqctl")
        .args([
            "-q",
            "list_connections",
            "--no-table-headers",
            "client_properties",
            "frame_max",
        ])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(name))
        .find_map(|l| l.rsplit_once('\t')?.1.trim().parse().ok())
}

#[tokio::test]
async fn connections_agree_on_small_frames_unless_the_url_sets_its_own() {
    let url = e2e::amqp_url();
    let separator = if url.contains('?') { '&' } else { '?' };
    for (url, expected) in [
        (url.clone(), shared::amqp::FRAME_MAX),
        (format!("{url}{separator}frame_max=65536"), 65_536),
    ] {
        let name = format!("frames-{}", e2e::unique_id());
        let broker = shared::amqp::Broker::new(vec![url], shared::tls::Trust::default());
        let connection = broker.connect(&name).await.unwrap();
        assert_eq!(connection.configuration().frame_max(), expected);
        // The broker's side of the same connection (its statistics lag a little).
        let agreed = e2e::poll_until(std::time::Duration::from_secs(10), || async {
            broker_frame_max(&name)
        })
        .await;
        assert_eq!(agreed, Some(expected));
        connection.close(200, "done".into()).await.unwrap();
    }
}
