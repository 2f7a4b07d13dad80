//! One request's way through the filter, as a plain state machine: admit, hold, forward, meter,
//! settle. Every decision is made here, against the worker's state and shared data through
//! [`SharedStore`], so that it runs (and is tested, and measured) natively; the HTTP context
//! (`http`) only reads what the host gives, calls these, and carries out the answer.
//!
//! ```text
//! Start --headers--> Refused
//!   |  \--unknown key--> AwaitingLookup --answer--> (as for a known key)
//!   |--free route / control plane--> Passing
//!   \--billed route--> ReadingBody --body end--> Forwarded --end or cut--> settled (debit, hold gone)
//!                          \--unbillable, ceiling too high--> Refused
//! ```
//!
//! A billed request counts in the worker's `in_flight` from its admission to its settlement, so
//! that a drain waits for the debit it will add. Its hold (spend control `reserve`), placed when
//! the body is read, goes exactly once: replaced by the debit, or released when there is none.

use std::rc::Rc;
use std::time::SystemTime;

use metering::apikey;
use metering::ceiling::OutputBound;
use metering::wire::{KeyLookup, KeyLookupResult, SpendControl, PROTOCOL_VERSION};
use rust_decimal::Decimal;
use uuid::Uuid;

use crate::config::{Config, UpstreamKey};
use crate::request::admission::{admit_known, extract_key, gateway_ready, key_shaped, well_formed_key};
use crate::request::exchange::{Admission, Exchange};
use crate::request::refusal::{Refusal, Shortfall};
use crate::request::rewrite::{fewer_edits, plan_request, upstream_header_edits, HeaderEdit, Headers};
use crate::request::route::RouteKind;
use crate::shared::balances::{apply_account, apply_key, read_account, read_key, Hold};
use crate::shared::state::{KeyEntry, KeyRules};
use crate::shared::store::{SharedStore, UpdateError};
use crate::worker::{BudgetCharge, NotHeld, Worker};

