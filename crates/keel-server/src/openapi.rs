//! `GET /api/v1/openapi.json`: the REST API's OpenAPI 3.1 description, made once from the
//! handlers' `#[utoipa::path]` attributes as `crate::api` routes them (paths, methods, path
//! parameters, tags, descriptions from the handlers' doc comments). The authorization matrix
//! test holds it to docs/security.md, and a test holds docs/api.md to it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi, OpenApiBuilder, ServerBuilder};

/// What every description starts from: keel's name and version, the server prefix, the bearer
/// tokens (`keel token create`).
pub(crate) fn base() -> OpenApi {
    let mut doc = OpenApiBuilder::new()
        .info(
            InfoBuilder::new()
                .title("keel")
                .version(env!("CARGO_PKG_VERSION"))
                .description(Some(
                    "keel's REST API (docs/api.md). Requests carry `Authorization: Bearer TOKEN`; \
                     what each token may do on each route is docs/security.md's route matrix.",
                )),
        )
        .servers(Some([ServerBuilder::new().url("/api/v1").build()]))
        // A token where one is sent; the routes open to anyone (docs/security.md) take none.
        .security(Some([
            SecurityRequirement::new("token", Vec::<String>::new()),
            SecurityRequirement::default(),
        ]))
        .build();
    let bearer = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme("token", SecurityScheme::Http(bearer));
    doc
}

/// The description as JSON, made on first use.
pub fn description() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| crate::api().1.to_pretty_json().unwrap_or_default())
}

/// This description (OpenAPI 3.1, JSON). Public, like the routes it describes.
#[utoipa::path(get, path = "/openapi.json", tag = "api")]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], description()).into_response()
}
