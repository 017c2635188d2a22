//! `keel bench web`: the administration pages at `--machines` machines — how long a search, a
//! filter and a far page take to answer (the whole page rendered), logged in as an admin.

use std::path::Path;
use std::time::Instant;

use anyhow::{ensure, Context};
use keel_client::{Client, Records};
use serde_json::{json, Value};

use crate::output::table;
use crate::server::{fill, percentile, start_server};

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct WebReport {
    pub machines: u32,
    /// (what, p50 ms, p99 ms) of 50 requests each.
    pub pages: Vec<(String, f64, f64)>,
}

pub(crate) async fn run(dir: &Path, machines: u32) -> anyhow::Result<WebReport> {
    std::fs::create_dir_all(dir)?;
    let server = start_server(dir)?;
    let client = Client::new(&server.url, Some(server.token.clone()))?;
    eprintln!("bench: filling to {machines} machines");
    fill(&client, 0, machines).await?;
    let hash = keel_password::hash("bench-Pass-1")?;
    let admin = json!({"login": "benchroot", "group": "root", "password_hash": hash});
    client.create::<Value>(Records::Users, &admin).await?;
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let cookie = login(&http, &server.url).await?;
    let mut r = WebReport {
        machines,
        pages: Vec::new(),
    };
    let last = machines.saturating_sub(1);
    for (what, path) in [
        ("first page, no filter".to_owned(), "/machines".to_owned()),
        (
            format!("search one name (fill{last})"),
            format!("/machines?q=fill{last}"),
        ),
        (
            "search a prefix (fill9: ~1,100 matches)".to_owned(),
            "/machines?q=fill9".to_owned(),
        ),
        (
            "filter type + sort by IP, page 100".to_owned(),
            "/machines?mtype=user&sort=ip&page=100".to_owned(),
        ),
    ] {
        let mut lat = Vec::with_capacity(50);
        for _ in 0..50 {
            let t = Instant::now();
            let resp = http
                .get(format!("{}{path}", server.url))
                .header("cookie", &cookie)
                .send()
                .await?;
            ensure!(resp.status() == 200, "{path}: {}", resp.status());
            resp.bytes().await?;
            lat.push(crate::server::ms(t));
        }
        r.pages.push((what, percentile(&lat, 0.5), percentile(&lat, 0.99)));
    }
    Ok(r)
}

/// The login dance: the form's double-submit token, then the session cookie.
async fn login(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    let page = http.get(format!("{url}/login")).send().await?;
    let token = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("keel_login="))
        .and_then(|c| c.split(';').next())
        .context("no login token")?
        .to_owned();
    let resp = http
        .post(format!("{url}/login"))
        .header("cookie", format!("keel_login={token}"))
        .form(&[
            ("csrf", token.as_str()),
            ("login", "benchroot"),
            ("password", "bench-Pass-1"),
            ("next", "/"),
        ])
        .send()
        .await?;
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(|c| c.strip_prefix("keel_session="))
        .and_then(|c| c.split(';').next())
        .map(|s| format!("keel_session={s}"))
        .context("the bench admin could not log in")
}

pub(crate) fn print(r: &WebReport) {
    let rows = r
        .pages
        .iter()
        .map(|(what, p50, p99)| {
            vec![
                format!("{what}, {} machines", r.machines),
                format!("p50 {p50:.1} ms, p99 {p99:.1} ms"),
                "< 100 ms".into(),
            ]
        })
        .collect();
    println!(
        "{}",
        table(&["web page", "answer (rendered, read whole)", "target"], rows)
    );
}
