//! Network boot: `GET /boot/{mac}` (the iPXE script of a machine), `GET /register` (self-
//! registration from the iPXE prompt, with a menu that fills room, RFS and HFS from the switch the
//! machine hears by LLDP), `GET /bootstrap` (the switch table as iPXE settings, then the machine's
//! script; JSON when asked by `Accept`), and the kernels and initrds under `GET /boot/files/…`
//! (with Range requests).
//!
//! Scripts are templates with `{{name}}` placeholders: shipped in `templates/netboot/`, each
//! overridable by a file of the same name in the site's `[netboot] templates` directory. Every value
//! put into a script is reduced to one line without `$`, `&` or `|`, so a faulty reason cannot
//! inject iPXE commands (`&& chain …`) or expand settings.

use std::path::PathBuf;

use axum::extract::{Path, RawQuery, State};
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::Json;
use keel_model::input::{Fields, Strictness};
use keel_model::{BootMode, Mac, Machine, MachinePatch, Principal, Snapshot};

use keel_server::ApiError;

use crate::WebState;

/// The `[netboot]` table of keel.toml: how the iPXE scripts of `GET /boot/{mac}` are made and
/// where the files they load are. Its `Default` is the one place these defaults are written.
#[derive(Debug, Clone, serde::Deserialize, serde::Serialize, schemars::JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct NetbootConfig {
    /// Kernels and initrds, served under `/boot/files/`; a relative path is under the data
    /// directory.
    pub files_dir: PathBuf,
    /// A directory of site templates (`nfsroot.ipxe`, `local.ipxe`, …), each replacing the
    /// shipped one of its name.
    #[serde(rename = "templates")]
    pub templates_dir: Option<PathBuf>,
    /// The http:// or https:// URL machines reach keel at (default: the request's Host).
    pub base_url: Option<String>,
    /// The kernel of RFS N, relative to `files_dir` (`{rfs}` is replaced).
    pub kernel: String,
    /// The initrd of RFS N, relative to `files_dir` (`{rfs}` is replaced).
    pub initrd: String,
    /// The NFS export of an RFS (`{rfs}` is replaced).
    pub nfs_path: String,
    /// More kernel arguments.
    pub cmdline: String,
    /// iPXE lines for machines in `install` mode.
    pub install: String,
    /// The type of a machine that registers itself: never the machine's choice.
    pub self_registration_type: keel_model::MachineType,
}

impl Default for NetbootConfig {
    fn default() -> Self {
        Self {
            files_dir: PathBuf::from("boot"),
            templates_dir: None,
            base_url: None,
            kernel: "rfs{rfs}/vmlinuz".into(),
            initrd: "rfs{rfs}/initrd.img".into(),
            nfs_path: "/export/nfsroot".into(),
            cmdline: String::new(),
            install: "echo No installer is configured ([netboot] install).\nshell".into(),
            self_registration_type: keel_model::MachineType::User,
        }
    }
}

fn shipped(name: &str) -> &'static str {
    match name {
        "nfsroot" => include_str!("../templates/netboot/nfsroot.ipxe"),
        "local" => include_str!("../templates/netboot/local.ipxe"),
        "install" => include_str!("../templates/netboot/install.ipxe"),
        "faulty" => include_str!("../templates/netboot/faulty.ipxe"),
        "no-rfs" => include_str!("../templates/netboot/no-rfs.ipxe"),
        "unknown" => include_str!("../templates/netboot/unknown.ipxe"),
        "register" => include_str!("../templates/netboot/register.ipxe"),
        "bootstrap" => include_str!("../templates/netboot/bootstrap.ipxe"),
        _ => include_str!("../templates/netboot/register-error.ipxe"),
    }
}

/// One line, no iPXE expansion and no command chaining (`$`, `&&`, `||`): what a value may become
/// inside a script.
fn clean(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || matches!(c, '$' | '&' | '|') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Fills a template; `raw` values (lines of script the site configured) are not cleaned.
fn render(cfg: &NetbootConfig, name: &str, vars: &[(&str, String)], raw: &[(&str, &str)]) -> String {
    let site = cfg
        .templates_dir
        .as_ref()
        .and_then(|d| std::fs::read_to_string(d.join(format!("{name}.ipxe"))).ok());
    let mut out = site.unwrap_or_else(|| shipped(name).to_owned());
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), &clean(v));
    }
    for (k, v) in raw {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
    }
    out
}

fn script(body: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body).into_response()
}

fn base(cfg: &NetbootConfig, headers: &HeaderMap) -> String {
    cfg.base_url.clone().unwrap_or_else(|| {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)))
            .unwrap_or("127.0.0.1");
        format!("http://{host}")
    })
}

