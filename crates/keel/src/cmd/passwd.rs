//! `keel passwd`: a user changes their own password; an admin resets one (printed once).

use std::io::{BufRead, IsTerminal};

use anyhow::{bail, Context};
use keel_client::Client;
use serde_json::{json, Value};

use crate::outln;
use keel_client::Records;

#[derive(Debug, clap::Args)]
pub struct PasswdArgs {
    /// The login (asked for when not given).
    login: Option<String>,
    /// As an admin: set a fresh generated password and print it once.
    #[arg(long)]
    reset: bool,
    /// Length of a generated password.
    #[arg(long, default_value_t = 8)]
    pwdlen: usize,
    /// Read the current and the new password from standard input, one per line (for scripts).
    #[arg(long)]
    stdin: bool,
}

pub async fn run(c: &Client, args: &PasswdArgs, json: bool) -> anyhow::Result<()> {
    if args.reset {
        return reset(c, args, json).await;
    }
    let mut input = Input::new(args.stdin);
    let login = match &args.login {
        Some(l) => l.clone(),
        None => input.line("login: ")?,
    };
    let old = input.secret("current password: ")?;
    let new = input.secret("new password: ")?;
    if !args.stdin && input.secret("new password again: ")? != new {
        bail!("the two new passwords differ; nothing changed");
    }
    if new.chars().count() < 8 {
        bail!("the new password must have at least 8 characters");
    }
    let hash = keel_password::hash(&new)?;
    let body = json!({"login": login, "old_password": old, "new_password_hash": hash});
    // No token: the current password is what authenticates this request.
    let anonymous = Client::new(c.base(), None)?;
    anonymous.passwd(&body).await?;
    if !json {
        outln!("password of {login} changed")?;
    }
    Ok(())
}

async fn reset(c: &Client, args: &PasswdArgs, json: bool) -> anyhow::Result<()> {
    let login = args
        .login
        .as_deref()
        .context("give the login whose password to reset")?;
    let password = keel_password::generate(args.pwdlen)?;
    let body = json!({"password_hash": keel_password::hash(&password)?, "password_changed": false});
    let _: Value = c.update(Records::Users, &[login], &body).await?;
    if json {
        return crate::output::print_json(&json!({"login": login, "password": password}));
    }
    outln!("{password}")?;
    eprintln!("new password of {login} (shown once; keel keeps only its hash)");
    Ok(())
}

/// Where answers come from: the terminal (secrets without echo), or standard input lines.
struct Input {
    from_stdin: bool,
}

impl Input {
    fn new(from_stdin: bool) -> Self {
        Self { from_stdin }
    }

    fn line(&mut self, prompt: &str) -> anyhow::Result<String> {
        if !self.from_stdin {
            eprint!("{prompt}");
        }
        let mut s = String::new();
        std::io::stdin().lock().read_line(&mut s)?;
        Ok(s.trim_end_matches(['\n', '\r']).to_owned())
    }

    fn secret(&mut self, prompt: &str) -> anyhow::Result<String> {
        if self.from_stdin {
            return self.line(prompt);
        }
        if !std::io::stdin().is_terminal() {
            bail!("no terminal to ask for a password: use --stdin");
        }
        Ok(rpassword::prompt_password(prompt)?)
    }
}
