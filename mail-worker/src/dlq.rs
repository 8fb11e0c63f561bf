//! `mail-worker dlq list` and `mail-worker dlq replay [--id ID | --all]`: inspect the dead
//! letters and send chosen ones back to the work queue.

use lapin::{
    BasicProperties, Confirmation,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeclareOptions,
    },
    types::FieldTable,
};
use serde::Serialize;
use shared::{
    amqp::Broker,
    message::Envelope,
    topology::{JOBS_ROUTING_KEY, Topology},
};

use crate::retry;

/// One dead letter as shown by `dlq list`.
#[derive(Debug, Serialize)]
pub struct DeadLetter {
    pub id: Option<String>,
    pub kind: Option<String>,
    pub reason: Option<String>,
    pub dead_at: Option<String>,
    pub attempts: Vec<String>,
    pub bytes: usize,
}

/// Which dead letters to replay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection {
    All,
    Id(String),
}

/// Lists the dead letters without removing them.
pub async fn list(broker: &Broker, topology: &Topology) -> anyhow::Result<Vec<DeadLetter>> {
    let connection = broker.connect("mail-worker dlq").await?;
    topology.declare(&connection).await?;
    let channel = connection.create_channel().await?;
    let mut out = Vec::new();
    // Fetch without acking: closing the channel returns every message to the queue.
    while let Some(message) = channel
        .basic_get(
            topology.dead_queue().into(),
            BasicGetOptions { no_ack: false },
        )
        .await?
    {
        out.push(describe(
            &message.delivery.data,
            &message.delivery.properties,
        ));
    }
    connection.close(200, "listed".into()).await?;
    Ok(out)
}

/// Moves the selected dead letters back to `mail.jobs` with a fresh attempt count. Returns
/// how many were replayed. Each is acked from `mail.dead` only after the broker confirmed its
/// copy in the work queue, so a crash in between duplicates, never loses.
pub async fn replay(
    broker: &Broker,
    topology: &Topology,
    selection: &Selection,
) -> anyhow::Result<usize> {
    let connection = broker.connect("mail-worker dlq").await?;
    topology.declare(&connection).await?;
    let channel = connection.create_channel().await?;
    let publisher = connection.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    // Look at most at what is dead now: a replayed job that fails again lands back in this
    // queue within milliseconds and must not be picked up (and replayed) again in this run.
    let present = channel
        .queue_declare(
            topology.dead_queue().into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?
        .message_count();
    let mut replayed = 0;
    for _ in 0..present {
        let Some(message) = channel
            .basic_get(
                topology.dead_queue().into(),
                BasicGetOptions { no_ack: false },
            )
            .await?
        else {
            break;
        };
        let delivery = message.delivery;
        let info = describe(&delivery.data, &delivery.properties);
        let chosen = match selection {
            Selection::All => true,
            Selection::Id(id) => info.id.as_deref() == Some(id.as_str()),
        };
        if !chosen {
            continue; // left unacked: back in the queue when the channel closes
        }
        // A replayed job starts its retry schedule afresh.
        let body = match Envelope::decode(&delivery.data) {
            Ok(mut envelope) => {
                envelope.attempt = 0;
                envelope.encode()
            }
            Err(_) => delivery.data.clone(),
        };
        let mut properties = BasicProperties::default().with_delivery_mode(2);
        if let Some(id) = delivery.properties.message_id() {
            properties = properties.with_message_id(id.clone());
        }
        if let Some(kind) = delivery.properties.kind() {
            properties = properties.with_type(kind.clone());
        }
        if let Some(ct) = delivery.properties.content_type() {
            properties = properties.with_content_type(ct.clone());
        }
        if let Some(headers) = delivery.properties.headers() {
            // The history stays (it explains earlier failures); the dead-letter marks go.
            let kept: std::collections::BTreeMap<_, _> = headers
                .inner()
                .iter()
                .filter(|(k, _)| {
                    !matches!(
                        k.as_str(),
                        retry::DEAD_REASON_HEADER | retry::DEAD_AT_HEADER
                    )
                })
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            properties = properties.with_headers(kept.into());
        }
        let confirm = publisher
            .basic_publish(
                topology.mail_exchange().into(),
                JOBS_ROUTING_KEY.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                &body,
                properties,
            )
            .await?
            .await?;
        if !matches!(confirm, Confirmation::Ack(None)) {
            anyhow::bail!("the broker did not accept the replayed job {:?}", info.id);
        }
        delivery.ack(BasicAckOptions::default()).await?;
        replayed += 1;
    }
    connection.close(200, "replayed".into()).await?;
    Ok(replayed)
}

fn describe(data: &[u8], properties: &BasicProperties) -> DeadLetter {
    let envelope = Envelope::decode(data).ok();
    let headers = properties.headers().as_ref();
    DeadLetter {
        id: properties
            .message_id()
            .as_ref()
            .map(ToString::to_string)
            .or_else(|| envelope.as_ref().map(|e| e.id.to_string())),
        kind: envelope.as_ref().map(|e| e.job.kind().to_owned()),
        reason: retry::string_header(headers, retry::DEAD_REASON_HEADER),
        dead_at: retry::string_header(headers, retry::DEAD_AT_HEADER),
        attempts: retry::history(headers),
        bytes: data.len(),
    }
}
