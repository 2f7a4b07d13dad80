//! Whether a request can be billed, decided before the upstream gets a byte of it: its model, the
//! modifiers it asks for, its fallbacks, and the tools it declares must all have a price in the
//! version in force at admission. Never serve what cannot be billed.

use chrono::{DateTime, Utc};

use crate::price::{Modifier, PriceTable};
use crate::request::{RequestFields, RequestedOptions};

/// Why a request cannot be billed. The messages name the field, the value and how an admin
/// prices it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unbillable {
    #[error("model {0} is not available on this gateway")]
    Model(String),
    #[error(
        "{field} {value:?} is not available for {model} on this gateway: its price has no multiplier for it \
         (an admin adds one with PUT /v1/prices/{family}, field {field})"
    )]
    Modifier {
        field: &'static str,
        value: String,
        model: String,
        family: String,
    },
    #[error(
        "fallbacks model {0} is not available on this gateway: it has no price \
         (an admin adds one with PUT /v1/prices/{0})"
    )]
    Fallback(String),
    #[error(
        "advisor tool model {0} is not available on this gateway: it has no price \
         (an admin adds one with PUT /v1/prices/{0})"
    )]
    Advisor(String),
    #[error(
        "tool {tool} is billed by container time, which the answer does not report, so this gateway cannot \
         meter it for {model}; declare a web_search_20260209 or web_fetch_20260209 tool (its container is \
         then free), or ask an admin to set a per-request fee (PUT /v1/prices/{family}, field \
         code_execution_usd_per_request)"
    )]
    CodeExecution {
        tool: String,
        model: String,
        family: String,
    },
}

impl Unbillable {
    /// A label per kind, for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Unbillable::Model(_) => "model_not_priced",
            Unbillable::Modifier { .. } => "modifier_not_priced",
            Unbillable::Fallback(_) => "fallback_not_priced",
            Unbillable::Advisor(_) => "advisor_not_priced",
            Unbillable::CodeExecution { .. } => "tool_not_metered",
        }
    }
}

/// Checks a request read to its end against the price versions in force at `at`, and answers
/// what its debit must carry.
pub fn check(
    table: &PriceTable,
    model: &str,
    fields: &RequestFields,
    at: DateTime<Utc>,
) -> Result<RequestedOptions, Unbillable> {
    let entry = table
        .resolve(model, at)
        .map_err(|_| Unbillable::Model(model.to_owned()))?;
    for (modifier, value) in [
        (Modifier::Speed, &fields.speed),
        (Modifier::InferenceGeo, &fields.inference_geo),
    ] {
        if let Some(value) = value {
            if entry.multiplier(modifier, value).is_none() {
                return Err(Unbillable::Modifier {
                    field: modifier.field(),
                    value: value.clone(),
                    model: model.to_owned(),
                    family: entry.model.clone(),
                });
            }
        }
    }
    if let Some(m) = fields.fallbacks.iter().find(|m| table.resolve(m, at).is_err()) {
        return Err(Unbillable::Fallback(m.clone()));
    }
    if let Some(m) = fields
        .tools
        .advisor_models
        .iter()
        .find(|m| table.resolve(m, at).is_err())
    {
        return Err(Unbillable::Advisor(m.clone()));
    }
    if let (true, Some(tool)) = (fields.tools.code_execution_billed(), &fields.tools.code_execution) {
        if entry.code_execution_usd_per_request.is_none() {
            return Err(Unbillable::CodeExecution {
                tool: tool.clone(),
                model: model.to_owned(),
                family: entry.model.clone(),
            });
        }
    }
    Ok(fields.requested_options())
}
