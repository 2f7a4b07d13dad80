//! The SSE framer under the stream meters.

use super::*;

#[derive(Default)]
struct Events {
    dispatched: Vec<(Option<String>, String)>,
    data: Vec<u8>,
}

impl SseHandler for Events {
    fn data(&mut self, bytes: &[u8]) {
        self.data.extend_from_slice(bytes);
    }
    fn dispatch(&mut self, event: Option<&[u8]>) {
        let name = event.map(|e| String::from_utf8_lossy(e).into_owned());
        let data = String::from_utf8_lossy(&std::mem::take(&mut self.data)).into_owned();
        self.dispatched.push((name, data));
    }
}

fn frame(chunks: &[&str]) -> (Vec<(Option<String>, String)>, StreamEnd) {
    let mut framer = SseFramer::new();
    let mut events = Events::default();
    for chunk in chunks {
        framer.feed(chunk.as_bytes(), &mut events);
    }
    (events.dispatched, framer.finish())
}

fn ev(name: Option<&str>, data: &str) -> (Option<String>, String) {
    (name.map(str::to_owned), data.to_owned())
}

#[test]
fn sse_cr_ending_one_chunk_and_lf_starting_the_next_are_one_line_ending() {
    let (events, end) = frame(&["data: a\r", "\ndata: b\r", "\n\r", "\n"]);
    assert_eq!(events, [ev(None, "a\nb")]);
    assert_eq!(end, StreamEnd::Clean);
    // Two CRs are two line endings: the second ends the event.
    let (events, _) = frame(&["data: a\r", "\rdata: b\r\r"]);
    assert_eq!(events, [ev(None, "a"), ev(None, "b")]);
}

#[test]
fn sse_data_lines_join_with_newlines_and_strip_one_space() {
    let (events, _) = frame(&["event: e\ndata\ndata:\ndata:  two spaces\ndata:x\n\n"]);
    assert_eq!(events, [ev(Some("e"), "\n\n two spaces\nx")]);
}

#[test]
fn sse_events_without_data_are_not_dispatched_and_names_do_not_leak() {
    let (events, _) = frame(&["event: lonely\n\ndata: 1\n\nevent: named\nevent:\ndata: 2\n\n"]);
    assert_eq!(events, [ev(None, "1"), ev(None, "2")]);
}

#[test]
fn sse_over_long_lines_other_than_data_are_skipped() {
    let long = "x".repeat(10_000);
    let body = format!(": {long}\nevent: {long}\n{long}: v\ndata{long}: w\ndata: {long}\n\n");
    let (events, end) = frame(&[&body]);
    assert_eq!(events, [ev(None, &long)]);
    assert_eq!(end, StreamEnd::Clean);
}

#[test]
fn sse_stream_ending_inside_an_event_says_so() {
    assert_eq!(
        frame(&["data: 1\n\ndata: 2\n"]),
        (vec![ev(None, "1")], StreamEnd::MidEvent)
    );
    assert_eq!(frame(&["data: 1\n\ndata: 2"]).1, StreamEnd::MidEvent);
    assert_eq!(frame(&["data: 1\n\n: comment"]).1, StreamEnd::MidEvent);
    assert_eq!(frame(&["data: 1\r\n\r\n"]).1, StreamEnd::Clean);
    assert_eq!(frame(&[""]).1, StreamEnd::Clean);
}

#[test]
fn sse_byte_order_mark_is_skipped_only_at_the_start() {
    assert_eq!(frame(&["\u{feff}", "data: 1\n\n"]).0, [ev(None, "1")]);
    assert_eq!(frame(&["\u{feff}data: \u{feff}1\n\n"]).0, [ev(None, "\u{feff}1")]);
    // A lookalike start is a field name, not a BOM.
    assert_eq!(frame(&["\u{fefe}data: 1\n\n"]).0, []);
}
