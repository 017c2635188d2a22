//! Users: search by login, name or group; add; edit names, group, shell and SSH keys; reset a
//! password → a printable sheet (the new password is shown once, on that page only).

use askama::Template;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::response::Response;
use keel_model::input::{Fields, Strictness};
use keel_model::{User, UserPatch};
use serde::Deserialize;

use super::machines::PAGE;
use super::{html, saved, Errors, Form, Me, Nav, TextField, WebError};
use crate::WebState;

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct ListQuery {
    q: String,
    group: String,
    page: usize,
    done: String,
}

pub(crate) struct Row {
    pub login: String,
    pub name: String,
    pub group: &'static str,
    pub uid: u32,
    pub shell: String,
    pub keys: usize,
    pub has_password: bool,
}

#[derive(Template)]
#[template(path = "web/users.html")]
struct ListPage {
    nav: Nav,
    rows: Vec<Row>,
    total: usize,
    matching: usize,
    page: usize,
    pages: usize,
    q: ListQuery,
    base: String,
}

fn matches(u: &User, q: &ListQuery) -> bool {
    let text = q.q.to_lowercase();
    (text.is_empty()
        || u.login.as_str().contains(&text)
        || u.firstname.to_lowercase().contains(&text)
        || u.lastname.to_lowercase().contains(&text))
        && (q.group.is_empty() || u.group.as_str() == q.group)
}

pub(crate) async fn list(State(st): State<WebState>, me: Me, Query(q): Query<ListQuery>) -> Result<Response, WebError> {
    me.admin("the users page")?;
    let snap = st.app.db.snapshot();
    let found: Vec<&User> = snap.users().filter(|u| matches(u, &q)).collect();
    let pages = found.len().div_ceil(PAGE).max(1);
    let page = q.page.clamp(1, pages);
    let rows = found
        .iter()
        .skip((page - 1) * PAGE)
        .take(PAGE)
        .map(|u| Row {
            login: u.login.to_string(),
            name: format!("{} {}", u.firstname, u.lastname),
            group: u.group.as_str(),
            uid: u.uid,
            shell: u.shell.clone(),
            keys: u.ssh_keys.len(),
            has_password: !u.password_hash.is_empty(),
        })
        .collect();
    let base = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &q.q)
        .append_pair("group", &q.group)
        .finish();
    Ok(html(&ListPage {
        nav: me.nav(),
        rows,
        total: snap.user_count(),
        matching: found.len(),
        page,
        pages,
        q,
        base,
    }))
}

#[derive(Debug, Default, Clone)]
pub(crate) struct UserForm {
    pub login: String,
    pub firstname: String,
    pub lastname: String,
    pub group: String,
    pub shell: String,
    pub keys: String,
    pub uid: String,
    pub version: u64,
}

impl UserForm {
    fn of(u: &User) -> Self {
        Self {
            login: u.login.to_string(),
            firstname: u.firstname.clone(),
            lastname: u.lastname.clone(),
            group: u.group.as_str().to_owned(),
            shell: u.shell.clone(),
            keys: u.ssh_keys.join("\n"),
            uid: u.uid.to_string(),
            version: u.version,
        }
    }

    fn from(f: &Form) -> Self {
        let s = |n: &str| f.get(n).unwrap_or("").to_owned();
        Self {
            login: s("login"),
            firstname: s("firstname"),
            lastname: s("lastname"),
            group: s("group"),
            shell: s("shell"),
            keys: s("ssh_keys"),
            uid: String::new(),
            version: f.version(),
        }
    }
}

#[derive(Template)]
#[template(path = "web/user.html")]
struct UserPage {
    nav: Nav,
    /// `None` for a new user.
    name: Option<String>,
    u: UserForm,
    fields: Vec<TextField>,
    errors: Errors,
}

fn form_page(me: &Me, name: Option<String>, u: UserForm, errors: Errors) -> Response {
    let fields = vec![
        TextField::new("firstname", "First name", &u.firstname, ""),
        TextField::new("lastname", "Last name", &u.lastname, ""),
        TextField::new("shell", "Shell", &u.shell, "e.g. /bin/bash"),
    ];
    html(&UserPage {
        nav: me.nav(),
        name,
        u,
        fields,
        errors,
    })
}

