//! Feeds arbitrary bytes to the webhook parser: it must never panic; every event it returns
//! has an identity; and a body it returns nothing for is a well-formed envelope with nothing
//! in it (anything else is kept as a dead letter).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_domain::Timestamp;

fuzz_target!(|data: &[u8]| {
    let events = tandem_whatsapp::parse_webhook(data, Timestamp(1_768_041_000_000));
    for event in &events {
        assert!(!event.key().is_empty());
    }
    if events.is_empty() {
        let value: serde_json::Value = serde_json::from_slice(data).expect("an unreadable body must be kept");
        assert!(value.get("entry").is_some_and(serde_json::Value::is_array));
    }
});