/// What happened, for the metrics (the HTTP context counts; the measurement ignores them).
#[derive(Debug)]
pub enum Event<'a> {
    AdmittedBilled,
    AdmittedFree,
    PassedControlPlane,
    Refused(&'a Refusal),
    LookupAsked,
    LookupFailed,
    SharedDataContended,
    AdmittedWithoutHold,
    DebitFinalised { partial: bool },
    ServedModelUnpriced,
    SpendNotPublished(&'a UpdateError),
}

pub trait Observe {
    fn event(&self, event: Event<'_>);
}

/// Observes nothing.
pub struct Unobserved;

impl Observe for Unobserved {
    fn event(&self, _: Event<'_>) {}
}

/// What the host must do after the request headers (or the key lookup's answer).
#[derive(Debug, PartialEq)]
pub enum Step {
    /// Admitted: apply [`header_edits`] for this route and let the request go on (a billed
    /// request's body is then held until its end).
    Admit(RouteKind),
    /// Answer the caller with this refusal.
    Refuse(Refusal),
    /// Ask the control plane about the key (`POST /internal/v1/keys/lookup` with this body) and
    /// pause; then [`RequestFlow::on_lookup`].
    Lookup(Vec<u8>),
}

/// What the host must do with a body chunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyAction {
    Continue,
    Pause,
    /// The billed body is complete: read it and call [`RequestFlow::on_body_end`].
    ReadBody,
}

/// What the host must do once the billed body was read.
#[derive(Debug, PartialEq)]
pub enum Forward {
    /// Forward the body, replaced by this one when given.
    Body(Option<Vec<u8>>),
    Refuse(Refusal),
}

enum Phase {
    Start,
    AwaitingLookup {
        route: RouteKind,
        key_hash: String,
        /// The request had no body.
        end_of_stream: bool,
    },
    /// A free route or the control plane's: passed through, nothing to bill.
    Passing,
    /// A billed request admitted on its headers, its body held until its end.
    ReadingBody {
        exchange: Box<Exchange>,
        spend_control: SpendControl,
        /// The key's limit, allowed models and expiry, when it has any.
        rules: Option<Rc<KeyRules>>,
    },
    /// The body went to the upstream; the answer is metered until the request settles.
    Forwarded {
        exchange: Box<Exchange>,
    },
}

pub struct RequestFlow {
    phase: Phase,
    /// The request counts in the worker's `in_flight` (admitted billed, not settled).
    in_flight: bool,
    /// The credits the request holds on its account (spend control `reserve`).
    hold: Option<Hold>,
    /// A limited key's budget entry (the key's id) and what it had when admitted.
    budget: Option<(Uuid, Decimal)>,
    /// The credits the request holds on its key's budget.
    budget_hold: Option<Hold>,
    /// Answered by the gateway: nothing more goes to the upstream.
    refused: bool,
}

impl Default for RequestFlow {
    fn default() -> Self {
        Self::new()
    }
}

fn millis(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The header edits of an admitted request: the caller's key out, the operator's in (for the
/// upstream), the gateway's own headers out, in the fewest host calls.
pub fn header_edits<'a>(headers: &'a Headers, settings: &'a Config, route: RouteKind) -> Vec<HeaderEdit<'a>> {
    let key = if route == RouteKind::ControlPlane {
        &UpstreamKey::None
    } else {
        &settings.upstream_key
    };
    let from_header = match key {
        UpstreamKey::FromHeader(h) => headers.get(h),
        _ => None,
    };
    let own = headers.own_header_names();
    fewer_edits(upstream_header_edits(route, &own, key, from_header), headers)
}

impl RequestFlow {
    pub fn new() -> Self {
        Self {
            phase: Phase::Start,
            in_flight: false,
            hold: None,
            budget: None,
            budget_hold: None,
            refused: false,
        }
    }

    /// Refused: an admitted request keeps its exchange, for the settlement that frees its place.
    fn refuse(&mut self, observe: &dyn Observe, refusal: Refusal) -> Refusal {
        observe.event(Event::Refused(&refusal));
        self.refused = true;
        refusal
    }

    /// The request headers arrived: admit, refuse, or ask about the key.
    pub fn on_headers<S: SharedStore + ?Sized>(
        &mut self,
        worker: &mut Worker,
        store: &S,
        observe: &dyn Observe,
        headers: &Headers,
        end_of_stream: bool,
        clock: SystemTime,
    ) -> Step {
        match self.decide_headers(worker, store, observe, headers, end_of_stream, clock) {
            Ok(step) => step,
            Err(r) => Step::Refuse(self.refuse(observe, r)),
        }
    }

    fn decide_headers<S: SharedStore + ?Sized>(
        &mut self,
        worker: &mut Worker,
        store: &S,
        observe: &dyn Observe,
        headers: &Headers,
        end_of_stream: bool,
        clock: SystemTime,
    ) -> Result<Step, Refusal> {
        let method = headers.get(":method").unwrap_or_default();
        let path = headers.get(":path").unwrap_or_default();
        let route = worker
            .settings
            .routes
            .classify(method, path)
            .ok_or(Refusal::RouteNotOffered)?;
        if route == RouteKind::ControlPlane {
            observe.event(Event::PassedControlPlane);
            self.phase = Phase::Passing;
            return Ok(Step::Admit(route));
        }
        let key = extract_key(headers.get("x-api-key"), headers.get("authorization")).and_then(key_shaped)?;
        let key_hash = apikey::hash(key);
        let now = millis(clock);
        let status = worker.sync_status(store, now);
        let gateway = worker.gateway_state(&status, now);
        let known = worker.key_entry(store, &key_hash);
        // Unknown keys are checked in full before anything else is decided for them.
        if known.is_none() {
            well_formed_key(key)?;
        }
        gateway_ready(route, gateway)?;
        if let Some(entry) = known {
            let account = worker
                .account_entry(store, &entry.account_id)
                .map(|a| worker.account_view(&entry.account_id, a));
            if let Some(account) = account {
                admit_known(route, &entry, &account, now)?;
                let budget = key_budget(worker, store, route, &entry)
                    .inspect_err(|_| worker.note_limited(store, entry.key_id, now))?;
                let admitted = Admitted {
                    route,
                    end_of_stream,
                    clock,
                    spendable: account.spendable(),
                    spend_control: account.spend_control,
                    rules: entry.rules,
                    budget,
                };
                return self.admit(worker, observe, admitted, key_hash, entry.account_id);
            }
        }
        let negative = worker.negative.contains(&key_hash, now);
        if negative {
            return Err(Refusal::UnknownKey);
        }
        if !worker.lookups.try_take(now) {
            return Err(Refusal::LookupRateLimited);
        }
        let body = serde_json::to_vec(&KeyLookup {
            protocol: PROTOCOL_VERSION,
            key_hash: key_hash.clone(),
        })
        .unwrap_or_default();
        observe.event(Event::LookupAsked);
        self.phase = Phase::AwaitingLookup {
            route,
            key_hash,
            end_of_stream,
        };
        Ok(Step::Lookup(body))
    }

    /// The lookup could not be sent.
    pub fn lookup_not_sent(&mut self, observe: &dyn Observe) -> Refusal {
        observe.event(Event::LookupFailed);
        self.refuse(observe, Refusal::LookupFailed)
    }

    /// The lookup answered (`None`: it failed or was unreadable): store what it says for every
    /// worker, then decide as for a known key, on what shared data now holds.
    pub fn on_lookup<S: SharedStore + ?Sized>(
        &mut self,
        worker: &mut Worker,
        store: &S,
        observe: &dyn Observe,
        answer: Option<KeyLookupResult>,
        clock: SystemTime,
    ) -> Step {
        let Phase::AwaitingLookup {
            route,
            key_hash,
            end_of_stream,
        } = std::mem::replace(&mut self.phase, Phase::Start)
        else {
            return Step::Refuse(self.refuse(observe, Refusal::LookupFailed));
        };
        match self.decide_lookup(
            worker,
            store,
            observe,
            answer,
            clock,
            route,
            key_hash,
            end_of_stream,
        ) {
            Ok(step) => step,
            Err(r) => Step::Refuse(self.refuse(observe, r)),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_lookup<S: SharedStore + ?Sized>(
        &mut self,
        worker: &mut Worker,
        store: &S,
        observe: &dyn Observe,
        answer: Option<KeyLookupResult>,
        clock: SystemTime,
        route: RouteKind,
        key_hash: String,
        end_of_stream: bool,
    ) -> Result<Step, Refusal> {
        let Some(answer) = answer else {
            observe.event(Event::LookupFailed);
            return Err(Refusal::LookupFailed);
        };
        let (Some(key), Some(account)) = (answer.key, answer.account) else {
            worker.negative.insert(&key_hash, millis(clock));
            return Err(Refusal::UnknownKey);
        };
        if key.key_hash != key_hash || key.account_id != account.account_id {
            log::error!("key lookup answered for another key or account; refusing");
            return Err(Refusal::LookupFailed);
        }
        let attempts = worker.settings.cas_retries;
        let stored = apply_key(store, &key, answer.version, attempts)
            .and_then(|_| apply_account(store, &account, answer.version, attempts));
        if let Err(e) = stored {
            observe.event(Event::SharedDataContended);
            log::warn!("lookup answer not stored: {e}");
        }
        // A newer snapshot may have been applied meanwhile: decide on what shared data holds.
        let entry = read_key(store, &key_hash);
        let view =
            read_account(store, &account.account_id).map(|a| worker.account_view(&account.account_id, a));
        let (Some(k), Some(a)) = (entry, view) else {
            return Err(Refusal::LookupFailed);
        };
        admit_known(route, &k, &a, millis(clock))?;
        let budget = key_budget(worker, store, route, &k)
            .inspect_err(|_| worker.note_limited(store, k.key_id, millis(clock)))?;
        let admitted = Admitted {
            route,
            end_of_stream,
            clock,
            spendable: a.spendable(),
            spend_control: a.spend_control,
            rules: k.rules,
            budget,
        };
        self.admit(worker, observe, admitted, key_hash, k.account_id)
    }

    fn admit(
        &mut self,
        worker: &mut Worker,
        observe: &dyn Observe,
        request: Admitted,
        key_hash: String,
        account_id: Uuid,
    ) -> Result<Step, Refusal> {
        let route = request.route;
        let RouteKind::Billed(billed) = route else {
            observe.event(Event::AdmittedFree);
            self.phase = Phase::Passing;
            return Ok(Step::Admit(route));
        };
        if request.end_of_stream {
            return Err(Refusal::UnreadableBody("it is empty".into()));
        }
        let debit_id = worker.ids.next(millis(request.clock));
        worker.in_flight = worker.in_flight.saturating_add(1);
        self.in_flight = true;
        let exchange = Exchange::new(Admission {
            debit_id,
            route: billed,
            key_hash,
            account_id,
            admitted_at: request.clock.into(),
            spendable: request.spendable,
        });
        self.budget = request.budget;
        self.phase = Phase::ReadingBody {
            exchange: Box::new(exchange),
            spend_control: request.spend_control,
            rules: request.rules,
        };
        observe.event(Event::AdmittedBilled);
        Ok(Step::Admit(route))
    }

    /// What to do with a request body chunk.
    pub fn body_action(&self, end_of_stream: bool) -> BodyAction {
        if self.refused {
            return BodyAction::Pause;
        }
        match self.phase {
            Phase::AwaitingLookup { .. } => BodyAction::Pause,
            Phase::ReadingBody { .. } if end_of_stream => BodyAction::ReadBody,
            Phase::ReadingBody { .. } => BodyAction::Pause,
            _ => BodyAction::Continue,
        }
    }

    /// Whether the billed body is still being held (a body ended by trailers).
    pub fn reading_body(&self) -> bool {
        !self.refused && matches!(self.phase, Phase::ReadingBody { .. })
    }

    /// The billed body is complete: the model must be priced and everything that changes the
    /// price readable; under `reserve`, the request's ceiling must fit what the account has.
    pub fn on_body_end<S: SharedStore + ?Sized>(
        &mut self,
        worker: &mut Worker,
        store: &S,
        observe: &dyn Observe,
        body: &[u8],
    ) -> Forward {
        let Phase::ReadingBody {
            mut exchange,
            spend_control,
            rules,
        } = std::mem::replace(&mut self.phase, Phase::Start)
        else {
            return Forward::Body(None);
        };
        exchange.request_body_bytes = u64::try_from(body.len()).unwrap_or(u64::MAX);
        let reserve = spend_control == SpendControl::Reserve;
        let settings = std::rc::Rc::clone(&worker.settings);
        let allowed: &[String] = rules.as_ref().map_or(&[], |r| r.allowed_models.as_slice());
        let planned = plan_request(
            exchange.admission.route,
            body,
            &worker.prices,
            exchange.admission.admitted_at,
            reserve.then_some(&settings.ceiling),
            allowed,
        );
        let plan = match planned {
            Ok(plan) => plan,
            Err(r) => {
                // Put the exchange back: the request still counts until it settles (nothing to
                // debit: its model was never read).
                self.phase = Phase::ReadingBody {
                    exchange,
                    spend_control,
                    rules,
                };
                return Forward::Refuse(self.refuse(observe, r));
            }
        };
        if let Some(ceiling) = &plan.ceiling {
            // The admission's clock: the body follows it by moments, and no host call is needed.
            let now_ms = u64::try_from(exchange.admission.admitted_at.timestamp_millis()).unwrap_or(0);
            let shortfall = |available| Shortfall {
                ceiling: ceiling.credits,
                available,
                model: plan.model.clone(),
                output_tokens: ceiling.output_tokens,
                from_request: ceiling.output_bound == OutputBound::Request,
            };
            let mut refusal = None;
            match worker.reserve(store, exchange.admission.account_id, ceiling.credits, now_ms) {
                Ok(hold) => {
                    if hold.is_none() {
                        observe.event(Event::AdmittedWithoutHold);
                    }
                    self.hold = hold;
                }
                Err(NotHeld::Short(available)) => {
                    refusal = Some(Refusal::CeilingExceeded(Box::new(shortfall(available))));
                }
            }
            // A limited key holds the ceiling on its budget too (after the account: a request
            // the account cannot pay is refused for the account).
            let limit = rules.as_ref().and_then(|r| r.limit);
            if let (None, Some((budget, _)), Some(limit)) = (&refusal, self.budget, limit) {
                match worker.reserve(store, budget, ceiling.credits, now_ms) {
                    Ok(hold) => self.budget_hold = hold,
                    Err(NotHeld::Short(available)) => {
                        if let Some(hold) = self.hold.take() {
                            worker.release_hold(hold);
                        }
                        worker.note_limited(store, budget, now_ms);
                        refusal = Some(Refusal::KeyCeilingExceeded(Box::new((
                            shortfall(available),
                            limit,
                        ))));
                    }
                }
            }
            if let Some(refusal) = refusal {
                self.phase = Phase::ReadingBody {
                    exchange,
                    spend_control,
                    rules,
                };
                return Forward::Refuse(self.refuse(observe, refusal));
            }
        }
        exchange.model_requested = Some(plan.model);
        exchange.requested = plan.requested;
        self.phase = Phase::Forwarded { exchange };
        Forward::Body(plan.new_body)
    }

    fn exchange(&self) -> Option<&Exchange> {
        match &self.phase {
            Phase::ReadingBody { exchange, .. } | Phase::Forwarded { exchange } => Some(exchange),
            _ => None,
        }
    }

    /// The response's header map, as the host gives it: its status, content type and the
    /// upstream's request id (`request-id`, else `x-request-id`), then
    /// [`Self::on_response_headers`]. A status that does not parse is 0 (not billed).
    pub fn on_response(&mut self, headers: &Headers) -> Option<Uuid> {
        let status = headers.get(":status").and_then(|s| s.parse().ok()).unwrap_or(0);
        let upstream_id = headers
            .get("request-id")
            .or_else(|| headers.get("x-request-id"))
            .map(str::to_owned);
        self.on_response_headers(status, headers.get("content-type"), upstream_id)
    }

    /// Response headers: the debit id to give the caller (`x-claudestore-request-id`) when the
    /// request is billed.
    pub fn on_response_headers(
        &mut self,
        status: u16,
        content_type: Option<&str>,
        upstream_request_id: Option<String>,
    ) -> Option<Uuid> {
        let Phase::Forwarded { exchange } = &mut self.phase else {
            return None;
        };
        exchange.on_response_headers(status, content_type, upstream_request_id);
        Some(exchange.admission.debit_id)
    }

    /// Whether the answer is being metered (its body chunks must be fed).
    pub fn is_metering(&self) -> bool {
        self.exchange().is_some_and(Exchange::is_metering)
    }

    pub fn feed(&mut self, chunk: &[u8]) {
        if let Phase::Forwarded { exchange } = &mut self.phase {
            exchange.feed(chunk);
        }
    }

    /// Whether [`Self::settle`] has anything to do when the stream ends without its end.
    pub fn unsettled(&self) -> bool {
        self.exchange().is_some() || self.in_flight || self.hold.is_some() || self.budget_hold.is_some()
    }

    /// The answer ended (`cut`: without its end): the debit, once, replaces the hold (or the
    /// hold goes when there is no debit), and the request stops counting in `in_flight` once
    /// nothing more can be metered.
    pub fn settle<S: SharedStore + ?Sized>(
        &mut self,
        worker: &mut Worker,
        store: &S,
        observe: &dyn Observe,
        cut: bool,
        clock: SystemTime,
    ) {
        let now = clock.into();
        let (debit, spendable, metering) = match &mut self.phase {
            Phase::ReadingBody { exchange, .. } | Phase::Forwarded { exchange } => {
                let debit = if cut {
                    exchange.cut(now)
                } else {
                    exchange.finish(now)
                };
                (debit, exchange.admission.spendable, exchange.is_metering())
            }
            _ => (None, Decimal::ZERO, false),
        };
        let hold = self.hold.take();
        let budget_hold = self.budget_hold.take();
        match debit {
            Some(debit) => {
                observe.event(Event::DebitFinalised {
                    partial: debit.partial,
                });
                let budget = self.budget.map(|(id, spendable)| BudgetCharge {
                    id,
                    spendable,
                    hold: budget_hold,
                });
                let recorded = worker.record_charged(store, &debit, spendable, hold, budget);
                if recorded.served_model_unpriced {
                    observe.event(Event::ServedModelUnpriced);
                }
                if let Some(e) = &recorded.spend_error {
                    observe.event(Event::SpendNotPublished(e));
                }
            }
            None => {
                for hold in [hold, budget_hold].into_iter().flatten() {
                    worker.release_hold(hold);
                }
            }
        }
        if self.in_flight && (cut || !metering) {
            worker.in_flight = worker.in_flight.saturating_sub(1);
            self.in_flight = false;
        }
    }
}

/// What admission needs of the request being admitted.
struct Admitted {
    route: RouteKind,
    /// The request had no body.
    end_of_stream: bool,
    /// When it was admitted (the host clock read at the decision).
    clock: SystemTime,
    /// The account's spendable balance as this worker judged it.
    spendable: Decimal,
    spend_control: SpendControl,
    rules: Option<Rc<KeyRules>>,
    /// A limited key's budget entry and its spendable credits.
    budget: Option<(Uuid, Decimal)>,
}

/// A limited key's budget on a billed route: its entry's id (the key's) and spendable credits as
/// this worker judges them; refused when nothing is left (in both spend controls, as the balance).
/// A budget not synced yet does not refuse: the account's balance still bounds the request.
fn key_budget<S: SharedStore + ?Sized>(
    worker: &mut Worker,
    store: &S,
    route: RouteKind,
    key: &KeyEntry,
) -> Result<Option<(Uuid, Decimal)>, Refusal> {
    let (RouteKind::Billed(_), Some(limit)) = (route, key.limit()) else {
        return Ok(None);
    };
    let spendable = match worker.account_entry(store, &key.key_id) {
        Some(entry) => worker.account_view(&key.key_id, entry).spendable(),
        None => limit.credits,
    };
    if spendable <= Decimal::ZERO {
        return Err(Refusal::KeyLimitReached(*limit));
    }
    Ok(Some((key.key_id, spendable)))
}

#[cfg(test)]
mod tests;
