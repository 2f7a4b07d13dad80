//! The control-plane binary: read config, prepare the database, serve until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::process::ExitCode;

use control_plane::{config, init_tracing, prepare, serve, AppState};

#[tokio::main]
async fn main() -> ExitCode {
    init_tracing();
    let args: Vec<String> = std::env::args().skip(1).collect();
    let config = match config::load(&args, |k| std::env::var(k).ok()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("control-plane: configuration error: {e}");
            return ExitCode::from(2);
        }
    };
    match run(config).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "control plane stopped");
            eprintln!("control-plane: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: control_plane::Config) -> Result<(), String> {
    tracing::info!(?config, "starting");
    let pool = prepare(&config.database_url).await.map_err(|e| e.to_string())?;
    let addr = SocketAddr::new(config.bind_addr, config.control_port);
    let state = AppState::new(pool.clone(), config)
        .await
        .map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
    tokio::spawn(control_plane::payments::expiry::run(
        pool.clone(),
        state.config.payments.clone(),
    ));
    tokio::spawn(control_plane::webhooks::delivery::run(
        pool.clone(),
        state.config.webhooks.clone(),
    ));
    tracing::info!(%addr, "listening");
    serve(listener, state, shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
    tracing::info!("shutting down: finishing requests in flight");
}
