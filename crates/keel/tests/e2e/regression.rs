//! Regression tests, one per fixed bug, named `r<issue>`.

use serde_json::{json, Value};

use crate::support::Keel;

// See: issue 7 (the original netboot matched `rfs1` by substring, so `rfs10` matched too).
// Here: an exact filter on a name — hostname or alias — never matches a longer one.
#[tokio::test]
async fn r7_exact_alias_lookup_is_not_a_substring_match() {
    let k = Keel::start(&["--example-site"]);
    for (hostname, alias, mac) in [
        ("nfs7", "rfs7", "02:00:00:00:07:07"),
        ("nfs70", "rfs70", "02:00:00:00:07:70"),
    ] {
        let body = json!({"hostname": hostname, "aliases": [alias], "mac": mac, "mtype": "service"});
        crate::propagation::api(&k, reqwest::Method::POST, "/api/v1/machines", Some(body)).await;
    }
    let query = async |filter: Value| -> Vec<String> {
        let q: Value = k.anonymous().rpc("/call/query", filter).await.unwrap();
        q.as_array()
            .unwrap()
            .iter()
            .map(|m| m["hostname"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        query(json!({"aliases": "rfs7"})).await,
        ["nfs7"],
        "the alias rfs7, not rfs70"
    );
    assert_eq!(query(json!({"aliases": "rfs70"})).await, ["nfs70"]);
    assert!(query(json!({"aliases": "rfs"})).await.is_empty(), "no prefix match");
    assert_eq!(query(json!({"hostname": "gw"})).await, ["gw"]);
    assert!(query(json!({"hostname": "g"})).await.is_empty());
}