fn machine_vars(m: &Machine, base: &str) -> Vec<(&'static str, String)> {
    vec![
        ("base", base.to_owned()),
        ("mac", m.mac.to_string()),
        ("hostname", m.hostname.to_string()),
        ("ip", m.ip.to_string()),
        ("room", m.room.clone()),
        ("rfs", m.rfs.to_string()),
        ("hfs", m.hfs.to_string()),
        ("reason", m.faulty_reason.clone()),
    ]
}

/// `GET /boot/{mac}`: the machine's script, by its state and boot mode.
pub(crate) async fn boot(State(st): State<WebState>, Path(mac): Path<String>, headers: HeaderMap) -> Response {
    let cfg = &st.netboot;
    let base = base(cfg, &headers);
    let Ok(mac) = Mac::parse("mac", &mac) else {
        return ApiError::invalid("mac", "is not a MAC address").into_response();
    };
    let snap = st.app.db.snapshot();
    let Some(m) = snap.machine_by_mac(&mac) else {
        let vars = [
            ("base", base),
            ("mac", mac.to_string()),
            ("until", registration_until(&snap)),
        ];
        if !snap.registration_open(&keel_store::now_rfc3339()) {
            return script(render(cfg, "unknown", &vars, &[]));
        }
        return script(render(cfg, "register", &vars, &[("switches", &switch_table(&snap))]));
    };
    let mut vars = machine_vars(m, &base);
    if m.is_faulty {
        return script(render(cfg, "faulty", &vars, &[]));
    }
    match m.boot_mode() {
        BootMode::Local => script(render(cfg, "local", &vars, &[])),
        BootMode::Install => script(render(cfg, "install", &vars, &[("install", &cfg.install)])),
        BootMode::Nfsroot => {
            // Its RFS is the machine an admin gave the role `rfs/N`: never a name, which any
            // machine registering itself could take.
            let Some(rfs) = snap.machine_with(&keel_model::MachineRole::Rfs(m.rfs)) else {
                return script(render(cfg, "no-rfs", &vars, &[]));
            };
            let n = m.rfs.to_string();
            vars.push(("rfs_ip", rfs.ip.to_string()));
            vars.push(("kernel", cfg.kernel.replace("{rfs}", &n)));
            vars.push(("initrd", cfg.initrd.replace("{rfs}", &n)));
            vars.push(("nfs_path", cfg.nfs_path.replace("{rfs}", &n)));
            vars.push(("cmdline", cfg.cmdline.clone()));
            script(render(cfg, "nfsroot", &vars, &[]))
        }
    }
}

/// `GET /register?hostname&mac&rfs&hfs&room&mtype`, from the registration script. Answers a
/// script: the machine's boot on success, the refusal's reasons in words otherwise.
pub(crate) async fn register(
    State(st): State<WebState>,
    keel_server::presence::Peer(peer): keel_server::presence::Peer,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Response {
    let cfg = &st.netboot;
    let base = base(cfg, &headers);
    let mut map = serde_json::Map::new();
    for (k, v) in form_urlencoded::parse(q.unwrap_or_default().as_bytes()) {
        if k != "ip" {
            map.insert(k.into_owned(), serde_json::Value::String(v.into_owned()));
        }
    }
    let mac = map.get("mac").and_then(|v| v.as_str()).unwrap_or_default().to_owned();
    let refuse = |lines: Vec<String>| {
        let errors: Vec<String> = lines.iter().map(|l| format!("echo   - {}", clean(l))).collect();
        script(render(
            cfg,
            "register-error",
            &[("base", base.clone()), ("mac", mac.clone())],
            &[("errors", &errors.join("\n"))],
        ))
    };
    if !st.app.db.snapshot().registration_open(&keel_store::now_rfc3339()) {
        return refuse(vec!["registration is closed: an organiser must add this machine".into()]);
    }
    if !st.app.allow_registration(peer, &headers) {
        return refuse(vec!["too many registrations from this address: wait a minute".into()]);
    }
    let patch = match MachinePatch::from_fields(Fields::from_map(map, Strictness::Lenient))
        .and_then(|p| st.app.config.registration.admit(p))
    {
        Ok(p) => p,
        Err(e) => return refuse(vec![format!("{}: {}", e.field, e.message)]),
    };
    match st.app.db.create_machine(&Principal::anonymous(), patch).await {
        Ok(m) => script(format!(
            "#!ipxe\necho keel: registered {} ({}).\nchain {base}/boot/{}\n",
            m.hostname, m.ip, m.mac
        )),
        Err(e) => {
            let lines = match ApiError::from(e) {
                ApiError::Invalid(errs) => errs.iter().map(|e| format!("{}: {}", e.field, e.message)).collect(),
                other => vec![other.to_string()],
            };
            refuse(lines)
        }
    }
}

/// How long registration stays open, in words for the menu: `until 2026-06-01 18:00 UTC` or
/// `until an organiser closes it`.
fn registration_until(snap: &Snapshot) -> String {
    let setting = snap.setting("allow_self_registration").ok();
    match setting.as_ref().and_then(|s| s.until()) {
        Some(end) => format!("until {} {} UTC", &end[..10], &end[11..16]),
        None => "until an organiser closes it".into(),
    }
}

/// The switch table as iPXE settings, in prologin's names: `sw_name_N` (the LLDP chassis id),
/// `sw_room_N`, `sw_rfs_N`, `sw_hfs_N`, numbered from 0 without gaps (the menu stops at the first
/// missing name). A switch without a chassis id cannot be heard, so it is left out; so is one whose
/// chassis or room is not a single safe word (the model refuses both; this is the generator's
/// own check, invariant 11).
fn switch_table(snap: &Snapshot) -> String {
    let word = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && !b"$&|#\\".contains(&b));
    let mut out = String::new();
    let usable = snap.switches().filter(|s| word(&s.chassis) && word(&s.room));
    for (i, sw) in usable.enumerate() {
        out.push_str(&format!(
            "set sw_name_{i} {}\nset sw_room_{i} {}\nset sw_rfs_{i} {}\nset sw_hfs_{i} {}\n",
            sw.chassis, sw.room, sw.rfs, sw.hfs
        ));
    }
    out
}

