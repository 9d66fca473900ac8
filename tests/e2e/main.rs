//! End-to-end tests: each starts the real `tandem` binary on port 0 against a real store (a
//! redb file in a temporary directory, or the Redis server at `TANDEM_TEST_REDIS_URL`, default
//! `redis://127.0.0.1:6379`, under a fresh key prefix) and talks to it over HTTP.
//!
//! Redis-backed tests fail, with instructions, when Redis does not answer; they never skip.
//! Set `TEST_LOG=1` to see the servers' logs.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::let_underscore_must_use,
    unreachable_pub
)]

mod helpers;

mod api;
mod bot;
mod cli;
mod docs;
mod durability;
mod echo;
mod handoff;
mod identity;
mod numbers;
mod onboarding;
mod replicas;
mod security;
mod semantic;
mod standin;
mod tenants;
mod upgrade;
mod voice;
mod webhook;
