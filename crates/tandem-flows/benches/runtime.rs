//! Cost of the flow runtime and of template rendering, on the shipped flows, next to the
//! cost of encoding the conversation record as JSON (which every lane commit does anyway):
//! the ratio says how much the bot adds to a step.
//!
//!     cargo bench -p tandem-flows
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};
use tandem_domain::{Conversation, ConversationId, FlowPosition, MessageContent, Timestamp};
use tandem_flows::{Bot, TurnContext};

// 2026-11-23 10:00 Europe/Lisbon, a Monday in opening hours.
const NOW: Timestamp = Timestamp(1_795_428_000_000);

fn bot() -> Bot {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
    tandem_flows::load_dir(&dir, &BTreeMap::new()).unwrap().bot
}

fn text(body: &str) -> MessageContent {
    MessageContent::Text { body: body.into() }
}

fn benches(c: &mut Criterion) {
    let bot = bot();
    let ctx = TurnContext {
        now: NOW,
        contact_name: Some("Ana Silva"),
        extract: false,
    };
    let fresh = Conversation::new(ConversationId::parse("1:351910000001").unwrap(), NOW);

    let mut group = c.benchmark_group("flows");
    group.bench_function("baseline_encode_record", |b| {
        b.iter(|| serde_json::to_vec(black_box(&fresh)).unwrap());
    });
    group.bench_function("greeting_menu", |b| {
        b.iter(|| {
            let mut conversation = fresh.clone();
            let message = text("hi");
            black_box(bot.on_message(&mut conversation, &message, None, &ctx))
        });
    });
    group.bench_function("trigger_match_and_say", |b| {
        b.iter(|| {
            let mut conversation = fresh.clone();
            let message = text("what are your opening hours?");
            let intent = bot.match_trigger("what are your opening hours?");
            black_box(bot.on_message(&mut conversation, &message, intent, &ctx))
        });
    });
    let mut waiting = fresh.clone();
    waiting.bot.position = Some(FlowPosition {
        flow: "delivery".into(),
        step: "1".into(),
        tries: 0,
    });
    group.bench_function("answer_validate_set_branch_say", |b| {
        b.iter(|| {
            let mut conversation = waiting.clone();
            let message = text("1200-195");
            black_box(bot.on_message(&mut conversation, &message, None, &ctx))
        });
    });
    let scope = bot.scope(&fresh, &text("hi"), &ctx);
    let menu = bot.flow("menu").unwrap();
    let tandem_flows::model::StepKind::Say(greeting) = &menu.steps[0].kind else {
        panic!("the menu starts with a greeting");
    };
    group.bench_function("render_template", |b| {
        b.iter(|| {
            bot.templates
                .render_text(black_box(greeting), Some("en"), "en", &scope)
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(runtime, benches);
criterion_main!(runtime);
