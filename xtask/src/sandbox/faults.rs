//! Fault knobs (`PUT /admin/faults`), scoped by subject prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How `hang_ms` defaults when a timeout knob is set without it.
const DEFAULT_HANG_MS: u64 = 10_000;
/// Upper bound on `duplicate`, so a typo cannot flood the receiver.
const MAX_DUPLICATES: u32 = 100;

/// What a faulty create/query/refund does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum CallFault {
    /// Answer 500 `SYSTEM_ERROR` and do nothing.
    Error,
    /// Do the work, then answer only after `hang_ms`.
    Timeout,
}

/// The knobs of one scope. Every knob is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Faults {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub drop_first: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub never_notify: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duplicate: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reorder: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tamper_amount: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub forge: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create: Option<CallFault>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<CallFault>,
    /// The refund request (refund queries follow `query`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund: Option<CallFault>,
    /// A new refund answers PROCESSING, and so does its first query; it is SUCCESS after that.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_processing: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang_ms: Option<u64>,
}

impl Faults {
    pub fn drop_first(&self) -> u32 {
        self.drop_first.unwrap_or(0)
    }
    pub fn never_notify(&self) -> bool {
        self.never_notify.unwrap_or(false)
    }
    pub fn delay(&self) -> Option<Duration> {
        self.delay_ms
            .filter(|ms| *ms > 0)
            .map(Duration::from_millis)
    }
    /// Extra copies per delivery, capped at [`MAX_DUPLICATES`].
    pub fn duplicate(&self) -> u32 {
        self.duplicate.unwrap_or(0).min(MAX_DUPLICATES)
    }
    pub fn reorder(&self) -> bool {
        self.reorder.unwrap_or(false)
    }
    pub fn tamper_amount(&self) -> bool {
        self.tamper_amount.unwrap_or(false)
    }
    pub fn forge(&self) -> bool {
        self.forge.unwrap_or(false)
    }
    pub fn refund_processing(&self) -> bool {
        self.refund_processing.unwrap_or(false)
    }
    pub fn hang(&self) -> Duration {
        Duration::from_millis(self.hang_ms.unwrap_or(DEFAULT_HANG_MS))
    }
}

/// Splits the body of `PUT /admin/faults` into its scope and knobs; unknown knobs are errors.
pub(crate) fn parse_request(body: &[u8]) -> Result<(String, Faults), String> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let serde_json::Value::Object(mut map) = value else {
        return Err("expected a JSON object".into());
    };
    let scope = match map.remove("scope") {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s,
        Some(_) => return Err("scope must be a string".into()),
    };
    let faults = Faults::deserialize(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
    Ok((scope, faults))
}

/// Knobs by scope (subject prefix; `""` matches every subject).
#[derive(Debug, Default)]
pub(crate) struct FaultTable {
    scopes: BTreeMap<String, Faults>,
}

impl FaultTable {
    /// Replaces the knobs of `scope`.
    pub fn set(&mut self, scope: String, faults: Faults) {
        self.scopes.insert(scope, faults);
    }

    pub fn clear(&mut self) {
        self.scopes.clear();
    }

    /// The knobs of the longest scope that prefixes `subject` (defaults when none does).
    pub fn for_subject(&self, subject: &str) -> Faults {
        self.scopes
            .iter()
            .filter(|(scope, _)| subject.starts_with(scope.as_str()))
            .max_by_key(|(scope, _)| scope.len())
            .map(|(_, faults)| faults.clone())
            .unwrap_or_default()
    }

    /// Every scope with its knobs, for `GET /admin/faults`.
    pub fn snapshot(&self) -> BTreeMap<String, Faults> {
        self.scopes.clone()
    }
}