/// Whether the caller asked for JSON (`Accept: application/json`) rather than a script.
fn wants_json(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|v| v.split(';').next().is_some_and(|t| t.trim() == "application/json"))
}

/// `GET /bootstrap`: what prologin's iPXE image chains to. A script that sets the switch table and
/// chains to the machine's own `/boot/<mac>` (whose registration menu reads the table); the same
/// table as JSON for a caller that sends `Accept: application/json`.
pub(crate) async fn bootstrap(State(st): State<WebState>, headers: HeaderMap) -> Response {
    let snap = st.app.db.snapshot();
    if wants_json(&headers) {
        return Json(snap.switches().collect::<Vec<_>>()).into_response();
    }
    let cfg = &st.netboot;
    let vars = [("base", base(cfg, &headers))];
    script(render(cfg, "bootstrap", &vars, &[("switches", &switch_table(&snap))]))
}

/// Closes self-registration when the end time it was opened with passes: keel writes `false`, so
/// the change log says when it closed and the map and watchers hear it. Readers already compare the
/// end with their own clock, so a machine is refused at the end time even before this write.
pub async fn close_registration_when_due(st: keel_server::AppState) {
    const KEY: &str = "allow_self_registration";
    let who = Principal {
        name: "keel (registration end)".into(),
        ..Principal::system()
    };
    loop {
        let mut changes = st.db.subscribe();
        let Ok(setting) = st.db.snapshot().setting(KEY) else {
            return;
        };
        let due = setting.until().map(until);
        tokio::select! {
            () = async { tokio::time::sleep(due.unwrap_or_default()).await }, if due.is_some() => {
                match st.db.set_setting(&who, KEY, serde_json::Value::Bool(false), Some(setting.version)).await {
                    Ok(_) => tracing::info!(until = setting.until().unwrap_or(""), "self-registration closed: the time it was opened for ended"),
                    // Someone changed it meanwhile (another server closed it, an admin reopened
                    // it): look again.
                    Err(keel_store::StoreError::VersionMismatch { .. }) => {}
                    Err(e) => {
                        tracing::warn!(%e, "cannot close self-registration at its end time; trying again in 5 s");
                        tokio::select! {
                            () = tokio::time::sleep(std::time::Duration::from_secs(5)) => {}
                            () = st.stopping() => return,
                        }
                    }
                }
            }
            r = changes.recv() => {
                if matches!(r, Err(tokio::sync::broadcast::error::RecvError::Closed)) {
                    return;
                }
            }
            () = st.stopping() => return,
        }
    }
}

/// How long from now until `end` (RFC 3339); zero when it is past or unreadable.
fn until(end: &str) -> std::time::Duration {
    time::OffsetDateTime::parse(end, &time::format_description::well_known::Rfc3339)
        .map(|t| t - time::OffsetDateTime::now_utc())
        .ok()
        .and_then(|d| std::time::Duration::try_from(d).ok())
        .unwrap_or_default()
}
