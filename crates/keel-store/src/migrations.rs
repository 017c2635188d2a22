//! The schema migrations of both backends, as sqlx's `Migrator`s.
//!
//! sqlx compares each applied migration's SHA-384 with its file's, and refuses a database whose
//! applied migration differs. Migration 1 of each backend had a comment rewritten after databases
//! were made with it (it cited a design file that was not in the repository); it keeps the
//! checksum of its original text here, so those databases open, and new ones record the same
//! value. Never edit an applied migration otherwise: add one.

use std::borrow::Cow;

use sqlx::migrate::Migrator;

static SQLITE: Migrator = sqlx::migrate!("./migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("./migrations/postgres");

/// SHA-384 of each backend's `0001_init.sql` as first released.
const SQLITE_0001: &str =
    "f214ad8bac841dfa045a06284f699886c66fb0c1718f6130cf72bee5ec081969cc9a12adc96e1533eaf79ef683dbe11c";
const POSTGRES_0001: &str =
    "cc15de6c08950e947286f44b13888bd3b74e656913330eaaff455b103cacda6121fd93f22280642f1d5de531c08ca175";

pub(crate) fn sqlite() -> Migrator {
    pinned(&SQLITE, SQLITE_0001)
}

pub(crate) fn postgres() -> Migrator {
    pinned(&POSTGRES, POSTGRES_0001)
}

fn pinned(m: &'static Migrator, original_0001: &str) -> Migrator {
    let mut migrations: Vec<_> = m.iter().cloned().collect();
    for mig in migrations.iter_mut().filter(|mig| mig.version == 1) {
        // A constant of 96 hex digits: it decodes.
        mig.checksum = Cow::Owned(hex::decode(original_0001).unwrap_or_default());
    }
    Migrator {
        migrations: Cow::Owned(migrations),
        ignore_missing: m.ignore_missing,
        locking: m.locking,
        no_tx: m.no_tx,
    }
}

#[cfg(test)]
mod tests {
    use sha2::Digest;

    /// Only migration 1 is pinned: any other edit of an applied migration still fails, as sqlx
    /// means it to.
    #[test]
    fn only_migration_1_keeps_its_original_checksum() {
        for (m, orig) in [
            (super::sqlite(), super::SQLITE_0001),
            (super::postgres(), super::POSTGRES_0001),
        ] {
            for mig in m.iter() {
                let of_file = sha2::Sha384::digest(mig.sql.as_bytes()).to_vec();
                if mig.version == 1 {
                    assert_eq!(hex::encode(&*mig.checksum), orig);
                    assert_ne!(*mig.checksum, of_file[..], "0001 was edited: its file differs");
                } else {
                    assert_eq!(*mig.checksum, of_file[..], "migration {} edited", mig.version);
                }
            }
        }
    }
}
