//! How to talk to keel. Always: `routes` (the API's paths, built safely) and `data_dir` (the names
//! of the files `keel serve` keeps in its data directory). With the `http` feature (default):
//! [`Client`], the async client the `keel` CLI uses — it uses only this — with a method per route,
//! and [`Watch`], the resumable watch stream. keel-agent takes the routes without the feature: it
//! speaks to keel with a small blocking client of its own.

pub mod data_dir;
pub mod routes;

#[cfg(feature = "http")]
mod api;
#[cfg(feature = "http")]
mod client;
#[cfg(feature = "http")]
pub mod tls;
#[cfg(feature = "http")]
mod watch;

pub use routes::{segment, InvalidKey, Records, API};

#[cfg(feature = "http")]
pub use client::{Client, ClientError, Versioned};
#[cfg(feature = "http")]
pub use watch::{Watch, WatchEvent, WatchOptions};