fn patch(f: &Form, edit: bool) -> Result<UserPatch, keel_store::StoreError> {
    let names: &[&str] = if edit {
        &["firstname", "lastname", "group", "shell"]
    } else {
        &["login", "firstname", "lastname", "group", "shell"]
    };
    let mut v = f.json(names);
    // The keys box is the whole list: emptied means none.
    v["ssh_keys"] = f.get("ssh_keys").unwrap_or("").into();
    Ok(UserPatch::from_fields(Fields::new(v, Strictness::Lenient)?)?)
}

pub(crate) async fn new_page(me: Me) -> Result<Response, WebError> {
    me.admin("adding users")?;
    let u = UserForm {
        group: "user".into(),
        ..UserForm::default()
    };
    Ok(form_page(&me, None, u, Errors::default()))
}

pub(crate) async fn create(State(st): State<WebState>, me: Me, body: Bytes) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "adding users")?;
    let result = match patch(&f, false) {
        Ok(p) => st.app.db.create_user(&me.principal(), p).await,
        Err(e) => Err(e),
    };
    saved(
        result,
        |u| format!("/users/{}", u.login),
        |errors| form_page(&me, None, UserForm::from(&f), errors),
    )
}

fn find(st: &WebState, login: &str) -> Result<User, WebError> {
    st.app
        .db
        .snapshot()
        .user(login)
        .cloned()
        .ok_or_else(|| WebError::NotFound(format!("user {login}")))
}

pub(crate) async fn edit_page(
    State(st): State<WebState>,
    me: Me,
    Path(login): Path<String>,
) -> Result<Response, WebError> {
    me.admin("editing users")?;
    let u = find(&st, &login)?;
    Ok(form_page(&me, Some(login), UserForm::of(&u), Errors::default()))
}

pub(crate) async fn save(
    State(st): State<WebState>,
    me: Me,
    Path(login): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "editing users")?;
    let version = f.version();
    let result = match patch(&f, true) {
        Ok(p) => st.app.db.edit_user(&me.principal(), &login, version, p).await,
        Err(e) => Err(e),
    };
    saved(
        result,
        |u| format!("/users?done=saved+{}", u.login),
        |errors| {
            let mut u = UserForm::from(&f);
            u.login = login.clone();
            form_page(&me, Some(login), u, errors)
        },
    )
}

#[derive(Template)]
#[template(path = "web/sheet.html")]
struct SheetPage {
    nav: Nav,
    login: String,
    name: String,
    group: String,
    password: String,
}

/// Resets a password: a new one is generated and hashed here, the hash stored, and the password
/// shown once on a printable sheet (never stored, never logged).
pub(crate) async fn reset(
    State(st): State<WebState>,
    me: Me,
    Path(login): Path<String>,
    body: Bytes,
) -> Result<Response, WebError> {
    let f = me.admin_form(&body, "resetting passwords")?;
    let version = f.version();
    let user = find(&st, &login)?;
    let (password, hash) = tokio::task::spawn_blocking(|| {
        let p = keel_password::generate(10)?;
        let h = keel_password::hash(&p)?;
        Ok::<_, keel_password::PasswordError>((p, h))
    })
    .await
    .map_err(|e| WebError::Internal(e.to_string()))?
    .map_err(|e| WebError::Internal(e.to_string()))?;
    let p = UserPatch {
        password_hash: Some(hash),
        password_changed: Some(false),
        ..UserPatch::default()
    };
    match st.app.db.edit_user(&me.principal(), &login, version, p).await {
        Ok(_) => {}
        Err(keel_store::StoreError::VersionMismatch { .. }) => {
            return Err(WebError::Forbidden(format!(
                "{login} changed since you opened the page: the password was not reset. Reload and try again."
            )))
        }
        Err(e) => return Err(e.into()),
    }
    tracing::info!(%login, by = %me.login, "password reset on the web page");
    Ok(html(&SheetPage {
        nav: me.nav(),
        login,
        name: format!("{} {}", user.firstname, user.lastname),
        group: user.group.as_str().to_owned(),
        password,
    }))
}
