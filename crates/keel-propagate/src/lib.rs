//! keel's propagation engine (after Perun's): a change is detected, each affected (facility,
//! service) task GENerates the service's complete files once, a signed bundle goes to every
//! destination in parallel (SEND), and keel-agent applies it there and reports back.

#![forbid(unsafe_code)]

pub mod channel;
mod engine;
mod error;
mod older;
pub mod send;
pub mod services;
pub mod state;

pub use engine::{status_of, Engine, EngineConfig};
pub use error::{EngineError, GenError, ResolveError, ServiceError};
pub use send::{Senders, SshConfig};
pub use services::{registry, CustomService, Service};
pub use state::{DestResult, DestStatus, Task, TaskState};
