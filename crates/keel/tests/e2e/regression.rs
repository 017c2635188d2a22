//! Regression tests, one per fixed bug, named `r<issue>`.

use serde_json::{json, Value};

use crate::support::Keel;

// See: issue 7 (the original netboot matched `rfs1` by substring, so `rfs10` matched too).
// Here: an exact filter on a name never matches a longer one.
#[tokio::test]
async fn r7_exact_alias_lookup_is_not_a_substring_match() {
    let k = Keel::start(&["--example-site"]);
    let q: Value = k
        .anonymous()
        .rpc("/call/query", json!({"hostname": "gw"}))
        .await
        .unwrap();
    assert_eq!(q.as_array().unwrap().len(), 1);
    let q: Value = k
        .anonymous()
        .rpc("/call/query", json!({"hostname": "g"}))
        .await
        .unwrap();
    assert_eq!(q.as_array().unwrap().len(), 0);
}
