//! `fake-anthropic [--port N]`: the fake upstream as a process (demo mode and the e2e suite).
//! Prints `listening on ADDR` once it accepts connections.

use std::process::ExitCode;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> ExitCode {
    let port = std::env::args()
        .skip_while(|a| a != "--port")
        .nth(1)
        .or_else(|| std::env::var("FAKE_UPSTREAM_PORT").ok())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap_or(0);
    let listener = match tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("fake-anthropic: cannot listen on 127.0.0.1:{port}: {e}");
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(addr) => println!("listening on {addr}"),
        Err(e) => eprintln!("fake-anthropic: {e}"),
    }
    match tests::fake::serve(listener).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fake-anthropic: {e}");
            ExitCode::FAILURE
        }
    }
}
