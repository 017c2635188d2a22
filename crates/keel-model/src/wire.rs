//! Wire records in the prologin SADM shapes (mdb `query`, `switches`), shared by server and client.
//! Converted by hand from the model types so the model can evolve without breaking old clients.

use std::borrow::Cow;
use std::fmt;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::Value;

use crate::{Hostname, Machine, Switch, User};

/// A machine as prologin's mdb returns it (`aliases` is a comma-separated string).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MachineRecord {
    pub hostname: String,
    pub aliases: String,
    pub ip: String,
    pub mac: String,
    pub rfs: u32,
    pub hfs: u32,
    pub mtype: String,
    pub room: String,
    #[serde(default)]
    pub is_faulty: bool,
    #[serde(default)]
    pub faulty_reason: String,
    /// The same reason under prologin's name (its records and netboot code read this one).
    #[serde(default)]
    pub is_faulty_details: String,
    #[serde(default)]
    pub version: u64,
}

impl From<&Machine> for MachineRecord {
    fn from(m: &Machine) -> Self {
        Self {
            hostname: m.hostname.to_string(),
            aliases: m.aliases.iter().map(ToString::to_string).collect::<Vec<_>>().join(","),
            ip: m.ip.to_string(),
            mac: m.mac.to_string(),
            rfs: m.rfs,
            hfs: m.hfs,
            mtype: m.mtype.to_string(),
            room: m.room.clone(),
            is_faulty: m.is_faulty,
            faulty_reason: m.faulty_reason.clone(),
            is_faulty_details: m.faulty_reason.clone(),
            version: m.version,
        }
    }
}

/// Serializes a machine in the [`MachineRecord`] shape straight from the model, with no
/// intermediate strings: the full `query` of a large site is dominated by this.
pub struct MachineWire<'a>(pub &'a Machine);

impl Serialize for MachineWire<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let m = self.0;
        let mut st = s.serialize_struct("MachineRecord", 12)?;
        st.serialize_field("hostname", m.hostname.as_str())?;
        st.serialize_field("aliases", &AsStr(Joined(&m.aliases)))?;
        st.serialize_field("ip", &AsStr(m.ip))?;
        st.serialize_field("mac", &AsStr(m.mac))?;
        st.serialize_field("rfs", &m.rfs)?;
        st.serialize_field("hfs", &m.hfs)?;
        st.serialize_field("mtype", m.mtype.as_str())?;
        st.serialize_field("room", &m.room)?;
        st.serialize_field("is_faulty", &m.is_faulty)?;
        st.serialize_field("faulty_reason", &m.faulty_reason)?;
        st.serialize_field("is_faulty_details", &m.faulty_reason)?;
        st.serialize_field("version", &m.version)?;
        st.end()
    }
}

/// Serializes any `Display` as a JSON string.
struct AsStr<T>(T);

impl<T: fmt::Display> Serialize for AsStr<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

/// Names joined by commas, as prologin's `aliases`.
struct Joined<'a>(&'a [Hostname]);

impl fmt::Display for Joined<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, name) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(name.as_str())?;
        }
        Ok(())
    }
}

/// A switch as prologin's mdb returns it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwitchRecord {
    pub name: String,
    pub chassis: String,
    pub rfs: u32,
    pub hfs: u32,
    pub room: String,
    #[serde(default)]
    pub version: u64,
}

impl From<&Switch> for SwitchRecord {
    fn from(s: &Switch) -> Self {
        Self {
            name: s.name.to_string(),
            chassis: s.chassis.clone(),
            rfs: s.rfs,
            hfs: s.hfs,
            room: s.room.clone(),
            version: s.version,
        }
    }
}

/// A record that Django-style filters can look into, field by field, as text.
pub trait Queryable {
    const FIELDS: &'static [&'static str];
    fn field(&self, name: &str) -> Option<Cow<'_, str>>;
}

impl Queryable for Machine {
    const FIELDS: &'static [&'static str] = &[
        "hostname",
        "aliases",
        "ip",
        "mac",
        "rfs",
        "hfs",
        "mtype",
        "room",
        "is_faulty",
        "faulty_reason",
        "is_faulty_details",
        "id",
    ];
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match name {
            "hostname" => Cow::Borrowed(self.hostname.as_str()),
            "aliases" => Cow::Owned(
                self.aliases
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
            ),
            "ip" => Cow::Owned(self.ip.to_string()),
            "mac" => Cow::Owned(self.mac.to_string()),
            "rfs" => Cow::Owned(self.rfs.to_string()),
            "hfs" => Cow::Owned(self.hfs.to_string()),
            "mtype" => Cow::Borrowed(self.mtype.as_str()),
            "room" => Cow::Borrowed(self.room.as_str()),
            "is_faulty" => Cow::Borrowed(if self.is_faulty { "true" } else { "false" }),
            "faulty_reason" | "is_faulty_details" => Cow::Borrowed(self.faulty_reason.as_str()),
            "id" => Cow::Owned(self.id.to_string()),
            _ => return None,
        })
    }
}

