//! `GET /api/v1/openapi.json`: the REST API's OpenAPI 3.1 description, made once from the
//! handlers' `#[utoipa::path]` attributes as `crate::api` routes them (paths, methods, path
//! parameters, tags, descriptions from the handlers' doc comments). The authorization matrix
//! test holds it to docs/security.md, and a test holds docs/api.md to it.

use std::sync::OnceLock;

use axum::http::header;
use axum::response::{IntoResponse, Response};
use utoipa::openapi::request_body::RequestBodyBuilder;
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, InfoBuilder, OpenApi, OpenApiBuilder, Ref, ResponseBuilder, ServerBuilder};
use utoipa::PartialSchema;

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

/// What every operation shares, added once the router has described them: the error answers
/// (`ErrorBody`), a JSON body for those that take one (its fields are docs/api.md's), and a JSON
/// answer for those whose handler names none.
pub(crate) fn complete(mut doc: OpenApi) -> OpenApi {
    let (name, schema) = (
        <crate::error::ErrorBody as utoipa::ToSchema>::name(),
        crate::error::ErrorBody::schema(),
    );
    let components = doc.components.get_or_insert_with(Default::default);
    components.schemas.insert(name.to_string(), schema);
    let mut more = Vec::new();
    <crate::error::ErrorBody as utoipa::ToSchema>::schemas(&mut more);
    components.schemas.extend(more);
    let error = |what: &str| {
        ResponseBuilder::new()
            .description(what)
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(name.clone())))
                    .build(),
            )
            .build()
    };
    let json = || {
        ContentBuilder::new()
            .schema(Some(ObjectBuilder::new().schema_type(Type::Object)))
            .build()
    };
    for item in doc.paths.paths.values_mut() {
        let ops = [
            (&mut item.get, false),
            (&mut item.delete, false),
            (&mut item.post, true),
            (&mut item.put, true),
            (&mut item.patch, true),
        ];
        for (op, takes_body) in ops {
            let Some(op) = op.as_mut() else { continue };
            if op.responses.responses.is_empty() {
                let ok = ResponseBuilder::new()
                    .description("the answer (docs/api.md)")
                    .content("application/json", json());
                op.responses.responses.insert("200".into(), ok.build().into());
            }
            op.responses
                .responses
                .insert("4XX".into(), error("refused: the body says why").into());
            op.responses
                .responses
                .insert("5XX".into(), error("keel could not do it").into());
            if takes_body && op.request_body.is_none() {
                op.request_body = Some(
                    RequestBodyBuilder::new()
                        .description(Some("the fields, as docs/api.md gives them"))
                        .content("application/json", json())
                        .build(),
                );
            }
        }
    }
    doc
}

/// The description as JSON, made on first use.
pub fn description() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| crate::api().1.to_pretty_json().unwrap_or_default())
}

/// This description (OpenAPI 3.1, JSON). Public, like the routes it describes.
#[utoipa::path(get, path = "/openapi.json", operation_id = "get_openapi", tag = "api")]
pub(crate) async fn openapi_json() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], description()).into_response()
}
