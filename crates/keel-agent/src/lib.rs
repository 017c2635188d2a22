//! keel-agent: the destination side of propagation (Perun's "slave"). See `apply` for the order
//! of checks, `fsops` for how files are written, `services` for what each service does.

#![forbid(unsafe_code)]

mod apply;
pub mod cli;
pub mod config;
mod fsops;
mod hooks;
pub mod out;
#[cfg(feature = "presence")]
pub mod presence;
pub mod relay;
mod services;
pub mod stream;
#[cfg(feature = "presence")]
pub mod utmp;

pub use apply::apply;
pub use config::Config;
pub use out::{Code, Out};
