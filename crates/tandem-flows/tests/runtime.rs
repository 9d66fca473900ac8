//! The flow runtime on small inline flows: routing, validation, retries, languages, calls,
//! failures. (The shipped flows are exercised end to end by tests/conversations.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use tandem_domain::HandoffReason;

use serde_json::json;
use tandem_domain::{
    Conversation, ConversationId, MessageContent, Mode, OutboundContent, Timestamp,
};
use tandem_flows::{Bot, CallOutcome, Effect, TurnContext};

const NOW: Timestamp = Timestamp(1_795_428_000_000);
const CTX: TurnContext<'static> = TurnContext {
    now: NOW,
    contact_name: Some("Ana Silva"),
    extract: false,
};

fn bot(files: &[(&str, &str)]) -> Bot {
    let files: Vec<(String, String)> = files
        .iter()
        .map(|(n, t)| ((*n).to_owned(), (*t).to_owned()))
        .collect();
    match tandem_flows::load_sources(&files, &BTreeMap::new()) {
        Ok(loaded) => loaded.bot,
        Err(e) => panic!("{e}"),
    }
}

fn conversation() -> Conversation {
    Conversation::new(ConversationId::parse("1:351910000001").unwrap(), NOW)
}

fn text(body: &str) -> MessageContent {
    MessageContent::Text { body: body.into() }
}

fn replies(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Reply(OutboundContent::Text { body, .. }) => Some(body.clone()),
            Effect::Reply(
                OutboundContent::Buttons { body, .. } | OutboundContent::List { body, .. },
            ) => Some(body.clone()),
            _ => None,
        })
        .collect()
}

/// Sends `message`, using the flows' triggers as the intent, as the engine does.
fn say(bot: &Bot, c: &mut Conversation, message: &str) -> tandem_flows::Turn {
    let intent = bot.match_trigger(message);
    bot.on_message(c, &text(message), intent, &CTX)
}

const SETTINGS: &str = "languages: [en, pt]\nhandoff_after_misses: 2\n";

#[test]
fn texts_follow_the_conversation_language_and_fall_back_to_the_default() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        (
            "hi.yaml",
            "id: hi\ntriggers: ['hello']\nsteps:\n  - say: {en: 'Hello {{ contact.first_name }}', pt: 'Olá {{ contact.first_name }}'}\n",
        ),
    ]);
    let mut c = conversation();
    assert_eq!(replies(&say(&b, &mut c, "hello").effects), ["Hello Ana"]);
    c.language = Some("pt".into());
    assert_eq!(replies(&say(&b, &mut c, "hello").effects), ["Olá Ana"]);
    c.language = Some("de".into());
    assert_eq!(replies(&say(&b, &mut c, "hello").effects), ["Hello Ana"]);
}

#[test]
fn refused_answers_are_retried_then_the_flow_goes_to_on_fail() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        (
            "qty.yaml",
            "id: qty\ntriggers: ['order']\nslots: {n: {}}\nsteps:\n  - ask: How many?\n    slot: n\n    expect: number\n    min: 1\n    max: 10\n    tries: 2\n    on_fail: fail\n  - say: 'You want {{ slots.n }}'\n    end: true\n  - id: fail\n    say: Let us try later\n",
        ),
    ]);
    let mut c = conversation();
    assert_eq!(replies(&say(&b, &mut c, "order").effects), ["How many?"]);
    let turn = say(&b, &mut c, "eleven");
    assert_eq!(
        replies(&turn.effects),
        [
            "Sorry, that is not an answer I can use. Please try again.",
            "How many?"
        ]
    );
    assert_eq!(c.bot.position.as_ref().unwrap().tries, 1);
    assert_eq!(
        replies(&say(&b, &mut c, "11").effects),
        ["Let us try later"]
    );
    assert!(c.bot.position.is_none());
    // And a good answer on another run.
    say(&b, &mut c, "order");
    assert_eq!(replies(&say(&b, &mut c, "4").effects), ["You want 4"]);
    assert_eq!(c.bot.slots["n"], json!(4));
}

#[test]
fn a_message_that_starts_another_flow_leaves_the_question() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        (
            "a.yaml",
            "id: a\ntriggers: ['^start a$']\nslots: {x: {}}\nsteps:\n  - ask: Email?\n    slot: x\n    expect: email\n",
        ),
        (
            "b.yaml",
            "id: b\ntriggers: ['hours']\nsteps:\n  - say: We open at 9\n",
        ),
    ]);
    let mut c = conversation();
    say(&b, &mut c, "start a");
    let turn = say(&b, &mut c, "what are your hours?");
    assert_eq!(replies(&turn.effects), ["We open at 9"]);
    assert!(c.bot.position.is_none());
}

