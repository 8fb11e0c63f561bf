//! Where RabbitMQ is, how to open a connection to it and how to publish with confirms: the
//! one way both services (and the worker's `dlq` commands) connect and publish. `AMQP_URL` may list the nodes of a cluster; each process
//! starts at a random one, and every new connection (after a lost one) tries the nodes in
//! turn from the one after the last it used, so the replicas spread over the nodes and a dead
//! node is left for the next live one. `amqps://` URLs are checked against the webpki roots
//! plus `TLS_CA_FILE`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions},
    tcp::OwnedTLSConfig,
};

use crate::topology::Topology;

/// How long one node may take to accept a connection before the next one is tried.
const NODE_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest frame each connection proposes to the broker, unless the URL says otherwise
/// (`?frame_max=`). lapin keeps a send and a receive buffer of 32 frames per connection: 4 MiB
/// each at RabbitMQ's default of 128 KiB, and every page of them becomes resident as the
/// buffers cycle under load; 1 MiB each at this size. A job is well under 4 KiB and a larger
/// body goes out as several frames, but a message's headers must fit one frame: the
/// worker's attempt history is bounded for that reason (11 KB at most).
pub const FRAME_MAX: u32 = 32 * 1024;

/// `url` with [`FRAME_MAX`] proposed unless it sets `frame_max` itself.
fn with_frame_max(url: &str) -> Result<lapin::uri::AMQPUri, String> {
    let mut uri: lapin::uri::AMQPUri = url.parse()?;
    uri.query.frame_max.get_or_insert(FRAME_MAX);
    Ok(uri)
}

/// The broker nodes of `AMQP_URL` and what their TLS certificates are checked against.
#[derive(Debug, Clone)]
pub struct Broker {
    urls: Arc<Vec<String>>,
    trust: crate::tls::Trust,
    /// The node the next connection tries first.
    next: Arc<AtomicUsize>,
}

/// No node of `AMQP_URL` accepted a connection.
#[derive(Debug, thiserror::Error)]
#[error("no RabbitMQ node accepted a connection ({tried} tried); last error: {last}")]
pub struct ConnectError {
    tried: usize,
    last: String,
}

impl Broker {
    /// The nodes `urls` (one or more nodes of one cluster; at least one).
    pub fn new(urls: Vec<String>, trust: crate::tls::Trust) -> Self {
        let start = if urls.len() > 1 {
            rand::random_range(0..urls.len())
        } else {
            0
        };
        Self {
            urls: Arc::new(urls),
            trust,
            next: Arc::new(AtomicUsize::new(start)),
        }
    }

    /// The longest [`Self::connect`] may take: every node's connect limit, plus time to
    /// declare the topology on the one that answers.
    pub fn connect_limit(&self) -> Duration {
        NODE_CONNECT_TIMEOUT * u32::try_from(self.urls.len()).unwrap_or(u32::MAX)
            + Duration::from_secs(3)
    }

    /// The node address (`host:port`, no credentials) a connection to the `index`th URL goes
    /// to, for logs.
    fn node(&self, index: usize) -> String {
        let url = &self.urls[index];
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        rest.split(['/', '?']).next().unwrap_or_default().to_owned()
    }

    /// Opens a connection named `name` (shown in the management UI) to the first node, in
    /// turn from the next one, that accepts it.
    pub async fn connect(&self, name: &str) -> Result<Connection, ConnectError> {
        let count = self.urls.len().max(1);
        let first = self.next.fetch_add(1, Ordering::Relaxed) % count;
        let mut last = String::from("no AMQP_URL");
        for offset in 0..self.urls.len() {
            let index = (first + offset) % count;
            let properties = ConnectionProperties::default().with_connection_name(name.into());
            let tls = OwnedTLSConfig {
                identity: None,
                cert_chain: self.trust.extra_pem(),
            };
            let uri = match with_frame_max(&self.urls[index]) {
                Ok(uri) => uri,
                Err(e) => {
                    last = format!("{}: {e}", self.node(index));
                    continue;
                }
            };
            let attempt = async {
                Connection::connect_uri_with_config(
                    uri,
                    properties,
                    tls,
                    lapin::runtime::default_runtime()?,
                )
                .await
            };
            match tokio::time::timeout(NODE_CONNECT_TIMEOUT, attempt).await {
                Ok(Ok(connection)) => {
                    // A later reconnection starts after this node.
                    self.next.store(index + 1, Ordering::Relaxed);
                    if self.urls.len() > 1 {
                        tracing::info!(node = %self.node(index), "connected to RabbitMQ");
                    }
                    return Ok(connection);
                }
                Ok(Err(e)) => last = format!("{}: {e}", self.node(index)),
                Err(_) => {
                    last = format!(
                        "{}: no connection within {NODE_CONNECT_TIMEOUT:?}",
                        self.node(index)
                    );
                }
            }
        }
        Err(ConnectError {
            tried: self.urls.len(),
            last,
        })
    }
}

