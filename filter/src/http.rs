//! The HTTP context: carries out the decisions of `admission`, `rewrite` and `exchange` for one
//! request. It decides nothing itself.
//!
//! Request: headers are decided at once when the key is known (`Continue`), or paused for one
//! lookup call and resumed in its callback. A billed request's body is held (`Pause` per chunk)
//! until its end, so the model check happens before the upstream receives any body byte.
//! Response: every chunk is metered as it passes (`Continue`); the debit is finalised at the end
//! of the stream, or in `on_log` when the stream was cut.

use metering::apikey;
use metering::wire::{KeyLookup, KeyLookupResult, SpendControl, PROTOCOL_VERSION};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;
use rust_decimal::Decimal;
use std::time::SystemTime;
use uuid::Uuid;

use crate::admission::{admit_known, extract_key, gateway_ready, key_shaped, well_formed_key};
use crate::balances::{apply_account, apply_key, read_account, read_key, Hold};
use crate::config::UpstreamKey;
use crate::exchange::{Admission, Exchange};
use crate::host::{self, Call, HostStore};
use crate::refusal::{Refusal, Shortfall};
use crate::rewrite::{
    fewer_edits, plan_request, upstream_header_edits, HeaderEdit, Headers, REQUEST_ID_HEADER,
};
use crate::root::Shared;
use crate::route::RouteKind;
use crate::worker::NotHeld;

/// A request waiting for the answer to its key lookup.
struct AwaitingLookup {
    token: u32,
    route: RouteKind,
    key_hash: String,
    /// The request had no body: decided after the lookup exactly as for a known key.
    end_of_stream: bool,
}

/// What `admit` needs of the request being admitted.
struct Request<'a> {
    headers: &'a Headers,
    route: RouteKind,
    /// The request had no body.
    end_of_stream: bool,
    /// When it was admitted (the host clock read at the decision).
    clock: SystemTime,
    /// The account's spendable balance as this worker judged it.
    spendable: Decimal,
    spend_control: SpendControl,
}

pub struct BillingHttp {
    shared: Option<Shared>,
    lookup: Option<AwaitingLookup>,
    exchange: Option<Exchange>,
    /// True while this request holds a place in the debit buffer's bound.
    in_flight: bool,
    /// The request body is being held until its end (billed routes).
    holding_body: bool,
    /// How the account admits requests (read with its entry at admission).
    spend_control: SpendControl,
    /// The credits this request holds on its account until it ends (spend control `reserve`).
    hold: Option<Hold>,
    refused: bool,
}

impl BillingHttp {
    pub fn new(shared: Option<Shared>) -> Self {
        Self {
            shared,
            lookup: None,
            exchange: None,
            in_flight: false,
            holding_body: false,
            spend_control: SpendControl::Balance,
            hold: None,
            refused: false,
        }
    }

    fn refuse(&mut self, shared: Option<&Shared>, refusal: Refusal) -> Action {
        if let Some(s) = shared {
            s.metrics.refused(&refusal);
        }
        log::debug!("refused {}: {}", refusal.status(), refusal.reason());
        self.refused = true;
        self.holding_body = false;
        host::send_refusal(&refusal);
        Action::Pause
    }

