//! Where RabbitMQ is and how to open a connection to it: the one way both services (and the
//! worker's `dlq` commands) connect. `amqps://` URLs are checked against the webpki roots
//! plus `TLS_CA_FILE`.

use lapin::{Connection, ConnectionProperties, tcp::OwnedTLSConfig};

/// The broker of `AMQP_URL` and what its TLS certificate is checked against.
#[derive(Debug, Clone)]
pub struct Broker {
    url: String,
    trust: crate::tls::Trust,
}

impl Broker {
    pub fn new(url: impl Into<String>, trust: crate::tls::Trust) -> Self {
        Self {
            url: url.into(),
            trust,
        }
    }

    /// Opens a connection named `name` (shown in the management UI).
    pub async fn connect(&self, name: &str) -> lapin::Result<Connection> {
        let properties = ConnectionProperties::default().with_connection_name(name.into());
        let tls = OwnedTLSConfig {
            identity: None,
            cert_chain: self.trust.extra_pem(),
        };
        Connection::connect_with_config(
            &self.url,
            properties,
            tls,
            lapin::runtime::default_runtime()?,
        )
        .await
    }
}