#[test]
fn choices_are_taken_by_id_number_or_title_and_route() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        (
            "m.yaml",
            "id: m\ntriggers: ['menu']\nslots: {pick: {}}\nsteps:\n  - buttons: Pick\n    slot: pick\n    options:\n      - {id: x, title: Extra, next: extra}\n      - {id: y, title: Why}\n  - say: plain\n    end: true\n  - id: extra\n    say: extra chosen\n",
        ),
    ]);
    for (answer, expected) in [
        (
            MessageContent::ButtonReply {
                id: "x".into(),
                title: "Extra".into(),
            },
            "extra chosen",
        ),
        (text("2"), "plain"),
        (text("  why "), "plain"),
        (text("extra"), "extra chosen"),
    ] {
        let mut c = conversation();
        say(&b, &mut c, "menu");
        let turn = b.on_message(&mut c, &answer, None, &CTX);
        assert_eq!(replies(&turn.effects), [expected], "{answer:?}");
    }
    let mut c = conversation();
    say(&b, &mut c, "menu");
    b.on_message(
        &mut c,
        &MessageContent::ButtonReply {
            id: "y".into(),
            title: "Why".into(),
        },
        None,
        &CTX,
    );
    assert_eq!(c.bot.slots["pick"], json!("y"));
}

#[test]
fn calls_stop_the_turn_and_carry_on_with_the_answer_or_the_error_path() {
    let b = bot(&[
        ("bot.yaml", "variables: {api: 'http://shop'}\n"),
        (
            "o.yaml",
            "id: o\ntriggers: ['status (?P<n>\\d+)']\nslots: {n: {}}\nsteps:\n  - set: {num: '{{ message.text[7:] }}'}\n  - call:\n      method: post\n      url: '{{ config.api }}/orders/{{ vars.num }}'\n      headers: {x-token: abc}\n      body: {order: '{{ vars.num }}', fixed: 3}\n      timeout: 2s\n      save: order\n      on_error: down\n  - say: 'Status {{ vars.order.status }}'\n    end: true\n  - id: down\n    say: 'Down ({{ vars.order.error }})'\n",
        ),
    ]);
    let mut c = conversation();
    let turn = say(&b, &mut c, "status 42");
    let call = turn.call.expect("the flow waits for the backend");
    assert_eq!(call.method, "POST");
    assert_eq!(call.url, "http://shop/orders/42");
    assert_eq!(call.headers, [("x-token".to_owned(), "abc".to_owned())]);
    assert_eq!(call.body, Some(json!({"order": "42", "fixed": 3})));
    assert_eq!(call.timeout, std::time::Duration::from_secs(2));
    let done = b.on_call_result(
        &mut c,
        CallOutcome::Answered {
            status: 200,
            body: json!({"status": "shipped"}),
        },
        &CTX,
    );
    assert_eq!(replies(&done.effects), ["Status shipped"]);

    let mut c = conversation();
    say(&b, &mut c, "status 43");
    let failed = b.on_call_result(&mut c, CallOutcome::Failed("timeout".into()), &CTX);
    assert_eq!(replies(&failed.effects), ["Down (timeout)"]);
    let mut c = conversation();
    say(&b, &mut c, "status 44");
    let failed = b.on_call_result(
        &mut c,
        CallOutcome::Answered {
            status: 500,
            body: json!("oops"),
        },
        &CTX,
    );
    assert_eq!(replies(&failed.effects), ["Down (status 500)"]);
}

#[test]
fn a_customer_answer_cannot_change_a_calls_path_query_or_headers() {
    let b = bot(&[
        ("bot.yaml", "variables: {api: 'http://shop/v1?key=k'}\n"),
        (
            "o.yaml",
            "id: o\ntriggers: ['^track']\nslots: {n: {}}\nsteps:\n  - ask: 'Number?'\n    slot: n\n  - call:\n      url: '{{ config.api }}&order={{ slots.n }}&raw={{ \"a/b\"|safe }}'\n      headers: {x-order: '{{ slots.n }}'}\n      save: r\n  - say: ok\n",
        ),
    ]);
    let mut c = conversation();
    say(&b, &mut c, "track");
    let turn = say(&b, &mut c, "1/../admin?x=1#y");
    let call = turn.call.expect("a call with a hostile answer");
    assert_eq!(
        call.url, "http://shop/v1?key=k&order=1%2F..%2Fadmin%3Fx%3D1%23y&raw=a/b",
        "the answer is one encoded value; the bot's config and `|safe` are as written"
    );
    // A line break in a header value would start another header: the call is not made.
    let mut c = conversation();
    say(&b, &mut c, "track");
    let turn = say(&b, &mut c, "42\r\nX-Admin: yes");
    assert!(turn.call.is_none(), "{:?}", turn.call);
    assert!(
        turn.errors.iter().any(|e| e.contains("header x-order")),
        "{:?}",
        turn.errors
    );
}