    fn on_headers(&mut self, shared: &Shared, end_of_stream: bool) -> Action {
        let headers = host::request_headers();
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let Some(route) = shared.settings.routes.classify(method, path) else {
            return self.refuse(Some(shared), Refusal::RouteNotOffered);
        };
        if route == RouteKind::ControlPlane {
            apply_edits(&headers, &UpstreamKey::None, route);
            shared.metrics.count(&shared.metrics.passed_control_plane);
            return Action::Continue;
        }
        let key =
            match extract_key(headers.get("x-api-key"), headers.get("authorization")).and_then(key_shaped) {
                Ok(k) => k,
                Err(r) => return self.refuse(Some(shared), r),
            };
        let key_hash = apikey::hash(key);
        let clock = host::now();
        let now = host::millis(clock);
        let (gateway, known) = match shared.worker.try_borrow_mut() {
            Ok(mut w) => {
                let status = w.sync_status(&HostStore, now);
                (w.gateway_state(&status, now), w.key_entry(&HostStore, &key_hash))
            }
            Err(_) => return self.refuse(Some(shared), Refusal::ControlPlaneUnavailable),
        };
        // Unknown keys are checked in full before anything else is decided for them, as before.
        if known.is_none() {
            if let Err(r) = well_formed_key(key) {
                return self.refuse(Some(shared), r);
            }
        }
        if let Err(r) = gateway_ready(route, gateway) {
            return self.refuse(Some(shared), r);
        }
        if let Some(entry) = known {
            let account = match shared.worker.try_borrow_mut() {
                Ok(mut w) => w
                    .account_entry(&HostStore, &entry.account_id)
                    .map(|a| w.account_view(&entry.account_id, a)),
                Err(_) => return self.refuse(Some(shared), Refusal::ControlPlaneUnavailable),
            };
            if let Some(account) = account {
                return match admit_known(route, &entry, &account) {
                    Ok(()) => {
                        let request = Request {
                            headers: &headers,
                            route,
                            end_of_stream,
                            clock,
                            spendable: account.spendable(),
                            spend_control: account.spend_control,
                        };
                        self.admit(shared, request, key_hash, entry.account_id)
                    }
                    Err(r) => self.refuse(Some(shared), r),
                };
            }
        }
        let (negative, budget) = shared
            .worker
            .try_borrow_mut()
            .map(|mut w| {
                let negative = w.negative.contains(&key_hash, now);
                (negative, negative || w.lookups.try_take(now))
            })
            .unwrap_or((false, true));
        if negative {
            return self.refuse(Some(shared), Refusal::UnknownKey);
        }
        if !budget {
            return self.refuse(Some(shared), Refusal::LookupRateLimited);
        }
        self.start_lookup(shared, route, key_hash, end_of_stream)
    }

    fn start_lookup(
        &mut self,
        shared: &Shared,
        route: RouteKind,
        key_hash: String,
        end_of_stream: bool,
    ) -> Action {
        let s = &shared.settings;
        let body = serde_json::to_vec(&KeyLookup {
            protocol: PROTOCOL_VERSION,
            key_hash: key_hash.clone(),
        })
        .unwrap_or_default();
        let call = Call {
            cluster: &s.control_plane_cluster,
            authority: &s.control_plane_authority,
            token: &s.internal_token,
            method: "POST",
            path: "/internal/v1/keys/lookup",
            body: Some(&body),
            timeout: s.lookup_timeout,
        };
        shared.metrics.count(&shared.metrics.lookups);
        match host::dispatch(&call) {
            Ok(token) => {
                self.lookup = Some(AwaitingLookup {
                    token,
                    route,
                    key_hash,
                    end_of_stream,
                });
                Action::Pause
            }
            Err(e) => {
                log::warn!(
                    "key lookup not dispatched to cluster {}: {e:?}",
                    s.control_plane_cluster
                );
                shared.metrics.count(&shared.metrics.lookup_failures);
                self.refuse(Some(shared), Refusal::LookupFailed)
            }
        }
    }

    /// The lookup answered: store what it says for every worker, then decide as for a known key.
    fn on_lookup(&mut self, shared: &Shared, pending: AwaitingLookup, body_size: usize) {
        let attempts = shared.settings.cas_retries;
        let answer = match host::call_status() {
            Some(200) => serde_json::from_slice::<KeyLookupResult>(&host::call_body(body_size)).ok(),
            _ => None,
        };
        let Some(answer) = answer else {
            shared.metrics.count(&shared.metrics.lookup_failures);
            self.refuse(Some(shared), Refusal::LookupFailed);
            return;
        };
        let (Some(key), Some(account)) = (answer.key, answer.account) else {
            if let Ok(mut w) = shared.worker.try_borrow_mut() {
                w.negative.insert(&pending.key_hash, host::now_ms());
            }
            self.refuse(Some(shared), Refusal::UnknownKey);
            return;
        };
        if key.key_hash != pending.key_hash || key.account_id != account.account_id {
            log::error!("key lookup answered for another key or account; refusing");
            self.refuse(Some(shared), Refusal::LookupFailed);
            return;
        }
        let stored = apply_key(&HostStore, &key, attempts)
            .and_then(|_| apply_account(&HostStore, &account, answer.version, attempts));
        if let Err(e) = stored {
            shared.metrics.count(&shared.metrics.shared_data_contention);
            log::warn!("lookup answer not stored: {e}");
        }
        // Decide on what shared data now holds (a newer snapshot may have been applied meanwhile).
        let key_entry = read_key(&HostStore, &pending.key_hash);
        let account_entry = read_account(&HostStore, &account.account_id);
        let view = shared
            .worker
            .try_borrow()
            .ok()
            .and_then(|w| account_entry.map(|a| w.account_view(&account.account_id, a)));
        let (Some(k), Some(a)) = (key_entry, view) else {
            self.refuse(Some(shared), Refusal::LookupFailed);
            return;
        };
        match admit_known(pending.route, &k, &a) {
            Ok(()) => {
                let request = Request {
                    headers: &host::request_headers(),
                    route: pending.route,
                    end_of_stream: pending.end_of_stream,
                    clock: host::now(),
                    spendable: a.spendable(),
                    spend_control: a.spend_control,
                };
                if self.admit(shared, request, pending.key_hash, k.account_id) == Action::Continue {
                    host::resume_request();
                }
            }
            Err(r) => {
                self.refuse(Some(shared), r);
            }
        }
    }

