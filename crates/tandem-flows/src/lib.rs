//! The flow language of Tandem: what a business writes in `flows/*.yaml`, how it is loaded
//! and checked, and how a conversation moves through it.
//!
//! - [`raw`]: the YAML structures with source positions, and the JSON Schema (`tandem schema`).
//! - [`load`]: reading a flows directory into a [`Bot`], every problem with `file:line:col`.
//! - [`model`]: the checked flows.
//! - [`template`]: minijinja texts with strict variables and per-language variants.
//! - [`validate`]: what `ask` steps accept.
//! - [`hours`]: opening hours in the business's time zone.
//! - [`runtime`]: the pure step function from a customer message to replies and handoffs.

pub mod diagnostic;
pub mod hours;
pub mod load;
pub mod model;
pub mod raw;
pub mod runtime;
pub mod template;
pub mod validate;

pub use diagnostic::{Diagnostic, Severity};
pub use load::{LoadError, Loaded, load_dir, load_sources};
pub use model::Bot;
pub use runtime::{
    CallOutcome, CallRequest, Classified, Effect, ExtractRequest, Intent, Turn, TurnContext,
};

/// Returns the JSON Schema of a flow file and of `bot.yaml`, for editors.
pub fn schema() -> serde_json::Value {
    let flow = schemars::schema_for!(raw::RawFlow);
    let settings = schemars::schema_for!(raw::RawSettings);
    serde_json::json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "Tandem flows",
        "description": "A Tandem flow file (flows/*.yaml) or the bot settings (flows/bot.yaml).",
        "anyOf": [flow, settings],
    })
}
