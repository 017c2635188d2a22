//! Logins from names, by the rule the prologin import used (sites depend on it being exact):
//! fold each name to ASCII (Unicode NFKD, drop what is not ASCII), lower-case it; the login is the
//! first letter of each part of the first name (parts split on every character that is not a–z,
//! empty parts skipped) followed by the last name's a–z letters, cut to their first 10. A login
//! already taken gets 1, then 2, … appended.

use std::collections::HashSet;

use unicode_normalization::UnicodeNormalization;

/// Accounts a login may never take, whatever the names (configurable by the caller).
pub const RESERVED_LOGINS: &[&str] = &[
    "root",
    "bin",
    "daemon",
    "sys",
    "adm",
    "lp",
    "sync",
    "shutdown",
    "halt",
    "mail",
    "news",
    "uucp",
    "operator",
    "games",
    "ftp",
    "nobody",
    "www-data",
    "http",
    "sshd",
    "systemd-network",
    "messagebus",
    "postgres",
    "named",
    "dhcpd",
    "nginx",
    "keel",
];

/// A name folded to lower-case ASCII: `Élodie` → `elodie`, `Müller-Lüdenscheidt` → `muller-ludenscheidt`.
pub fn fold(name: &str) -> String {
    name.nfkd()
        .filter(char::is_ascii)
        .collect::<String>()
        .to_ascii_lowercase()
}

/// The login the rule gives for a person, before collisions; `None` if the names give no letter.
pub fn base_login(first: &str, last: &str) -> Option<String> {
    let first = fold(first);
    let initials = first
        .split(|c: char| !c.is_ascii_lowercase())
        .filter_map(|part| part.chars().next());
    let last: String = fold(last).chars().filter(char::is_ascii_lowercase).take(10).collect();
    let login: String = initials.chain(last.chars()).collect();
    (!login.is_empty()).then_some(login)
}

/// Hands out logins, appending 1, 2, … to one already taken (in the database, earlier in the same
/// file, or reserved).
#[derive(Debug, Clone, Default)]
pub struct LoginAllocator {
    taken: HashSet<String>,
}

impl LoginAllocator {
    pub fn new(existing: impl IntoIterator<Item = String>, reserved: &[&str]) -> Self {
        let mut taken: HashSet<String> = existing.into_iter().collect();
        taken.extend(reserved.iter().map(|r| (*r).to_owned()));
        Self { taken }
    }

    /// Takes `base`, or the first free `base1`, `base2`, ….
    pub fn take(&mut self, base: &str) -> String {
        let login = if self.taken.contains(base) {
            (1u32..)
                .map(|n| format!("{base}{n}"))
                .find(|l| !self.taken.contains(l))
                .unwrap_or_default()
        } else {
            base.to_owned()
        };
        self.taken.insert(login.clone());
        login
    }

    pub fn is_taken(&self, login: &str) -> bool {
        self.taken.contains(login)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(first: &str, last: &str, expect: Option<&str>) {
        assert_eq!(base_login(first, last).as_deref(), expect, "{first:?} {last:?}");
    }

    #[test]
    fn the_rule() {
        for (first, last, expect) in [
            ("Jean-Baptiste", "Poquelin", Some("jbpoquelin")),
            ("Élodie", "Müller-Lüdenscheidt", Some("emullerlude")),
            ("Anne Marie Louise", "d'Orléans", Some("amldorleans")),
            ("Zoë", "O'Brien", Some("zobrien")),
            ("  Ana  ", "  Li  ", Some("ali")),
            ("Łukasz", "Żółć", Some("uzoc")), // Ł has no decomposition: dropped, as the rule says
            ("李", "小龙", None),
            ("Ægir", "Ødegård", Some("gdegard")),
            ("Jean--Luc", "Picard-Smith-Jones", Some("jlpicardsmit")),
            ("X", "", Some("x")),
            ("ﬁona", "Ⅻ", Some("fxii")),
        ] {
            check(first, last, expect);
        }
    }

    #[test]
    fn collisions_append_numbers() {
        let mut a = LoginAllocator::new(["jdoe".to_owned(), "jdoe1".to_owned()], RESERVED_LOGINS);
        assert_eq!(a.take("jdoe"), "jdoe2");
        assert_eq!(a.take("jdoe"), "jdoe3");
        assert_eq!(a.take("root"), "root1");
        assert_eq!(a.take("nobody"), "nobody1");
        assert_eq!(a.take("asmith"), "asmith");
        assert_eq!(a.take("asmith"), "asmith1");
    }
}
