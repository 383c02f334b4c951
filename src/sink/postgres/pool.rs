//! The connection pool: a connection for each call, and what is done with the
//! pool when the server is gone.

use deadpool_postgres::Client;
use tokio_postgres::config::Host;

use super::{error, Inner};
use crate::{SinkError, SinkErrorKind};

impl Inner {
    /// A connection from the pool.
    pub(super) async fn client(&self) -> Result<Client, SinkError> {
        match self.pool.get().await {
            Ok(client) => Ok(client),
            Err(e) => Err(self.failed(error::pool(e), None)),
        }
    }

    /// Passes `err` through. When it says the server is unreachable, first throws
    /// away `client` and the pool's idle connections: one lost connection usually
    /// means all were lost (a restart, a failover, an administrator terminating
    /// backends), and the pool would otherwise hand the retry the next dead one.
    pub(super) fn failed(&self, err: SinkError, client: Option<Client>) -> SinkError {
        if err.kind() == SinkErrorKind::Unavailable {
            if let Some(client) = client {
                drop(Client::take(client));
            }
            let dropped = self.pool.retain(|_, _| false).removed.len();
            tracing::debug!(
                dropped,
                error = %err,
                "PostgreSQL unavailable; dropped the idle connections"
            );
        }
        err
    }
}

/// `host:port[,host:port...]`, for `Debug`.
pub(super) fn describe_hosts(config: &tokio_postgres::Config) -> Option<String> {
    let ports = config.get_ports();
    let hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                #[cfg(unix)]
                Host::Unix(path) => path.display().to_string(),
            };
            let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
            format!("{name}:{port}")
        })
        .collect();
    (!hosts.is_empty()).then(|| hosts.join(","))
}
