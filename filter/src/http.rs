//! The HTTP context: reads what the host gives, hands it to the request's [`RequestFlow`] (which
//! decides everything), and carries out the answer with host calls. It decides nothing itself.
//!
//! Request: headers are decided at once when the key is known (`Continue`), or paused for one
//! lookup call and resumed in its callback. A billed request's body is held (`Pause` per chunk)
//! until its end, so the model check and the hold happen before the upstream receives any body
//! byte. Response: every chunk is metered as it passes (`Continue`); the request settles at the
//! end of the stream, or in `on_log` when the stream was cut.

use std::cell::RefCell;
use std::rc::Rc;

use metering::wire::KeyLookupResult;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::host::{self, Call, HostStore};
use crate::metrics::Metrics;
use filter_core::config::Config;
use filter_core::request::flow::{header_edits, BodyAction, Event, Forward, Observe, RequestFlow, Step};
use filter_core::request::refusal::Refusal;
use filter_core::request::rewrite::{HeaderEdit, Headers, REQUEST_ID_HEADER};
use filter_core::request::route::RouteKind;
use filter_core::worker::Worker;

/// What every context of the worker shares once configured.
#[derive(Clone)]
pub struct Shared {
    pub settings: Rc<Config>,
    pub metrics: Rc<Metrics>,
    pub worker: Rc<RefCell<Worker>>,
}

pub struct BillingHttp {
    shared: Option<Shared>,
    flow: RequestFlow,
    /// The token of the key lookup this request waits for.
    lookup: Option<u32>,
}

impl Observe for Metrics {
    fn event(&self, event: Event<'_>) {
        match event {
            Event::AdmittedBilled => self.count(&self.admitted_billed),
            Event::AdmittedFree => self.count(&self.admitted_free),
            Event::PassedControlPlane => self.count(&self.passed_control_plane),
            Event::Refused(r) => {
                self.refused(r);
                log::debug!("refused {}: {}", r.status(), r.reason());
            }
            Event::LookupAsked => self.count(&self.lookups),
            Event::LookupFailed => self.count(&self.lookup_failures),
            Event::SharedDataContended => self.count(&self.shared_data_contention),
            Event::AdmittedWithoutHold => self.count(&self.admitted_without_hold),
            Event::DebitFinalised { partial } => {
                self.count(&self.debits_finalised);
                if partial {
                    self.count(&self.debits_partial);
                }
            }
            Event::ServedModelUnpriced => self.count(&self.served_model_unpriced),
            Event::SpendNotPublished(e) => self.spend_not_published(e),
        }
    }
}

impl BillingHttp {
    pub fn new(shared: Option<Shared>) -> Self {
        Self {
            shared,
            flow: RequestFlow::new(),
            lookup: None,
        }
    }

    /// Carries out a decision on the request headers (or the lookup's answer).
    fn carry_out(&mut self, shared: &Shared, step: Step, headers: &Headers) -> Action {
        match step {
            Step::Admit(route) => {
                apply_edits(headers, shared, route);
                Action::Continue
            }
            Step::Refuse(r) => {
                host::send_refusal(&r);
                Action::Pause
            }
            Step::Lookup(body) => {
                let s = &shared.settings;
                let call = Call {
                    cluster: &s.control_plane_cluster,
                    authority: &s.control_plane_authority,
                    token: &s.internal_token,
                    method: "POST",
                    path: "/internal/v1/keys/lookup",
                    body: Some(&body),
                    timeout: s.lookup_timeout,
                };
                match host::dispatch(&call) {
                    Ok(token) => {
                        self.lookup = Some(token);
                        Action::Pause
                    }
                    Err(e) => {
                        log::warn!(
                            "key lookup not dispatched to cluster {}: {e:?}",
                            s.control_plane_cluster
                        );
                        let r = self.flow.lookup_not_sent(&*shared.metrics);
                        host::send_refusal(&r);
                        Action::Pause
                    }
                }
            }
        }
    }

    fn on_headers(&mut self, shared: &Shared, end_of_stream: bool) -> Action {
        let headers = host::request_headers();
        let step = match shared.worker.try_borrow_mut() {
            Ok(mut w) => self.flow.on_headers(
                &mut w,
                &HostStore,
                &*shared.metrics,
                &headers,
                end_of_stream,
                host::now(),
            ),
            Err(_) => return refuse_busy(shared),
        };
        self.carry_out(shared, step, &headers)
    }

