//! The web administration pages in a real headless Chromium: log in as root, add a machine and
//! find it in the list and in keel's DNS, edit it with a bad MAC and see the error beside the
//! field, log out; a contestant's login is refused; a form post without the CSRF token is
//! refused. Screenshots of the main pages go to the test artifacts.

use reqwest::Method;
use serde_json::json;

use crate::browser::Browser;
use crate::presence::add_machine;
use crate::propagation::api;
use crate::support::Keel;

async fn add_user_with_password(k: &Keel, login: &str, group: &str, password: &str) {
    let hash = keel_password::hash(password).unwrap();
    let body = json!({"login": login, "group": group, "firstname": "Ada", "lastname": "Admin", "password_hash": hash});
    api(k, Method::POST, "/api/v1/users", Some(body)).await;
}

/// Fills the page's fields by id and submits the form holding the first of them.
async fn fill_and_submit(b: &Browser, fields: &[(&str, &str)]) {
    let mut js = String::new();
    for (id, v) in fields {
        js.push_str(&format!("document.getElementById({id:?}).value = {v:?};\n"));
    }
    let first = fields[0].0;
    js.push_str(&format!(
        "document.getElementById({first:?}).form.submit(); return true;"
    ));
    b.eval(&js).await;
}

async fn path(b: &Browser) -> String {
    b.eval("return location.pathname;")
        .await
        .as_str()
        .unwrap_or("")
        .to_owned()
}

async fn wait_path(b: &Browser, want: &str) {
    b.wait_for(
        10,
        &format!("page {want}"),
        &format!("return location.pathname === {want:?} && document.readyState === 'complete';"),
    )
    .await;
    assert_eq!(path(b).await, want);
}

