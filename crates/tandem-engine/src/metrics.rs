//! Metric names recorded by the engine, declared once. Labels come from bounded sets only.

use metrics::{Unit, describe_counter, describe_histogram};

/// Events stored, by webhook field (`messages`, `statuses`, `smb_message_echoes`, …).
pub const EVENTS: &str = "tandem_webhook_events_total";
/// Events dropped as retries of events already stored.
pub const DUPLICATES: &str = "tandem_webhook_duplicates_total";
/// Signed input kept raw in the dead-letter list, by reason.
pub const KEPT: &str = "tandem_webhook_kept_total";
/// Messages of a type Tandem does not know (kept raw in the event).
pub const UNKNOWN_MESSAGE_TYPES: &str = "tandem_webhook_unknown_message_types_total";
/// Conversations paused at ingress because a person wrote from the phone.
pub const PAUSES: &str = "tandem_conversations_paused_total";
/// Echoes recognised as our own sends (not a person).
pub const OWN_ECHOES: &str = "tandem_webhook_own_echoes_total";
/// Inbox events applied by lanes, by event kind.
pub const APPLIED: &str = "tandem_lane_events_applied_total";
/// Lane steps recomputed because the record changed under them.
pub const CONFLICTS: &str = "tandem_lane_conflicts_total";
/// Bot resumes, by reason.
pub const RESUMES: &str = "tandem_conversations_resumed_total";
/// Time from the webhook's acknowledgement to the event taking effect.
pub const ACK_TO_EFFECT: &str = "tandem_ack_to_effect_seconds";
/// Template or flow failures during a turn (the fallback was said instead).
pub const FLOW_ERRORS: &str = "tandem_flow_errors_total";
/// `call` steps, by outcome (`ok`, `error_status`, `failed`).
pub const FLOW_CALLS: &str = "tandem_flow_calls_total";
/// Duration of `call` steps.
pub const FLOW_CALL_SECONDS: &str = "tandem_flow_call_seconds";
/// Customer messages classified, by the stage that decided (`rules`, `local`, `none`).
pub const CLASSIFIER_DECISIONS: &str = "tandem_classifier_decisions_total";
/// LLM triage calls, by outcome (`ok`, `timeout`, `endpoint`, `malformed`, `circuit_open`).
pub const LLM_CALLS: &str = "tandem_llm_calls_total";
/// Duration of LLM triage (cache hits included).
pub const LLM_SECONDS: &str = "tandem_llm_seconds";
/// Bot turns, by what ended them (`reply`, `handoff`, `silent`).
pub const TURNS: &str = "tandem_bot_turns_total";
/// Graph API sends, by action and outcome (`sent`, `retry`, `failed`, `cancelled`, `template`).
pub const SENDS: &str = "tandem_sends_total";
/// Time from a webhook's acknowledgement to the Graph API accepting the bot's reply.
pub const ACK_TO_SEND: &str = "tandem_ack_to_send_seconds";
/// Errors, by stage and kind.
pub const ERRORS: &str = "tandem_errors_total";

/// Registers help texts and units with the installed recorder.
pub fn describe() {
    describe_counter!(EVENTS, "Webhook events stored, by field");
    describe_counter!(
        DUPLICATES,
        "Webhook events dropped as retries of stored ones"
    );
    describe_counter!(
        KEPT,
        "Signed webhook input kept raw in the dead-letter list, by reason"
    );
    describe_counter!(
        UNKNOWN_MESSAGE_TYPES,
        "Messages of a type Tandem does not know, kept raw"
    );
    describe_counter!(
        PAUSES,
        "Conversations paused because a person wrote from the phone"
    );
    describe_counter!(
        OWN_ECHOES,
        "Echoes recognised as messages Tandem sent itself"
    );
    describe_counter!(
        APPLIED,
        "Inbox events applied by conversation lanes, by event"
    );
    describe_counter!(
        CONFLICTS,
        "Lane steps recomputed because the record changed meanwhile"
    );
    describe_counter!(RESUMES, "Conversations handed back to the bot, by reason");
    describe_histogram!(
        ACK_TO_EFFECT,
        Unit::Seconds,
        "Time from webhook acknowledgement to the event taking effect"
    );
    describe_counter!(ERRORS, "Errors, by stage and error kind");
    describe_counter!(
        FLOW_ERRORS,
        "Flow failures during a turn (the fallback was said)"
    );
    describe_counter!(FLOW_CALLS, "Backend calls of flow `call` steps, by outcome");
    describe_histogram!(
        FLOW_CALL_SECONDS,
        Unit::Seconds,
        "Duration of flow `call` steps"
    );
    describe_counter!(TURNS, "Bot turns, by how they ended");
    describe_counter!(LLM_CALLS, "LLM triage calls, by outcome");
    describe_histogram!(LLM_SECONDS, Unit::Seconds, "Duration of LLM triage");
    describe_counter!(
        CLASSIFIER_DECISIONS,
        "Customer messages classified, by the deciding stage"
    );
    describe_counter!(SENDS, "Graph API sends, by action and outcome");
    describe_histogram!(
        ACK_TO_SEND,
        Unit::Seconds,
        "Time from webhook acknowledgement to the Graph API accepting the reply"
    );
}
