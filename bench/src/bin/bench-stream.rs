//! bench-stream: the benchmark's streaming client. Sends `--streams` streaming Messages requests one
//! after another to `127.0.0.1:<port>` and prints, for each stream, the time to the first response
//! byte (`ttfb_ns <n>`), the total time (`total_ns <n>`), and for every text delta the time between
//! the upstream stamping it (`"text":"t=<unix ns>"`, see bench-upstream) and this client receiving
//! it (`event_ns <n>`). Same machine, same clock: the difference is the transit time.
//!
//! Usage: `bench-stream --port <port> --streams <n> [--key <api key>]`

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Count slowly."}]}"#;

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut port = 0u16;
    let mut streams = 1usize;
    let mut key: Option<String> = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().cloned().unwrap_or_default();
        match a.as_str() {
            "--port" => port = v.parse().unwrap_or(0),
            "--streams" => streams = v.parse().unwrap_or(1),
            "--key" => key = Some(v),
            _ => {
                eprintln!("bench-stream: unknown option {a}");
                std::process::exit(2);
            }
        }
    }
    if port == 0 {
        eprintln!("usage: bench-stream --port <port> --streams <n> [--key <api key>]");
        std::process::exit(2);
    }
    for i in 0..streams {
        if let Err(e) = one_stream(port, key.as_deref()) {
            eprintln!("bench-stream: stream {i}: {e}");
            std::process::exit(1);
        }
    }
}

fn one_stream(port: u16, key: Option<&str>) -> Result<(), String> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).map_err(|e| format!("connect: {e}"))?;
    s.set_nodelay(true).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(30)))
        .map_err(|e| e.to_string())?;
    let mut req = format!(
        "POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nanthropic-version: 2023-06-01\r\nContent-Length: {}\r\nConnection: close\r\n",
        BODY.len()
    );
    if let Some(k) = key {
        req.push_str(&format!("x-api-key: {k}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(BODY);
    let start = Instant::now();
    s.write_all(req.as_bytes()).map_err(|e| format!("write: {e}"))?;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pending: Vec<u8> = Vec::new();
    let mut first = true;
    let mut latencies = Vec::new();
    let mut status_checked = false;
    loop {
        let n = s.read(&mut buf).map_err(|e| format!("read: {e}"))?;
        if n == 0 {
            break;
        }
        let received = unix_ns();
        if first {
            println!("ttfb_ns {}", start.elapsed().as_nanos());
            first = false;
        }
        pending.extend_from_slice(buf.get(..n).unwrap_or_default());
        if !status_checked && pending.len() >= 12 {
            if pending.get(9..12) != Some(b"200".as_slice()) {
                let head = String::from_utf8_lossy(pending.get(..pending.len().min(300)).unwrap_or_default())
                    .into_owned();
                return Err(format!("not a 200 answer: {head}"));
            }
            status_checked = true;
        }
        // Every complete stamp that arrived. Each event is one small write upstream, so on loopback
        // chunk framing does not cut through a stamp; one that is cut fails to parse and is skipped.
        let mut consumed = 0;
        while let Some(pos) = find(pending.get(consumed..).unwrap_or_default(), b"\"text\":\"t=") {
            let digits_at = consumed + pos + 10;
            let Some(end) = pending
                .get(digits_at..)
                .and_then(|rest| rest.iter().position(|b| *b == b'"'))
            else {
                break;
            };
            let digits = std::str::from_utf8(pending.get(digits_at..digits_at + end).unwrap_or_default())
                .unwrap_or("")
                .to_owned();
            if let Ok(sent) = digits.parse::<u128>() {
                latencies.push(received.saturating_sub(sent));
            }
            consumed = digits_at + end;
        }
        pending.drain(..consumed);
    }
    println!("total_ns {}", start.elapsed().as_nanos());
    for l in latencies {
        println!("event_ns {l}");
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