impl Queryable for Switch {
    const FIELDS: &'static [&'static str] = &["name", "chassis", "rfs", "hfs", "room"];
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match name {
            "name" => Cow::Borrowed(self.name.as_str()),
            "chassis" => Cow::Borrowed(self.chassis.as_str()),
            "rfs" => Cow::Owned(self.rfs.to_string()),
            "hfs" => Cow::Owned(self.hfs.to_string()),
            "room" => Cow::Borrowed(self.room.as_str()),
            _ => return None,
        })
    }
}

/// A user as prologin's udb returns it — never a password or its hash.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub login: String,
    pub firstname: String,
    pub lastname: String,
    pub uid: u32,
    pub group: String,
    pub shell: String,
    /// The SSH public keys, one per line.
    pub ssh_key: String,
    /// The home file server the user's home is on (`hfsN`); null until assigned. Not in
    /// prologin's udb record (its hfs kept this apart); an extra key its clients ignore.
    pub hfs: Option<u32>,
}

/// A user as udb's `query_private` returns it to an admin or a signed call: the public record and
/// the password's SHA-512-crypt hash (never a plaintext: keel has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserPrivateRecord {
    #[serde(flatten)]
    pub public: UserRecord,
    pub password_hash: String,
}

impl From<&User> for UserPrivateRecord {
    fn from(u: &User) -> Self {
        Self {
            public: UserRecord::from(u),
            password_hash: u.password_hash.clone(),
        }
    }
}

impl From<&User> for UserRecord {
    fn from(u: &User) -> Self {
        Self {
            login: u.login.to_string(),
            firstname: u.firstname.clone(),
            lastname: u.lastname.clone(),
            uid: u.uid,
            group: u.group.to_string(),
            shell: u.shell.clone(),
            ssh_key: u.ssh_keys.join("\n"),
            hfs: u.hfs,
        }
    }
}

impl Queryable for User {
    const FIELDS: &'static [&'static str] = &["login", "firstname", "lastname", "uid", "group", "shell", "hfs"];
    fn field(&self, name: &str) -> Option<Cow<'_, str>> {
        Some(match name {
            "login" => Cow::Borrowed(self.login.as_str()),
            "firstname" => Cow::Borrowed(self.firstname.as_str()),
            "lastname" => Cow::Borrowed(self.lastname.as_str()),
            "uid" => Cow::Owned(self.uid.to_string()),
            "group" => Cow::Borrowed(self.group.as_str()),
            "shell" => Cow::Borrowed(self.shell.as_str()),
            "hfs" => Cow::Owned(self.hfs.map(|n| n.to_string()).unwrap_or_default()),
            _ => return None,
        })
    }
}

/// A user as the REST API answers it (`GET /api/v1/users/{login}`): every field but the password's
/// hash, and whether there is one. The watch stream shows users the same way ([`public_record`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PublicUser {
    pub login: crate::Login,
    pub firstname: String,
    pub lastname: String,
    pub group: crate::Group,
    pub uid: u32,
    pub shell: String,
    pub ssh_keys: Vec<String>,
    /// The user has a password (its hash is never shown).
    pub has_password: bool,
    /// True once the user chose their own password.
    pub password_changed: bool,
    /// The home file server (`hfsN`) the user's home lives on; null until assigned.
    pub hfs: Option<u32>,
    pub version: u64,
}

impl From<&crate::User> for PublicUser {
    fn from(u: &crate::User) -> Self {
        Self {
            login: u.login.clone(),
            firstname: u.firstname.clone(),
            lastname: u.lastname.clone(),
            group: u.group,
            uid: u.uid,
            shell: u.shell.clone(),
            ssh_keys: u.ssh_keys.clone(),
            has_password: !u.password_hash.is_empty(),
            password_changed: u.password_changed,
            hfs: u.hfs,
            version: u.version,
        }
    }
}

/// A record as read APIs and watchers may see it: a user's password hash is replaced by
/// `has_password`; other records are unchanged.
pub fn public_record(kind: crate::Kind, data: &Value) -> Value {
    let mut v = data.clone();
    if kind == crate::Kind::User {
        if let Value::Object(m) = &mut v {
            let has = m
                .remove("password_hash")
                .and_then(|h| h.as_str().map(|h| !h.is_empty()))
                .unwrap_or(false);
            m.insert("has_password".into(), has.into());
        }
    }
    v
}

/// An RPC answer in the prologin shape: `{"type":"result","data":…}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum RpcReply {
    Result { data: Value },
    Exception { exn_type: String, exn_message: String },
}

/// One line of the watch stream (`GET /api/v1/watch`, newline-delimited JSON), as keel-server
/// writes it and keel-client reads it. Control lines carry a `type`; record lines — the records
/// of a snapshot, then every change — do not. `D` is the record's JSON (borrowed when writing).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum WatchLine<D = Value> {
    Control(WatchControl),
    Record(WatchRecord<D>),
}

