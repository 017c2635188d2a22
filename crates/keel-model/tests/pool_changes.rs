//! Issue 30: nothing changes that nobody asked to change. Through any sequence of pool changes
//! and single-field edits, an edit changes the field it names and no other — an address only when
//! the edit names it, or names a type whose pool does not hold it.
#![allow(clippy::unwrap_used)]

use std::net::Ipv4Addr;

use keel_model::{Hostname, Mac, Machine, MachinePatch, MachineType, Pool, Pools, Snapshot};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// The pool of a type moves to 10.N.0.0/24 (a reload of keel.toml).
    MovePool(MachineType, u8),
    /// One field of machine `i` (modulo the count) changes.
    Edit(usize, Field),
}

#[derive(Debug, Clone)]
enum Field {
    Room(String),
    Rfs(u32),
    Hfs(u32),
    Faulty(bool),
    Hostname(u16),
    Mac(u16),
    Mtype(MachineType),
    Ip(u8),
}

fn mtype() -> impl Strategy<Value = MachineType> {
    prop::sample::select(MachineType::ALL.to_vec())
}

fn step() -> impl Strategy<Value = Step> {
    let field = prop_oneof![
        "[a-z]{1,8}".prop_map(Field::Room),
        (0u32..9).prop_map(Field::Rfs),
        (0u32..9).prop_map(Field::Hfs),
        any::<bool>().prop_map(Field::Faulty),
        any::<u16>().prop_map(Field::Hostname),
        any::<u16>().prop_map(Field::Mac),
        mtype().prop_map(Field::Mtype),
        (1u8..250).prop_map(Field::Ip),
    ];
    prop_oneof![
        (mtype(), 1u8..6).prop_map(|(t, n)| Step::MovePool(t, n)),
        (0usize..16, field).prop_map(|(i, f)| Step::Edit(i, f)),
    ]
}

fn patch(f: &Field, pools: &Pools, m: &Machine) -> MachinePatch {
    let mut p = MachinePatch::default();
    match f {
        Field::Room(r) => p.room = Some(r.clone()),
        Field::Rfs(n) => p.rfs = Some(*n),
        Field::Hfs(n) => p.hfs = Some(*n),
        Field::Faulty(b) => p.is_faulty = Some(*b),
        Field::Hostname(n) => p.hostname = Some(Hostname::parse("hostname", &format!("h{n}")).unwrap()),
        Field::Mac(n) => {
            let [a, b] = n.to_be_bytes();
            p.mac = Some(Mac::parse("mac", &format!("52:54:00:77:{a:02x}:{b:02x}")).unwrap());
        }
        Field::Mtype(t) => p.mtype = Some(*t),
        Field::Ip(n) => {
            let o = pools.of(m.mtype).network.network().octets();
            p.ip = Some(Ipv4Addr::new(o[0], o[1], o[2], *n));
        }
    }
    p
}

/// `new` equals `old` but for what `f` may change.
fn only_asked(old: &Machine, new: &Machine, f: &Field) -> Result<(), TestCaseError> {
    let mut expected = old.clone();
    match f {
        Field::Room(_) => expected.room.clone_from(&new.room),
        Field::Rfs(_) => expected.rfs = new.rfs,
        Field::Hfs(_) => expected.hfs = new.hfs,
        Field::Faulty(_) => expected.is_faulty = new.is_faulty,
        Field::Hostname(_) => expected.hostname = new.hostname.clone(),
        Field::Mac(_) => expected.mac = new.mac,
        Field::Mtype(_) => {
            expected.mtype = new.mtype;
            // Moved only when the new type's pool does not hold the old address.
            expected.ip = new.ip;
        }
        Field::Ip(_) => expected.ip = new.ip,
    }
    prop_assert_eq!(&expected, new, "{:?} changed more than it names", f);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn an_edit_changes_only_what_it_names_whatever_the_pools_did(steps in prop::collection::vec(step(), 1..40)) {
        let mut pools = Pools::default();
        let mut snap = Snapshot::default();
        for i in 0..6u64 {
            let p = MachinePatch {
                hostname: Some(Hostname::parse("hostname", &format!("m{i}")).unwrap()),
                mac: Some(Mac::parse("mac", &format!("52:54:00:00:00:{i:02x}")).unwrap()),
                mtype: Some(MachineType::ALL[usize::try_from(i).unwrap() % 4]),
                ..MachinePatch::default()
            };
            let m = snap.new_machine(p, i + 1, &pools).unwrap();
            snap.put_machine(m);
        }
        for s in steps {
            match s {
                Step::MovePool(t, n) => {
                    let pool = Pool::new(format!("10.{n}.0.0/24").parse().unwrap());
                    match t {
                        MachineType::User => pools.user = pool,
                        MachineType::Orga => pools.orga = pool,
                        MachineType::Cluster => pools.cluster = pool,
                        MachineType::Service => pools.service = pool,
                    }
                }
                Step::Edit(i, f) => {
                    let ids: Vec<u64> = snap.machines().map(|m| m.id).collect();
                    let old = snap.machine(ids[i % ids.len()]).unwrap().clone();
                    let p = patch(&f, &pools, &old);
                    // A refusal (a name or address taken, a full pool) changes nothing.
                    if let Ok(new) = snap.edit_machine(&old, p, &pools) {
                        only_asked(&old, &new, &f)?;
                        if let Field::Mtype(t) = f {
                            if t == old.mtype || pools.of(t).admits(old.ip) {
                                prop_assert_eq!(new.ip, old.ip, "a type change kept in the pool moves nothing");
                            }
                        }
                        snap.put_machine(new);
                    }
                }
            }
        }
    }
}
