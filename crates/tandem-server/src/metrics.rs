//! Metric names recorded by the HTTP front, declared once.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Webhook POSTs by outcome: `accepted`, `rejected`, `unavailable`.
pub const WEBHOOK_REQUESTS: &str = "tandem_webhook_requests_total";
/// Refused webhook requests by reason (`signature_mismatch`, `body_too_large`, …).
pub const WEBHOOK_REJECTS: &str = "tandem_webhook_rejects_total";
/// Time to acknowledge a webhook POST.
pub const WEBHOOK_ACK: &str = "tandem_webhook_ack_duration_seconds";
/// Events stored and not yet applied.
pub const INBOX_DEPTH: &str = "tandem_inbox_depth";
/// Entries in the dead-letter list.
pub const DEAD_LETTERS: &str = "tandem_dead_letters";
/// Gauge: hook deliveries waiting in the outbox.
pub const HOOKS_PENDING: &str = "tandem_hooks_pending";
/// Gauge: hook deliveries given up on (dead-letter list).
pub const HOOKS_DEAD: &str = "tandem_hooks_dead";
/// Conversations known.
pub const CONVERSATIONS: &str = "tandem_conversations";
/// Flow reloads, by outcome (`ok`, `refused`).
pub const FLOW_RELOADS: &str = "tandem_flows_reloads_total";

/// Tenant reloads, by outcome (`ok`, `refused`).
pub const TENANT_RELOADS: &str = "tandem_tenant_reloads_total";
/// Gauge: tenants in force.
pub const TENANTS: &str = "tandem_tenants";
/// Tenants created from the template for a WABA Embedded Signup shared.
pub const TENANTS_CREATED: &str = "tandem_tenants_created_total";

/// Counter: audit entries that could not be written (the action itself took effect).
pub const AUDIT_FAILURES: &str = "tandem_audit_failures_total";

/// Registers help texts and units with the installed recorder.
pub fn describe() {
    describe_counter!(
        TENANT_RELOADS,
        "Tenant reloads, by outcome (ok, refused: the running version stayed)"
    );
    describe_gauge!(TENANTS, "Declared tenants in force");
    describe_counter!(
        TENANTS_CREATED,
        "Tenants created from the template for a WABA shared through Embedded Signup"
    );
    describe_counter!(
        AUDIT_FAILURES,
        "Audit entries that could not be written (the action took effect)"
    );
    describe_counter!(WEBHOOK_REQUESTS, "Webhook POST requests, by outcome");
    describe_counter!(WEBHOOK_REJECTS, "Webhook requests refused, by reason");
    describe_counter!(
        FLOW_RELOADS,
        "Flow reloads (SIGHUP or a file change), by outcome"
    );
    describe_histogram!(
        WEBHOOK_ACK,
        Unit::Seconds,
        "Time to acknowledge a webhook POST"
    );
    describe_gauge!(
        INBOX_DEPTH,
        "Events stored and not yet applied by their lane"
    );
    describe_gauge!(DEAD_LETTERS, "Entries in the dead-letter list");
    describe_gauge!(HOOKS_PENDING, "Hook deliveries waiting in the outbox");
    describe_gauge!(
        HOOKS_DEAD,
        "Hook deliveries given up on, waiting for a re-drive (GET /v1/hooks/dead)"
    );
    describe_gauge!(CONVERSATIONS, "Conversations known to the store");
}
