//! Bytes per record, counted by the allocator (jemalloc's `stats.allocated`, this binary's
//! allocator): what one user, machine or session costs in keel's in-memory Snapshot, and what one
//! user's change costs while the watch broadcast ring holds it. Exact where RSS is not: RSS also
//! counts memory freed and not yet given back.

use std::net::Ipv4Addr;

use keel_model::{Change, Hostname, Kind, Login, Mac, Machine, MachineType, Op, Session, Snapshot};
use tikv_jemalloc_ctl::{epoch, stats};

use crate::data;

#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct RecordBytes {
    pub records: u32,
    pub snapshot_per_user: f64,
    pub snapshot_per_machine: f64,
    pub snapshot_per_session: f64,
    /// One user's `Change` (as the store broadcasts it: JSON before and after).
    pub change_per_user: f64,
}

fn allocated() -> anyhow::Result<usize> {
    epoch::advance().map_err(|e| anyhow::anyhow!("jemalloc epoch: {e}"))?;
    stats::allocated::read().map_err(|e| anyhow::anyhow!("jemalloc stats: {e}"))
}

/// Bytes the allocator holds for what `build` returns, per record.
fn per_record<T>(n: u32, build: impl FnOnce() -> anyhow::Result<T>) -> anyhow::Result<f64> {
    let before = allocated()?;
    let kept = build()?;
    let after = allocated()?;
    drop(kept);
    Ok((after.saturating_sub(before)) as f64 / f64::from(n.max(1)))
}

fn machine(i: u32) -> anyhow::Result<Machine> {
    Ok(Machine {
        id: u64::from(i) + 1,
        hostname: Hostname::parse("hostname", &data::hostname(i))?,
        aliases: Vec::new(),
        ip: Ipv4Addr::from(0x0a00_0000 + i),
        mac: Mac::parse("mac", &data::mac(i))?,
        mtype: MachineType::User,
        room: "pasteur".into(),
        rfs: 1,
        hfs: 1 + i % 8,
        is_faulty: false,
        faulty_reason: String::new(),
        boot: None,
        version: u64::from(i) + 1,
    })
}

/// Fills Snapshots with `n` records of each kind.
pub(crate) fn measure(n: u32) -> anyhow::Result<RecordBytes> {
    let mut r = RecordBytes {
        records: n,
        ..RecordBytes::default()
    };
    r.snapshot_per_user = per_record(n, || {
        let mut s = Snapshot::default();
        for i in 0..n {
            s.put_user(data::user(i)?);
        }
        Ok(s)
    })?;
    r.snapshot_per_machine = per_record(n, || {
        let mut s = Snapshot::default();
        for i in 0..n {
            s.put_machine(machine(i)?);
        }
        Ok(s)
    })?;
    r.snapshot_per_session = per_record(n, || {
        let mut s = Snapshot::default();
        for i in 0..n {
            s.put_session(Session {
                login: Login::parse("login", &data::login(0, i))?,
                hostname: Hostname::parse("hostname", &data::hostname(i))?,
                since: "2026-12-05T08:00:00Z".into(),
                proven: true,
                version: u64::from(i) + 1,
            });
        }
        Ok(s)
    })?;
    r.change_per_user = per_record(n, || {
        (0..n)
            .map(|i| {
                let u = data::user(i)?;
                Ok(Change {
                    seq: u64::from(i) + 1,
                    time: "2026-12-05T08:00:00.000000Z".into(),
                    principal: "admin".into(),
                    kind: Kind::User,
                    op: Op::Put,
                    key: u.login.to_string(),
                    before: None,
                    after: Some(serde_json::to_value(&u)?),
                })
            })
            .collect::<anyhow::Result<Vec<Change>>>()
    })?;
    Ok(r)
}
