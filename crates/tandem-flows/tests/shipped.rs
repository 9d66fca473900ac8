//! The shipped example flows load without errors or warnings.

use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn the_shipped_flows_load_cleanly() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
    let loaded = match tandem_flows::load_dir(&dir, &BTreeMap::new()) {
        Ok(loaded) => loaded,
        Err(e) => panic!("{e}"),
    };
    assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
    assert_eq!(loaded.bot.flows.len(), 6);
    assert_eq!(
        loaded.bot.match_trigger("where is my order?"),
        Some("order_status")
    );
}

#[test]
fn flows_with_examples_teach_their_id_and_description_too() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../flows");
    let loaded = tandem_flows::load_dir(&dir, &BTreeMap::new()).expect("shipped flows load");
    let examples = loaded.bot.training_examples();
    let of = |intent: &str| -> Vec<&str> {
        examples
            .iter()
            .filter(|e| e.intent == intent)
            .map(|e| e.text.as_str())
            .collect()
    };
    let order = loaded
        .bot
        .flow("order_status")
        .expect("order_status is shipped");
    let taught = of("order_status");
    assert!(taught.contains(&"order status"), "{taught:?}");
    let description = order.description.as_deref().expect("it has a description");
    assert!(taught.contains(&description), "{taught:?}");
    assert_eq!(taught.len(), order.examples.len() + 2);
    for flow in loaded.bot.flows.iter().filter(|f| f.examples.is_empty()) {
        assert!(of(&flow.id).is_empty(), "{} has no examples", flow.id);
    }
}
