//! Two replicas of the control plane starting at the same moment on a database that does not
//! exist yet (a Kubernetes Deployment of two, first rollout): both create-or-find the database,
//! migrate, seed the price tables and become ready; every migration and every shipped table is
//! applied exactly once. Three rounds, with the real binary.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::helpers::*;

struct Replica(Child);

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start(url: &str, port: u16, dir: &std::path::Path) -> Replica {
    let child = Command::new(env!("CARGO_BIN_EXE_control-plane"))
        .env("DATABASE_URL", url)
        .env("CONTROL_PORT", port.to_string())
        .env("BIND_ADDR", "127.0.0.1")
        .env("ADMIN_TOKEN", ADMIN)
        .env("INTERNAL_TOKEN", INTERNAL)
        .env("WEBHOOK_SIGNING_KEY", WEBHOOK_SIGNING_KEY)
        .env("DATA_DIR", dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the control plane binary");
    Replica(child)
}

async fn ready(port: u16) -> bool {
    matches!(
        reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await,
        Ok(r) if r.status() == 200
    )
}

#[tokio::test]
async fn two_replicas_starting_together_on_an_empty_database_both_come_up_and_migrate_once() {
    for round in 0..3 {
        let db = format!("cs_test_{}", Uuid::new_v4().simple());
        let url = with_database(&base_url(), &db);
        let dir = std::env::temp_dir().join(format!("cs-startup-{db}"));
        std::fs::create_dir_all(&dir).unwrap();
        let (pa, pb) = (free_port(), free_port());
        let mut a = start(&url, pa, &dir);
        let mut b = start(&url, pb, &dir);
        let deadline = Instant::now() + Duration::from_secs(60);
        while !(ready(pa).await && ready(pb).await) {
            for (name, r) in [("a", &mut a), ("b", &mut b)] {
                if let Some(status) = r.0.try_wait().unwrap() {
                    panic!("round {round}: replica {name} exited during start-up: {status}");
                }
            }
            assert!(Instant::now() < deadline, "round {round}: not both ready in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let pool = sqlx::PgPool::connect(&url).await.unwrap();
        let migrations: i64 = sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(
            migrations,
            control_plane::MIGRATOR.iter().count() as i64,
            "round {round}"
        );
        let seeds: Vec<String> = sqlx::query_scalar("SELECT source FROM price_seeds ORDER BY source")
            .fetch_all(&pool)
            .await
            .unwrap();
        assert_eq!(
            seeds.len(),
            metering::price::DEFAULT_TABLES.len(),
            "round {round}: {seeds:?}"
        );
        let duplicated: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM (SELECT model, effective_from FROM price_versions
             GROUP BY 1, 2 HAVING count(*) > 1) d",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        assert_eq!(duplicated, 0);
        pool.close().await;
        drop((a, b));
        let admin = sqlx::PgPool::connect(&base_url()).await.unwrap();
        sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&admin)
            .await
            .unwrap();
        let _ = std::fs::remove_dir_all(&dir);
    }
}
