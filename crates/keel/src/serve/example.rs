//! `--example-site`: a small site loaded through the normal write path (validated, logged as Changes).

use keel_model::input::{Fields, Strictness};
use keel_model::{MachinePatch, Principal};
use keel_store::Db;
use serde_json::{json, Value};

fn machines() -> Vec<Value> {
    // gw's roles (below) make it keel's host, RFS 1, HFS 1 and every service name; its aliases
    // are what prologin's mdb listed for it (prologin's clients read them).
    let mut list = vec![json!({
        "hostname": "gw", "mac": "52:54:00:00:01:fe", "ip": "192.168.1.254", "mtype": "service", "room": "other",
        "aliases": ["mdb", "udb", "mdbsync", "netboot", "sso", "map", "presencesync"],
        "rfs": 1, "hfs": 1
    })];
    for (i, room) in [(1, "pasteur"), (2, "pasteur"), (3, "pasteur"), (4, "alt")] {
        list.push(json!({
            "hostname": format!("r00p0{i}"), "mac": format!("52:54:00:00:00:0{i}"), "mtype": "user",
            "room": room, "rfs": 1, "hfs": 1
        }));
    }
    list.push(
        json!({"hostname": "orga01", "mac": "52:54:00:00:02:01", "mtype": "orga", "room": "other", "rfs": 1, "hfs": 1}),
    );
    list
}

fn switches() -> Vec<Value> {
    vec![
        json!({"name": "sw-pasteur", "chassis": "00:1b:21:00:00:01", "room": "pasteur", "rfs": 1, "hfs": 1}),
        json!({"name": "sw-alt", "chassis": "00:1b:21:00:00:02", "room": "alt", "rfs": 1, "hfs": 1}),
    ]
}

/// The example site's web admin password file (in the data directory, mode 0600).
pub const ADMIN_PASSWORD_FILE: &str = "example-admin.password";

/// Loads the example site into an empty database; leaves a non-empty one alone. Its web admin
/// (`admin`, group root) gets a generated password, written to `ADMIN_PASSWORD_FILE` in `dir`
/// (never printed or logged), so the pages can be tried at once.
pub async fn load(db: &Db, dir: &std::path::Path) -> anyhow::Result<()> {
    if db.snapshot().seq() != 0 {
        println!("keel: --example-site: the database is not empty, nothing loaded");
        return Ok(());
    }
    let who = Principal::system();
    for m in machines() {
        let patch = MachinePatch::from_fields(Fields::new(m, Strictness::Strict)?)?;
        db.create_machine(&who, patch).await?;
    }
    for s in switches() {
        db.create_switch(&who, Fields::new(s, Strictness::Strict)?).await?;
    }
    let roles = [
        keel_model::MachineRole::Gateway,
        keel_model::MachineRole::Rfs(1),
        keel_model::MachineRole::Hfs(1),
    ]
    .into_iter()
    .chain(
        keel_model::role::SERVICE_NAMES
            .iter()
            .map(|s| keel_model::MachineRole::Service(s)),
    );
    for role in roles {
        db.set_role(&who, &role, "gw", Some(0)).await?;
    }
    // keel's own host, as a `local` destination, receives the zones, the DHCP config, /etc/hosts
    // and the firewall's ruleset (files only: the example agent has no hooks, so nothing is loaded).
    const SHIPPED: [&str; 4] = ["dns", "dhcp", "hosts", "firewall"];
    let services: std::collections::BTreeSet<String> =
        keel_gen::BuiltIn::ALL.iter().map(|b| b.name().to_owned()).collect();
    let gw = keel_model::Facility {
        name: "gw".into(),
        managers: Vec::new(),
        groups: Vec::new(),
        members: Vec::new(),
        services: SHIPPED.iter().map(|s| (*s).to_owned()).collect(),
        blocked: Vec::new(),
        hfs: None,
        version: 0,
    };
    db.put_facility(&who, gw, 0, &services).await?;
    for s in SHIPPED {
        let d = keel_model::Destination {
            facility: "gw".into(),
            service: s.into(),
            destination: "local".into(),
            channel: keel_model::Channel::Local,
            blocked: false,
            claimed_by: None,
            version: 0,
        };
        db.put_destination(&who, d, 0, &services).await?;
    }
    let password = keel_password::generate(12)?;
    let admin = json!({"login": "admin", "group": "root", "firstname": "Example", "lastname": "Admin",
                       "password_hash": keel_password::hash(&password)?});
    db.create_user(
        &who,
        keel_model::UserPatch::from_fields(Fields::new(admin, Strictness::Strict)?)?,
    )
    .await?;
    let path = dir.join(ADMIN_PASSWORD_FILE);
    crate::private_file::write(&path, format!("{password}\n").as_bytes())?;
    println!(
        "keel: loaded the example site ({} machines); web pages: log in as admin with the password in {}",
        db.snapshot().machine_count(),
        path.display()
    );
    Ok(())
}