#[test]
fn loops_and_missing_variables_end_in_the_fallback_not_a_hang() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        ("a.yaml", "id: a\ntriggers: ['loop']\nsteps:\n  - goto: b\n"),
        ("b.yaml", "id: b\nsteps:\n  - goto: a\n"),
        (
            "c.yaml",
            "id: c\ntriggers: ['late']\nsteps:\n  - say: '{{ vars.later }}'\n",
        ),
        ("d.yaml", "id: d\nsteps:\n  - set: {later: x}\n"),
    ]);
    let mut c = conversation();
    let turn = say(&b, &mut c, "loop");
    assert!(
        turn.errors[0].contains("the flows loop"),
        "{:?}",
        turn.errors
    );
    assert_eq!(replies(&turn.effects).len(), 1, "the fallback text");
    let turn = say(&b, &mut c, "late");
    assert!(
        turn.errors[0].starts_with("template c.yaml:4:10: undefined"),
        "{:?}",
        turn.errors
    );
    assert!(replies(&turn.effects)[0].contains("didn't understand"));
}

#[test]
fn misses_in_a_row_hand_off_and_a_person_can_be_asked_for() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        ("x.yaml", "id: x\ntriggers: ['^x$']\nsteps:\n  - say: ok\n"),
    ]);
    let mut c = conversation();
    say(&b, &mut c, "x");
    say(&b, &mut c, "blah");
    assert_eq!(c.mode(), Mode::Bot);
    let turn = say(&b, &mut c, "blah blah");
    assert_eq!(c.mode(), Mode::Handoff);
    assert!(matches!(turn.effects.last(), Some(Effect::Handoff(h)) if h.reason == "fallback"));

    let mut c = conversation();
    let turn = say(&b, &mut c, "can I talk to a human?");
    assert_eq!(c.mode(), Mode::Handoff);
    assert!(
        matches!(turn.effects.last(), Some(Effect::Handoff(h)) if h.reason == "customer_request")
    );
}

#[test]
fn opted_out_customers_get_nothing_until_they_opt_in() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        ("x.yaml", "id: x\ntriggers: ['^x$']\nsteps:\n  - say: ok\n"),
    ]);
    let mut c = conversation();
    let turn = say(&b, &mut c, "STOP");
    assert!(c.opted_out);
    assert!(matches!(turn.effects.as_slice(), [Effect::OptedOut(_)]));
    assert!(say(&b, &mut c, "x").effects.is_empty());
    let turn = say(&b, &mut c, "start");
    assert!(!c.opted_out);
    assert_eq!(
        replies(&turn.effects),
        ["Welcome back! You will get our messages again."]
    );
    assert_eq!(replies(&say(&b, &mut c, "x").effects), ["ok"]);
}

#[test]
fn a_position_that_no_longer_exists_starts_afresh() {
    let b = bot(&[
        ("bot.yaml", SETTINGS),
        ("x.yaml", "id: x\ntriggers: ['^x$']\nsteps:\n  - say: ok\n"),
    ]);
    let mut c = conversation();
    c.bot.position = Some(tandem_domain::FlowPosition {
        flow: "gone".into(),
        step: "3".into(),
        tries: 0,
    });
    assert_eq!(replies(&say(&b, &mut c, "x").effects), ["ok"]);
    assert!(c.bot.position.is_none());
}

