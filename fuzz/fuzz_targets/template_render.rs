//! Templates and hostile answers. The input's first line is a template the business could
//! write (in a `say` step and in a backend call's header); the rest is a customer's answer.
//! Loading and rendering must never panic, and whatever the answer is, the call's URL keeps
//! the business's path and query: the answer is one percent-encoded value.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tandem_domain::{Conversation, ConversationId, MessageContent, Timestamp};
use tandem_flows::TurnContext;

const NOW: Timestamp = Timestamp(1_795_428_000_000);
const BASE: &str = "http://shop.test/v1/orders/";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (template, answer) = text.split_once('\n').unwrap_or((text, "42"));
    // A JSON string is a YAML double-quoted scalar: the template arrives as written.
    let quoted = serde_json::to_string(template).expect("a string");
    let flow = format!(
        "id: f\ntriggers: ['^start$']\nslots: {{n: {{}}}}\nsteps:\n  - say: {quoted}\n  - ask: 'Number?'\n    slot: n\n  - call:\n      url: '{BASE}{{{{ slots.n }}}}?k=1'\n      headers: {{x-fuzz: {quoted}}}\n      save: r\n  - say: ok\n"
    );
    let files = vec![("f.yaml".to_owned(), flow)];
    let Ok(loaded) = tandem_flows::load_sources(&files, &BTreeMap::new()) else {
        return;
    };
    let ctx = TurnContext {
        now: NOW,
        contact_name: Some("Ana"),
        extract: false,
    };
    let mut c = Conversation::new(ConversationId::parse("1:2").expect("an id"), NOW);
    let say = |c: &mut Conversation, message: &str| {
        let content = MessageContent::Text { body: message.into() };
        let intent = loaded.bot.match_trigger(message);
        loaded.bot.on_message(c, &content, intent, &ctx)
    };
    let _ = say(&mut c, "start");
    let turn = say(&mut c, answer);
    if let Some(call) = turn.call {
        let encoded = call
            .url
            .strip_prefix(BASE)
            .and_then(|rest| rest.strip_suffix("?k=1"))
            .unwrap_or_else(|| panic!("the answer changed the URL: {}", call.url));
        assert!(
            !encoded.contains(['/', '?', '#', '&']),
            "the answer is not one value: {}",
            call.url
        );
        for (name, value) in &call.headers {
            assert!(!value.contains(['\r', '\n']), "header {name} holds a line break");
        }
    }
});
