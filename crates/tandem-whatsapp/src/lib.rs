//! The WhatsApp Cloud API as Tandem sees it: webhook signatures and webhook parsing.
//!
//! This crate turns the raw bytes Meta posts into typed [`WebhookEvent`]s, each with a stable
//! identity for deduplication. It never fails on a correctly signed body: what it cannot read
//! becomes a [`WebhookEvent::Kept`] holding the raw input. It does no IO and knows nothing of
//! HTTP frameworks or stores.
//!
//! Layout:
//! - [`signature`]: `X-Hub-Signature-256` checking (constant time) and signing.
//! - [`webhook`]: envelope walking, per-field parsing and event identities.
//! - `content`: one WhatsApp message object → [`tandem_domain::MessageContent`].

mod content;
pub mod signature;
pub mod webhook;

pub use signature::{SignatureError, sign, verify};
pub use webhook::{KeptReason, WebhookEvent, parse_webhook};
