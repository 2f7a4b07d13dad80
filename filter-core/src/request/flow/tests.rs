//! The flow's decisions, natively, against the in-memory shared data; and `request_path`, the
//! measurement of the filter's own work per billed request that `cargo xtask bench` runs (the
//! same calls the HTTP context makes, without the host).

use std::cell::RefCell;
use std::time::{Duration, Instant, SystemTime};

use metering::apikey;
use metering::wire::{AccountState, AccountStatus, KeyLookupResult, KeyState, KeyStatus, SpendControl};
use metering::PriceTable;
use rust_decimal::Decimal;
use uuid::Uuid;

use super::*;
use crate::config::Config;
use crate::shared::balances::{apply_account, apply_key, read_account};
use crate::shared::store::MemoryStore;
use crate::sync::snapshot::SyncStatus;

/// What `cargo xtask bench` sends and its upstream answers.
const BODY: &str = r#"{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{"role":"user","content":"Hello, how are you today?"}]}"#;
const MESSAGE: &str = r#"{"id":"msg_bench","type":"message","role":"assistant","model":"claude-sonnet-4-5-20250929","content":[{"type":"text","text":"Hello from the bench upstream."}],"stop_reason":"end_turn","stop_sequence":null,"usage":{"input_tokens":12,"cache_creation_input_tokens":0,"cache_read_input_tokens":0,"output_tokens":6}}"#;

const NOW_MS: u64 = 1_800_000_000_000;

fn clock(ms: u64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms)
}

/// Records the events, for the tests that check them.
#[derive(Default)]
struct Seen(RefCell<Vec<String>>);

impl Observe for Seen {
    fn event(&self, event: Event<'_>) {
        let e = match event {
            Event::Refused(r) => format!("refused {}", r.reason()),
            other => format!("{other:?}"),
        };
        self.0.borrow_mut().push(e);
    }
}

struct Setup {
    worker: Worker,
    store: MemoryStore,
    key: String,
    account: Uuid,
}

