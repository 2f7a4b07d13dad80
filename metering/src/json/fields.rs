//! A fixed set of token counts read under one subtree of a document, with JSON's usual reading
//! of duplicates: the last value of a key wins, and it replaces everything that was under it.

use super::{Path, Value};
use crate::usage::MeterError;

/// A count as read: `None` when absent or null, else the count or why the value is not one.
pub type Reading = Option<Result<u64, &'static str>>;

/// The counts at fixed key paths relative to a subtree root (e.g. the `usage` object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CountFields<const N: usize> {
    paths: &'static [&'static [&'static str]; N],
    readings: [Reading; N],
}

impl<const N: usize> CountFields<N> {
    /// Fields at these paths; a field's index is the index of its path.
    pub const fn new(paths: &'static [&'static [&'static str]; N]) -> Self {
        CountFields {
            paths,
            readings: [None; N],
        }
    }

    /// Records the value at `rel` (relative to the subtree root). A value at a field's path sets
    /// it; a value at one of its ancestors (the subtree or an object holding the field, opened
    /// again or replaced by a scalar) clears it.
    pub fn record(&mut self, rel: Path<'_>, value: &Value<'_>) {
        for (path, reading) in self.paths.iter().zip(self.readings.iter_mut()) {
            if rel.is(path) {
                *reading = value.count();
            } else if rel.is_ancestor_of(path) {
                *reading = None;
            }
        }
    }

    /// The reading of field `index`.
    pub fn get(&self, index: usize) -> Reading {
        self.readings.get(index).copied().flatten()
    }

    /// Field `index` when it is a valid count.
    pub fn count(&self, index: usize) -> Option<u64> {
        self.get(index).and_then(Result::ok)
    }

    /// Every field present in `newer` replaces this one's: cumulative updates field by field.
    pub fn overlay(&mut self, newer: &Self) {
        for (mine, theirs) in self.readings.iter_mut().zip(newer.readings.iter()) {
            if theirs.is_some() {
                *mine = *theirs;
            }
        }
    }

    /// The first field whose value is not a valid count, named `prefix` + its dotted path.
    pub fn first_error(&self, prefix: &str) -> Option<MeterError> {
        self.paths
            .iter()
            .zip(self.readings.iter())
            .find_map(|(path, reading)| match reading {
                Some(Err(reason)) => Some(MeterError::BadCount {
                    field: format!("{prefix}{}", path.join(".")),
                    reason,
                }),
                _ => None,
            })
    }
}