#[tokio::test]
#[cfg_attr(
    not(all(has_chromium, has_chromedriver, has_dig)),
    ignore = "needs chromium, chromedriver, dig, not installed here (.ci/run installs it)"
)]
async fn root_adds_and_edits_a_machine_in_a_real_browser() {
    let k = Keel::start_with_config("[web]\nsecure_cookies = false\n", &[]);
    add_user_with_password(&k, "root1", "root", "Root-pass-123").await;
    add_user_with_password(&k, "zoe", "user", "Zoe-pass-123").await;
    add_machine(&k, "pc1", "user", "192.168.0.1").await;
    let b = Browser::start().await;

    // Not logged in: the login page, with where to go next.
    b.goto(&format!("{}/machines", k.url)).await;
    wait_path(&b, "/login").await;
    b.screenshot("web-login").await;
    // A contestant is refused, with a reason.
    fill_and_submit(&b, &[("login", "zoe"), ("password", "Zoe-pass-123")]).await;
    b.wait_for(10, "the refusal", "return !!document.getElementById('login-error');")
        .await;
    let said = b
        .eval("return document.getElementById('login-error').textContent;")
        .await;
    assert!(
        said.as_str().unwrap().contains("for admins and facility managers"),
        "{said}"
    );
    // A wrong password is refused.
    fill_and_submit(&b, &[("login", "root1"), ("password", "nope")]).await;
    b.wait_for(
        10,
        "wrong password",
        "return (document.getElementById('login-error')||{}).textContent === 'Wrong login or password.';",
    )
    .await;

    // root logs in and lands where it was going.
    fill_and_submit(&b, &[("login", "root1"), ("password", "Root-pass-123")]).await;
    wait_path(&b, "/machines").await;
    b.screenshot("web-machines").await;

    // Add a machine.
    b.goto(&format!("{}/machines/new", k.url)).await;
    fill_and_submit(
        &b,
        &[("hostname", "r01p07"), ("mac", "aa:bb:cc:dd:ee:07"), ("room", "alt")],
    )
    .await;
    wait_path(&b, "/machines").await;
    let listed = b
        .eval("return document.querySelector('main').textContent.includes('r01p07');")
        .await;
    assert_eq!(listed, json!(true));
    let ip = api(&k, Method::GET, "/api/v1/machines/r01p07", None).await["ip"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, answers) = crate::dns::dig(&k, &["r01p07.prolo", "A"]);
    assert_eq!(status, "NOERROR");
    assert!(answers.iter().any(|a| a.ends_with(&ip)), "{answers:?}");

    // Edit it with a bad MAC: the error is beside the field, nothing is saved.
    b.goto(&format!("{}/machines/r01p07", k.url)).await;
    fill_and_submit(&b, &[("mac", "zz:not:a:mac")]).await;
    b.wait_for(10, "the MAC error", "return !!document.getElementById('mac-error');")
        .await;
    let err = b.eval("return document.getElementById('mac-error').textContent;").await;
    assert!(!err.as_str().unwrap().is_empty());
    assert_eq!(
        b.eval("return document.getElementById('mac').getAttribute('aria-invalid');")
            .await,
        json!("true")
    );
    b.screenshot("web-machine-error").await;
    let m = api(&k, Method::GET, "/api/v1/machines/r01p07", None).await;
    assert_eq!(m["mac"], "aa:bb:cc:dd:ee:07");

    // Two admins on one machine: the second save is refused, not silently overwriting.
    b.goto(&format!("{}/machines/r01p07", k.url)).await;
    let out = k.cli(&["machine", "edit", "r01p07", "--room", "other"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    fill_and_submit(&b, &[("room", "mine")]).await;
    b.wait_for(
        10,
        "the conflict",
        "return document.querySelector('main').textContent.includes('Someone else saved');",
    )
    .await;
    assert_eq!(
        api(&k, Method::GET, "/api/v1/machines/r01p07", None).await["room"],
        "other"
    );

    // A form post without the CSRF token is refused (the session cookie alone is not enough).
    let status = b
        .eval(
            "const r = new XMLHttpRequest(); r.open('POST', '/machines/new', false); \
               r.setRequestHeader('Content-Type', 'application/x-www-form-urlencoded'); \
               r.send('hostname=evil&mac=aa:bb:cc:dd:ee:66'); return r.status;",
        )
        .await;
    assert_eq!(status, json!(403));
    assert_eq!(
        crate::support::req(&k, Some(&k.token), Method::GET, "/api/v1/machines/evil", None, &[])
            .await
            .0,
        404
    );

    // A switch, added and then refused a bad RFS.
    b.goto(&format!("{}/switches/new", k.url)).await;
    fill_and_submit(
        &b,
        &[
            ("name", "sw-alt"),
            ("chassis", "00:11:22:33:44:55"),
            ("room", "alt"),
            ("rfs", "1"),
        ],
    )
    .await;
    wait_path(&b, "/switches").await;
    assert_eq!(
        b.eval("return document.querySelector('main').textContent.includes('sw-alt');")
            .await,
        json!(true)
    );
    b.goto(&format!("{}/switches/sw-alt", k.url)).await;
    fill_and_submit(&b, &[("rfs", "minus one")]).await;
    b.wait_for(10, "the RFS error", "return !!document.getElementById('rfs-error');")
        .await;

    // The other pages render; screenshots for the README and the artifacts.
    for (page, shot) in [
        ("/users", "web-users"),
        ("/settings", "web-settings"),
        ("/log", "web-log"),
        ("/propagation", "web-propagation"),
        ("/switches", "web-switches"),
    ] {
        b.goto(&format!("{}{page}", k.url)).await;
        wait_path(&b, page).await;
        b.screenshot(shot).await;
    }
    let log = b.eval("return document.querySelector('main').textContent;").await;
    assert!(log.as_str().unwrap_or("").len() > 10);

    // A new user, a password reset → a printable sheet, then that user changes it on /password.
    b.goto(&format!("{}/users/new", k.url)).await;
    fill_and_submit(&b, &[("login", "newbie"), ("firstname", "New"), ("lastname", "Bie")]).await;
    wait_path(&b, "/users/newbie").await;
    b.eval("document.querySelector('form.reset').submit(); return true;")
        .await;
    b.wait_for(10, "the sheet", "return !!document.querySelector('.password');")
        .await;
    b.screenshot("web-password-sheet").await;
    let password = b.eval("return document.querySelector('.password').textContent;").await;
    let password = password.as_str().unwrap().to_owned();
    assert!(password.len() >= 8, "{password}");

    // On a phone-sized screen.
    b.resize(390, 844).await;
    b.goto(&format!("{}/machines", k.url)).await;
    wait_path(&b, "/machines").await;
    b.screenshot("web-machines-phone").await;
    b.resize(1280, 900).await;

    // Log out: back to the login page, and the pages need a login again.
    b.goto(&format!("{}/machines", k.url)).await;
    b.eval("document.querySelector('form.logout').submit(); return true;")
        .await;
    wait_path(&b, "/login").await;
    b.goto(&format!("{}/machines", k.url)).await;
    wait_path(&b, "/login").await;

    // Anyone changes their own password on /password (no login needed, the current one is).
    b.goto(&format!("{}/password", k.url)).await;
    fill_and_submit(
        &b,
        &[
            ("login", "newbie"),
            ("old", &password),
            ("new", "Brand-new-pw1"),
            ("again", "Brand-new-pw1"),
        ],
    )
    .await;
    b.wait_for(
        10,
        "password changed",
        "return document.querySelector('main').textContent.includes('Your password is changed');",
    )
    .await;
    let u = api(&k, Method::GET, "/api/v1/users/newbie", None).await;
    assert_eq!(u["password_changed"], true, "{u}");
}

/// `serve --example-site` works on first start for the pages too: its admin's password is in a
/// 0600 file of the data directory, and logs in.
#[tokio::test]
async fn the_example_sites_admin_logs_in() {
    use std::os::unix::fs::PermissionsExt;
    let k = Keel::start(&["--example-site"]);
    let file = k.data().join("example-admin.password");
    assert_eq!(std::fs::metadata(&file).unwrap().permissions().mode() & 0o777, 0o600);
    let password = std::fs::read_to_string(&file).unwrap().trim().to_owned();
    assert!(!k.log().contains(&password), "the password is never logged");
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let page = http.get(format!("{}/login", k.url)).send().await.unwrap();
    let token = page
        .headers()
        .get_all("set-cookie")
        .iter()
        .find_map(|c| {
            c.to_str()
                .unwrap()
                .strip_prefix("keel_login=")
                .map(|c| c.split(';').next().unwrap().to_owned())
        })
        .unwrap();
    let resp = http
        .post(format!("{}/login", k.url))
        .header("cookie", format!("keel_login={token}"))
        .form(&[
            ("csrf", token.as_str()),
            ("login", "admin"),
            ("password", password.as_str()),
            ("next", "/"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    assert!(resp
        .headers()
        .get_all("set-cookie")
        .iter()
        .any(|c| c.to_str().unwrap().starts_with("keel_session=")));
}