fn setup(balance: &str, spend_control: SpendControl) -> Setup {
    let settings = Config::from_json(br#"{"internal_token":"t","upstream_api_key":"sk-op"}"#).unwrap();
    let prices = PriceTable::default_table(settings.price_factor).unwrap();
    let mut worker = Worker::new(std::rc::Rc::new(settings), prices, [9; 32]);
    let store = MemoryStore::default();
    assert!(worker.check_counters(&store));
    let key = apikey::generate(&[7; apikey::RANDOM_BYTES]);
    let account = Uuid::from_u128(2);
    apply_key(
        &store,
        &KeyState {
            key_hash: apikey::hash(&key),
            key_id: Uuid::from_u128(1),
            account_id: account,
            status: KeyStatus::Active,
            version: 1,
            limit: None,
            allowed_models: Vec::new(),
            expires_at: None,
        },
        1,
        4,
    )
    .unwrap();
    let state = AccountState {
        account_id: account,
        status: AccountStatus::Active,
        balance: balance.parse().unwrap(),
        version: 1,
        spend_control,
    };
    apply_account(&store, &state, 1, 4).unwrap();
    worker.observe_status(SyncStatus {
        version: 1,
        last_ok_ms: NOW_MS,
        prices_seq: 0,
    });
    Setup {
        worker,
        store,
        key,
        account,
    }
}

fn headers(key: &str) -> Headers {
    Headers::from_pairs(
        [
            (":method", "POST"),
            (":path", "/v1/messages"),
            (":authority", "localhost"),
            (":scheme", "http"),
            ("content-type", "application/json"),
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", key),
            ("content-length", "112"),
            ("x-forwarded-proto", "http"),
            ("x-request-id", "0b0e5a1c-8f0e-4f3e-9a53-3b1a0c6f9d11"),
        ]
        .map(|(n, v)| (n, v.as_bytes())),
    )
}

/// One billed request through the whole flow, as the HTTP context drives it.
fn serve(
    s: &mut Setup,
    observe: &dyn Observe,
    headers: &Headers,
    body: &str,
    now_ms: u64,
) -> Option<Refusal> {
    let mut flow = RequestFlow::new();
    match flow.on_headers(&mut s.worker, &s.store, observe, headers, false, clock(now_ms)) {
        Step::Admit(route) => {
            std::hint::black_box(header_edits(headers, &s.worker.settings, route));
        }
        Step::Refuse(r) => return Some(r),
        Step::Lookup(_) => panic!("the key is known"),
    }
    assert_eq!(flow.body_action(false), BodyAction::Pause);
    assert_eq!(flow.body_action(true), BodyAction::ReadBody);
    if let Forward::Refuse(r) = flow.on_body_end(&mut s.worker, &s.store, observe, body.as_bytes()) {
        flow.settle(&mut s.worker, &s.store, observe, true, clock(now_ms));
        return Some(r);
    }
    // The host hands over its map; building one is not the filter's work: built once.
    static OK: std::sync::OnceLock<Headers> = std::sync::OnceLock::new();
    let id = flow.on_response(OK.get_or_init(|| response_headers("200")));
    assert!(id.is_some());
    assert!(flow.is_metering());
    flow.feed(MESSAGE.as_bytes());
    flow.settle(&mut s.worker, &s.store, observe, false, clock(now_ms));
    assert!(!flow.is_metering());
    // on_log: nothing left.
    flow.settle(&mut s.worker, &s.store, observe, true, clock(now_ms));
    None
}

/// The upstream's response header map, as the host gives it.
fn response_headers(status: &str) -> Headers {
    Headers::from_pairs([
        (":status", status.as_bytes()),
        ("content-type", b"application/json".as_slice()),
        ("request-id", b"req_bench".as_slice()),
    ])
}

#[test]
fn the_response_header_map_gives_the_status_that_decides_metering() {
    for (status, metered) in [("200", true), ("529", false), ("abc", false), ("", false)] {
        let mut s = setup("100", SpendControl::Reserve);
        let mut flow = RequestFlow::new();
        let h = headers(&s.key.clone());
        let seen = Seen::default();
        assert!(matches!(
            flow.on_headers(&mut s.worker, &s.store, &seen, &h, false, clock(NOW_MS)),
            Step::Admit(_)
        ));
        assert_eq!(flow.body_action(true), BodyAction::ReadBody);
        assert!(matches!(
            flow.on_body_end(&mut s.worker, &s.store, &seen, BODY.as_bytes()),
            Forward::Body(_)
        ));
        assert!(
            flow.on_response(&response_headers(status)).is_some(),
            "a billed request's debit id"
        );
        assert_eq!(flow.is_metering(), metered, "status {status:?}");
    }
    // A request that was not forwarded has no debit id to give.
    assert_eq!(RequestFlow::new().on_response(&response_headers("200")), None);
}

#[test]
fn a_billed_request_is_held_forwarded_metered_and_settled_once() {
    let mut s = setup("100", SpendControl::Reserve);
    let seen = Seen::default();
    let h = headers(&s.key.clone());
    assert_eq!(serve(&mut s, &seen, &h, BODY, NOW_MS), None);
    assert_eq!(
        *seen.0.borrow(),
        ["AdmittedBilled", "DebitFinalised { partial: false }"]
    );
    assert_eq!(s.worker.debits.len(), 1);
    assert_eq!(s.worker.in_flight, 0);
    // The hold goes with this worker's next write of the account: its next hold, or the tick.
    assert_eq!(read_account(&s.store, &s.account).unwrap().holds.len(), 1);
    assert!(s.worker.publish_spend(&s.store, NOW_MS).is_empty());
    let entry = read_account(&s.store, &s.account).unwrap();
    assert!(entry.holds.is_empty(), "the hold went with the debit");
    // 12 input tokens at 3 USD/M and 6 output at 15, at 70%, in credits of 0.005 USD.
    assert_eq!(Decimal::from(100) - entry.spendable(), Decimal::new(1764, 5));
    assert!(s.worker.held_here().is_empty());
}

/// The speed budget of reservation: at most one shared-data read and write per billed request,
/// and on an account with plenty of credit none (the worker's lease covers ten ceilings and gets
/// its ceilings back as requests end); the tick writes the lease's spend once. `balance` writes
/// none on the request path either (its spend is published on the tick). No write moves a
/// counter, so the header check keeps using the worker's copy of the entry.
#[test]
fn a_reserved_request_costs_at_most_one_shared_data_write() {
    for (control, writes) in [(SpendControl::Reserve, 0), (SpendControl::Balance, 0)] {
        let mut s = setup("1000000", control);
        let h = headers(&s.key.clone());
        assert_eq!(serve(&mut s, &Unobserved, &h, BODY, NOW_MS), None);
        let before = s.store.sets.get();
        let reads = s.store.gets.get();
        for i in 0..10 {
            assert_eq!(serve(&mut s, &Unobserved, &h, BODY, NOW_MS + i), None);
        }
        assert_eq!(s.store.sets.get() - before, 10 * writes, "{control:?}");
        assert_eq!(s.store.gets.get() - reads, 10 * writes, "{control:?}");
        assert!(s.worker.publish_spend(&s.store, NOW_MS + 10).is_empty());
        assert_eq!(
            s.store.sets.get() - before,
            1,
            "{control:?}: the tick's one write"
        );
    }
    // Near the end of a balance every request holds exactly its ceiling: one write each.
    let mut s = setup("5", SpendControl::Reserve);
    let h = headers(&s.key.clone());
    let before = s.store.sets.get();
    for i in 0..3 {
        assert_eq!(serve(&mut s, &Unobserved, &h, BODY, NOW_MS + i), None);
    }
    assert!(s.store.sets.get() - before <= 3);
}

#[test]
fn a_ceiling_that_does_not_fit_is_refused_before_the_upstream_and_frees_its_place() {
    let mut s = setup("0.5", SpendControl::Reserve);
    let seen = Seen::default();
    let h = headers(&s.key.clone());
    let Some(Refusal::CeilingExceeded(short)) = serve(&mut s, &seen, &h, BODY, NOW_MS) else {
        panic!("not refused for its ceiling");
    };
    assert_eq!(short.available, Decimal::new(5, 1));
    assert_eq!(short.output_tokens, 256);
    assert!(short.ceiling > Decimal::new(5, 1));
    assert_eq!(s.worker.in_flight, 0);
    assert!(s.worker.debits.is_empty());
    assert!(read_account(&s.store, &s.account).unwrap().holds.is_empty());
    // The same account under `balance` is served (0.5 > 0).
    let mut s = setup("0.5", SpendControl::Balance);
    let h = headers(&s.key.clone());
    assert_eq!(serve(&mut s, &Unobserved, &h, BODY, NOW_MS), None);
}

#[test]
fn holds_of_requests_in_flight_count_for_the_next_and_an_unbilled_answer_gives_its_hold_back() {
    let mut s = setup("1.2", SpendControl::Reserve);
    let h = headers(&s.key.clone());
    let open = |s: &mut Setup| {
        let mut flow = RequestFlow::new();
        let step = flow.on_headers(&mut s.worker, &s.store, &Unobserved, &h, false, clock(NOW_MS));
        assert_eq!(
            step,
            Step::Admit(RouteKind::Billed(metering::wire::Route::AnthropicMessages))
        );
        let fwd = flow.on_body_end(&mut s.worker, &s.store, &Unobserved, BODY.as_bytes());
        (flow, fwd)
    };
    let (mut first, fwd) = open(&mut s);
    assert_eq!(fwd, Forward::Body(None));
    let (mut second, fwd) = open(&mut s);
    assert_eq!(fwd, Forward::Body(None));
    let (mut third, fwd) = open(&mut s);
    assert!(
        matches!(fwd, Forward::Refuse(Refusal::CeilingExceeded(_))),
        "{fwd:?}"
    );
    assert_eq!(
        third.body_action(true),
        BodyAction::Pause,
        "refused: nothing more is read"
    );
    third.settle(&mut s.worker, &s.store, &Unobserved, true, clock(NOW_MS));
    assert_eq!(s.worker.in_flight, 2);
    // The first is answered 529 (not billed): its hold goes at once.
    assert!(first
        .on_response_headers(529, Some("application/json"), None)
        .is_some());
    assert!(!first.is_metering());
    first.settle(&mut s.worker, &s.store, &Unobserved, false, clock(NOW_MS));
    assert_eq!(s.worker.in_flight, 1);
    let (mut fourth, fwd) = open(&mut s);
    assert_eq!(fwd, Forward::Body(None), "the first one's hold was released");
    // A caller gone before the answer: the input estimate is billed, and the hold goes.
    second.settle(&mut s.worker, &s.store, &Unobserved, true, clock(NOW_MS));
    assert_eq!(s.worker.debits.len(), 1);
    fourth.settle(&mut s.worker, &s.store, &Unobserved, true, clock(NOW_MS));
    assert!(s.worker.publish_spend(&s.store, NOW_MS).is_empty());
    let entry = read_account(&s.store, &s.account).unwrap();
    assert!(entry.holds.is_empty());
    assert_eq!(s.worker.in_flight, 0);
    assert!(s.worker.held_here().is_empty());
}

#[test]
fn an_unknown_key_is_looked_up_once_and_decided_on_the_answer() {
    let mut s = setup("10", SpendControl::Reserve);
    let unknown = apikey::generate(&[8; apikey::RANDOM_BYTES]);
    let h = headers(&unknown);
    let seen = Seen::default();
    let mut flow = RequestFlow::new();
    let Step::Lookup(body) = flow.on_headers(&mut s.worker, &s.store, &seen, &h, false, clock(NOW_MS)) else {
        panic!("no lookup");
    };
    assert!(String::from_utf8(body).unwrap().contains(&apikey::hash(&unknown)));
    assert_eq!(flow.body_action(false), BodyAction::Pause, "waits for the lookup");
    let answer = KeyLookupResult {
        protocol: 3,
        version: 2,
        key: Some(KeyState {
            key_hash: apikey::hash(&unknown),
            key_id: Uuid::from_u128(9),
            account_id: s.account,
            status: KeyStatus::Active,
            version: 2,
            limit: None,
            allowed_models: Vec::new(),
            expires_at: None,
        }),
        account: Some(AccountState {
            account_id: s.account,
            status: AccountStatus::Active,
            balance: Decimal::from(10),
            version: 2,
            spend_control: SpendControl::Reserve,
        }),
    };
    let step = flow.on_lookup(&mut s.worker, &s.store, &seen, Some(answer), clock(NOW_MS));
    assert_eq!(
        step,
        Step::Admit(RouteKind::Billed(metering::wire::Route::AnthropicMessages))
    );
    assert_eq!(flow.body_action(true), BodyAction::ReadBody);
    // A key the control plane does not know: refused, and not asked again for a while.
    let other = apikey::generate(&[10; apikey::RANDOM_BYTES]);
    let h = headers(&other);
    let mut flow = RequestFlow::new();
    assert!(matches!(
        flow.on_headers(&mut s.worker, &s.store, &seen, &h, false, clock(NOW_MS)),
        Step::Lookup(_)
    ));
    let nobody = KeyLookupResult {
        protocol: 3,
        version: 2,
        key: None,
        account: None,
    };
    assert_eq!(
        flow.on_lookup(&mut s.worker, &s.store, &seen, Some(nobody), clock(NOW_MS)),
        Step::Refuse(Refusal::UnknownKey)
    );
    let mut flow = RequestFlow::new();
    assert_eq!(
        flow.on_headers(&mut s.worker, &s.store, &seen, &h, false, clock(NOW_MS)),
        Step::Refuse(Refusal::UnknownKey)
    );
    assert_eq!(seen.0.borrow().iter().filter(|e| *e == "LookupAsked").count(), 2);
}

#[test]
fn refusals_before_admission_follow_the_documented_order() {
    let mut s = setup("0", SpendControl::Reserve);
    let key = s.key.clone();
    let mut decide = |h: Headers| {
        RequestFlow::new().on_headers(&mut s.worker, &s.store, &Unobserved, &h, false, clock(NOW_MS))
    };
    let route = |path: &str, key: &str| {
        Headers::from_pairs(
            [(":method", "POST"), (":path", path), ("x-api-key", key)].map(|(n, v)| (n, v.as_bytes())),
        )
    };
    assert_eq!(
        decide(route("/v1/secret", &key)),
        Step::Refuse(Refusal::RouteNotOffered)
    );
    assert_eq!(
        decide(route("/v1/messages", "")),
        Step::Refuse(Refusal::MissingKey)
    );
    assert_eq!(
        decide(route("/v1/messages", "sk-nope")),
        Step::Refuse(Refusal::MalformedKey)
    );
    assert_eq!(
        decide(route("/v1/messages", &key)),
        Step::Refuse(Refusal::NoCredit)
    );
    // A free route needs no credit.
    let free = Headers::from_pairs(
        [
            (":method", "GET"),
            (":path", "/v1/models"),
            ("x-api-key", key.as_str()),
        ]
        .map(|(n, v)| (n, v.as_bytes())),
    );
    assert_eq!(decide(free), Step::Admit(RouteKind::Free));
}

thread_local! {
    static BATCH_NS: std::cell::Cell<u128> = const { std::cell::Cell::new(0) };
}

/// Sends the buffered debits as one batch and applies the control plane's acknowledgement, as
/// `root` does: the batch body, the answer's decoding, the settlement in shared data.
fn batch_path(worker: &mut Worker, store: &MemoryStore) {
    let started = Instant::now();
    assert!(worker.publish_spend(store, NOW_MS).is_empty());
    let body = worker.debits.start_batch(1000, None).unwrap();
    let encoded = started.elapsed();
    // What the control plane does is not the filter's: only encoding, decoding and settling count.
    let sent: metering::wire::DebitBatch = serde_json::from_slice(&body).unwrap();
    assert!(sent.compact_ack);
    let ack = metering::wire::DebitAck {
        protocol: 1,
        applied_at_version: Some(2),
        batch_len: Some(sent.debits.len() as u64),
        results: vec![],
    };
    let answer = serde_json::to_vec(&ack).unwrap();
    let started = Instant::now();
    let ack = crate::debits::buffer::decode_ack(&answer).unwrap();
    assert!(worker.debits.covers(&ack));
    let (settlements, _) = worker.debits.batch_acked(&ack, 0);
    assert!(worker.settle(store, &settlements).is_empty());
    BATCH_NS.with(|b| b.set(b.get() + encoded.as_nanos() + started.elapsed().as_nanos()));
    std::hint::black_box(body);
}

/// The filter's own work for one billed request (an account under `reserve`: its ceiling held and
/// released), through the flow the HTTP context drives, against the in-memory shared data:
/// headers, key hash, admission, header edits, body plan and hold, response metering, debit
/// pricing, settlement. Envoy's side (host calls, VM entries) is not in it. Natively:
/// `cargo test -p filter-core --release --lib request_path -- --ignored --nocapture`, or that test
/// binary under `valgrind --tool=callgrind` for an instruction count that does not depend on the
/// load; `cargo xtask bench` also runs it compiled to wasm32-wasip1 in V8.
#[test]
#[ignore = "a measurement, not a check: run it by name with --ignored"]
fn request_path() {
    let mut s = setup("1000000000", SpendControl::Reserve);
    let h = headers(&s.key.clone());
    let run = |s: &mut Setup, n: u32| {
        for i in 0..n {
            assert_eq!(
                serve(s, &Unobserved, &h, BODY, NOW_MS + u64::from(i % 1000)),
                None
            );
            if s.worker.debits.len() >= 1000 {
                batch_path(&mut s.worker, &s.store);
            }
        }
    };
    // Warm-up, not timed: V8 compiles each function of the module on its first call, and timing
    // those first calls (the batch path's most of all) doubled the figures in V8.
    run(&mut s, 5_000);
    BATCH_NS.with(|b| b.set(0));
    let n: u32 = 20_000;
    let started = Instant::now();
    run(&mut s, n);
    let per_request = started.elapsed() / n;
    eprintln!(
        "request_path: {} ns per billed request, of which {} ns its share of a debit batch",
        per_request.as_nanos(),
        BATCH_NS.with(|b| b.get()) / u128::from(n)
    );
    assert!(s.worker.publish_spend(&s.store, NOW_MS).is_empty());
    let entry = read_account(&s.store, &s.account).unwrap();
    assert!(entry.spendable() < Decimal::from(1_000_000_000));
    assert!(entry.holds.is_empty());
}

/// Gives the setup's key rules (a new version of its row, as a snapshot would).
fn rules(s: &Setup, limit: Option<(&str, &str)>, allowed: &[&str], expires_at_ms: Option<u64>) {
    let at = |ms: u64| chrono::DateTime::from_timestamp_millis(ms as i64).unwrap();
    let key = KeyState {
        key_hash: apikey::hash(&s.key),
        key_id: Uuid::from_u128(1),
        account_id: s.account,
        status: KeyStatus::Active,
        version: 2,
        limit: limit.map(|(credits, remaining)| metering::wire::KeyLimitState {
            credits: credits.parse().unwrap(),
            period: metering::keylimit::LimitPeriod::Day,
            remaining: remaining.parse().unwrap(),
            resets_at: Some(at(NOW_MS + 3_600_000)),
        }),
        allowed_models: allowed.iter().map(|m| m.to_string()).collect(),
        expires_at: expires_at_ms.map(at),
    };
    assert_eq!(apply_key(&s.store, &key, 2, 4), Ok(true));
}

fn fresh(s: &mut Setup) {
    s.worker.observe_status(SyncStatus {
        version: 2,
        last_ok_ms: NOW_MS,
        prices_seq: 0,
    });
}

#[test]
fn a_key_limit_is_held_like_the_balance_and_its_refusal_names_the_limit() {
    let mut s = setup("1000", SpendControl::Reserve);
    rules(&s, Some(("100", "1.2")), &[], None);
    fresh(&mut s);
    let budget = Uuid::from_u128(1);
    let h = headers(&s.key.clone());
    let open = |s: &mut Setup| {
        let mut flow = RequestFlow::new();
        let step = flow.on_headers(&mut s.worker, &s.store, &Unobserved, &h, false, clock(NOW_MS));
        assert!(matches!(step, Step::Admit(_)), "{step:?}");
        let fwd = flow.on_body_end(&mut s.worker, &s.store, &Unobserved, BODY.as_bytes());
        (flow, fwd)
    };
    let (mut first, fwd) = open(&mut s);
    assert_eq!(fwd, Forward::Body(None));
    let (mut second, fwd) = open(&mut s);
    assert_eq!(fwd, Forward::Body(None));
    let (mut third, fwd) = open(&mut s);
    let Forward::Refuse(Refusal::KeyCeilingExceeded(b)) = fwd else {
        panic!("not refused for the key's limit: {fwd:?}");
    };
    let (short, limit) = *b;
    assert!(short.available < short.ceiling);
    assert_eq!(limit.credits, Decimal::from(100));
    assert_eq!(limit.resets_at_ms, Some(NOW_MS + 3_600_000));
    assert_eq!(
        crate::sync::holds::limited(&s.store),
        vec![budget],
        "noted for the hold report"
    );
    third.settle(&mut s.worker, &s.store, &Unobserved, true, clock(NOW_MS));
    // The refused request's holds went back: the budget holds the two in flight, exactly (it is
    // near its end: no spare), the account those two plus its lease's spare.
    let held = s.worker.held_here();
    let two = short.ceiling * Decimal::from(2);
    assert_eq!(held.get(&budget), Some(&two));
    assert!(held.get(&s.account).is_some_and(|a| *a >= two));
    for flow in [&mut first, &mut second] {
        assert!(flow
            .on_response_headers(200, Some("application/json"), None)
            .is_some());
        flow.feed(MESSAGE.as_bytes());
        flow.settle(&mut s.worker, &s.store, &Unobserved, false, clock(NOW_MS));
    }
    assert!(s.worker.publish_spend(&s.store, NOW_MS).is_empty());
    let account = read_account(&s.store, &s.account).unwrap();
    let key = read_account(&s.store, &budget).unwrap();
    assert!(account.holds.is_empty() && key.holds.is_empty());
    let spent = Decimal::from(1000) - account.spendable();
    assert_eq!(spent, Decimal::new(1764, 5) * Decimal::from(2));
    assert_eq!(
        Decimal::new(12, 1) - key.spendable(),
        spent,
        "the key spent what the account did"
    );
    // The debits carry the budget: their acknowledgement settles both entries.
    let body = s.worker.debits.start_batch(1000, None).unwrap();
    let sent: metering::wire::DebitBatch = serde_json::from_slice(&body).unwrap();
    let ack = metering::wire::DebitAck {
        protocol: 1,
        applied_at_version: Some(3),
        batch_len: Some(sent.debits.len() as u64),
        results: vec![],
    };
    let (settlements, _) = s.worker.debits.batch_acked(&ack, 0);
    assert!(settlements.iter().all(
        |x| matches!(x, crate::debits::buffer::Settlement::Acked { budget: Some(b), .. } if *b == budget)
    ));
    assert!(s.worker.settle(&s.store, &settlements).is_empty());
    let key = read_account(&s.store, &budget).unwrap();
    assert_eq!(key.unacked, Decimal::ZERO);
    assert_eq!(key.acked, vec![(3, spent)]);
}

#[test]
fn a_spent_key_limit_is_refused_at_the_headers_in_both_spend_controls() {
    for control in [SpendControl::Reserve, SpendControl::Balance] {
        let mut s = setup("1000", control);
        rules(&s, Some(("10", "0")), &[], None);
        fresh(&mut s);
        let h = headers(&s.key.clone());
        let r = serve(&mut s, &Unobserved, &h, BODY, NOW_MS);
        let Some(Refusal::KeyLimitReached(l)) = r else {
            panic!("{control:?}: {r:?}");
        };
        assert_eq!(l.credits, Decimal::from(10));
        assert_eq!(s.worker.in_flight, 0);
        assert_eq!(crate::sync::holds::limited(&s.store), vec![Uuid::from_u128(1)]);
        // A caller retrying costs no write per refusal.
        let writes = s.store.sets.get();
        assert!(serve(&mut s, &Unobserved, &h, BODY, NOW_MS + 1).is_some());
        assert_eq!(s.store.sets.get(), writes);
        // A key with some budget left under `balance` is admitted whatever the ceiling.
        rules(&s, Some(("10", "0.01")), &[], None);
        let mut s2 = setup("1000", control);
        rules(&s2, Some(("10", "0.01")), &[], None);
        fresh(&mut s2);
        let r = serve(&mut s2, &Unobserved, &h, BODY, NOW_MS);
        match control {
            SpendControl::Balance => assert_eq!(r, None),
            SpendControl::Reserve => assert!(matches!(r, Some(Refusal::KeyCeilingExceeded(_))), "{r:?}"),
        }
    }
}

#[test]
fn allowed_models_and_expiry_are_enforced_before_the_upstream() {
    let mut s = setup("1000", SpendControl::Reserve);
    rules(
        &s,
        None,
        &["claude-opus-*", "claude-haiku-4-5"],
        Some(NOW_MS + 1000),
    );
    fresh(&mut s);
    let h = headers(&s.key.clone());
    let seen = Seen::default();
    let r = serve(&mut s, &seen, &h, BODY, NOW_MS);
    assert_eq!(r, Some(Refusal::ModelNotAllowed("claude-sonnet-4-5".into())));
    assert_eq!(s.worker.in_flight, 0);
    assert!(s.worker.debits.is_empty());
    assert!(s.worker.held_here().is_empty(), "no hold is left behind");
    let haiku = BODY.replace("claude-sonnet-4-5", "claude-haiku-4-5-20251001");
    assert_eq!(serve(&mut s, &seen, &h, &haiku, NOW_MS), None);
    let opus = BODY.replace("claude-sonnet-4-5", "claude-opus-4-8");
    assert_eq!(serve(&mut s, &seen, &h, &opus, NOW_MS), None);
    let fallback = opus.replace(
        r#""max_tokens""#,
        r#""fallbacks":[{"model":"claude-sonnet-4-6"}],"max_tokens""#,
    );
    assert_eq!(
        serve(&mut s, &seen, &h, &fallback, NOW_MS),
        Some(Refusal::ModelNotAllowed("claude-sonnet-4-6".into()))
    );
    // At its expiry the key is refused on its headers.
    assert_eq!(
        serve(&mut s, &seen, &h, &opus, NOW_MS + 1000),
        Some(Refusal::ExpiredKey(NOW_MS + 1000))
    );
}
