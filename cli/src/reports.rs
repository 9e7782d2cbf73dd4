//! The versions of the JSON reports (`simulate --json`, `simulate --ep-ranks N --json`,
//! `tune --json`). Every report's top-level object starts with a `schema` field naming its
//! format and version; `docs/JSON-REPORTS.md` documents every field of each, and
//! `cli/tests/json_reports.rs` checks that the documented fields are the emitted ones.
//!
//! A change that removes or renames a field, or changes its type or meaning, takes the
//! next version; a field added is documented and keeps the version (readers ignore fields
//! they do not know).

use serde::Serialize;

/// `simulate --json`: a [`crate::simulate::Report`].
pub const SIMULATE: &str = "attention-layout/simulate/2";
/// `simulate --ep-ranks N --json` (`N > 1`): a [`crate::simulate::ep::EpReport`].
pub const SIMULATE_EP: &str = "attention-layout/simulate-ep/2";
/// `tune --json`: a [`crate::tune::TuneOutcome`].
pub const TUNE: &str = "attention-layout/tune/1";

/// A report with its schema first.
#[derive(Serialize)]
struct Versioned<'a, T: Serialize> {
    schema: &'static str,
    #[serde(flatten)]
    report: &'a T,
}

/// `report` as pretty-printed JSON whose first field is `"schema": schema`.
pub fn to_json<T: Serialize>(schema: &'static str, report: &T) -> String {
    serde_json::to_string_pretty(&Versioned { schema, report }).unwrap_or_else(|e| {
        serde_json::json!({ "schema": schema, "error": e.to_string() }).to_string()
    })
}
