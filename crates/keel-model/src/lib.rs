//! keel's data model: types, validation, IP pools and the Snapshot. Pure: no I/O.

mod change;
mod claims;
mod decide;
mod error;
pub mod identity;
pub mod input;
pub mod login;
mod machine;
mod names;
#[cfg(feature = "openapi")]
mod openapi;
mod pool;
mod principal;
pub mod propagation;
pub mod query;
mod record;
mod rights;
pub mod role;
pub mod service;
mod session;
mod setting;
mod snapshot;
mod user;
pub mod wire;

pub use change::{Change, Kind, Op};
pub use decide::Decision;
pub use error::{ValidationError, ValidationErrors};
pub use machine::{check_chassis, check_room, BootMode, Machine, MachinePatch, MachineType, Switch};
pub use names::{Hostname, Mac};
pub use pool::{reverse_zone, Pool, Pools};
pub use principal::{ManagerName, Principal, PrincipalKind, Role};
pub use propagation::{Channel, Destination, Facility, Host};
pub use record::Record;
pub use rights::RightsError;
pub use role::{MachineRole, RoleRecord};
pub use session::{ProofPolicy, Refusal, Session};
pub use setting::{canonical_time, rfc3339, Setting, SettingSpec, SETTINGS};
pub use snapshot::{AllocHints, ApplyError, Snapshot};
pub use user::{
    check_ssh_key, is_sha512_crypt, Counter, Group, Login, UidPools, UidRange, User, UserPatch, SHA512_ROUNDS,
};
