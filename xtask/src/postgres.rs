//! A PostgreSQL server for the commands: the one `DATABASE_URL` names, else one that accepts
//! connections on 127.0.0.1:5432, else a private cluster under `.data/postgres` started with the
//! machine's PostgreSQL binaries (and stopped again when the handle is dropped).

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use tests::pg::Cluster;

use crate::shell::{self, Result};

const PRIVATE_PORT: u16 = 54329;

pub struct Postgres {
    /// A URL of the server without a database name, e.g. `postgres://postgres@127.0.0.1:5432`.
    pub server_url: String,
    /// Set when this process started a private cluster (stopped on drop).
    private: Option<Cluster>,
}

impl Postgres {
    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("{}/{name}", self.server_url)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(cluster) = &self.private {
            let _ = cluster.stop();
        }
    }
}

fn accepts_connections(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Finds or starts a server. `DATABASE_URL` (a full URL with a database) wins when set.
pub fn ensure() -> Result<Postgres> {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        let server_url = match url.rsplit_once('/') {
            Some((server, _db)) if server.contains("://") && !server.ends_with('/') => server.to_owned(),
            _ => url,
        };
        return Ok(Postgres {
            server_url,
            private: None,
        });
    }
    if accepts_connections(5432) {
        return Ok(Postgres {
            server_url: "postgres://postgres@127.0.0.1:5432".into(),
            private: None,
        });
    }
    start_private_cluster()
}

fn start_private_cluster() -> Result<Postgres> {
    let cluster = Cluster::init(&shell::root().join(".data").join("postgres"), PRIVATE_PORT)?;
    cluster.start()?;
    Ok(Postgres {
        server_url: cluster.server_url(),
        private: Some(cluster),
    })
}
