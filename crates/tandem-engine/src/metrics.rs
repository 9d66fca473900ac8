//! Metric names recorded by the engine, declared once. Labels come from bounded sets only.

use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};

/// Events stored, by webhook field (`messages`, `statuses`, `smb_message_echoes`, …).
pub const EVENTS: &str = "tandem_webhook_events_total";
/// Events dropped as retries of events already stored.
pub const DUPLICATES: &str = "tandem_webhook_duplicates_total";
/// Signed input kept raw in the dead-letter list, by reason.
pub const KEPT: &str = "tandem_webhook_kept_total";
/// Messages of a type Tandem does not know (kept raw in the event).
pub const UNKNOWN_MESSAGE_TYPES: &str = "tandem_webhook_unknown_message_types_total";
/// Webhook events of numbers no tenant owns (kept as a dead letter).
pub const UNKNOWN_NUMBER_EVENTS: &str = "tandem_webhook_unknown_number_events_total";
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
/// Customer messages classified, by the stage that decided (`rules`, `local`, `semantic`,
/// `llm`, `none`).
pub const CLASSIFIER_DECISIONS: &str = "tandem_classifier_decisions_total";
/// LLM triage calls, by outcome (`ok`, `timeout`, `endpoint`, `malformed`, `circuit_open`).
pub const LLM_CALLS: &str = "tandem_llm_calls_total";
/// Duration of LLM triage (cache hits included).
pub const LLM_SECONDS: &str = "tandem_llm_seconds";
/// Time to embed one customer message for the semantic stage.
pub const SEMANTIC_EMBED_SECONDS: &str = "tandem_semantic_embed_seconds";
/// Semantic stage decisions that could not be made, by reason (`not_ready`, `busy`,
/// `timeout`, `endpoint`, `malformed`, `dimension`, `build`).
pub const SEMANTIC_FAILURES: &str = "tandem_semantic_failures_total";
/// Time to build a semantic head (cached vectors read, the rest embedded, head trained).
pub const SEMANTIC_BUILD_SECONDS: &str = "tandem_semantic_build_seconds";
/// Example texts embedded to build heads (the ones not found in the cache).
pub const SEMANTIC_EXAMPLES_EMBEDDED: &str = "tandem_semantic_examples_embedded_total";
/// Voice notes transcribed, by outcome (`ok`; `download_lookup`, `download_download`,
/// `download_too_large`, `download_bad_id`; `timeout`, `endpoint`, `malformed`, `silent`).
pub const TRANSCRIPTIONS: &str = "tandem_transcriptions_total";
/// Time to download and transcribe one voice note.
pub const TRANSCRIPTION_SECONDS: &str = "tandem_transcription_seconds";
/// Bot turns, by what ended them (`reply`, `handoff`, `silent`).
pub const TURNS: &str = "tandem_bot_turns_total";
/// Graph API sends, by action and outcome (`sent`, `retry`, `failed`, `cancelled`, `template`).
pub const SENDS: &str = "tandem_sends_total";
/// Time from a webhook's acknowledgement to the Graph API accepting the bot's reply.
pub const ACK_TO_SEND: &str = "tandem_ack_to_send_seconds";
/// Errors, by stage and kind.
pub const ERRORS: &str = "tandem_errors_total";
/// Counter: handoffs requested, by reason.
pub const HANDOFFS: &str = "tandem_handoffs_total";
/// Counter: customer sessions the bot started answering (first message after 24 h).
pub const SESSIONS: &str = "tandem_bot_sessions_total";
/// Histogram: seconds from a handoff request to the first message of a person.
pub const FIRST_HUMAN_REPLY: &str = "tandem_first_human_reply_seconds";
/// Counter: bot messages sent after a person had written (must stay 0).
pub const COLLISIONS: &str = "tandem_collisions_total";
/// Gauge: conversations waiting for an agent, by team.
pub const QUEUE_LENGTH: &str = "tandem_queue_length";
/// Gauge: seconds the longest-waiting conversation has waited, by team.
pub const QUEUE_OLDEST: &str = "tandem_queue_oldest_wait_seconds";
/// Histogram: seconds a conversation waited for an agent, by team.
pub const QUEUE_WAIT: &str = "tandem_queue_wait_seconds";
/// Counter: conversations the router assigned, by team and strategy outcome.
pub const ASSIGNMENTS: &str = "tandem_assignments_total";
/// Counter: hook delivery attempts, by event and outcome (delivered, retry, dead).
pub const HOOK_DELIVERIES: &str = "tandem_hook_deliveries_total";
/// Histogram: seconds a hook receiver took to answer.
pub const HOOK_SECONDS: &str = "tandem_hook_seconds";
/// Gauge: 1 for a number's current link state, 0 for the others.
pub const NUMBER_STATE: &str = "tandem_number_state";
/// Gauge: days since the phone of a number was last seen.
pub const DAYS_SINCE_PHONE: &str = "tandem_number_days_since_phone_activity";
/// Counter: sends held back because their number is disconnected.
pub const SENDS_HELD: &str = "tandem_sends_held_total";
/// Counter: agent actions applied, by action.
pub const AGENT_ACTIONS: &str = "tandem_agent_actions_total";