    fn on_lookup(&mut self, shared: &Shared, body_size: usize) {
        let answer = match host::call_status() {
            Some(200) => serde_json::from_slice::<KeyLookupResult>(&host::call_body(body_size)).ok(),
            _ => None,
        };
        let step = match shared.worker.try_borrow_mut() {
            Ok(mut w) => self
                .flow
                .on_lookup(&mut w, &HostStore, &*shared.metrics, answer, host::now()),
            Err(_) => Step::Refuse(Refusal::ControlPlaneUnavailable),
        };
        let headers = host::request_headers();
        if self.carry_out(shared, step, &headers) == Action::Continue {
            host::resume_request();
        }
    }

    fn on_body_end(&mut self, shared: &Shared, body_size: usize) -> Action {
        let body = host::request_body(body_size);
        let forward = match shared.worker.try_borrow_mut() {
            Ok(mut w) => self.flow.on_body_end(&mut w, &HostStore, &*shared.metrics, &body),
            Err(_) => Forward::Refuse(Refusal::ControlPlaneUnavailable),
        };
        match forward {
            Forward::Body(None) => Action::Continue,
            Forward::Body(Some(new_body)) => {
                if !host::replace_request_body(body_size, &new_body) {
                    log::warn!("could not inject stream_options.include_usage; usage may be partial");
                }
                Action::Continue
            }
            Forward::Refuse(r) => {
                host::send_refusal(&r);
                Action::Pause
            }
        }
    }

    fn settle(&mut self, shared: &Shared, cut: bool) {
        match shared.worker.try_borrow_mut() {
            Ok(mut w) => self
                .flow
                .settle(&mut w, &HostStore, &*shared.metrics, cut, host::now()),
            Err(_) => log::error!("worker state busy; debit not recorded"),
        }
    }
}

/// The worker's state is borrowed already (never, in a single-threaded VM): refuse rather than
/// decide on nothing.
fn refuse_busy(shared: &Shared) -> Action {
    let r = Refusal::ControlPlaneUnavailable;
    shared.metrics.refused(&r);
    host::send_refusal(&r);
    Action::Pause
}

/// An admitted request's headers as they reach the upstream.
fn apply_edits(headers: &Headers, shared: &Shared, route: RouteKind) {
    for edit in &header_edits(headers, &shared.settings, route) {
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
        if self.lookup == Some(token_id) {
            self.lookup = None;
            self.on_lookup(&shared, body_size);
        }
    }
}

impl HttpContext for BillingHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        match self.shared.clone() {
            Some(shared) => self.on_headers(&shared, end_of_stream),
            None => {
                host::send_refusal(&Refusal::ControlPlaneUnavailable);
                Action::Pause
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.flow.body_action(end_of_stream) {
            BodyAction::Continue => Action::Continue,
            // Envoy buffers the body until the end (bounded by the listener's buffer limit).
            BodyAction::Pause => Action::Pause,
            BodyAction::ReadBody => match self.shared.clone() {
                Some(shared) => self.on_body_end(&shared, body_size),
                None => Action::Continue,
            },
        }
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // A body that ends with trailers never had end_of_stream on a data frame.
        if self.flow.reading_body() {
            if let Some(shared) = self.shared.clone() {
                let size = host::request_body(usize::MAX).len();
                return self.on_body_end(&shared, size);
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let Some(debit_id) = self.flow.on_response(&host::response_headers()) else {
            return Action::Continue;
        };
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = debit_id.hyphenated().encode_lower(&mut id);
        host::set_response_header(REQUEST_ID_HEADER, Some(id));
        if end_of_stream {
            if let Some(shared) = self.shared.clone() {
                self.settle(&shared, false);
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.flow.is_metering() {
            return Action::Continue;
        }
        self.flow.feed(&host::response_body(body_size));
        if end_of_stream {
            if let Some(shared) = self.shared.clone() {
                self.settle(&shared, false);
            }
        }
        Action::Continue
    }

    fn on_http_response_trailers(&mut self, _num_trailers: usize) -> Action {
        // Trailers end the response: the body callbacks never saw end_of_stream.
        if self.flow.is_metering() {
            if let Some(shared) = self.shared.clone() {
                self.settle(&shared, false);
            }
        }
        Action::Continue
    }

    fn on_log(&mut self) {
        // The stream's last callback, also after a cut: settle what is left, exactly once.
        if self.flow.unsettled() {
            if let Some(shared) = self.shared.clone() {
                self.settle(&shared, true);
            }
        }
    }
}