    /// Admitted: rewrite the headers and, for billed routes, start the exchange.
    fn admit(&mut self, shared: &Shared, request: Request<'_>, key_hash: String, account_id: Uuid) -> Action {
        let s = &shared.settings;
        let route = request.route;
        let RouteKind::Billed(billed) = route else {
            apply_edits(request.headers, &s.upstream_key, route);
            shared.metrics.count(&shared.metrics.admitted_free);
            return Action::Continue;
        };
        if request.end_of_stream {
            return self.refuse(Some(shared), Refusal::UnreadableBody("it is empty".into()));
        }
        let Ok(mut w) = shared.worker.try_borrow_mut() else {
            return self.refuse(Some(shared), Refusal::ControlPlaneUnavailable);
        };
        let debit_id = w.ids.next(host::millis(request.clock));
        w.in_flight = w.in_flight.saturating_add(1);
        self.in_flight = true;
        drop(w);
        apply_edits(request.headers, &s.upstream_key, route);
        self.exchange = Some(Exchange::new(Admission {
            debit_id,
            route: billed,
            key_hash,
            account_id,
            admitted_at: request.clock.into(),
            spendable: request.spendable,
        }));
        self.holding_body = true;
        self.spend_control = request.spend_control;
        shared.metrics.count(&shared.metrics.admitted_billed);
        Action::Continue
    }

    fn on_body_end(&mut self, shared: &Shared, body_size: usize) -> Action {
        self.holding_body = false;
        let Some(exchange) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        let body = host::request_body(body_size);
        exchange.request_body_bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let prices = match shared.worker.try_borrow() {
            Ok(w) => std::rc::Rc::clone(&w.prices),
            Err(_) => return self.refuse(Some(shared), Refusal::ControlPlaneUnavailable),
        };
        let reserve = self.spend_control == SpendControl::Reserve;
        match plan_request(
            exchange.admission.route,
            &body,
            &prices,
            exchange.admission.admitted_at,
            reserve.then_some(&shared.settings.ceiling),
        ) {
            Ok(plan) => {
                if let Some(ceiling) = &plan.ceiling {
                    let account = exchange.admission.account_id;
                    let held = match shared.worker.try_borrow_mut() {
                        Ok(mut w) => w.reserve(&HostStore, account, ceiling.credits, host::now_ms()),
                        Err(_) => return self.refuse(Some(shared), Refusal::ControlPlaneUnavailable),
                    };
                    match held {
                        Ok(hold) => {
                            if hold.is_none() {
                                shared.metrics.count(&shared.metrics.admitted_without_hold);
                            }
                            self.hold = hold;
                        }
                        Err(NotHeld::Short(available)) => {
                            let shortfall = Shortfall {
                                ceiling: ceiling.credits,
                                available,
                                model: plan.model,
                                output_tokens: ceiling.output_tokens,
                                from_request: ceiling.output_bound == metering::ceiling::OutputBound::Request,
                            };
                            return self.refuse(Some(shared), Refusal::CeilingExceeded(Box::new(shortfall)));
                        }
                    }
                }
                let Some(exchange) = self.exchange.as_mut() else {
                    return Action::Continue;
                };
                exchange.model_requested = Some(plan.model);
                exchange.requested = plan.requested;
                if let Some(new_body) = plan.new_body {
                    if !host::replace_request_body(body_size, &new_body) {
                        log::warn!("could not inject stream_options.include_usage; usage may be partial");
                    }
                }
                Action::Continue
            }
            Err(r) => self.refuse(Some(shared), r),
        }
    }