/// Counter: customers created from a payload nobody matched.
pub const CUSTOMERS_CREATED: &str = "tandem_customers_created_total";
/// Counter: aliases attached to a known customer, by kind (`phone`, `user_id`, `parent_user_id`).
pub const ALIASES_LINKED: &str = "tandem_customer_aliases_linked_total";
/// Counter: aliases a payload put next to another customer's (never merged), by kind.
pub const ALIAS_CONFLICTS: &str = "tandem_customer_alias_conflicts_total";

/// Counter: late webhook events of an erased customer, dropped instead of stored.
pub const ERASED_DROPPED: &str = "tandem_erased_events_dropped_total";
/// Counter: customers erased on request.
pub const ERASURES: &str = "tandem_customers_erased_total";
/// Counter: what retention removed, by what (`transcript_lines`, `dead_letters`,
/// `dead_hooks`, `audit`).
pub const RETENTION_REMOVED: &str = "tandem_retention_removed_total";

/// Registers help texts and units with the installed recorder.
pub fn describe() {
    describe_histogram!(
        SEMANTIC_EMBED_SECONDS,
        Unit::Seconds,
        "Time to embed one customer message for the semantic stage"
    );
    describe_counter!(
        TRANSCRIPTIONS,
        "Voice notes transcribed, by outcome (a failure leaves the note an attachment)"
    );
    describe_histogram!(
        TRANSCRIPTION_SECONDS,
        Unit::Seconds,
        "Time to download and transcribe one voice note"
    );
    describe_counter!(
        SEMANTIC_FAILURES,
        "Semantic stage decisions not made, by reason (the message went on to the next stage)"
    );
    describe_histogram!(
        SEMANTIC_BUILD_SECONDS,
        Unit::Seconds,
        "Time to build a semantic head from the flows' examples"
    );
    describe_counter!(
        SEMANTIC_EXAMPLES_EMBEDDED,
        "Example texts embedded to build semantic heads (not found in the cache)"
    );
    describe_counter!(
        ERASED_DROPPED,
        "Late webhook events of an erased customer (older than the erasure), dropped"
    );
    describe_counter!(ERASURES, "Customers erased on request");
    describe_counter!(
        RETENTION_REMOVED,
        "Entries removed by retention, by what (transcript_lines, dead_letters, dead_hooks, audit)"
    );
    describe_counter!(
        CUSTOMERS_CREATED,
        "Customers created from a payload whose identifiers nobody had"
    );
    describe_counter!(
        ALIASES_LINKED,
        "Phones and BSUIDs attached to a known customer, by alias kind"
    );
    describe_counter!(
        ALIAS_CONFLICTS,
        "Identifiers a payload paired with an identifier of another customer (never merged; routed by BSUID), by alias kind"
    );
    describe_counter!(
        tandem_classify::llm::LLM_REJECTED,
        "LLM answers that failed validation, by reason"
    );
    describe_counter!(
        tandem_classify::llm::LLM_TOKENS,
        "Tokens the LLM endpoint reported using, by kind (prompt, completion)"
    );
    describe_counter!(HANDOFFS, "Handoffs to a person requested, by reason");
    describe_counter!(
        SESSIONS,
        "Customer sessions the bot started answering (a first message after 24 hours); containment = 1 - handoffs / sessions"
    );
    describe_histogram!(
        FIRST_HUMAN_REPLY,
        "Seconds from a handoff request to the first message of a person"
    );
    describe_counter!(
        COLLISIONS,
        "Bot messages sent after a person had written in the conversation (must stay 0)"
    );
    describe_gauge!(QUEUE_LENGTH, "Conversations waiting for an agent, by team");
    describe_gauge!(
        QUEUE_OLDEST,
        "Seconds the longest-waiting conversation has waited, by team"
    );
    describe_histogram!(
        QUEUE_WAIT,
        "Seconds a conversation waited for an agent, by team"
    );
    describe_counter!(
        ASSIGNMENTS,
        "Conversations the router gave to an agent, by team"
    );
    describe_counter!(
        HOOK_DELIVERIES,
        "Hook delivery attempts, by event and outcome (delivered, retry, dead)"
    );
    describe_histogram!(HOOK_SECONDS, "Seconds a hook receiver took to answer");
    describe_gauge!(
        NUMBER_STATE,
        "1 for a number's link state (linked, at_risk, disconnected, offboarded), 0 for the others"
    );
    describe_gauge!(
        DAYS_SINCE_PHONE,
        "Days since activity from a number's WhatsApp Business App was last seen"
    );
    describe_counter!(
        SENDS_HELD,
        "Sends held back because their number is disconnected or off-boarded"
    );
    describe_counter!(AGENT_ACTIONS, "Agent and router actions applied, by action");
    describe_counter!(EVENTS, "Webhook events stored, by field and tenant");
    describe_counter!(
        DUPLICATES,
        "Webhook events dropped as retries of stored ones"
    );
    describe_counter!(
        KEPT,
        "Signed webhook input kept raw in the dead-letter list, by reason"
    );
    describe_counter!(
        UNKNOWN_NUMBER_EVENTS,
        "Webhook events of numbers no tenant owns, kept as a dead letter"
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
