//! A private PostgreSQL cluster started with the machine's server binaries: what `cargo xtask`
//! starts where no server runs, and what the chaos tests stop and start under a load.
//! PostgreSQL refuses to run as root: as root, its tools run as the `postgres` system user.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The directory of `initdb`, `pg_ctl`: `pg_config --bindir`, else the newest
/// `/usr/lib/postgresql/*/bin`.
pub fn bin_dir() -> Result<PathBuf, String> {
    if let Some(dir) = stdout(Command::new("pg_config").arg("--bindir")) {
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

fn stdout(cmd: &mut Command) -> Option<String> {
    let out = cmd.stderr(Stdio::null()).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn is_root() -> bool {
    stdout(Command::new("id").arg("-u")).is_some_and(|u| u.trim() == "0")
}

/// `program` as the user PostgreSQL runs as.
pub fn as_postgres_user(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(cmd: &mut Command) -> Result<(), String> {
    let status = cmd
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("{:?}: {e}", cmd.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cmd:?} failed: {status}"))
    }
}

/// A cluster in `data`, listening on 127.0.0.1:`port` (socket in `data` too).
pub struct Cluster {
    pub bin: PathBuf,
    pub data: PathBuf,
    pub port: u16,
}

impl Cluster {
    /// Creates the cluster (trust authentication, user `postgres`) unless `data` holds one.
    pub fn init(data: &Path, port: u16) -> Result<Cluster, String> {
        let bin = bin_dir()?;
        if !data.join("PG_VERSION").exists() {
            std::fs::create_dir_all(data).map_err(|e| format!("cannot create {}: {e}", data.display()))?;
            if is_root() {
                run(Command::new("chown").args(["-R", "postgres:postgres"]).arg(data))?;
            }
            run(as_postgres_user(&bin.join("initdb"))
                .args(["--auth=trust", "--username=postgres", "--encoding=UTF8", "-D"])
                .arg(data))?;
        }
        Ok(Cluster {
            bin,
            data: data.to_path_buf(),
            port,
        })
    }

    /// `postgres://postgres@127.0.0.1:<port>`.
    pub fn server_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}", self.port)
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start(&self) -> Result<(), String> {
        run(as_postgres_user(&self.bin.join("pg_ctl"))
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(&self.data)
            .arg("-l")
            .arg(self.data.join("server.log"))
            .arg("-o")
            .arg(format!(
                "-p {} -c listen_addresses=127.0.0.1 -k {}",
                self.port,
                self.data.display()
            )))
    }

    /// Stops the server (`fast`: connections are closed, nothing waits for clients).
    pub fn stop(&self) -> Result<(), String> {
        run(as_postgres_user(&self.bin.join("pg_ctl"))
            .args(["stop", "-w", "-m", "fast", "-D"])
            .arg(&self.data))
    }
}