impl Broker {
    /// [`Self::connect`], then declares `topology` and opens a channel with publisher
    /// confirms: what every publisher of jobs needs before its first publish.
    pub async fn connect_confirmed(
        &self,
        name: &str,
        topology: &Topology,
    ) -> anyhow::Result<(Connection, Channel)> {
        let connection = self.connect(name).await?;
        topology.declare(&connection).await?;
        let channel = connection.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        Ok((connection, channel))
    }
}

/// Why a confirmed publish did not land.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not confirm the publish within {0:?}")]
    Timeout(Duration),
    #[error("publish failed: {0}")]
    Channel(#[from] lapin::Error),
    #[error("the broker returned the message as unroutable: {0}")]
    Returned(String),
    #[error("the broker refused the message (nack)")]
    Nacked,
    #[error("publisher confirms are not enabled on the channel")]
    NotConfirming,
}

impl PublishError {
    /// Whether the channel should not be used again: its publishes are refused or not
    /// answered. After a cluster node died, a channel that met a quorum queue during its
    /// leader election can keep being refused although the queue has a new leader; a new
    /// connection (to the next node) is the way out.
    pub fn distrusts_channel(&self) -> bool {
        matches!(self, PublishError::Timeout(_) | PublishError::Nacked)
    }
}

/// Publishes `body` as a persistent message to `exchange` with `routing_key` and waits up to
/// `timeout` for the broker's confirm. With `mandatory`, a message no queue takes comes back
/// as [`PublishError::Returned`] instead of vanishing.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    mandatory: bool,
    timeout: Duration,
) -> Result<(), PublishError> {
    // Persistent: the message is written to disk before the broker confirms it.
    let properties = properties.with_delivery_mode(2);
    let confirm = tokio::time::timeout(timeout, async {
        channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    ..BasicPublishOptions::default()
                },
                body,
                properties,
            )
            .await?
            .await
    })
    .await
    .map_err(|_| PublishError::Timeout(timeout))??;
    match confirm {
        Confirmation::Ack(None) => Ok(()),
        Confirmation::Ack(Some(returned)) => {
            Err(PublishError::Returned(returned.reply_text.to_string()))
        }
        Confirmation::Nack(_) => Err(PublishError::Nacked),
        Confirmation::NotRequested => Err(PublishError::NotConfirming),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_name_the_node_without_credentials() {
        let broker = Broker::new(
            vec![
                "amqps://user:secret@rabbit-1.internal:5671/%2f?heartbeat=10".into(),
                "amqp://rabbit-2:5672".into(),
            ],
            crate::tls::Trust::default(),
        );
        assert_eq!(broker.node(0), "rabbit-1.internal:5671");
        assert_eq!(broker.node(1), "rabbit-2:5672");
    }

    #[test]
    fn connections_propose_small_frames_unless_the_url_sets_its_own() {
        let frame_max = |url: &str| with_frame_max(url).expect(url).query.frame_max;
        assert_eq!(
            frame_max("amqp://guest:guest@127.0.0.1:5672/%2f"),
            Some(FRAME_MAX)
        );
        assert_eq!(
            frame_max("amqps://u:p@rabbit-1.internal:5671/%2f?heartbeat=10"),
            Some(FRAME_MAX)
        );
        assert_eq!(
            frame_max("amqp://rabbit:5672/%2f?frame_max=131072"),
            Some(131_072)
        );
        let uri =
            with_frame_max("amqps://u:p@rabbit-1.internal:5671/vhost?heartbeat=10").expect("valid");
        assert_eq!(uri.query.heartbeat, Some(10));
        assert_eq!(uri.vhost, "vhost");
        assert!(with_frame_max("amqp://rabbit:5672/%2f?frame_max=lots").is_err());
    }

    #[tokio::test]
    async fn every_node_is_tried_and_the_error_names_the_last() {
        // Two loopback ports nobody listens on.
        let dead = |_| {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            let port = listener.local_addr().expect("addr").port();
            format!("amqp://guest:guest@127.0.0.1:{port}/%2f")
        };
        let urls: Vec<String> = (0..2).map(dead).collect();
        let broker = Broker::new(urls, crate::tls::Trust::default());
        let error = broker.connect("test").await.expect_err("nothing listens");
        assert_eq!(error.tried, 2);
        assert!(error.to_string().contains("127.0.0.1:"), "{error}");
        assert!(!error.to_string().contains("guest"), "{error}");
    }
}
