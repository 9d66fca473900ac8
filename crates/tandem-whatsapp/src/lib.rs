//! The WhatsApp Cloud API as Tandem sees it: webhook signatures and webhook parsing.
//!
//! This crate turns the raw bytes Meta posts into typed [`WebhookEvent`]s, each with a stable
//! identity for deduplication. It never fails on a correctly signed body: what it cannot read
//! becomes a [`WebhookEvent::Kept`] holding the raw input. Apart from the Graph API client it does no IO, and it knows
//! nothing of HTTP servers or stores.
//!
//! Layout:
//! - [`signature`]: `X-Hub-Signature-256` checking (constant time) and signing.
//! - [`webhook`]: envelope walking, per-field parsing and event identities.
//! - `content`: one WhatsApp message object → [`tandem_domain::MessageContent`].
//! - [`outbound`]: messages to send, their limits and exact wire bodies.
//! - [`client`]: the Graph API client and the classification of its errors.
//! - [`onboarding`]: the Graph API calls of onboarding a number (token, webhooks, syncs).

pub mod client;
mod content;
pub mod onboarding;
pub mod outbound;
pub mod signature;
pub mod webhook;

pub use client::{GraphClient, GraphError, Media, MediaError, Remedy, SendError, Sent};
pub use onboarding::{NumberInfo, SyncKind};
pub use outbound::{
    InvalidMessage, ListRow, ListSection, OutboundContent, OutboundMessage, Recipient,
};
pub use signature::{SignatureError, sign, verify};
pub use webhook::{KeptReason, WebhookEvent, keep_body, number_owners, parse_webhook};
