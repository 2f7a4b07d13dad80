//! A PostgreSQL server for the commands: the one `DATABASE_URL` names, else one that accepts
//! connections on 127.0.0.1:5432, else a private cluster under `.data/postgres` started with the
//! machine's PostgreSQL binaries (and stopped again when the handle is dropped).

use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::shell::{self, exec, output, Result};

const PRIVATE_PORT: u16 = 54329;

pub struct Postgres {
    /// A URL of the server without a database name, e.g. `postgres://postgres@127.0.0.1:5432`.
    pub server_url: String,
    /// Set when this process started a private cluster (stopped on drop).
    private: Option<PrivateCluster>,
}

struct PrivateCluster {
    bin: PathBuf,
    data: PathBuf,
}

impl Postgres {
    /// The URL of database `name` on this server.
    pub fn database_url(&self, name: &str) -> String {
        format!("{}/{name}", self.server_url)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(p) = &self.private {
            let mut stop = as_postgres_user(&p.bin.join("pg_ctl"));
            stop.args(["stop", "-m", "fast", "-D"]).arg(&p.data);
            let _ = exec(&mut stop);
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

fn postgres_bin_dir() -> Result<PathBuf> {
    if let Some(dir) = output(Command::new("pg_config").arg("--bindir")) {
        let dir = PathBuf::from(dir.trim());
        if dir.join("initdb").exists() {
            return Ok(dir);
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map_err(|_| "no PostgreSQL server binaries found (install Debian's postgresql package)".to_owned())?
        .filter_map(|e| e.ok())
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, bin)| bin)
        .ok_or_else(|| "no initdb under /usr/lib/postgresql/*/bin".to_owned())
}

fn is_root() -> bool {
    output(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}

/// PostgreSQL refuses to run as root: as root, run its tools as the `postgres` system user.
fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn start_private_cluster() -> Result<Postgres> {
    let bin = postgres_bin_dir()?;
    let data = shell::root().join(".data").join("postgres");
    if !data.join("PG_VERSION").exists() {
        std::fs::create_dir_all(&data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
        if is_root() {
            exec(Command::new("chown").args(["-R", "postgres:postgres"]).arg(&data))?;
        }
        exec(
            as_postgres_user(&bin.join("initdb"))
                .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "-D"])
                .arg(&data),
        )?;
    }
    let log = data.join("server.log");
    exec(
        as_postgres_user(&bin.join("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&data)
            .arg("-l")
            .arg(&log)
            .arg("-o")
            .arg(format!(
                "-p {PRIVATE_PORT} -c listen_addresses=127.0.0.1 -k {}",
                data.display()
            )),
    )?;
    Ok(Postgres {
        server_url: format!("postgres://postgres@127.0.0.1:{PRIVATE_PORT}"),
        private: Some(PrivateCluster { bin, data }),
    })
}
