//! Admin commands: glue over keel-client, printing tables or JSON.

pub mod backup;
pub mod conntrack;
pub mod import;
pub mod log;
pub mod machine;
pub mod migrate;
pub mod openapi;
pub mod passwd;
pub mod propagation;
pub mod reload;
pub mod role;
pub mod setting;
pub mod switch;
pub mod token;
pub mod users;
pub mod watch;

/// `FIELD=VALUE` filters from the command line, as pairs for [`keel_client::Client::list`].
pub fn filters(given: &[String]) -> anyhow::Result<Vec<(&str, &str)>> {
    given
        .iter()
        .map(|f| {
            f.split_once('=')
                .ok_or_else(|| anyhow::anyhow!("filter {f:?}: expected FIELD=VALUE (e.g. room=alt)"))
        })
        .collect()
}
