//! `keel openapi`: the REST API's OpenAPI 3.1 description, as `GET /api/v1/openapi.json` answers
//! it, without a server; `--python` the typed Python client made from it
//! (contrib/python/keel_api.py, which the Django integration and the Ansible inventory use).

mod python;

/// `keel openapi` flags.
#[derive(Debug, clap::Args)]
pub struct OpenapiArgs {
    /// Print the typed Python client made from the description (stdlib only), instead of the
    /// description.
    #[arg(long)]
    pub python: bool,
}

pub fn run(args: &OpenapiArgs) -> anyhow::Result<()> {
    let description = keel_server::openapi_description();
    if args.python {
        let doc: serde_json::Value = serde_json::from_str(description)?;
        print!("{}", python::client(&doc));
    } else {
        println!("{description}");
    }
    Ok(())
}
