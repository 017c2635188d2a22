//! `hosts`: the lines keel keeps in /etc/hosts — how hosts find each other before DNS works.

use std::fmt::Write as _;

use keel_model::service::File;

use crate::check::{self, GenError};
use crate::{file, Input, Options};

/// `ip name.zone name alias.zone alias …` for every machine, by IP then hostname.
pub fn hosts(input: &Input<'_>, opts: &Options) -> Result<Vec<File>, GenError> {
    check::option("hosts", "zone", &opts.zone, &[' ', '\t', '#'])?;
    let mut machines = input.machines.clone();
    machines.sort_by(|a, b| (a.ip, &a.hostname).cmp(&(b.ip, &b.hostname)));
    let mut out = String::with_capacity(machines.len() * 64);
    for m in machines {
        check::machine_names("hosts", m)?;
        let _ = write!(out, "{}", m.ip);
        for name in input.names_of(m) {
            let _ = write!(out, " {name}.{} {name}", opts.zone);
        }
        out.push('\n');
    }
    Ok(vec![file("hosts", 0o644, out)])
}
