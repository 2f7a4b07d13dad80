//! bench-upstream: the benchmark's upstream, an HTTP/1.1 server that answers every request at once
//! with a fixed Anthropic-shaped message (with usage), or, when the request body asks for
//! `"stream":true`, with an SSE stream of `--events` events sent `--interval-ms` apart.
//!
//! It exists so that the upstream is never the bottleneck of `cargo xtask bench`: no framework, no
//! recording, one thread per connection (Envoy keeps a handful of connections alive), the JSON
//! answer prebuilt. Each text delta of a stream carries the wall-clock time it was sent
//! (`"text":"t=<unix ns>"`), so a client on the same machine measures each event's transit time.
//!
//! `GET /__bench/count` answers how many messages it has answered (the bench compares it with the
//! debits recorded).
//!
//! Usage: `bench-upstream --port <port> [--events 200] [--interval-ms 5]`

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

const MESSAGE: &str = r#"{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello from the bench upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":6}}"#;

/// Messages answered (JSON or stream), for `GET /__bench/count`.
static ANSWERED: AtomicU64 = AtomicU64::new(0);

struct Options {
    port: u16,
    events: usize,
    interval: Duration,
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        port: 0,
        events: 200,
        interval: Duration::from_millis(5),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let v = it.next().ok_or_else(|| format!("{a} needs a value"))?;
        let n: u64 = v.parse().map_err(|_| format!("{a} {v}: not a number"))?;
        match a.as_str() {
            "--port" => o.port = u16::try_from(n).map_err(|_| format!("bad port {n}"))?,
            "--events" => o.events = usize::try_from(n).unwrap_or(200).max(5),
            "--interval-ms" => o.interval = Duration::from_millis(n),
            _ => return Err(format!("unknown option {a}")),
        }
    }
    if o.port == 0 {
        return Err("usage: bench-upstream --port <port> [--events 200] [--interval-ms 5]".into());
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench-upstream: {e}");
            std::process::exit(2);
        }
    };
    let listener = match TcpListener::bind(("127.0.0.1", opts.port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-upstream: cannot listen on 127.0.0.1:{}: {e}", opts.port);
            std::process::exit(1);
        }
    };
    let json_response = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nrequest-id: req_bench\r\ncontent-length: {}\r\n\r\n{MESSAGE}",
        MESSAGE.len()
    );
    let json_response: &'static str = Box::leak(json_response.into_boxed_str());
    let events = opts.events;
    let interval = opts.interval;
    for stream in listener.incoming().flatten() {
        std::thread::spawn(move || {
            let _ = serve(stream, json_response, events, interval);
        });
    }
}

/// One connection: requests one after another until the peer closes it.
fn serve(stream: TcpStream, json_response: &str, events: usize, interval: Duration) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::with_capacity(64 * 1024, stream);
    let mut line = String::new();
    let mut body = Vec::new();
    loop {
        // Request line and headers.
        let mut content_length = 0usize;
        let mut chunked = false;
        let mut path_seen = false;
        let mut count_request = false;
        loop {
            line.clear();
            if reader.read_line(&mut line)? == 0 {
                return Ok(());
            }
            let l = line.trim_end();
            if l.is_empty() {
                if path_seen {
                    break;
                }
                continue;
            }
            if !path_seen {
                path_seen = true;
                count_request = l.starts_with("GET /__bench/count ");
                continue;
            }
            if let Some((name, value)) = l.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    content_length = value.trim().parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = value.to_ascii_lowercase().contains("chunked");
                }
            }
        }
        body.clear();
        if chunked {
            read_chunked(&mut reader, &mut body)?;
        } else {
            body.resize(content_length, 0);
            reader.read_exact(&mut body)?;
        }
        if count_request {
            let n = ANSWERED.load(Ordering::Relaxed).to_string();
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
                n.len()
            );
            // Asked by a one-shot client (`Connection: close`): close after the answer.
            return writer.write_all(format!("{head}{n}").as_bytes());
        } else if wants_stream(&body) {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
            write_stream(&mut writer, events, interval)?;
        } else {
            ANSWERED.fetch_add(1, Ordering::Relaxed);
            writer.write_all(json_response.as_bytes())?;
        }
    }
}

fn read_chunked(reader: &mut impl BufRead, body: &mut Vec<u8>) -> std::io::Result<()> {
    let mut line = String::new();
    loop {
        line.clear();
        reader.read_line(&mut line)?;
        let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or("0"), 16).unwrap_or(0);
        if size == 0 {
            // Trailers (none expected) end with an empty line.
            loop {
                line.clear();
                if reader.read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(());
                }
            }
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader.read_exact(body.get_mut(start..).unwrap_or_default())?;
        line.clear();
        reader.read_line(&mut line)?;
    }
}

fn wants_stream(body: &[u8]) -> bool {
    body.windows(13).any(|w| w == b"\"stream\":true") || body.windows(14).any(|w| w == b"\"stream\": true")
}

fn unix_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn chunk(w: &mut impl Write, data: &str) -> std::io::Result<()> {
    w.write_all(format!("{:x}\r\n{data}\r\n", data.len()).as_bytes())
}

/// Sends each event when it is due (by deadline, so scheduling delays do not accumulate).
struct Pacer {
    start: Instant,
    interval: Duration,
    sent: u32,
}

impl Pacer {
    fn wait(&mut self) {
        let due = self.start + self.interval * self.sent;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        self.sent += 1;
    }
}

/// `events` SSE events in Anthropic's order, one chunk each, `interval` apart.
fn write_stream(w: &mut TcpStream, events: usize, interval: Duration) -> std::io::Result<()> {
    w.write_all(
        b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nrequest-id: req_bench_stream\r\ntransfer-encoding: chunked\r\n\r\n",
    )?;
    let deltas = events.saturating_sub(5);
    let mut pacer = Pacer {
        start: Instant::now(),
        interval,
        sent: 0,
    };
    pacer.wait();
    chunk(w, "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_bench_stream\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5-20250929\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":12,\"cache_creation_input_tokens\":0,\"cache_read_input_tokens\":0,\"output_tokens\":1}}}\n\n")?;
    pacer.wait();
    chunk(w, "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n")?;
    for _ in 0..deltas {
        pacer.wait();
        // Stamped after the pacing sleep, just before the write.
        let data = format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"t={}\"}}}}\n\n",
            unix_ns()
        );
        chunk(w, &data)?;
    }
    pacer.wait();
    chunk(
        w,
        "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    )?;
    pacer.wait();
    let delta = format!(
        "event: message_delta\ndata: {{\"type\":\"message_delta\",\"delta\":{{\"stop_reason\":\"end_turn\",\"stop_sequence\":null}},\"usage\":{{\"output_tokens\":{deltas}}}}}\n\n"
    );
    chunk(w, &delta)?;
    pacer.wait();
    chunk(w, "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")?;
    w.write_all(b"0\r\n\r\n")
}