/// A watch line that is not a record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchControl {
    /// The records that follow are the whole state at `seq` of database `db_id`.
    SnapshotBegin { seq: u64, db_id: String },
    /// The snapshot is complete; changes after `seq` follow.
    SnapshotEnd { seq: u64 },
    /// Nothing happened for a while (the stream is alive; `seq` is the latest).
    Heartbeat { seq: u64 },
    /// The server ends the stream (too slow a reader, log trimmed, shutting down): resume after
    /// `seq`.
    Error { reason: String, seq: u64 },
    /// A line type newer than this reader: skipped.
    #[serde(other)]
    Unknown,
}

/// A record line: in a snapshot, `op` is `put`; after it, one change each.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatchRecord<D = Value> {
    pub seq: u64,
    pub kind: crate::Kind,
    pub op: crate::Op,
    /// The record after a put, before a delete (`null` if the log no longer has it).
    pub data: Option<D>,
}

impl<D: Serialize> WatchLine<D> {
    /// The line's bytes, newline included.
    pub fn to_line(&self) -> Vec<u8> {
        // A line of JSON values and strings cannot fail to serialize.
        let mut out = serde_json::to_vec(self).unwrap_or_default();
        out.push(b'\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MachineType;

    /// A user reads the same on the REST API (`PublicUser`, whose schema the OpenAPI description
    /// gives) and on the watch stream (`public_record`): no hash, `has_password`.
    #[test]
    fn the_public_user_is_the_watch_streams_user() {
        for hash in ["", "$6$salt$hash"] {
            let u = User {
                login: crate::Login::parse("login", "alice").unwrap(),
                firstname: "Alice".into(),
                lastname: "Liddell".into(),
                group: crate::Group::User,
                uid: 10001,
                shell: "/bin/bash".into(),
                ssh_keys: vec!["ssh-ed25519 AAAA".into()],
                password_hash: hash.into(),
                password_changed: true,
                hfs: Some(2),
                version: 9,
            };
            let watched = public_record(crate::Kind::User, &serde_json::to_value(&u).unwrap());
            assert_eq!(u.public_json(), watched);
            assert!(!u.public_json().to_string().contains("$6$"));
        }
    }

    /// The borrowed serializer and the owned record agree exactly.
    #[test]
    fn machine_wire_equals_record() {
        let m = Machine {
            id: 7,
            hostname: Hostname::parse("h", "gw").unwrap(),
            aliases: vec![
                Hostname::parse("a", "mdb").unwrap(),
                Hostname::parse("a", "udb").unwrap(),
            ],
            ip: "192.168.1.254".parse().unwrap(),
            mac: crate::Mac::parse("m", "aa:bb:cc:dd:ee:ff").unwrap(),
            mtype: MachineType::Service,
            room: "other".into(),
            rfs: 1,
            hfs: 2,
            is_faulty: true,
            faulty_reason: "fan".into(),
            boot: None,
            version: 9,
        };
        let a = serde_json::to_value(MachineWire(&m)).unwrap();
        let b = serde_json::to_value(MachineRecord::from(&m)).unwrap();
        assert_eq!(a, b);
        assert_eq!(a["aliases"], "mdb,udb");
    }

    /// The exact bytes keel has always sent (clients in other languages read them), and back.
    #[test]
    fn watch_lines_keep_their_shape() {
        let cases: Vec<(WatchLine, &str)> = vec![
            (
                WatchLine::Control(WatchControl::SnapshotBegin {
                    seq: 3,
                    db_id: "d".into(),
                }),
                r#"{"type":"snapshot_begin","seq":3,"db_id":"d"}"#,
            ),
            (
                WatchLine::Control(WatchControl::SnapshotEnd { seq: 3 }),
                r#"{"type":"snapshot_end","seq":3}"#,
            ),
            (
                WatchLine::Control(WatchControl::Heartbeat { seq: 4 }),
                r#"{"type":"heartbeat","seq":4}"#,
            ),
            (
                WatchLine::Control(WatchControl::Error {
                    reason: "slow".into(),
                    seq: 4,
                }),
                r#"{"type":"error","reason":"slow","seq":4}"#,
            ),
            (
                WatchLine::Record(WatchRecord {
                    seq: 5,
                    kind: crate::Kind::Machine,
                    op: crate::Op::Delete,
                    data: Some(serde_json::json!({"hostname": "a"})),
                }),
                r#"{"seq":5,"kind":"machine","op":"delete","data":{"hostname":"a"}}"#,
            ),
        ];
        for (line, text) in cases {
            assert_eq!(String::from_utf8(line.to_line()).unwrap(), format!("{text}\n"));
            assert_eq!(serde_json::from_str::<WatchLine>(text).unwrap(), line);
        }
        let newer: WatchLine = serde_json::from_str(r#"{"type":"resync_hint","seq":9}"#).unwrap();
        assert_eq!(newer, WatchLine::Control(WatchControl::Unknown));
        assert!(serde_json::from_str::<WatchLine>(r#"{"seq":5,"op":"put"}"#).is_err());
    }
}
