//! Feeds arbitrary text to the flow loader as one flow file: it must never panic; a refused
//! file gets at least one diagnostic naming the file; a loaded one answers a first message
//! (rendering its templates) without panicking.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tandem_domain::{Conversation, ConversationId, MessageContent, Timestamp};
use tandem_flows::TurnContext;

const NOW: Timestamp = Timestamp(1_795_428_000_000);

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let files = vec![("fuzz.yaml".to_owned(), text.to_owned())];
    match tandem_flows::load_sources(&files, &BTreeMap::new()) {
        Err(error) => {
            assert!(!error.diagnostics.is_empty(), "a refusal says why");
            assert!(error.diagnostics.iter().all(|d| !d.file.is_empty()));
        }
        Ok(loaded) => {
            let ctx = TurnContext {
                now: NOW,
                contact_name: Some("Ana"),
                extract: false,
            };
            for message in ["hi", "1", ""] {
                let mut c = Conversation::new(ConversationId::parse("1:2").expect("an id"), NOW);
                let content = MessageContent::Text { body: message.into() };
                let intent = loaded.bot.match_trigger(message);
                let _ = loaded.bot.on_message(&mut c, &content, intent, &ctx);
            }
        }
    }
});