#[test]
fn every_problem_of_a_load_is_reported_at_once() {
    let files = vec![
        ("bot.yaml".to_owned(), "menu: nope\ntimezone: Mars/Base\n".to_owned()),
        ("a.yaml".to_owned(), "id: a\nsteps:\n  - ask: Q\n  - say: '{{ nothing }}'\n  - call: {url: 'x', save: r, timeout: soon}\n  - handoff: {priority: asap}\n".to_owned()),
    ];
    let error = tandem_flows::load_sources(&files, &BTreeMap::new()).unwrap_err();
    let text = error.to_string();
    assert!(
        !text.contains("never reached"),
        "no noise after a broken step:\n{text}"
    );
    for expected in [
        "bot.yaml:1:1: error: `menu: nope` names no flow",
        "bot.yaml:2:11: error: unknown time zone `Mars/Base`",
        "a.yaml:3:5: error: `ask` has no `slot`",
        "a.yaml:4:10: error: undefined variable `nothing`",
        "a.yaml:5:40: error: `soon` is not a duration",
        "a.yaml:6:25: error: unknown priority `asap`",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
}

#[test]
fn a_file_that_cannot_be_read_causes_no_errors_in_the_files_naming_it() {
    // One misspelled key in `orders.yaml`: its own error, and nothing about the menu's
    // `goto: orders` or the template reading its slot.
    let files = vec![
        (
            "menu.yaml".to_owned(),
            "id: menu\nsteps:\n  - say: 'last order {{ slots.order }} {{ vars.status }}'\n  - goto: orders\n".to_owned(),
        ),
        (
            "orders.yaml".to_owned(),
            "id: orders\nslots:\n  order: {description: the order}\nsteps:\n  - sya: hello\n  - call: {url: 'http://x', save: status}\n".to_owned(),
        ),
    ];
    let error = tandem_flows::load_sources(&files, &BTreeMap::new()).unwrap_err();
    let text = error.to_string();
    assert!(
        text.contains("orders.yaml:5:5: error: unknown field `sya`"),
        "{text}"
    );
    assert_eq!(
        text.matches("error:").count(),
        1,
        "only the real error:\n{text}"
    );
}

#[test]
fn every_broken_step_of_a_file_is_reported_not_only_the_first() {
    let files = vec![(
        "orders.yaml".to_owned(),
        "id: orders\nsteps:\n  - sya: hello\n  - say: fine\n    next: end\n  - id: end\n    call: {url: 'http://x', save: s, timout: 2s}\n  - {say: bye, ends: true}\n".to_owned(),
    )];
    let text = tandem_flows::load_sources(&files, &BTreeMap::new())
        .unwrap_err()
        .to_string();
    // Each on its own line (the column is where the parser noticed, inside the step).
    for (line, field) in [(3, "sya"), (7, "timout"), (8, "ends")] {
        let found = text.lines().any(|l| {
            l.starts_with(&format!("orders.yaml:{line}:"))
                && l.contains(&format!("error: unknown field `{field}`"))
        });
        assert!(found, "missing `{field}` at line {line} in\n{text}");
    }
    assert_eq!(text.matches("error:").count(), 3, "no other error:\n{text}");
}

#[test]
fn triage_rules_pick_a_handoff_reason_and_hand_off() {
    let triage = |needs_human: bool, urgency: &str, sentiment: &str| tandem_domain::Triage {
        intent: "oos".into(),
        confidence: 0.9,
        language: "en".into(),
        urgency: serde_json::from_value(urgency.into()).unwrap(),
        sentiment: serde_json::from_value(sentiment.into()).unwrap(),
        needs_human,
    };
    let defaults = bot(&[
        ("bot.yaml", SETTINGS),
        ("x.yaml", "id: x\nsteps:\n  - say: ok\n"),
    ]);
    let rules = defaults.settings.handoff_on;
    assert_eq!(
        rules.reason(&triage(true, "low", "neutral")),
        Some(HandoffReason::NeedsHuman)
    );
    assert_eq!(
        rules.reason(&triage(false, "high", "negative")),
        None,
        "off by default"
    );
    let strict = bot(&[
        (
            "bot.yaml",
            "handoff_on: {needs_human: false, high_urgency: true, negative_sentiment: true}\n",
        ),
        ("x.yaml", "id: x\nsteps:\n  - say: ok\n"),
    ]);
    let rules = strict.settings.handoff_on;
    assert_eq!(rules.reason(&triage(true, "low", "neutral")), None);
    assert_eq!(
        rules.reason(&triage(false, "high", "neutral")),
        Some(HandoffReason::HighUrgency)
    );
    assert_eq!(
        rules.reason(&triage(false, "low", "negative")),
        Some(HandoffReason::NegativeSentiment)
    );
    let mut c = conversation();
    let turn = strict.hand_off_for(&mut c, HandoffReason::HighUrgency, &text("now!!"), &CTX);
    assert_eq!(c.mode(), Mode::Handoff);
    assert_eq!(c.handoff().as_ref().unwrap().reason, "high_urgency");
    assert!(matches!(turn.effects.last(), Some(Effect::Handoff(_))));
}
