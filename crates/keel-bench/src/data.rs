//! Bench records that differ the way real ones do: a hash, a login, a name or a MAC shared by every
//! record (or one long common prefix) would let compression and ordered indexes flatter the result.
//! Everything here is a pure function of the record's number, so a run can be reproduced.

use keel_model::{Group, Login, User};

/// A 64-bit mix of `i` (splitmix64's finaliser): a bijection, so distinct numbers stay distinct.
fn mix(i: u64) -> u64 {
    let mut x = i.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A SHA-512-crypt hash of the real shape (16-character salt, 86-character digest) that differs per
/// record, as real ones do. (Hashing 100,000 real passwords would take minutes; nothing in a bench
/// checks them.)
pub(crate) fn fake_hash(i: usize) -> String {
    const CRYPT64: &[u8] = b"./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1; // xorshift64*, seeded per record
    let mut next = || {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        CRYPT64[(x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 58) as usize] as char
    };
    let salt: String = (0..16).map(|_| next()).collect();
    let digest: String = (0..86).map(|_| next()).collect();
    format!("$6${salt}${digest}")
}

/// Lowercase letters spelling `x` in base 26, at least `min` of them.
fn letters(mut x: u64, min: usize) -> String {
    let mut out = Vec::new();
    while x > 0 || out.len() < min {
        out.push(b'a' + (x % 26) as u8);
        x /= 26;
    }
    String::from_utf8(out).unwrap_or_default()
}

/// A login unique per `i` and `series` (0 to 3: two fills kept apart), spread over the alphabet rather
/// than counting up under one prefix: 7 letters of a mix of both, then letters of the numbers
/// themselves (which alone make it unique).
pub(crate) fn login(series: u8, i: u32) -> String {
    let spread = mix(u64::from(i) | (u64::from(series) << 40)) as u32;
    format!(
        "{}{}",
        letters(u64::from(spread), 7),
        letters(u64::from(i) * 4 + u64::from(series), 1)
    )
}

/// A first and last name drawn from short lists (as a real site's repeat), per `i`.
pub(crate) fn names(i: u32) -> (String, String) {
    const FIRST: &[&str] = &[
        "Alice", "Bruno", "Chloé", "Dmitri", "Eva", "Farid", "Gabriel", "Hana", "Ivan", "Jeanne", "Karim", "Léa",
        "Marek", "Nadia", "Olga", "Pierre", "Quentin", "Rosa", "Sami", "Tereza",
    ];
    const LAST: &[&str] = &[
        "Novák",
        "Martin",
        "Dvořák",
        "Bernard",
        "Svoboda",
        "Dubois",
        "Černý",
        "Moreau",
        "Procházka",
        "Laurent",
        "Kučera",
        "Simon",
        "Veselý",
        "Michel",
        "Horák",
        "Lefebvre",
        "Němec",
        "Leroy",
        "Pokorný",
        "Roux",
    ];
    let m = mix(u64::from(i) ^ 0x5555);
    (
        FIRST[(m % FIRST.len() as u64) as usize].to_owned(),
        LAST[((m >> 16) % LAST.len() as u64) as usize].to_owned(),
    )
}

/// A locally administered unicast MAC unique per `i`, its bytes spread (not counting up).
pub(crate) fn mac(i: u32) -> String {
    let m = mix(u64::from(i));
    // The low 32 bits of a bijection are not one; the number itself fills the last four bytes,
    // xored with a mix of it that is a bijection of i (an odd multiplier mod 2^32).
    let b = (i.wrapping_mul(0x9E37_79B1) ^ 0x5A5A_5A5A).to_be_bytes();
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (m as u8 & 0xfc) | 0x02,
        (m >> 8) as u8,
        b[0],
        b[1],
        b[2],
        b[3]
    )
}

/// A hostname unique per `i`: a word from a short list and the machine's letters.
pub(crate) fn hostname(i: u32) -> String {
    const ROOMS: &[&str] = &[
        "pasteur", "curie", "turing", "hopper", "lovelace", "noether", "knuth", "dijkstra",
    ];
    let room = ROOMS[(mix(u64::from(i) ^ 0xAAAA) % ROOMS.len() as u64) as usize];
    format!("{room}-{}", letters(u64::from(i.wrapping_mul(0x9E37_79B1)), 7))
}

/// Bench user `i`: its own login, names, hash and uid; home on one of eight HFS.
pub(crate) fn user(i: u32) -> anyhow::Result<User> {
    let (firstname, lastname) = names(i);
    Ok(User {
        login: Login::parse("login", &login(0, i))?,
        firstname,
        lastname,
        group: Group::User,
        uid: 100_000 + i,
        shell: "/bin/bash".into(),
        ssh_keys: Vec::new(),
        password_hash: fake_hash(i as usize),
        password_changed: false,
        hfs: Some(1 + i % 8),
        version: u64::from(i) + 1,
    })
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    #[test]
    fn bench_records_are_distinct_per_number() {
        let n = 200_000;
        let logins: HashSet<String> = (0..n).map(|i| super::login(0, i)).collect();
        let other: HashSet<String> = (0..n).map(|i| super::login(1, i)).collect();
        let macs: HashSet<String> = (0..n).map(super::mac).collect();
        let hosts: HashSet<String> = (0..n).map(super::hostname).collect();
        assert_eq!(logins.len(), n as usize);
        assert!(logins.is_disjoint(&other));
        assert_eq!(macs.len(), n as usize);
        assert_eq!(hosts.len(), n as usize);
        let hashes: HashSet<String> = (0..1000).map(super::fake_hash).collect();
        assert_eq!(hashes.len(), 1000);
    }

    #[test]
    fn bench_records_are_valid_for_keel() {
        for i in [0, 1, 25, 26, 1 << 20, u32::MAX] {
            keel_model::Login::parse("login", &super::login(3, i)).expect("a valid login");
            assert!(keel_model::is_sha512_crypt(&super::fake_hash(i as usize)));
        }
    }
}
