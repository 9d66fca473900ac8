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