    /// Hands the debit to the worker (shared balance + buffer) and frees the request's place.
    fn finalise(&mut self, shared: &Shared, cut: bool) {
        let now = host::now_utc();
        let spendable = self
            .exchange
            .as_ref()
            .map_or(Decimal::ZERO, |e| e.admission.spendable);
        let debit = self
            .exchange
            .as_mut()
            .and_then(|e| if cut { e.cut(now) } else { e.finish(now) });
        let hold = self.hold.take();
        let Ok(mut worker) = shared.worker.try_borrow_mut() else {
            log::error!("worker state busy; debit not recorded");
            return;
        };
        if debit.is_none() {
            if let Some(hold) = hold {
                worker.release_hold(&HostStore, hold, host::now_ms());
            }
        }
        if let Some(debit) = debit {
            let m = &shared.metrics;
            m.count(&m.debits_finalised);
            if debit.partial {
                m.count(&m.debits_partial);
            }
            let recorded = worker.record_debit(&HostStore, &debit, spendable, hold);
            if recorded.served_model_unpriced {
                m.count(&m.served_model_unpriced);
            }
            if let Some(e) = recorded.spend_error {
                m.spend_not_published(&e);
            }
        }
        if self.in_flight && self.exchange.as_ref().is_none_or(|e| !e.is_metering()) {
            worker.in_flight = worker.in_flight.saturating_sub(1);
            self.in_flight = false;
        }
    }
}

/// An admitted request's headers as they reach the upstream, in the fewest host calls.
fn apply_edits(headers: &Headers, upstream_key: &UpstreamKey, route: RouteKind) {
    let from_header = match upstream_key {
        UpstreamKey::FromHeader(h) => headers.get(h),
        _ => None,
    };
    let own = headers.own_header_names();
    let edits = upstream_header_edits(route, &own, upstream_key, from_header);
    for edit in &fewer_edits(edits, headers) {
        match edit {
            HeaderEdit::Remove(name) => host::set_request_header(name, None),
            HeaderEdit::Set(name, value) => host::set_request_header(name, Some(value)),
        }
    }
}

impl Context for BillingHttp {
    fn on_http_call_response(&mut self, token_id: u32, _headers: usize, body_size: usize, _trailers: usize) {
        let Some(shared) = self.shared.clone() else {
            return;
        };
        match self.lookup.take() {
            Some(pending) if pending.token == token_id => self.on_lookup(&shared, pending, body_size),
            other => self.lookup = other,
        }
    }
}

impl HttpContext for BillingHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.shared.clone() {
            Some(shared) => self.on_headers(&shared, end_of_stream),
            None => self.refuse(None, Refusal::ControlPlaneUnavailable),
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.refused || self.lookup.is_some() {
            return Action::Pause;
        }
        if !self.holding_body {
            return Action::Continue;
        }
        if !end_of_stream {
            // Envoy buffers the body until the end (bounded by the listener's buffer limit).
            return Action::Pause;
        }
        match self.shared.clone() {
            Some(shared) => self.on_body_end(&shared, body_size),
            None => Action::Continue,
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body that ends with trailers never had end_of_stream on a data frame.
        if self.holding_body {
            if let Some(shared) = self.shared.clone() {
                let size = host::request_body(usize::MAX).len();
                return self.on_body_end(&shared, size);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        if exchange.model_requested.is_none() {
            return Action::Continue;
        }
        let headers = host::response_headers();
        let status = headers.get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let upstream_id = headers
            .get("request-id")
            .or_else(|| headers.get("x-request-id"))
            .map(str::to_owned);
        exchange.on_response_headers(status, headers.get("content-type"), upstream_id);
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = exchange.admission.debit_id.hyphenated().encode_lower(&mut id);
        host::set_response_header(REQUEST_ID_HEADER, Some(id));
        if end_of_stream {
            if let Some(shared) = self.shared.clone() {
                self.finalise(&shared, false);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let Some(exchange) = self.exchange.as_mut() else {
            return Action::Continue;
        };
        if exchange.is_metering() {
            exchange.feed(&host::response_body(body_size));
        }
        if end_of_stream && exchange.is_metering() {
            if let Some(shared) = self.shared.clone() {
                self.finalise(&shared, false);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the response: the body callbacks never saw end_of_stream.
        if self.exchange.as_ref().is_some_and(Exchange::is_metering) {
            if let Some(shared) = self.shared.clone() {
                self.finalise(&shared, false);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // The stream's last callback, also after a cut: finalise what is left, exactly once.
        if let Some(shared) = self.shared.clone() {
            if self.exchange.is_some() || self.in_flight {
                self.finalise(&shared, true);
            }
            if self.in_flight {
                if let Ok(mut w) = shared.worker.try_borrow_mut() {
                    w.in_flight = w.in_flight.saturating_sub(1);
                    self.in_flight = false;
                }
            }
        }
    }
}
