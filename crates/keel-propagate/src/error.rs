//! keel-propagate's errors, one type per stage: the service table a config declares
//! ([`ServiceError`]), GEN ([`GenError`]), resolving an ssh destination ([`ResolveError`]), and
//! the engine's answers to its callers ([`EngineError`]). A task records an error's text as its
//! `last_error`; callers match on the variants.

/// A `[propagation.services]` entry keel cannot run (`keel serve --check` names it).
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Name(#[from] keel_model::ValidationError),
    #[error("propagation.services.{0}: a built-in service has that name")]
    BuiltInName(String),
    #[error("propagation.services.{0}.command: must name a program")]
    NoProgram(String),
    #[error("propagation.services.{name}.version: {reason}")]
    Version { name: String, reason: String },
}

/// GEN failed: no file of this run is sent.
#[derive(Debug, thiserror::Error)]
pub enum GenError {
    /// A built-in generator refused a value its format cannot hold (GENERROR).
    #[error(transparent)]
    BuiltIn(#[from] keel_gen::GenError),
    #[error("generator input: {0}")]
    Input(#[from] serde_json::Error),
    #[error("generator's directory: {0}")]
    Io(#[from] std::io::Error),
    #[error("generator failed ({code}): {stderr}")]
    Failed { code: String, stderr: String },
    #[error("generated file {path:?}: {reason}")]
    BadFile { path: String, reason: String },
    #[error("bundle: {0}")]
    Bundle(#[from] keel_bundle::BuildError),
    /// The blocking task that lays the bundle out did not finish (a panic there).
    #[error("laying out the bundle: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Where an ssh destination leads could not be found, or may not be sent to.
#[derive(Debug, thiserror::Error)]
pub enum ResolveError {
    #[error("ssh -G timed out")]
    Timeout,
    #[error("cannot run ssh -G: {0}")]
    Run(std::io::Error),
    #[error("ssh -G {destination}: {stderr}")]
    Ssh { destination: String, stderr: String },
    #[error("cannot resolve {name}: {source}")]
    Lookup { name: String, source: std::io::Error },
    #[error("{0} resolves to no address")]
    NoAddress(String),
    /// It resolves to keel's own host, loopback, or a machine outside the facility.
    #[error("{destination} resolves to {why}")]
    Refused { destination: String, why: String },
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String),
    #[error("generating: {0}")]
    Gen(#[from] GenError),
    /// A wait for a task ran out of time (the task goes on).
    #[error("{0}")]
    Timeout(String),
    #[error(transparent)]
    Store(#[from] keel_store::StoreError),
}
